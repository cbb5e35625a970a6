"""Blob upload sessions, kept in storage so a push survives restarts and spans workers.

A session is ``_uploads/<id>/data`` (the bytes so far) and ``startedat``. Its
offset is the size of ``data``, read from storage on every request, so any
worker, or any instance on shared storage, can take the next chunk.

``hashlib`` state cannot be saved, so each process keeps a hasher per session
while it sees the chunks in order; when a chunk went to another worker, the
hasher catches up by reading only the bytes it missed, and a session it never
saw is hashed from the start at commit. A blob enters the content store only
after its digest and size are verified, by a rename.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterable, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime

from ..reference import Digest
from . import paths
from .blobs import BlobInfo, BlobStore, LinkedBlobs, exists
from .driver import BusyError, FileWriter, PathNotFoundError, StorageDriver
from .errors import (
    DigestMismatchError,
    SizeMismatchError,
    UploadBusyError,
    UploadRangeError,
    UploadUnknownError,
)

#: Writes are gathered to this size: fewer thread hops, larger disk writes.
WRITE_BUFFER = 1024 * 1024
#: Hashers kept per process; one for each upload in flight is plenty.
MAX_HASHERS = 256
#: Longest a request waits for another one writing the same upload session.
LOCK_WAIT = 60.0
_UPLOAD_ID_LENGTH = 36

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UploadSession:
    name: str
    id: str
    size: int


@dataclass(slots=True)
class _Hasher:
    offset: int
    hash: hashlib._Hash


class HasherCache:
    """Running sha256 state of the uploads this process has seen, bounded (LRU)."""

    def __init__(self, capacity: int = MAX_HASHERS) -> None:
        self._entries: OrderedDict[str, _Hasher] = OrderedDict()
        self._capacity = capacity

    def take(self, upload_id: str) -> _Hasher:
        """Remove and return the session's hasher, or a fresh one at offset 0."""
        entry = self._entries.pop(upload_id, None)
        return entry or _Hasher(0, hashlib.sha256())

    def put(self, upload_id: str, entry: _Hasher) -> None:
        self._entries[upload_id] = entry
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def drop(self, upload_id: str) -> None:
        self._entries.pop(upload_id, None)


def valid_upload_id(upload_id: str) -> bool:
    try:
        return len(upload_id) == _UPLOAD_ID_LENGTH and str(uuid.UUID(upload_id)) == upload_id
    except ValueError:
        return False


async def _rollback(writer: FileWriter) -> None:
    """Take back a failed chunk; a failure to do so is logged, the first error stands."""
    try:
        await writer.rollback()
    except Exception:
        log.exception("could not take back a failed chunk of an upload")


async def _hash_file(
    driver: StorageDriver, path: str, hasher: hashlib._Hash, offset: int, length: int
) -> None:
    async for chunk in driver.read(path, offset, length):
        await asyncio.to_thread(hasher.update, chunk)


