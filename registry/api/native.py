"""Reads served straight from ASGI: manifest and blob GET/HEAD, the requests pulls are made of.

A pull is mostly small GETs, and for those Quart's machinery (request and
response objects, context, werkzeug routing and headers) costs twice what the
work itself does. The handlers marked :class:`Native` in the route table take
a :class:`Read` and return a :class:`Reply`; :class:`NativeReads` answers them
before Quart sees the request and hands everything else to Quart. Errors are
the same spec error bodies either way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

from ..auth.grant import Grant, grant_of
from ..config import Config
from ..errors import ErrorCode, RegistryError
from ..storage import Store
from .errors import to_registry_error

READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class Read:
    """A GET or HEAD, as native handlers see it."""

    method: str
    headers: Mapping[bytes, bytes]
    """Lower-case names, as ASGI gives them."""
    query: bytes = b""
    grant: Grant | None = None
    """What access control granted (None when it is off)."""
    config: Config = field(default_factory=Config)

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else None

    def arg(self, name: str) -> str | None:
        """A query parameter's first value, as Quart's ``request.args`` gives it."""
        if not self.query:
            return None
        values = parse_qs(self.query.decode("latin-1"), keep_blank_values=True).get(name)
        return values[0] if values else None

    @classmethod
    def of(
        cls,
        method: str,
        pairs: Iterable[tuple[bytes, bytes]],
        query: bytes = b"",
        grant: Grant | None = None,
        config: Config | None = None,
    ) -> Read:
        """A read with a repeated header's values joined by commas (RFC 9110, 5.3).

        Docker's client sends one ``Accept`` per media type; keeping only the
        last would refuse it manifests it can read.
        """
        headers: dict[bytes, bytes] = {}
        for name, value in pairs:
            name = name.lower()
            headers[name] = headers[name] + b", " + value if name in headers else value
        return cls(method, headers, query, grant, config or Config())


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes | AsyncIterator[bytes] = b""


@dataclass(frozen=True, slots=True)
class Native:
    """A route-table entry answered by :class:`NativeReads`, not by Quart."""

    handler: Callable[..., Awaitable[Reply]]
    """Called as ``handler(store, read, **route arguments)``."""


def error_reply(error: RegistryError, read_method: str) -> Reply:
    body = error.body()
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        **error.headers,
    }
    return Reply(error.status, headers, b"" if read_method == "HEAD" else body)


Matcher = Callable[[str], "tuple[Any, dict[str, str]] | None"]


@dataclass(slots=True)
class NativeReads:
    """The ASGI app in front of Quart: answers :class:`Native` routes itself."""

    app: Any
    store: Store
    match: Matcher
    """The route table's matcher, for the path after ``/v2/``."""
    prefix: str = ""
    guarded: bool = False
    """Access control is on: a request the guard has not passed is refused."""
    config: Config = field(default_factory=Config)
    """What handlers may read of the configuration (page sizes, the prefix)."""

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http" and scope["method"] in READ_METHODS:
            start = f"{self.prefix}/v2/"
            path: str = scope["path"]
            if path.startswith(start):
                found = self.match(path[len(start) :])
                if found is not None:
                    route, arguments = found
                    handler = route.methods.get(scope["method"])
                    if isinstance(handler, Native):
                        await self._serve(handler, arguments, scope, receive, send)
                        return
        await self.app(scope, receive, send)

    async def _serve(
        self,
        handler: Native,
        arguments: dict[str, str],
        scope: HTTPScope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
    ) -> None:
        grant = grant_of(scope)
        read = Read.of(scope["method"], scope["headers"], scope["query_string"], grant, self.config)
        if self.guarded and grant is None:
            # Access control is on but the guard did not run: refuse rather than serve.
            reply = error_reply(RegistryError(ErrorCode.UNAUTHORIZED), read.method)
        else:
            try:
                reply = await handler.handler(self.store, read, **arguments)
            except Exception as error:
                reply = error_reply(to_registry_error(error), read.method)
        await send_reply(reply, receive, send, read.method)


async def send_reply(
    reply: Reply, receive: ASGIReceiveCallable, send: ASGISendCallable, method: str = "GET"
) -> None:
    """Send a reply over ASGI; a HEAD gets the headers alone."""
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in reply.headers.items()
    ]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    if isinstance(reply.body, bytes):
        body = b"" if method == "HEAD" else reply.body
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return
    await _stream(reply.body, receive, send)


async def _stream(
    body: AsyncIterator[bytes], receive: ASGIReceiveCallable, send: ASGISendCallable
) -> None:
    """Send a streamed body; stop reading it as soon as the client goes away."""

    async def pump() -> None:
        async for chunk in body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    pumping = asyncio.ensure_future(pump())
    watching = asyncio.ensure_future(watch())
    try:
        await asyncio.wait((pumping, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pumping, watching):
            task.cancel()
        for task in (pumping, watching):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()
    if pumping.done() and not pumping.cancelled() and pumping.exception() is not None:
        raise pumping.exception()  # type: ignore[misc]
