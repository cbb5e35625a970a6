"""containerd's ``?ns=``: which registry an image belongs to, when it asks a mirror.

A containerd host whose ``hosts.toml`` lists this registry as a mirror of
``docker.io`` asks for ``/v2/library/alpine/manifests/latest?ns=docker.io``. When
``proxy.upstreams`` has an upstream with that prefix, the request is for that
upstream's ``docker.io/library/alpine``, not for a repository of this registry
named ``library/alpine``: this layer puts the prefix in the path before anything
else reads it, so access control, the cache and the logs all see the one name.
Only reads are routed so (a mirror is only ever read), and a path that already
starts with the prefix is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

#: Longest ``ns`` value read (a registry host name and port).
MAX_NS = 255
_READS = ("GET", "HEAD")


class NamespaceRouting:
    def __init__(self, app: Any, prefixes: Iterable[str], api_prefix: str = "") -> None:
        self.app = app
        self.prefixes = frozenset(prefix.lower() for prefix in prefixes if prefix)
        self.api = f"{api_prefix}/v2/"

    def routed(self, scope: HTTPScope) -> str | None:
        """The path ``scope`` is for, when ``ns`` names an upstream's prefix; else None."""
        query = scope["query_string"]
        if b"ns=" not in query or scope["method"] not in _READS:
            return None
        path: str = scope["path"]
        if not path.startswith(self.api):
            return None
        rest = path[len(self.api) :]
        if not rest or rest.startswith("_catalog"):
            return None
        text = query.decode("latin-1")
        namespace = next((value for key, value in parse_qsl(text) if key == "ns"), "")
        namespace = namespace[: MAX_NS + 1].lower()
        if namespace not in self.prefixes or rest.startswith(namespace + "/"):
            return None
        return f"{self.api}{namespace}/{rest}"

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http":
            path = self.routed(scope)
            if path is not None:
                scope = {**scope, "path": path, "raw_path": path.encode()}
        await self.app(scope, receive, send)