class Uploads:
    """Upload sessions of one repository."""

    def __init__(
        self, blobs: BlobStore, linked: LinkedBlobs, name: str, hashers: HasherCache
    ) -> None:
        self.driver = blobs.driver
        self.blobs = blobs
        self.linked = linked
        self.name = name
        self.hashers = hashers

    async def start(self) -> UploadSession:
        upload_id = str(uuid.uuid4())
        started = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        try:
            await self.driver.put_content(paths.upload_data(self.name, upload_id), b"")
            await self.driver.put_content(
                paths.upload_started_at(self.name, upload_id), started.encode()
            )
        except BaseException:
            # A full disk, say: no half-made session stays behind.
            with contextlib.suppress(PathNotFoundError):
                await self.driver.delete(paths.upload_dir(self.name, upload_id))
            raise
        return UploadSession(self.name, upload_id, 0)

    async def status(self, upload_id: str) -> UploadSession:
        if not valid_upload_id(upload_id):
            raise UploadUnknownError(upload_id)
        try:
            info = await self.driver.stat(paths.upload_data(self.name, upload_id))
        except PathNotFoundError:
            raise UploadUnknownError(upload_id) from None
        return UploadSession(self.name, upload_id, info.size)

    async def _open(self, upload_id: str) -> FileWriter:
        """The session's file, for this request alone: another writer is waited for.

        Requests writing one session run one after the other, whichever worker
        or instance they reach; one that waits longer than LOCK_WAIT is refused.
        """
        if not valid_upload_id(upload_id):
            raise UploadUnknownError(upload_id)
        path = paths.upload_data(self.name, upload_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_WAIT
        pause = 0.005
        while True:
            try:
                return await self.driver.writer(path, append=True)
            except PathNotFoundError:
                raise UploadUnknownError(upload_id) from None  # Completed or cancelled.
            except BusyError:
                if loop.time() >= deadline:
                    raise UploadBusyError(upload_id) from None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.1)

    async def append(
        self,
        upload_id: str,
        body: AsyncIterable[bytes],
        *,
        start: int | None = None,
        length: int | None = None,
    ) -> UploadSession:
        """Stream a chunk onto the session: all of it, or (on any failure) none of it."""
        writer = await self._open(upload_id)
        try:
            return await self._append(writer, upload_id, body, start, length)
        finally:
            await writer.close()

    async def _append(
        self,
        writer: FileWriter,
        upload_id: str,
        body: AsyncIterable[bytes],
        start: int | None,
        length: int | None,
        *,
        hash_body: bool = True,
    ) -> UploadSession:
        if start is not None and start != writer.size:
            raise UploadRangeError(writer.size, start)
        path = paths.upload_data(self.name, upload_id)
        hasher = self.hashers.take(upload_id)
        if not hash_body:
            hasher = _Hasher(-1, hasher.hash)  # Never in step: written only, not kept.
        elif hasher.offset > writer.size:
            hasher = _Hasher(0, hashlib.sha256())  # Ahead of a file rolled back elsewhere.
        if 0 <= hasher.offset < writer.size:
            # Another worker took the chunks since this hasher's offset: hash them from disk.
            await _hash_file(
                self.driver, path, hasher.hash, hasher.offset, writer.size - hasher.offset
            )
            hasher.offset = writer.size
        try:
            received = await self._write(writer, hasher, body)
            if length is not None and received != length:
                raise SizeMismatchError(length, received)
            await writer.commit()
        except BaseException:
            # The client is told this chunk failed (or is gone): the session keeps
            # its previous length, and the hasher, now ahead of it, is forgotten.
            await _rollback(writer)
            raise
        if hasher.offset == writer.size:
            self.hashers.put(upload_id, hasher)
        return UploadSession(self.name, upload_id, writer.size)

    async def _write(self, writer: FileWriter, hasher: _Hasher, body: AsyncIterable[bytes]) -> int:
        in_step = hasher.offset == writer.size
        received = 0
        parts: list[bytes] = []
        pending = 0

        def hash_parts(batch: list[bytes]) -> None:
            for part in batch:
                hasher.hash.update(part)

        async def flush() -> None:
            nonlocal pending
            batch = parts.copy()
            parts.clear()
            size, pending = pending, 0
            if in_step:
                # Hashing and writing release the GIL: run them side by side.
                await asyncio.gather(
                    asyncio.to_thread(hash_parts, batch), writer.write_parts(batch)
                )
                hasher.offset += size
            else:
                await writer.write_parts(batch)

        # Pieces are gathered (not copied together) to about a MiB per write.
        async for chunk in body:
            received += len(chunk)
            parts.append(chunk)
            pending += len(chunk)
            if pending >= WRITE_BUFFER:
                await flush()
        if parts:
            await flush()
        return received

    async def complete(
        self,
        upload_id: str,
        digest: Digest,
        body: AsyncIterable[bytes] | None = None,
        *,
        start: int | None = None,
        length: int | None = None,
        hashed: Awaitable[Digest] | None = None,
    ) -> BlobInfo:
        """Append the last chunk, verify the digest, move into the store, link, clean up.

        All under the session's writer, so no chunk can slip in between the digest
        check and the move; a failure before the move leaves the session as it was.

        ``hashed``: the digest of ``body``'s pieces, computed by the caller as it gave
        them (a blob pulled through is hashed beside its relay to the client): the
        session then only writes, and compares that digest. Used only when ``body`` is
        the whole blob (an empty session); otherwise the session hashes as usual.
        """
        writer = await self._open(upload_id)
        data_path = paths.upload_data(self.name, upload_id)
        trusted = hashed is not None and body is not None and writer.size == 0
        try:
            if body is not None:
                await self._append(writer, upload_id, body, start, length, hash_body=not trusted)
            size = writer.size
            try:
                if trusted and hashed is not None:
                    actual = await hashed
                else:
                    actual = await self._digest(upload_id, data_path, size, digest.algorithm)
                if actual != digest:
                    raise DigestMismatchError(str(digest), str(actual))
            except PathNotFoundError:
                raise UploadUnknownError(upload_id) from None  # Cancelled meanwhile.
            except BaseException:
                await _rollback(writer)
                raise
            try:
                await self._store(data_path, digest)
                await self.linked.link(digest)
                # The garbage collector may have hidden the stored copy between the
                # check above and the link: this upload's own copy takes its place.
                await self._store(data_path, digest)
            except PathNotFoundError:
                raise UploadUnknownError(upload_id) from None  # Cancelled meanwhile.
        finally:
            await writer.close()
        await self.cancel(upload_id)
        return BlobInfo(digest, size)

    async def _store(self, data_path: str, digest: Digest) -> None:
        """Move the upload into the store, unless the same content is there already."""
        if not await exists(self.driver, paths.blob_data(digest)):
            await self.driver.move(data_path, paths.blob_data(digest))

    async def _digest(self, upload_id: str, path: str, size: int, algorithm: str) -> Digest:
        if algorithm != "sha256":
            hasher = hashlib.new(algorithm)
            await _hash_file(self.driver, path, hasher, 0, size)
            return Digest(algorithm, hasher.hexdigest())
        entry = self.hashers.take(upload_id)
        if entry.offset > size:
            entry = _Hasher(0, hashlib.sha256())
        if entry.offset < size:
            await _hash_file(self.driver, path, entry.hash, entry.offset, size - entry.offset)
        return Digest(algorithm, entry.hash.hexdigest())

    async def cancel(self, upload_id: str) -> None:
        if not valid_upload_id(upload_id):
            raise UploadUnknownError(upload_id)
        self.hashers.drop(upload_id)
        try:
            await self.driver.delete(paths.upload_dir(self.name, upload_id))
        except PathNotFoundError:
            raise UploadUnknownError(upload_id) from None

    async def single(
        self, digest: Digest, body: AsyncIterable[bytes], length: int | None
    ) -> BlobInfo:
        """A whole blob in one request (POST ``?digest=``), through a session of its own."""
        session = await self.start()
        try:
            return await self.complete(session.id, digest, body, length=length)
        except BaseException:
            await self.cancel(session.id)
            raise
