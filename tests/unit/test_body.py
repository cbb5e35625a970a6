"""Request bodies: a fast client is held to a window of unread bytes from its first
byte, whether or not the handler has started reading; a body awaited whole is not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from registry.body import MAX_UNREAD, StreamedBody

PIECE = b"x" * 65536


async def _held(body: StreamedBody) -> bool:
    """Whether the receiver would wait now (it awaits ``drained`` after each piece)."""
    waiting = asyncio.ensure_future(body.drained())
    await asyncio.sleep(0)
    held = not waiting.done()
    waiting.cancel()
    return held


def _fill(body: StreamedBody) -> int:
    """Append pieces up to the window, as the receiver does; the bytes appended."""
    appended = 0
    while appended < MAX_UNREAD:
        body.append(PIECE)
        appended += len(PIECE)
    return appended


async def test_a_body_nobody_reads_yet_holds_the_client_at_the_window() -> None:
    body = StreamedBody(None, None)
    body.append(PIECE)
    assert not await _held(body)
    _fill(body)
    assert await _held(body)


async def test_reading_below_the_window_lets_the_client_go_on() -> None:
    body = StreamedBody(None, None)
    appended = _fill(body)
    pieces: AsyncIterator[bytes] = aiter(body)
    read = 0
    while appended - read >= MAX_UNREAD:
        read += len(await anext(pieces))
    assert not await _held(body)


async def test_a_body_awaited_whole_is_never_held() -> None:
    body = StreamedBody(None, None)
    appended = _fill(body)
    assert await _held(body)  # The handler has not asked for it yet.
    whole = asyncio.ensure_future(_whole(body))
    await asyncio.sleep(0)
    assert not await _held(body)  # Nothing would drain it: the receiver goes on.
    appended += _fill(body)
    assert not await _held(body)
    body.set_complete()
    assert len(await whole) == appended


async def _whole(body: StreamedBody) -> bytes:
    return await body
