"""Where the pieces of a blob pulled through wait for a slower reader, so that reader
never holds back the transfer and never grows memory.

Each reader of a transfer has one: the client that asked (a slow client holds back
neither the upstream nor the stored copy) and the store (the client gets the bytes
while they are hashed and written behind it). The transfer puts each piece as it
arrives; the reader takes them in order. Up to ``memory`` bytes wait in memory; past
that, pieces go to an anonymous temporary file (in ``TMPDIR``, unlinked from the
start: nothing stays behind, even after a crash) until the reader has caught up, and
memory serves again. The transfer waits for the local disk, and for the reader only a
little when memory is full: up to ``patience`` (20 ms) at a time, and in all no more
than that plus a tenth of the time since the first piece. A client about as fast as
the upstream thus stays in memory (each spilled piece costs a write and a read of the
file), while one markedly slower holds the transfer back by a tenth at most before it
is spilled, so the store and the clients waiting for it are not held to its pace.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import IO, Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Bytes waiting in memory for the client, at most; past this they wait in the file.
SPOOL_MEMORY = 4 * 1024 * 1024
#: Seconds a full spool waits at a time for its reader to make room before it spills.
PATIENCE = 0.02
#: Its waits add up to ``patience`` plus at most this share of the time since the first
#: piece: a slower reader holds back the transfer by that much, then is spilled.
PATIENT_SHARE = 0.1
#: Pieces go into the file in batches of about this size, and come out in reads of it:
#: fewer thread hops.
SPOOL_BATCH = 1024 * 1024


class BrokenTransferError(Exception):
    """The upstream transfer failed after the reader began: its answer is cut short."""


def _write_at(fd: int, parts: list[bytes], offset: int) -> None:
    for part in parts:
        view = memoryview(part)
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written


class Spool:
    """The pieces of one blob on their way to one reader, in order.

    One writer (the transfer: :meth:`put`, then :meth:`finish` or :meth:`fail`) and one
    reader (:meth:`pieces`), on one event loop. Memory held: at most ``memory`` bytes,
    plus about four batches on their way into the file (one being written, the next
    gathering meanwhile)."""

    def __init__(
        self, memory: int = SPOOL_MEMORY, batch: int = SPOOL_BATCH, patience: float = PATIENCE
    ) -> None:
        self.memory = memory
        self.batch = batch
        self.patience = patience
        self._first_put: float | None = None
        """When the first piece came (the reader's allowance grows from then)."""
        self._waited = 0.0
        self._held: deque[bytes] = deque()
        """In memory, next for the reader (all of them before the file's)."""
        self._held_size = 0
        self._spilling = False
        """Pieces go to the file (through ``_pending``) until the reader drained it."""
        self._pending: list[bytes] = []
        """On their way into the file, after what it holds."""
        self._pending_size = 0
        self._flushing: asyncio.Task[None] | None = None
        """The batch being written to the file (one at a time, in order)."""
        self._file: IO[bytes] | None = None
        self._written = 0
        self._read = 0
        self._busy = 0
        """File work running in threads: the file is closed only once none does (a
        cancelled wait does not stop a thread, and a closed descriptor can be reused)."""
        self._ended = False
        self._error: BaseException | None = None
        self._changed = asyncio.Event()
        self._taken = asyncio.Event()
        """Set when the reader takes a piece from memory (a full spool waits for it)."""
        self.closed = False
        """The reader went away (or has everything): pieces put are dropped."""

    @property
    def in_memory(self) -> int:
        """Bytes held in memory now (for the bound's tests)."""
        return self._held_size + self._pending_size

    @property
    def spilled(self) -> int:
        """Bytes in the file the reader has not taken yet."""
        return self._written - self._read

    async def put(self, piece: bytes) -> None:
        """Queue ``piece``; waits while the file is two batches behind, and a little for a
        reader that keeps up (see the module's docstring)."""
        if self.closed or self._ended:
            return
        if self._first_put is None:
            self._first_put = asyncio.get_running_loop().time()
        if not self._spilling and self._held and self._held_size + len(piece) > self.memory:
            self._spilling = not await self._room_for(len(piece))
            if self.closed or self._ended:
                return
        if not self._spilling:
            self._held.append(piece)
            self._held_size += len(piece)
            self._changed.set()
            return
        self._pending.append(piece)
        self._pending_size += len(piece)
        if self._flushing is not None and self._pending_size >= 2 * self.batch:
            await asyncio.wait([self._flushing])  # The disk is behind: memory stays bounded.
        if self._pending_size >= self.batch and self._flushing is None and self._live:
            self._flushing = asyncio.create_task(self._flush())
        self._changed.set()

    async def _room_for(self, size: int) -> bool:
        """Whether the reader, taking pieces, makes room for ``size`` more bytes within
        what is left of the spool's patience (see the module's docstring)."""
        assert self._first_put is not None  # Set by put, the only caller.
        clock = asyncio.get_running_loop().time
        started = clock()
        earned = self.patience + PATIENT_SHARE * (started - self._first_put) - self._waited
        allowance = min(self.patience, earned)
        if allowance <= 0:
            return False
        try:
            async with asyncio.timeout(allowance):
                while self._held and self._held_size + size > self.memory and not self.closed:
                    self._taken.clear()
                    await self._taken.wait()
                return True
        except TimeoutError:
            return False
        finally:
            self._waited += clock() - started

    @property
    def _live(self) -> bool:
        return not self.closed and self._error is None

    async def _flush(self) -> None:
        batch, size = self._pending, self._pending_size
        self._pending, self._pending_size = [], 0
        try:
            if self._file is None:
                # Opened on the loop (once per spilling reader): a descriptor opened in a
                # thread whose wait is cancelled would be lost.
                self._file = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115 - see _drop
            await self._in_thread(_write_at, self._file.fileno(), batch, self._written)
            if self._live:
                self._written += size
        except OSError as error:
            # A full temporary folder costs this reader its pieces, never the others'.
            log.warning("proxy: a blob's spool file failed: %s", error)
            self.fail(error)
        finally:
            self._flushing = None
            self._changed.set()

    def finish(self) -> None:
        """Every piece was put: the reader's pieces end after them."""
        self._ended = True
        self._changed.set()

    def fail(self, error: BaseException) -> None:
        """The transfer failed before :meth:`finish`: the reader's pieces end with an error
        (what waits is dropped). After :meth:`finish` the reader has all it needs."""
        if self._ended and self._error is None:
            return
        self._error = error
        self._ended = True
        self._drop()
        self._changed.set()

    def close(self) -> None:
        """The reader is gone or has everything: drop what waits, close the file once idle."""
        self.closed = True
        self._drop()
        self._changed.set()
        self._taken.set()

    def _drop(self) -> None:
        self._held.clear()
        self._pending.clear()
        self._held_size = self._pending_size = 0
        self._written = self._read = 0
        if self._busy == 0:
            self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()

    async def _in_thread(self, work: Callable[..., T], *args: Any) -> T:
        self._busy += 1
        future = asyncio.get_running_loop().run_in_executor(None, work, *args)
        future.add_done_callback(self._settled)
        return await asyncio.shield(future)

    def _settled(self, future: asyncio.Future[Any]) -> None:
        self._busy -= 1
        if not future.cancelled():
            future.exception()  # Retrieved: a failure reaches the one who waited, if any.
        if self._busy == 0 and not self._live:
            self._close_file()

    async def pieces(self) -> AsyncIterator[bytes]:
        """The pieces in order; ends after the last, or raises :class:`BrokenTransferError`."""
        try:
            while True:
                if self._error is not None:
                    raise BrokenTransferError(str(self._error)) from self._error
                if self.closed:
                    return
                if self._held:
                    piece = self._held.popleft()
                    self._held_size -= len(piece)
                    self._taken.set()
                    yield piece
                elif self._read < self._written and self._file is not None:
                    length = min(self.batch, self._written - self._read)
                    piece = await self._in_thread(os.pread, self._file.fileno(), length, self._read)
                    if not piece:
                        raise BrokenTransferError("the spool file ended early")
                    if self._live:
                        self._read += len(piece)
                        yield piece
                elif self._spilling and self._flushing is None:
                    # The file is drained: what waits for it comes next, then memory again.
                    self._held.extend(self._pending)
                    self._held_size += self._pending_size
                    self._pending, self._pending_size = [], 0
                    self._written = self._read = 0
                    self._spilling = False
                elif self._ended and not self._spilling:
                    return
                else:
                    self._changed.clear()
                    await self._changed.wait()
        finally:
            self.close()
