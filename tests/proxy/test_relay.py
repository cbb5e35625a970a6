"""A blob pulled through, in this process: the client gets the upstream's bytes ahead of
the store, each side at its own pace, with every guarantee kept.

The upstream is an httpx mock transport (so it can be cut, corrupted, or made to send
fast) and the store runs on a driver that can hold back or fail its writes: each test
makes one side slow by waiting for the other, never by timing.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator

import httpx
import pytest

from registry.config import ProxyUpstream
from registry.proxy.blobs import BlobPuller, Transfer
from registry.proxy.claims import Claims
from registry.proxy.client import UpstreamClient
from registry.proxy.errors import UpstreamInvalidError
from registry.proxy.hashing import RelayHasher
from registry.proxy.spool import SPOOL_BATCH, SPOOL_MEMORY, BrokenTransferError, Spool
from registry.reference import Digest
from registry.storage import Repository, Store, paths
from registry.storage.driver import FileWriter, PathNotFoundError, StorageDriverError
from registry.storage.driver.inmemory import InMemoryDriver

MIB = 1024 * 1024
PIECE = 256 * 1024
REMOTE = "lib/app"


class GatedWriter(FileWriter):
    """An in-memory writer whose writes wait for the driver's gate, or fail."""

    def __init__(self, inner: FileWriter, driver: GatedDriver) -> None:
        self.inner = inner
        self.driver = driver

    @property
    def size(self) -> int:
        return self.inner.size

    async def write(self, data: bytes) -> None:
        await self.driver.gate.wait()
        if self.driver.failing:
            raise StorageDriverError("the disk is full")
        self.driver.written += len(data)
        await self.inner.write(data)

    async def commit(self) -> None:
        await self.inner.commit()

    async def cancel(self) -> None:
        await self.inner.cancel()

    async def rollback(self) -> None:
        await self.inner.rollback()

    async def close(self) -> None:
        await self.inner.close()


