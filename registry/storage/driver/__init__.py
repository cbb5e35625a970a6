"""The storage driver contract: a dumb tree of byte files addressed by paths.

A driver knows bytes and paths, nothing about manifests, tags or uploads; all
registry semantics live above it (``registry/storage``) and are written once
for every driver. The public methods check every path here, in one place, so
no driver ever sees ``..`` or an empty component.
"""

from __future__ import annotations

import builtins
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

PATH_RE = re.compile(r"(/[A-Za-z0-9._-]+)+")
CHUNK_SIZE = 1024 * 1024


class StorageDriverError(Exception):
    """Base of every driver error; the registry layer maps them to API errors."""


class PathNotFoundError(StorageDriverError):
    def __init__(self, path: str) -> None:
        super().__init__(f"path not found: {path}")
        self.path = path


class InvalidPathError(StorageDriverError):
    def __init__(self, path: str) -> None:
        super().__init__(f"invalid path: {path!r}")
        self.path = path


class BusyError(StorageDriverError):
    """Another writer is appending to this file: one appender at a time."""

    def __init__(self, path: str) -> None:
        super().__init__(f"another writer is appending to {path}")
        self.path = path


class InvalidOffsetError(StorageDriverError):
    def __init__(self, path: str, offset: int) -> None:
        super().__init__(f"invalid offset {offset} for {path}")
        self.path = path
        self.offset = offset


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: str
    size: int
    modified: float
    """Seconds since the epoch."""
    is_dir: bool


def check_path(path: str) -> str:
    if PATH_RE.fullmatch(path) is None or any(part in (".", "..") for part in path.split("/")):
        raise InvalidPathError(path)
    return path


class FileWriter(ABC):
    """Appends to one file; nothing is promised about the file until :meth:`commit`.

    A writer that appends (``writer(path, append=True)``) is the file's only
    appender until it is closed; :meth:`rollback` takes back what it wrote.
    """

    @property
    @abstractmethod
    def size(self) -> int:
        """Bytes in the file so far, including what was there before an append."""

    @abstractmethod
    async def write(self, data: bytes) -> None: ...

    async def write_parts(self, parts: Sequence[bytes]) -> None:
        """Write several pieces in order; drivers that can, do it without joining them."""
        await self.write(b"".join(parts))

    @abstractmethod
    async def commit(self) -> None:
        """Flush everything written; the file then holds every byte."""

    @abstractmethod
    async def cancel(self) -> None:
        """Drop the file."""

    @abstractmethod
    async def rollback(self) -> None:
        """Take back everything this writer wrote: the file is as it was when opened."""

    @abstractmethod
    async def close(self) -> None: ...


class StorageDriver(ABC):
    """Public methods validate paths, then call the ``_``-prefixed driver methods."""

    name: ClassVar[str]

    @property
    def moves_keep_times(self) -> bool:
        """Whether a moved file keeps its modification time (a rename does; an object
        store's copy is new): the garbage collector reads a time after a move only then."""
        return True

    async def get_content(self, path: str) -> bytes:
        """Read a small file whole (links, manifests)."""
        return await self._get_content(check_path(path))

    async def put_content(self, path: str, content: bytes) -> None:
        """Replace a small file atomically: a reader sees the old or the new bytes."""
        await self._put_content(check_path(path), content)

    def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream ``length`` bytes (default: to the end) from ``offset``."""
        check_path(path)
        if offset < 0 or (length is not None and length < 0):
            raise InvalidOffsetError(path, offset)
        return self._read(path, offset, length)

    async def writer(self, path: str, *, append: bool = False) -> FileWriter:
        """A new file, or with ``append`` the end of an existing one (PathNotFoundError if none).

        An appending writer excludes every other appender of the file, in any
        process sharing the storage, until it is closed: BusyError meanwhile.
        """
        return await self._writer(check_path(path), append)

    async def stat(self, path: str) -> FileInfo:
        return await self._stat(check_path(path))

    async def list(self, path: str) -> list[str]:
        """Names of the direct children of a directory, sorted."""
        return await self._list(check_path(path))

    async def list_holding(self, path: str, inner: str) -> builtins.list[str]:
        """The children of directory ``path`` that hold the file ``inner`` (a relative
        path), sorted: listing tags asks this of every tag, so drivers may do it at once."""
        check_path(f"{check_path(path)}/child/{inner}")  # ``inner`` stays below a child.
        return await self._list_holding(path, inner)

    async def _list_holding(self, path: str, inner: str) -> builtins.list[str]:
        found = []
        for name in await self._list(path):
            try:
                await self._stat(f"{path}/{name}/{inner}")
            except PathNotFoundError:
                continue
            found.append(name)
        return found

    async def url_for(self, path: str, expires: float) -> str | None:
        """A URL a client can fetch the file from directly for ``expires`` seconds, or
        None: only stores with their own HTTP endpoint (S3) have one."""
        return await self._url_for(check_path(path), expires)

    async def _url_for(self, path: str, expires: float) -> str | None:
        return None

    async def move(self, source: str, destination: str) -> None:
        """Rename, replacing the destination atomically."""
        await self._move(check_path(source), check_path(destination))

    async def delete(self, path: str) -> None:
        """Delete a file or a whole directory tree."""
        await self._delete(check_path(path))

    async def close(self) -> None:  # noqa: B027 - most drivers hold nothing to release
        """Release resources (connections, thread pools)."""

    @abstractmethod
    async def _get_content(self, path: str) -> bytes: ...

    @abstractmethod
    async def _put_content(self, path: str, content: bytes) -> None: ...

    @abstractmethod
    def _read(self, path: str, offset: int, length: int | None) -> AsyncIterator[bytes]: ...

    @abstractmethod
    async def _writer(self, path: str, append: bool) -> FileWriter: ...

    @abstractmethod
    async def _stat(self, path: str) -> FileInfo: ...

    @abstractmethod
    async def _list(self, path: str) -> builtins.list[str]: ...

    @abstractmethod
    async def _move(self, source: str, destination: str) -> None: ...

    @abstractmethod
    async def _delete(self, path: str) -> None: ...
