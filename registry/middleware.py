"""ASGI wrapper around the app: the headers every response carries, the access log, metrics.

Done at the ASGI level so that it sees every response, errors from Quart
itself included, and counts the bytes a streamed blob really sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)

from .api.native import error_reply, send_reply
from .auth.grant import user_of
from .errors import ErrorCode, RegistryError
from .logs import LOG_FIELDS

if TYPE_CHECKING:
    from .metrics import Recorder

ASGIApp = Any

access_log = logging.getLogger("registry.access")

#: Where a pull-through cache leaves what it did for a request (hit, miss, stale).
CACHE_SCOPE_KEY = "registry.cache"

API_VERSION_HEADER = (b"docker-distribution-api-version", b"registry/2.0")
CONNECTION_CLOSE = (b"connection", b"close")


def _access_fields(
    method: str,
    headers: Iterable[tuple[bytes, bytes]],
    client: Any,
    user: str | None,
    path: str,
    status: int,
    sent: int,
    duration: float,
) -> dict[str, object]:
    """registry:2's field names for an access line, so its log queries keep working."""
    agent = next((v for k, v in headers if k == b"user-agent"), b"")
    fields: dict[str, object] = {
        "http.request.method": method,
        "http.request.uri": path,
        "http.request.remoteaddr": client[0] if client else "",
        "http.request.useragent": agent.decode("latin-1")[:256],
        "http.response.status": status,
        "http.response.written": sent,
        "http.response.duration": f"{duration * 1000:.3f}ms",
    }
    if user:
        fields["auth.user.name"] = user
    return fields


def _has_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        name = name.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


#: After an early answer, the most of the request body read (and dropped), and for how
#: long, before the connection is closed under the client anyway.
DRAIN_BYTES = 64 * 1024 * 1024
DRAIN_SECONDS = 10.0

#: A Host header as DNS names and addresses can be: longer ones, or labels over 63
#: characters, made the URL machinery fail deep inside the framework.
_HOST_RE = re.compile(
    r"(?:\[[0-9A-Fa-f:.]{2,45}\]|(?:[A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?)(?::\d{1,5})?"
)


def _valid_host(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b"host":
            return len(value) <= 261 and _HOST_RE.fullmatch(value.decode("latin-1")) is not None
    return True  # HTTP/1.0 may send none.


async def _drain(receive: ASGIReceiveCallable) -> None:
    left = DRAIN_BYTES
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_SECONDS):
            while left > 0:
                event = await receive()
                if event["type"] != "http.request":
                    return
                left -= len(event.get("body", b""))
                if not event.get("more_body", False):
                    return


class RegistryMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        headers: Mapping[str, Iterable[str]] | None = None,
        *,
        access_log_enabled: bool = True,
        metrics: Recorder | None = None,
        prefix: str = "",
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.api = f"{prefix}/v2"
        self.headers: list[tuple[bytes, bytes]] = [API_VERSION_HEADER]
        for name, values in (headers or {}).items():
            self.headers.extend(
                (name.lower().encode("latin-1"), v.encode("latin-1")) for v in values
            )
        self.access_log_enabled = access_log_enabled

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        sent = 0
        extra = self.headers
        record = None if self.metrics is None else self.metrics.request(scope, receive, self.api)
        if record is not None:
            receive = record.receive  # Counts a push's bytes; the same callable otherwise.
        # An HTTP/1 request answered before its body was read (an error, or a body the
        # endpoint does not take) leaves the rest of the body on the connection, and
        # Hypercorn then closes it: the response must say so, or the client sends its
        # next request into a connection that is going away.
        body_unread = scope.get("http_version") in ("1.0", "1.1") and _has_body(scope["headers"])

        async def receive_wrapper() -> ASGIReceiveEvent:
            nonlocal body_unread
            event = await receive()
            if event["type"] != "http.request" or not event.get("more_body", False):
                body_unread = False
            return event

        held_end = False

        async def send_wrapper(event: ASGISendEvent) -> None:
            nonlocal status, sent, held_end
            if event["type"] == "http.response.start":
                status = event["status"]
                closing = [CONNECTION_CLOSE] if body_unread else []
                event["headers"] = [*event["headers"], *extra, *closing]
            elif event["type"] == "http.response.body":
                sent += len(event.get("body", b""))
                if body_unread and not event.get("more_body", False):
                    # Answered before the body was read. Hypercorn closes the connection
                    # the moment a response ends, and a client still sending then sees a
                    # reset, not the answer: the answer goes out now, its end after the
                    # rest of the body is read (and dropped), once the app is done.
                    held_end = True
                    if not event.get("body"):
                        return
                    event = {"type": "http.response.body", "body": event["body"], "more_body": True}
            await send(event)

        try:
            if not _valid_host(scope["headers"]):
                error = RegistryError(ErrorCode.UNSUPPORTED, "malformed Host header", status=400)
                reply = error_reply(error, scope["method"])
                await send_reply(reply, receive_wrapper, send_wrapper, scope["method"])
            else:
                await self.app(scope, receive_wrapper if body_unread else receive, send_wrapper)
            if held_end:
                if body_unread:
                    await _drain(receive_wrapper)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if record is not None:
                record.finish(status, sent, time.perf_counter() - started)
            if self.access_log_enabled and access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                query = scope.get("query_string", b"")
                path = scope["path"] + ("?" + query.decode("latin-1") if query else "")
                user = user_of(scope)
                duration = time.perf_counter() - started
                fields = _access_fields(
                    scope["method"], scope["headers"], client, user, path, status, sent, duration
                )
                cache = scope.get(CACHE_SCOPE_KEY)  # What a pull-through cache did.
                if cache is not None:
                    fields["registry.cache"] = cache
                access_log.info(
                    '%s %s "%s %s HTTP/%s" %d %d %.1fms%s',
                    client[0] if client else "-",
                    user or "-",
                    scope["method"],
                    path,
                    scope.get("http_version", "1.1"),
                    status,
                    sent,
                    duration * 1000,
                    f" cache={cache}" if cache is not None else "",
                    extra={LOG_FIELDS: fields},
                )