class GatedDriver(InMemoryDriver):
    """Blob writes (upload sessions) wait until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.failing = False
        self.written = 0

    async def _writer(self, path: str, append: bool) -> FileWriter:
        return GatedWriter(await super()._writer(path, append), self)


def _upstream(body: bytes, *, length: int | None = None) -> httpx.AsyncClient:
    """An upstream sending ``body`` in pieces as fast as they are taken, announcing
    ``length`` (the body's own by default)."""

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), PIECE):
            yield body[start : start + PIECE]

    async def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Length": str(len(body) if length is None else length)}
        return httpx.Response(200, headers=headers, content=pieces())

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def _digest(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


class Pull:
    """One blob pulled through by a puller, into a store on ``driver``."""

    def __init__(self, driver: GatedDriver, http: httpx.AsyncClient) -> None:
        self.driver = driver
        self.store = Store(driver)
        self.repo: Repository = self.store.repository(REMOTE)
        self.client = UpstreamClient(ProxyUpstream("http://upstream.test"), http)
        self.puller = BlobPuller()
        self.claims = Claims(None)

    async def start(self, digest: Digest, listen: bool = True) -> Transfer:
        claim = await self.claims.try_claim(digest)
        assert claim is not None
        return self.puller.start(self.repo, self.client, REMOTE, digest, listen, claim)

    async def stored(self, digest: Digest) -> bool:
        return await self.repo.blobs.is_linked(digest)

    async def sessions(self) -> list[str]:
        try:
            return await self.driver.list(paths.uploads(REMOTE))
        except PathNotFoundError:
            return []

    async def ended(self) -> None:
        """Every transfer task has ended and none is left registered."""
        while self.puller.tasks:
            await asyncio.wait(list(self.puller.tasks))
        assert self.puller.transfers == {}
        assert os.listdir(self.claims.folder) == []  # Every claim released, stored or not.

    async def close(self) -> None:
        await self.puller.close()
        await self.client.http.aclose()
        self.claims.close()


async def _read(pieces: AsyncIterator[bytes], received: list[bytes]) -> None:
    async for piece in pieces:
        received.append(piece)


async def test_a_slow_client_holds_back_neither_the_upstream_nor_the_store() -> None:
    blob = os.urandom(12 * MIB)
    digest = _digest(blob)
    pull = Pull(GatedDriver(), _upstream(blob))
    descriptors = _open_descriptors()
    transfer = await pull.start(digest)
    spool = transfer.spool
    assert spool is not None
    assert await transfer.size == len(blob)
    # The client reads nothing yet: the blob is stored, verified, all the same.
    await asyncio.wait_for(asyncio.shield(transfer.done), 60)
    assert await pull.stored(digest)
    assert await pull.store.blobs.get(digest) == blob
    assert await pull.sessions() == []
    # What it has not read waits in a file, not in memory.
    assert spool.in_memory <= SPOOL_MEMORY + 2 * SPOOL_BATCH + PIECE
    assert spool.spilled > 0
    received: list[bytes] = []
    await _read(spool.pieces(), received)
    assert b"".join(received) == blob
    await pull.ended()
    await pull.close()
    assert _open_descriptors() == descriptors  # The spool's file is closed.


async def test_a_slow_store_does_not_hold_back_the_client() -> None:
    blob = os.urandom(24 * MIB)
    digest = _digest(blob)
    driver = GatedDriver()
    driver.gate.clear()  # The store writes nothing until the client has every byte.
    pull = Pull(driver, _upstream(blob))
    descriptors = _open_descriptors()
    transfer = await pull.start(digest)
    assert transfer.spool is not None
    received: list[bytes] = []
    await asyncio.wait_for(_read(transfer.spool.pieces(), received), 60)
    assert b"".join(received) == blob  # Verified by the relay's own digest.
    assert driver.written == 0 and not transfer.done.done()
    assert not await pull.stored(digest)
    driver.gate.set()
    await asyncio.wait_for(asyncio.shield(transfer.done), 60)
    assert await pull.stored(digest)
    assert await pull.store.blobs.get(digest) == blob
    await pull.ended()
    await pull.close()
    assert _open_descriptors() == descriptors  # The store's spool file too.


async def _nothing_stored(pull: Pull, digest: Digest) -> None:
    assert not await pull.stored(digest)
    with pytest.raises(PathNotFoundError):
        await pull.driver.stat(paths.blob_data(digest))
    assert await pull.sessions() == []


@pytest.mark.parametrize("slow_store", [False, True])
async def test_a_cut_upstream_stores_nothing_and_cuts_the_client(slow_store: bool) -> None:
    blob = os.urandom(8 * MIB)
    digest = _digest(blob)
    driver = GatedDriver()
    if slow_store:
        driver.gate.clear()
    # The upstream announces twice what it sends, then ends.
    pull = Pull(driver, _upstream(blob, length=2 * len(blob)))
    transfer = await pull.start(digest)
    assert transfer.spool is not None
    received: list[bytes] = []
    with pytest.raises(BrokenTransferError):
        await asyncio.wait_for(_read(transfer.spool.pieces(), received), 60)
    assert sum(map(len, received)) < 2 * len(blob)
    with pytest.raises(UpstreamInvalidError, match="cut at"):
        await asyncio.shield(transfer.done)
    driver.gate.set()
    await pull.ended()
    await _nothing_stored(pull, digest)
    await pull.close()


@pytest.mark.parametrize("size", [1000, 9 * MIB])
async def test_a_wrong_digest_never_gives_the_client_the_last_piece(size: int) -> None:
    blob = os.urandom(size)
    wrong = blob[:-1] + bytes([blob[-1] ^ 0xFF])
    digest = _digest(blob)
    pull = Pull(GatedDriver(), _upstream(wrong))
    transfer = await pull.start(digest)
    assert transfer.spool is not None
    received: list[bytes] = []
    with pytest.raises(BrokenTransferError):
        await asyncio.wait_for(_read(transfer.spool.pieces(), received), 60)
    body = b"".join(received)
    assert len(body) < len(wrong) and wrong.startswith(body)
    with pytest.raises(UpstreamInvalidError, match="digest"):
        await asyncio.shield(transfer.done)
    await pull.ended()
    await _nothing_stored(pull, digest)
    await pull.close()


@pytest.mark.parametrize("listen", [True, False], ids=["client-gone", "range-request"])
async def test_a_wrong_digest_is_not_stored_when_no_client_reads(listen: bool) -> None:
    """The store compares the relay's digest and does not hash again: the relay hashes
    every piece whether a client still reads (gone mid-way) or none ever did (a range
    request waits for the stored copy)."""
    blob = os.urandom(9 * MIB)
    wrong = blob[:-1] + bytes([blob[-1] ^ 0xFF])
    digest = _digest(blob)
    pull = Pull(GatedDriver(), _upstream(wrong))
    transfer = await pull.start(digest, listen=listen)
    if transfer.spool is not None:
        pieces = transfer.spool.pieces()
        assert await anext(pieces)
        await pieces.aclose()  # The client went away.
    with pytest.raises(UpstreamInvalidError, match="digest"):
        await asyncio.wait_for(asyncio.shield(transfer.done), 60)
    await pull.ended()
    await _nothing_stored(pull, digest)
    await pull.close()


async def test_a_client_gone_mid_way_leaves_the_store_to_finish() -> None:
    blob = os.urandom(12 * MIB)
    digest = _digest(blob)
    pull = Pull(GatedDriver(), _upstream(blob))
    descriptors = _open_descriptors()
    transfer = await pull.start(digest)
    assert transfer.spool is not None
    pieces = transfer.spool.pieces()
    assert await anext(pieces)
    await pieces.aclose()  # The client went away.
    assert transfer.spool.closed
    await asyncio.wait_for(asyncio.shield(transfer.done), 60)
    assert await pull.store.blobs.get(digest) == blob
    await pull.ended()
    await pull.close()
    assert _open_descriptors() == descriptors


async def test_a_store_that_fails_still_gives_the_client_the_verified_blob() -> None:
    blob = os.urandom(6 * MIB)
    digest = _digest(blob)
    driver = GatedDriver()
    driver.failing = True
    pull = Pull(driver, _upstream(blob))
    transfer = await pull.start(digest)
    assert transfer.spool is not None
    received: list[bytes] = []
    await asyncio.wait_for(_read(transfer.spool.pieces(), received), 60)
    assert b"".join(received) == blob
    with pytest.raises(Exception, match="disk is full"):
        await asyncio.shield(transfer.done)
    await pull.ended()
    await _nothing_stored(pull, digest)
    await pull.close()


# --- the parts ---


async def test_a_spool_keeps_the_order_through_memory_and_file() -> None:
    """A reader that falls behind, catches up, and falls behind again gets every piece
    in order, with memory bounded."""
    spool = Spool(memory=64 * 1024, batch=32 * 1024)
    pieces = [os.urandom(1 + (i * 7919) % 20000) for i in range(400)]
    received: list[bytes] = []
    peak = 0
    reader = spool.pieces()
    for number, piece in enumerate(pieces):
        await spool.put(piece)
        peak = max(peak, spool.in_memory)
        if (number // 100) % 2:  # Every other hundred pieces, the reader keeps up.
            received.append(await anext(reader))
    spool.finish()
    received.extend([piece async for piece in reader])
    assert b"".join(received) == b"".join(pieces)
    assert peak <= 64 * 1024 + 2 * 32 * 1024 + 20000
    assert spool.closed


async def _read_pausing(spool: Spool, received: list[bytes], pause: float) -> None:
    """A reader that takes every piece, then pauses ``pause`` seconds before the next."""
    async for piece in spool.pieces():
        received.append(piece)
        await asyncio.sleep(pause)


async def test_a_full_spool_waits_a_moment_for_a_reader_that_keeps_up() -> None:
    """A reader about as fast as the transfer is served from memory (writing every piece
    to the file and reading it back would cost a pull through a third more CPU); one
    that stops makes the spool spill once its patience runs out, never wait longer."""
    pieces = [os.urandom(16 * 1024) for _ in range(200)]
    keeping_up = Spool(memory=64 * 1024, batch=32 * 1024, patience=5.0)
    received: list[bytes] = []
    reading = asyncio.create_task(_read_pausing(keeping_up, received, 0.001))
    peak = 0
    for piece in pieces:
        await keeping_up.put(piece)
        peak = max(peak, keeping_up.in_memory)
        assert keeping_up.spilled == 0
    keeping_up.finish()
    await reading
    assert b"".join(received) == b"".join(pieces)
    assert peak <= 64 * 1024
    stalled = Spool(memory=64 * 1024, batch=32 * 1024, patience=0.05)
    await stalled.put(pieces[0])
    reader = stalled.pieces()
    assert await anext(reader) == pieces[0]
    for piece in pieces[1:]:
        await stalled.put(piece)  # The reader never comes back: not a wait per piece.
    assert stalled.in_memory + stalled.spilled == 199 * 16 * 1024
    assert stalled.spilled > 0
    await reader.aclose()
    # A reader that keeps taking pieces, but at a fifth of the pace: the spool waits for
    # it a tenth of the time at most, then spills; the transfer is not held to its pace.
    slower = Spool(memory=64 * 1024, batch=32 * 1024, patience=0.05)
    taken: list[bytes] = []
    reading = asyncio.create_task(_read_pausing(slower, taken, 0.005))
    clock = asyncio.get_running_loop().time
    for piece in pieces:
        started = clock()
        await slower.put(piece)
        await asyncio.sleep(max(0.0, 0.001 - (clock() - started)))  # A piece a millisecond.
    assert slower.spilled > 0
    assert len(taken) < len(pieces) // 2  # The puts ended long before the reader will.
    slower.finish()
    await reading
    assert b"".join(taken) == b"".join(pieces)


async def test_a_spool_fails_its_reader_but_not_after_finishing() -> None:
    descriptors = _open_descriptors()
    failed = Spool(memory=1024, batch=1024)
    for _ in range(10):
        await failed.put(os.urandom(1000))
    failed.fail(RuntimeError("cut"))
    with pytest.raises(BrokenTransferError, match="cut"):
        [piece async for piece in failed.pieces()]
    finished = Spool(memory=1024, batch=1024)
    for _ in range(10):
        await finished.put(b"x" * 1000)
    finished.finish()
    finished.fail(RuntimeError("the store failed after the client had everything"))
    assert b"".join([piece async for piece in finished.pieces()]) == b"x" * 10000
    for _ in range(1000):  # A batch on its way into a file when the reader left.
        if _open_descriptors() == descriptors:
            break
        await asyncio.sleep(0.01)
    assert _open_descriptors() == descriptors


async def test_the_relay_hasher_digests_in_its_thread_and_ends() -> None:
    data = os.urandom(3 * MIB + 5)
    hasher = RelayHasher("sha256", limit=MIB)
    for start in range(0, len(data), PIECE):
        await hasher.feed(data[start : start + PIECE])
    assert await hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    inline = RelayHasher("sha512", threaded=False)  # A small blob: no thread.
    await inline.feed(b"abc")
    assert await inline.hexdigest() == hashlib.sha512(b"abc").hexdigest()
    stopped = RelayHasher("sha256")
    await stopped.feed(b"abc")
    stopped.stop()
    for thread in threading.enumerate():
        if thread.name == "relay-hasher":
            thread.join(10)
    assert not [t for t in threading.enumerate() if t.name == "relay-hasher"]
