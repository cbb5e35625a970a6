"""The digest of a blob pulled through, computed beside the relay to the client.

The client's last piece waits until the digest of everything is known to match. Taken
from the store, it would make the client wait for every byte to be written; computed
here, in a thread of its own fed piece by piece (no trip through the event loop per
piece), it keeps up with the relay. The store compares this digest with the one asked
for before it keeps the blob (it does not hash the pieces again).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import queue
import threading
from collections.abc import Callable

#: Bytes handed to the thread and not hashed yet, at most: past this the relay waits.
HASH_AHEAD = 8 * 1024 * 1024
#: Blobs up to this size (configs, small layers) are hashed as they pass, in the event
#: loop: a thread would cost more than the hashing.
INLINE_HASH = 64 * 1024


def _retrieved(future: asyncio.Future[str]) -> None:
    """A failure nobody waited for (the relay stopped first) is not reported."""
    if not future.cancelled():
        future.exception()


class RelayHasher:
    """Hashes the pieces given to :meth:`feed`, in order, in a thread that ends with
    :meth:`hexdigest` or :meth:`stop` (whichever comes first); or, not ``threaded``,
    as they are fed."""

    def __init__(self, algorithm: str, limit: int = HASH_AHEAD, *, threaded: bool = True) -> None:
        self.limit = limit
        self.threaded = threaded
        self._hash = hashlib.new(algorithm)
        self._pieces: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued = 0
        self._waiting = False
        self._loop = asyncio.get_running_loop()
        self._room = asyncio.Event()
        self._result: asyncio.Future[str] = self._loop.create_future()
        self._result.add_done_callback(_retrieved)
        self._stopped = not threaded
        if threaded:
            thread = threading.Thread(target=self._run, name="relay-hasher", daemon=True)
            thread.start()

    async def feed(self, piece: bytes) -> None:
        """Hand ``piece`` over; waits only while the thread is ``limit`` bytes behind."""
        if not self.threaded:
            self._hash.update(piece)
            return
        if self._result.done():
            self._result.result()  # The thread failed: so does the relay.
        with self._lock:
            self._queued += len(piece)
            behind = self._queued > self.limit
            if behind:
                self._waiting = True
                self._room.clear()
        self._pieces.put(piece)
        if behind:
            await self._room.wait()

    async def hexdigest(self) -> str:
        """The digest of every piece fed; the thread ends."""
        if not self.threaded:
            return self._hash.hexdigest()
        self.stop()
        return await asyncio.shield(self._result)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._pieces.put(None)

    def _run(self) -> None:
        try:
            update = self._hash.update
            while (piece := self._pieces.get()) is not None:
                update(piece)
                with self._lock:
                    self._queued -= len(piece)
                    wake = self._waiting and self._queued <= self.limit // 2
                    if wake:
                        self._waiting = False
                if wake:
                    self._call(self._room.set)
            self._call(self._settle, self._hash.hexdigest(), None)
        except BaseException as error:  # Never a relay waiting forever.
            self._call(self._settle, "", error)
            self._call(self._room.set)

    def _settle(self, hexdigest: str, error: BaseException | None) -> None:
        if self._result.done():
            return
        if error is not None:
            self._result.set_exception(error)
        else:
            self._result.set_result(hexdigest)

    def _call(self, callback: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # The loop closed (the worker stopped).
            self._loop.call_soon_threadsafe(callback, *args)
