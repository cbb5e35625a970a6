"""Local filesystem driver: the tree lives under one root directory.

Small operations (a link of 71 bytes, a stat, a directory listing) run inline:
on a local disk they take microseconds, less than a hop to a worker thread.
Blob-sized reads and writes run in threads, 1 MiB at a time.

With ``fsync`` (``storage.filesystem.fsync``; off by default, as registry:2
never syncs) a file is durable when the call that stores it returns, so a
201 survives a power cut: its data is synced before it is renamed into place
(the rename can then never expose an empty or partial file), and the
directories it was renamed into, and every directory created on its way,
are synced after. Directories that already existed are taken as durable:
on a journaling filesystem (ext4, xfs) a sync commits every metadata change
made before it, another request's ``mkdir`` included. What a writer appends
(a PATCH's chunk) is synced only when the file is moved, and deletions not at
all: a session cut by a power loss reports its true length to ``GET``
status, and a deleted file may come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import shutil
import stat
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from io import FileIO
from typing import ClassVar

from . import (
    CHUNK_SIZE,
    BusyError,
    FileInfo,
    FileWriter,
    InvalidOffsetError,
    PathNotFoundError,
    StorageDriver,
)

#: The most pieces one writev takes.
IOV_MAX = max(16, os.sysconf("SC_IOV_MAX")) if hasattr(os, "sysconf") else 16

#: In the name of every temporary file; ``~`` is outside the path grammar, so
#: no stored file's name contains it and listings can leave temporaries out.
TEMPORARY_MARK = ".tmp~"


def _temporary_name(path: str) -> str:
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}{TEMPORARY_MARK}{secrets.token_hex(6)}")


def _sync_data(descriptor: int) -> None:
    """A file's data and what reading it back needs (its size), not its times: fdatasync."""
    if hasattr(os, "fdatasync"):
        os.fdatasync(descriptor)
    else:  # macOS
        os.fsync(descriptor)


def sync_directory(path: str) -> None:
    """Make a directory's entries durable: the names created, renamed in or out of it."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sync_file(path: str) -> None:
    """Make a file's data durable, through a descriptor of its own (any reaches the same pages)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        _sync_data(descriptor)
    finally:
        os.close(descriptor)


def make_directories(path: str, durable: bool = False) -> None:
    """``os.makedirs``; ``durable`` syncs the parent of each directory it creates."""
    if not durable:
        os.makedirs(path, exist_ok=True)
        return
    missing = []
    current = path
    while not os.path.isdir(current) and os.path.dirname(current) != current:
        missing.append(current)
        current = os.path.dirname(current)
    os.makedirs(path, exist_ok=True)
    for directory in missing:  # Deepest first; all of them before the caller's answer.
        sync_directory(os.path.dirname(directory))


def write_atomically(path: str, content: bytes, durable: bool = False) -> None:
    """Write beside the target, then rename over it: readers never see half a file.

    ``durable``: the content is synced before the rename, the directory after it.
    """
    directory = os.path.dirname(path)
    make_directories(directory, durable)
    temporary = _temporary_name(path)
    try:
        with open(temporary, "wb") as file:
            file.write(content)
            if durable:
                file.flush()
                _sync_data(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    if durable:
        sync_directory(directory)


def _holds(path: str, content: bytes) -> bool:
    try:
        with open(path, "rb") as file:
            return os.fstat(file.fileno()).st_size == len(content) and file.read() == content
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return False


def _put_small(path: str, content: bytes, durable: bool) -> None:
    """Write a small file atomically, unless it already holds these bytes.

    Pushing a manifest again writes the same four small files (its data, its
    revision link, the tag's two links). Renaming over an existing file makes
    ext4 write the new one back at once (``auto_da_alloc``): under load that
    took a third of a manifest PUT's time, where reading and comparing takes
    microseconds. The file's time is still renewed, as a write would: the
    garbage collector reads a recent time as a push of that content. With syncs
    on (``durable``) the file is written as before: it may be from a time syncs
    were off, and the syncs cost more than the rename anyway.
    """
    if not durable and _holds(path, content):
        os.utime(path)
        return
    write_atomically(path, content, durable)


class FilesystemWriter(FileWriter):
    """Writes go straight to the descriptor (no buffer), so a rollback has nothing in flight."""

    def __init__(self, path: str, file: FileIO, size: int) -> None:
        self._path = path
        self._file = file
        self._size = size
        self._start = size

    @property
    def size(self) -> int:
        return self._size

    async def write(self, data: bytes) -> None:
        await self.write_parts([data])

    async def write_parts(self, parts: Sequence[bytes]) -> None:
        await asyncio.to_thread(self._write_parts, parts)
        self._size += sum(len(part) for part in parts)

    def _write_parts(self, parts: Sequence[bytes]) -> None:
        # One writev for the lot, no joined copy (a short write goes on from there).
        views = [memoryview(part) for part in parts if part]
        descriptor = self._file.fileno()
        first = 0
        while first < len(views):
            # writev takes at most IOV_MAX pieces (1024 on Linux); more is EINVAL.
            written = os.writev(descriptor, views[first : first + IOV_MAX])
            while first < len(views) and written >= len(views[first]):
                written -= len(views[first])
                first += 1
            if written:
                views[first] = views[first][written:]

    async def commit(self) -> None:
        pass  # Nothing is buffered: every byte written is in the file.

    async def rollback(self) -> None:
        await asyncio.to_thread(os.ftruncate, self._file.fileno(), self._start)
        self._file.seek(self._start)
        self._size = self._start

    async def cancel(self) -> None:
        await self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)

    async def close(self) -> None:
        if not self._file.closed:
            self._file.close()  # Also releases the append lock.


