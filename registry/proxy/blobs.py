"""Blobs pulled through: one upstream transfer per missing blob, relayed to the client
that asked ahead of the store.

The transfer runs as a task of its own, so it finishes (and the blob is cached) even
when that client goes away. Each piece read from upstream goes three ways at once,
and none of them holds back the others:

* to the client's :class:`~.spool.Spool`: the client gets each piece as soon as it
  arrives; a slow client's pieces wait in memory, then in a temporary file;
* to a :class:`~.hashing.RelayHasher`, a thread that computes the digest as the
  pieces pass;
* to the store's own spool: the store writes behind the client, through an ordinary
  upload session, which compares the relay's digest of the same pieces before the
  blob enters the store and is linked (hashing them twice cost a sixth of a cold
  pull's CPU); a failed transfer cancels the session, leaving nothing.

The client's last piece waits until the relay's digest of everything is known to
match, so a wrong or cut transfer ends its connection short of ``Content-Length`` (an
error to any client) rather than with a complete wrong body; the store finishes on its
own time. Memory is bounded for a blob of any size: past their ``memory`` bytes, the
spools spill to files.

Other requests for the same blob wait for the transfer and are then served from
storage (they never fetch it again): in this worker through the running transfer, in
other workers (or for another repository) through the blob's claim (:mod:`.claims`).
Sharing the stream would give them bytes sooner, but needs a spool per client;
waiting is bounded and simple.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..reference import Digest
from ..storage import Repository
from ..storage.errors import DigestMismatchError, SizeMismatchError, UploadUnknownError
from .claims import Claim
from .client import UpstreamClient, content_length
from .errors import UpstreamError, UpstreamInvalidError, UpstreamUnavailableError
from .hashing import INLINE_HASH, RelayHasher
from .observer import Observer, ignore
from .spool import Spool

log = logging.getLogger(__name__)

#: Bytes waiting in memory for the store, at most; past this they wait in its spool's
#: file, and the client is not held back.
STORE_MEMORY = 16 * 1024 * 1024
#: Seconds a stopping worker gives its transfers to end before it abandons them.
CLOSE_GRACE = 5.0


async def _released_after(work: Coroutine[Any, Any, None], claim: Claim) -> None:
    try:
        await work
    finally:
        await claim.release()


def _retrieved(future: asyncio.Future[Any]) -> None:
    """A failure nobody waited for is not reported as never retrieved."""
    if not future.cancelled():
        future.exception()


@dataclass(eq=False)
class Transfer:
    """One blob coming from upstream."""

    size: asyncio.Future[int] = field(default_factory=asyncio.Future)
    """Set once the upstream answered (its length), or to the error."""
    done: asyncio.Future[None] = field(default_factory=asyncio.Future)
    """Set once the blob is stored and linked, or to the error."""
    spool: Spool | None = None
    """The pieces for the client that asked, if one streams it."""

    def __post_init__(self) -> None:
        self.size.add_done_callback(_retrieved)
        self.done.add_done_callback(_retrieved)


@dataclass
class BlobPuller:
    """This worker's blob transfers, one per (repository, digest)."""

    transfers: dict[tuple[str, Digest], Transfer] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    observe: Observer = ignore

    def running(self, repo: Repository, digest: Digest) -> Transfer | None:
        return self.transfers.get((repo.name, digest))

    def start(
        self,
        repo: Repository,
        client: UpstreamClient,
        remote: str,
        digest: Digest,
        listen: bool,
        claim: Claim,
    ) -> Transfer:
        """A new transfer; ``listen``: the caller streams it from ``transfer.spool``.
        ``claim`` is released when the transfer ends, stored or failed."""
        key = (repo.name, digest)
        transfer = Transfer(spool=Spool() if listen else None)
        self.transfers[key] = transfer
        work = self._transfer(transfer, repo, client, remote, digest)
        task = asyncio.create_task(_released_after(work, claim))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(lambda _: self.transfers.pop(key, None))
        return transfer

    async def close(self, grace: float = CLOSE_GRACE) -> None:
        """Stop the transfers, after ``grace`` seconds for them to end: a client may have
        its blob already while the store still writes it, and the cache should keep it."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _transfer(
        self,
        transfer: Transfer,
        repo: Repository,
        client: UpstreamClient,
        remote: str,
        digest: Digest,
    ) -> None:
        try:
            async with client.blob(remote, digest) as response:
                size = content_length(response)
                if size is None:
                    raise UpstreamInvalidError(f"{remote}/blobs/{digest}: sent without a length")
                transfer.size.set_result(size)
                await self._relay_and_store(transfer, repo, response, size, digest, remote)
            transfer.done.set_result(None)
        except BaseException as error:
            failure = _as_upstream_error(error, f"{remote}/blobs/{digest}")
            if not transfer.size.done():
                transfer.size.set_exception(failure)
            else:
                log.warning("proxy: %s@%s: pulling through failed: %s", repo.name, digest, failure)
            if transfer.spool is not None:
                transfer.spool.fail(failure)  # Its answer is cut short.
            transfer.done.set_exception(failure)
            if isinstance(error, asyncio.CancelledError):
                raise

    async def _relay_and_store(
        self,
        transfer: Transfer,
        repo: Repository,
        response: httpx.Response,
        size: int,
        digest: Digest,
        remote: str,
    ) -> None:
        """Each piece to the client, the relay's hasher and the store's spool; the last
        piece to the client once the relay's digest matches; then wait for the store,
        which compares the same digest (it does not hash the pieces again)."""
        client = transfer.spool
        hasher = RelayHasher(digest.algorithm, threaded=size > INLINE_HASH)
        hashed: asyncio.Future[Digest] = asyncio.get_running_loop().create_future()
        hashed.add_done_callback(_retrieved)
        keep = Spool(STORE_MEMORY)
        storing = asyncio.create_task(self._store(repo, digest, keep, size, hashed))
        storing.add_done_callback(_retrieved)
        storing.add_done_callback(lambda _: keep.close())  # A store that failed takes no more.
        held: bytes | None = None  # The last piece so far: the client gets it once verified.
        observe = self.observe
        received = 0
        what = f"{remote}/blobs/{digest}"
        try:
            async for piece in response.aiter_raw():
                received += len(piece)
                observe("pulled_bytes", "blob", len(piece))
                if received > size:
                    raise UpstreamInvalidError(f"{what}: longer than {size}")
                if client is not None:
                    if client.closed:  # Gone: the store goes on alone.
                        client = None
                    else:
                        if held is not None:
                            await client.put(held)
                        held = piece
                elif storing.done():
                    await storing  # The store failed (it cannot end sooner): stop here.
                await hasher.feed(piece)
                await keep.put(piece)
            if received != size:
                raise UpstreamInvalidError(f"{what}: cut at {received} of {size} bytes")
            keep.finish()
            actual = Digest(digest.algorithm, await hasher.hexdigest())
            hashed.set_result(actual)
            if actual != digest:
                raise UpstreamInvalidError(f"{what}: the content's digest is {actual}")
            if client is not None:
                if held is not None:
                    await client.put(held)
                client.finish()  # Verified: the client's answer completes, whatever follows.
            await asyncio.shield(storing)
        except BaseException as error:
            keep.fail(error)
            hasher.stop()
            # Its upload session is cancelled (at once, however slow the store) before the
            # client hears of the failure.
            storing.cancel()
            await asyncio.wait([storing])
            raise

    @staticmethod
    async def _store(
        repo: Repository, digest: Digest, keep: Spool, size: int, hashed: Awaitable[Digest]
    ) -> None:
        """Write what the transfer read, through an upload session of its own, which
        compares the relay's digest of those same pieces before the blob is kept; on
        any failure (or when stopped) the session is gone before this returns."""
        session = await repo.uploads.start()
        try:
            await repo.uploads.complete(
                session.id, digest, keep.pieces(), length=size, hashed=hashed
            )
        except BaseException:
            await _to_the_end(_abandon(repo, session.id))
            raise


async def _abandon(repo: Repository, upload_id: str) -> None:
    try:
        await repo.uploads.cancel(upload_id)
    except UploadUnknownError:
        pass  # Gone already.
    except Exception as error:
        log.warning("proxy: %s: an upload session could not be removed: %s", repo.name, error)


async def _to_the_end(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to its end even if stopped meanwhile (its file work goes on in
    threads: stopped halfway, it would leave a session behind); then stop."""
    task = asyncio.ensure_future(work)
    stopped = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            stopped = True
    if stopped or task.cancelled():
        raise asyncio.CancelledError
    task.result()


def _as_upstream_error(error: BaseException, what: str) -> UpstreamError:
    if isinstance(error, UpstreamError):
        return error
    if isinstance(error, DigestMismatchError | SizeMismatchError):
        return UpstreamInvalidError(f"{what}: {error}")
    if isinstance(error, httpx.TransportError):
        return UpstreamUnavailableError(f"{what}: {type(error).__name__}: {error}")
    if isinstance(error, asyncio.CancelledError):
        return UpstreamUnavailableError(f"{what}: stopped (the server is shutting down)")
    return UpstreamUnavailableError(f"{what}: {type(error).__name__}: {error}")
