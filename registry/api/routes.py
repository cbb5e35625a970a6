"""The route table, the one place a URL is matched to a handler.

Repository names contain slashes, so routes match the path after ``/v2/``
with regular expressions (as distribution's route descriptors do) and the
name is checked against the grammar by the handler, giving ``NAME_INVALID``
rather than a bare 404 for a bad name.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from quart import Response, request

from ..errors import ErrorCode, RegistryError
from . import base, blobs, catalog, manifests, referrers, tags, uploads
from .context import services
from .native import Native, Read
from .responses import respond

Handler = Callable[..., Awaitable[Response]] | Native

WRITE_METHODS = frozenset({"PUT", "POST", "PATCH", "DELETE"})
ALL_METHODS = ("GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS")


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    pattern: re.Pattern[str]
    methods: Mapping[str, Handler]


def _route(name: str, pattern: str, methods: Mapping[str, Handler]) -> Route:
    return Route(name, re.compile(pattern, re.DOTALL), methods)


# Order matters where patterns overlap: uploads before blobs.
ROUTES: tuple[Route, ...] = (
    _route("base", r"", {"GET": base.check, "HEAD": base.check}),
    _route("catalog", r"_catalog", {"GET": catalog.list_repositories}),
    _route("tags", r"(?P<name>.+)/tags/list", {"GET": tags.list_tags}),
    _route(
        "manifest",
        r"(?P<name>.+)/manifests/(?P<reference>[^/]+)",
        {
            "GET": Native(manifests.read_manifest),
            "HEAD": Native(manifests.read_manifest),
            "PUT": manifests.put_manifest,
            "DELETE": manifests.delete_manifest,
        },
    ),
    _route("blob-upload", r"(?P<name>.+)/blobs/uploads/?", {"POST": uploads.start_upload}),
    _route(
        "blob-upload-chunk",
        r"(?P<name>.+)/blobs/uploads/(?P<upload_id>[^/]+)",
        {
            "GET": uploads.get_upload_status,
            "PATCH": uploads.patch_upload,
            "PUT": uploads.complete_upload,
            "DELETE": uploads.cancel_upload,
        },
    ),
    _route(
        "blob",
        r"(?P<name>.+)/blobs/(?P<digest>[^/]+)",
        {
            "GET": Native(blobs.read_blob),
            "HEAD": Native(blobs.read_blob),
            "DELETE": blobs.delete_blob,
        },
    ),
    _route(
        "referrers", r"(?P<name>.+)/referrers/(?P<digest>[^/]+)", {"GET": referrers.list_referrers}
    ),
)


def match(path: str) -> tuple[Route, dict[str, Any]] | None:
    for route in ROUTES:
        found = route.pattern.fullmatch(path)
        if found is not None:
            return route, found.groupdict()
    return None


async def dispatch(rest: str = "") -> Response:
    """Find the route for the path after ``/v2/``, apply the write guards, call the handler."""
    found = match(rest)
    if found is None:
        raise RegistryError(ErrorCode.UNSUPPORTED, "no such API endpoint", status=404)
    route, arguments = found
    method = request.method
    handler = route.methods.get(method)
    if handler is None:
        allowed = ", ".join(sorted(route.methods))
        raise RegistryError(
            ErrorCode.UNSUPPORTED,
            f"method {method} not allowed here",
            detail={"allowed": sorted(route.methods)},
            headers={"Allow": allowed},
        )
    if method in WRITE_METHODS and services().config.storage.readonly:
        raise RegistryError(
            ErrorCode.UNSUPPORTED,
            "the registry is in read-only mode (storage.maintenance.readonly)",
        )
    if isinstance(handler, Native):
        # Answered before Quart when served through NativeReads; here for the
        # Quart app on its own (tests, or another ASGI server in front).
        read = Read(
            method,
            {k.lower().encode("latin-1"): v.encode("latin-1") for k, v in request.headers.items()},
        )
        reply = await handler.handler(services().store, read, **arguments)
        return respond(reply.status, reply.headers, b"" if method == "HEAD" else reply.body)
    return await handler(**arguments)