#: Folders with this many children are checked for ``list_holding`` in a thread.
THREADED_LISTING = 1000
#: Folders with this many children have their ``list_holding`` answer kept, this many
#: folders at most per driver (a repository of 10,000 tags: 40-50 ms a listing, about
#: 1 MB kept).
KEPT_LISTING = 256
KEPT_LISTINGS = 64
#: A folder changed less than this long ago is checked again at each listing: a change
#: within the same tick of the filesystem's clock would leave its time as it was (and
#: hosts sharing a network filesystem may have clocks a few seconds apart).
SETTLED_SECONDS = 10.0


@dataclass
class _Holding:
    """A folder's answer to ``list_holding``, valid while the folder is the same one with
    the same modification time: adding or removing a child (a tag made or deleted, by
    any process) changes it; writing a file deeper down (a tag pointed elsewhere) does
    not, and does not change the answer either. Children that lacked the file are
    checked again each time (a tag's folder is made just before its link)."""

    identity: tuple[int, int, int]
    holding: list[str]
    lacking: list[str]


def _holding_of(folder: str, names: Sequence[str], inner: str) -> list[str]:
    return [name for name in names if os.path.exists(f"{folder}/{name}/{inner}")]


class FilesystemDriver(StorageDriver):
    name: ClassVar[str] = "filesystem"

    def __init__(self, root: str, *, fsync: bool = False) -> None:
        self.root = os.path.abspath(root)
        self._holding: OrderedDict[tuple[str, str], _Holding] = OrderedDict()
        """Large folders' ``list_holding`` answers, least recently used first."""
        self.fsync = fsync
        """Stored files (put_content, move) are durable when the call returns."""
        if fsync and os.path.isdir(self.root):
            # Made at start (``registry serve``), maybe just now: its name must last too.
            sync_directory(os.path.dirname(self.root))

    def _full(self, path: str) -> str:
        return self.root + path

    async def _get_content(self, path: str) -> bytes:
        return self._read_whole(path)

    def _read_whole(self, path: str) -> bytes:
        try:
            with open(self._full(path), "rb") as file:
                return file.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFoundError(path) from None

    async def _put_content(self, path: str, content: bytes) -> None:
        if self.fsync:
            # A sync waits for the disk (milliseconds): not on the event loop.
            await asyncio.to_thread(_put_small, self._full(path), content, True)
        else:
            _put_small(self._full(path), content, False)

    async def _read(self, path: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
        try:
            file = await asyncio.to_thread(open, self._full(path), "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFoundError(path) from None
        try:
            if offset:
                size = os.fstat(file.fileno()).st_size
                if offset > size:
                    raise InvalidOffsetError(path, offset)
                file.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                want = CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)
                chunk = await asyncio.to_thread(file.read, want)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            file.close()

    async def _writer(self, path: str, append: bool) -> FileWriter:
        full = self._full(path)
        return await asyncio.to_thread(self._open_writer, path, full, append)

    @staticmethod
    def _open_writer(path: str, full: str, append: bool) -> FilesystemWriter:
        if not append:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            return FilesystemWriter(full, FileIO(full, "w"), 0)
        # Continue an existing file only: a session deleted meanwhile stays deleted.
        try:
            file = FileIO(full, "r+")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFoundError(path) from None
        try:
            # One appender at a time, across processes: the lock lives as long as the
            # descriptor (a crashed holder releases it).
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            raise BusyError(path) from None
        # Opened before a holder moved or deleted the file, the descriptor may now be
        # another file's (a committed blob's): only the one still at the path will do.
        opened = os.fstat(file.fileno())
        try:
            current = os.stat(full)
        except FileNotFoundError:
            current = None
        if current is None or (current.st_ino, current.st_dev) != (opened.st_ino, opened.st_dev):
            file.close()
            raise PathNotFoundError(path)
        return FilesystemWriter(full, file, file.seek(0, os.SEEK_END))

    async def _stat(self, path: str) -> FileInfo:
        return self._stat_sync(path)

    def _stat_sync(self, path: str) -> FileInfo:
        try:
            result = os.stat(self._full(path))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFoundError(path) from None
        is_dir = stat.S_ISDIR(result.st_mode)
        return FileInfo(path, 0 if is_dir else result.st_size, result.st_mtime, is_dir)

    async def _list(self, path: str) -> list[str]:
        return self._list_sync(path)

    def _list_sync(self, path: str) -> list[str]:
        try:
            names = os.listdir(self._full(path))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFoundError(path) from None
        return sorted(name for name in names if TEMPORARY_MARK not in name)

    async def _list_holding(self, path: str, inner: str) -> list[str]:
        """Each child is checked (about 4 microseconds each, on the event loop for a small
        folder, in a thread for a large one); a large folder's answer is kept while the
        folder's own modification time stays the same (see :class:`_Holding`)."""
        folder = self._full(path)
        try:
            # Before the listing: a change after it then shows as a different time.
            info = os.stat(folder)
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFoundError(path) from None
        identity = (info.st_dev, info.st_ino, info.st_mtime_ns)
        key = (path, inner)
        kept = self._holding.get(key)
        if kept is not None and kept.identity == identity:
            self._holding.move_to_end(key)
            if kept.lacking:  # A child made before its file (a crash, or in progress).
                found = set(_holding_of(folder, kept.lacking, inner))
                if found:
                    kept.holding = sorted([*kept.holding, *found])
                    kept.lacking = [name for name in kept.lacking if name not in found]
            return list(kept.holding)
        names = self._list_sync(path)
        if len(names) < THREADED_LISTING:
            holding = _holding_of(folder, names, inner)
        else:
            holding = await asyncio.to_thread(_holding_of, folder, names, inner)
        if len(names) >= KEPT_LISTING and time.time() - info.st_mtime > SETTLED_SECONDS:
            present = set(holding)
            lacking = [name for name in names if name not in present]
            self._holding[key] = _Holding(identity, holding, lacking)
            while len(self._holding) > KEPT_LISTINGS:
                self._holding.popitem(last=False)
        return holding

    async def _move(self, source: str, destination: str) -> None:
        if self.fsync:
            # Syncing a blob's data takes as long as writing it out: not on the event loop.
            await asyncio.to_thread(self._move_sync, source, destination)
        else:
            self._move_sync(source, destination)

    def _move_sync(self, source: str, destination: str) -> None:
        full_source = self._full(source)
        # Checked first: a failed move must not leave the destination's parents behind.
        if not os.path.exists(full_source):
            raise PathNotFoundError(source)
        full_destination = self._full(destination)
        if self.fsync:
            # Before the rename: after a power cut the destination is whole or absent.
            try:
                sync_file(full_source)
            except (FileNotFoundError, NotADirectoryError):
                raise PathNotFoundError(source) from None
        make_directories(os.path.dirname(full_destination), self.fsync)
        try:
            os.replace(full_source, full_destination)
        except FileNotFoundError:
            raise PathNotFoundError(source) from None
        if self.fsync:
            sync_directory(os.path.dirname(full_destination))

    async def _delete(self, path: str) -> None:
        await asyncio.to_thread(self._delete_sync, path)

    def _delete_sync(self, path: str) -> None:
        full = self._full(path)
        try:
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFoundError(path) from None
