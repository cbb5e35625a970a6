"""Blobs pulled through: one upstream transfer per missing blob, streamed to the client
that asked while it is written to storage.

The transfer runs as a task of its own, so it finishes (and the blob is cached) even
when that client goes away. It writes through an ordinary upload session: the digest
is verified before the blob enters the store and is linked, and a failed transfer
cancels the session, leaving nothing. The client gets every byte but the last piece
as it arrives; the last piece only once the digest is verified, so a wrong or cut
transfer ends its connection short of ``Content-Length`` (an error to any client)
rather than with a complete wrong body.

Other requests for the same blob in this worker wait for the transfer and are then
served from storage (they never fetch it again). Sharing the stream would give them
bytes sooner, but needs either the slowest client to hold back the transfer for all
or unbounded buffers; waiting is bounded and simple.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..reference import Digest
from ..storage import Repository
from ..storage.errors import DigestMismatchError, SizeMismatchError
from .client import UpstreamClient, content_length
from .errors import UpstreamError, UpstreamInvalidError, UpstreamUnavailableError
from .observer import Observer, ignore

log = logging.getLogger(__name__)

#: Pieces held for the client that asked, at most: beyond, the transfer waits for it.
QUEUE_PIECES = 16


class BrokenTransferError(Exception):
    """The upstream transfer failed after the client's answer began: cut it short."""


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
    pieces: asyncio.Queue[bytes | BaseException | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_PIECES)
    )
    listening: bool = False
    """The client that asked still reads ``pieces``."""

    def __post_init__(self) -> None:
        self.size.add_done_callback(_retrieved)
        self.done.add_done_callback(_retrieved)

    async def give(self, piece: bytes | BaseException | None) -> None:
        if self.listening:
            await self.pieces.put(piece)

    async def relay(self) -> AsyncIterator[bytes]:
        """The pieces for the client that asked, ending with an error if the transfer fails."""
        try:
            while True:
                piece = await self.pieces.get()
                if piece is None:
                    return
                if isinstance(piece, BaseException):
                    raise BrokenTransferError(str(piece)) from piece
                yield piece
        finally:
            self.listening = False
            while not self.pieces.empty():  # A transfer waiting to put goes on.
                self.pieces.get_nowait()


@dataclass
class BlobPuller:
    """This worker's blob transfers, one per (repository, digest)."""

    transfers: dict[tuple[str, Digest], Transfer] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    observe: Observer = ignore

    def running(self, repo: Repository, digest: Digest) -> Transfer | None:
        return self.transfers.get((repo.name, digest))

    def start(
        self, repo: Repository, client: UpstreamClient, remote: str, digest: Digest, listen: bool
    ) -> Transfer:
        key = (repo.name, digest)
        transfer = Transfer(listening=listen)
        self.transfers[key] = transfer
        task = asyncio.create_task(self._transfer(transfer, repo, client, remote, digest))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(lambda _: self.transfers.pop(key, None))
        return transfer

    async def close(self) -> None:
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
                await self._store(transfer, repo, response, size, digest, remote)
            transfer.done.set_result(None)
        except BaseException as error:
            failure = _as_upstream_error(error, f"{remote}/blobs/{digest}")
            if not transfer.size.done():
                transfer.size.set_exception(failure)
            else:
                if transfer.listening:
                    # Its answer is cut short anyway: the pieces still queued do not matter.
                    while not transfer.pieces.empty():
                        transfer.pieces.get_nowait()
                    transfer.pieces.put_nowait(failure)
                log.warning("proxy: %s@%s: pulling through failed: %s", repo.name, digest, failure)
            transfer.done.set_exception(failure)
            if isinstance(error, asyncio.CancelledError):
                raise

    async def _store(
        self,
        transfer: Transfer,
        repo: Repository,
        response: httpx.Response,
        size: int,
        digest: Digest,
        remote: str,
    ) -> None:
        held: list[bytes] = []  # The last piece: given once the digest is verified.

        async def pieces() -> AsyncIterator[bytes]:
            received = 0
            async for piece in response.aiter_raw():
                received += len(piece)
                self.observe("pulled_bytes", "blob", len(piece))
                if received > size:
                    raise UpstreamInvalidError(f"{remote}/blobs/{digest}: longer than {size}")
                if held:
                    await transfer.give(held.pop())
                held.append(piece)
                yield piece
            if received != size:
                raise UpstreamInvalidError(
                    f"{remote}/blobs/{digest}: cut at {received} of {size} bytes"
                )

        session = await repo.uploads.start()
        try:
            await repo.uploads.append(session.id, pieces())
            await repo.uploads.complete(session.id, digest)
        except BaseException:
            with contextlib.suppress(Exception):
                await repo.uploads.cancel(session.id)
            raise
        if held:
            await transfer.give(held.pop())
        await transfer.give(None)


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
