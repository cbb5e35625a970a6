"""Request bodies with backpressure, so a 1 GiB push never sits in memory.

Quart's receiver task reads the whole body off the connection as fast as the
network delivers it and queues it in memory, whatever the handler consumes.
Here the receiver waits while more than :data:`MAX_UNREAD` bytes are queued
for a handler that streams the body, so the client is slowed to the pace of
the disk instead. A body awaited whole (``await request.body``) is not held
back: nothing would drain it.
"""

from __future__ import annotations

import asyncio

from quart.asgi import ASGIHTTPConnection
from quart.wrappers import Request
from quart.wrappers.request import Body

#: Unread bytes a streaming handler may have queued before the receiver waits.
MAX_UNREAD = 4 * 1024 * 1024


class StreamedBody(Body):
    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self._drained = asyncio.Event()
        self._drained.set()
        self._streaming = False

    def __aiter__(self) -> StreamedBody:
        self._streaming = True
        return self

    async def __anext__(self) -> bytes:
        try:
            return await super().__anext__()
        finally:
            self._drained.set()

    def append(self, data: bytes) -> None:
        super().append(data)
        if self._streaming and len(self._data) >= MAX_UNREAD:
            self._drained.clear()

    async def drained(self) -> None:
        await self._drained.wait()


class StreamedRequest(Request):
    body_class = StreamedBody


class StreamedConnection(ASGIHTTPConnection):
    """Quart's connection, with a receiver that waits for the handler to catch up."""

    async def handle_messages(self, request: Request, receive: object) -> None:
        body = request.body
        while True:
            message = await receive()  # type: ignore[operator]
            if message["type"] == "http.request":
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body.set_complete()
                elif isinstance(body, StreamedBody):
                    await body.drained()
            elif message["type"] == "http.disconnect":
                return
