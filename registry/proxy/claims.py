"""Which process of this server fetches a missing blob from upstream: one at a time.

A worker's own transfers are one per blob already (:class:`~.blobs.BlobPuller`), but
the kernel hands connections to any worker, so without more two workers asked for the
same layer at once would each fetch it. Before a transfer, a worker *claims* the
blob's digest: an exclusive ``flock`` on a file named for it in a folder every worker
of the server shares (the supervisor's run folder). A worker that finds the claim
taken waits until it is released, then looks in storage again: the blob is usually
there by then, and is served from it.

``flock`` locks belong to an open file and go with it, so a worker that crashes
mid-transfer frees its claims at once. The file is removed when the claim ends; a
waiter that locked the removed file notices (its inode is no longer the path's) and
claims again. Instances on shared storage each have their own folder: with Redis in
the config, a claim also takes a lease there (:mod:`.leases`), one transfer for all of
them; without, at most one per instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..reference import Digest

if TYPE_CHECKING:  # redis-py: only where Redis is configured.
    from .leases import Lease, Leases

#: Seconds between two looks at a claim another process holds: short at first (a small
#: blob is stored within milliseconds), longer while a large one is still coming.
FIRST_POLL = 0.005
LAST_POLL = 0.1


@dataclass
class Claim:
    """A held claim; :meth:`release` once the blob is stored or its transfer failed."""

    path: str
    descriptor: int | None
    leases: Leases | None = None
    lease: Lease | None = None

    async def release(self) -> None:
        self.release_file()
        lease, self.lease = self.lease, None
        if lease is not None and self.leases is not None:
            await self.leases.release(lease)

    def release_file(self) -> None:
        if self.descriptor is None:
            return
        # Removed before the lock is dropped: a process that opens the path afterwards
        # makes a new file, and one that opened the old file sees it is not the path's.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.descriptor)
        self.descriptor = None


class Claims:
    """The claims folder of this server's workers (or of one process: a folder of its own)."""

    def __init__(self, folder: str | None, leases: Leases | None = None) -> None:
        self.leases = leases
        self._own = folder is None
        self.folder = tempfile.mkdtemp(prefix="registry-claims-") if folder is None else folder
        os.makedirs(self.folder, exist_ok=True)

    def _path(self, digest: Digest) -> str:
        return os.path.join(self.folder, f"{digest.algorithm}-{digest.hex}")

    async def try_claim(self, digest: Digest) -> Claim | None:
        """The claim, or None if another transfer holds it (never waits)."""
        claim = self._lock_file(digest)
        if claim is None or self.leases is None:
            return claim
        lease = await self.leases.take(digest)
        if lease is None:  # Another instance fetches it.
            claim.release_file()
            return None
        claim.leases, claim.lease = self.leases, lease
        return claim

    def _lock_file(self, digest: Digest) -> Claim | None:
        path = self._path(digest)
        while True:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                return None
            locked = os.fstat(descriptor)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is not None and (current.st_ino, current.st_dev) == (
                locked.st_ino,
                locked.st_dev,
            ):
                return Claim(path, descriptor)
            os.close(descriptor)  # Its holder released and removed it meanwhile: again.

    async def wait(self, digest: Digest) -> None:
        """Until nobody holds ``digest``'s claim (it may be taken again at once)."""
        delay = FIRST_POLL
        while True:
            claim = self._lock_file(digest)
            if claim is not None:
                claim.release_file()
                if self.leases is None or not await self.leases.held(digest):
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, LAST_POLL)

    def close(self) -> None:
        if self._own:
            shutil.rmtree(self.folder, ignore_errors=True)
