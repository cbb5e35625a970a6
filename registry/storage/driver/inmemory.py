"""In-memory driver: for tests and throw-away registries (registry:2's ``inmemory``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
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


class _File:
    __slots__ = ("appending", "data", "modified")

    def __init__(self, data: bytes = b"") -> None:
        self.data = bytearray(data)
        self.modified = time.time()
        self.appending = False


class InMemoryWriter(FileWriter):
    def __init__(self, files: dict[str, _File], path: str, append: bool) -> None:
        self._files = files
        self._path = path
        existing = files.get(path)
        if append and existing is None:
            raise PathNotFoundError(path)
        if append and existing is not None and existing.appending:
            raise BusyError(path)
        self._file = existing if append and existing is not None else _File()
        self._appending = append
        self._file.appending = append
        self._start = len(self._file.data)
        files[path] = self._file

    @property
    def size(self) -> int:
        return len(self._file.data)

    async def write(self, data: bytes) -> None:
        self._file.data += data
        self._file.modified = time.time()

    async def commit(self) -> None:
        pass

    async def cancel(self) -> None:
        self._files.pop(self._path, None)
        await self.close()

    async def rollback(self) -> None:
        del self._file.data[self._start :]

    async def close(self) -> None:
        if self._appending:
            self._file.appending = False
            self._appending = False


class InMemoryDriver(StorageDriver):
    name: ClassVar[str] = "inmemory"

    def __init__(self) -> None:
        self._files: dict[str, _File] = {}

    def _file(self, path: str) -> _File:
        file = self._files.get(path)
        if file is None:
            raise PathNotFoundError(path)
        return file

    def _children(self, path: str) -> set[str]:
        prefix = path.rstrip("/") + "/"
        return {
            key[len(prefix) :].split("/", 1)[0] for key in self._files if key.startswith(prefix)
        }

    async def _get_content(self, path: str) -> bytes:
        return bytes(self._file(path).data)

    async def _put_content(self, path: str, content: bytes) -> None:
        self._files[path] = _File(content)

    async def _read(self, path: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
        data = self._file(path).data
        if offset > len(data):
            raise InvalidOffsetError(path, offset)
        end = len(data) if length is None else min(len(data), offset + length)
        for start in range(offset, end, CHUNK_SIZE):
            yield bytes(data[start : min(end, start + CHUNK_SIZE)])

    async def _writer(self, path: str, append: bool) -> FileWriter:
        return InMemoryWriter(self._files, path, append)

    async def _stat(self, path: str) -> FileInfo:
        file = self._files.get(path)
        if file is not None:
            return FileInfo(path, len(file.data), file.modified, False)
        if not self._children(path):
            raise PathNotFoundError(path)
        return FileInfo(path, 0, 0.0, True)

    async def _list(self, path: str) -> list[str]:
        children = self._children(path)
        if not children:
            raise PathNotFoundError(path)
        return sorted(children)

    async def _move(self, source: str, destination: str) -> None:
        file = self._file(source)
        del self._files[source]
        self._files[destination] = file

    async def _delete(self, path: str) -> None:
        prefix = path + "/"
        doomed = [key for key in self._files if key == path or key.startswith(prefix)]
        if not doomed:
            raise PathNotFoundError(path)
        for key in doomed:
            del self._files[key]
