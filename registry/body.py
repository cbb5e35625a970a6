"""Request bodies with backpressure and no copying, so a 1 GiB push stays small and fast.

Quart's receiver task reads the whole body off the connection as fast as the
network delivers it and copies every piece into one growing buffer, whatever
the handler consumes: a monolithic 1 GiB push took a worker to 700 MB, and the
copies cost more CPU than hashing the blob. Here the pieces are queued as they
came (no copy), and the receiver waits while more than :data:`MAX_UNREAD`
bytes are queued, so the client is slowed to the pace of the disk instead.
The window holds from the first byte, before the handler starts reading (an
upload first takes its session's lock and opens its file: a fast client would
otherwise queue the whole body meanwhile). A body awaited whole (``await
request.body``) is not held back: nothing would drain it; a handler that
answers without reading the body ends the receiver with it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Generator
from typing import Any

from quart.asgi import ASGIHTTPConnection
from quart.wrappers import Request
from quart.wrappers.request import Body

#: Unread bytes queued before the receiver waits. With the upload's write batch
#: (storage/uploads.py) and Hypercorn's queue (server.py), under 3 MiB per upload in
#: flight; 4 MiB measured no faster and cost memory with every upload in flight.
MAX_UNREAD = 1024 * 1024


class StreamedBody(Body):
    """Quart's Body interface over a queue of the pieces received."""

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self._pieces: deque[bytes] = deque()
        self._queued = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._whole = False

    def __aiter__(self) -> StreamedBody:
        return self

    async def __anext__(self) -> bytes:
        if self._must_raise is not None:
            raise self._must_raise
        while not self._pieces:
            if self._complete.is_set():
                raise StopAsyncIteration
            self._has_data.clear()
            await self._has_data.wait()
        piece = self._pieces.popleft()
        self._queued -= len(piece)
        if self._queued < MAX_UNREAD:
            self._drained.set()
        return piece

    def __await__(self) -> Generator[Any, None, Any]:
        self._whole = True
        self._drained.set()
        if self._must_raise is not None:
            raise self._must_raise
        yield from self._complete.wait().__await__()
        if self._must_raise is not None:
            raise self._must_raise
        return b"".join(self._pieces)

    def append(self, data: bytes) -> None:
        if not data or self._must_raise is not None:
            return
        self._pieces.append(data)
        self._queued += len(data)
        self._has_data.set()
        if not self._whole and self._queued >= MAX_UNREAD:
            self._drained.clear()

    def clear(self) -> None:
        self._pieces.clear()
        self._queued = 0
        self._drained.set()

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
