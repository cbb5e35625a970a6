"""ASGI wrapper around the app: the headers every response carries, and the access log.

Done at the ASGI level so that it sees every response, errors from Quart
itself included, and counts the bytes a streamed blob really sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)

from .auth.grant import user_of

ASGIApp = Any

access_log = logging.getLogger("registry.access")

API_VERSION_HEADER = (b"docker-distribution-api-version", b"registry/2.0")
CONNECTION_CLOSE = (b"connection", b"close")


def _has_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        name = name.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class RegistryMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        headers: Mapping[str, Iterable[str]] | None = None,
        *,
        access_log_enabled: bool = True,
    ) -> None:
        self.app = app
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

        async def send_wrapper(event: ASGISendEvent) -> None:
            nonlocal status, sent
            if event["type"] == "http.response.start":
                status = event["status"]
                closing = [CONNECTION_CLOSE] if body_unread else []
                event["headers"] = [*event["headers"], *extra, *closing]
            elif event["type"] == "http.response.body":
                sent += len(event.get("body", b""))
            await send(event)

        try:
            await self.app(scope, receive_wrapper if body_unread else receive, send_wrapper)
        finally:
            if self.access_log_enabled and access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                query = scope.get("query_string", b"")
                path = scope["path"] + ("?" + query.decode("latin-1") if query else "")
                access_log.info(
                    '%s %s "%s %s HTTP/%s" %d %d %.1fms',
                    client[0] if client else "-",
                    user_of(scope) or "-",
                    scope["method"],
                    path,
                    scope.get("http_version", "1.1"),
                    status,
                    sent,
                    (time.perf_counter() - started) * 1000,
                )
