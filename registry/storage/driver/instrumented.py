"""A driver that times another's actions, as registry:2's base driver does for its metrics.

registry:2 times GetContent, PutContent, Stat, List, Move and Delete (not the
opening of readers and writers, whose time is the transfer's); so does this,
with the same action names, into ``registry_storage_action_seconds``.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable
from time import perf_counter
from typing import ClassVar

from . import FileInfo, FileWriter, StorageDriver

#: Records one action: its registry:2 name and how long it took, failed or not.
Observe = Callable[[str, float], None]


class InstrumentedDriver(StorageDriver):
    name: ClassVar[str] = "instrumented"

    def __init__(self, inner: StorageDriver, observe: Observe) -> None:
        self.inner = inner
        self.observe = observe

    @property
    def moves_keep_times(self) -> bool:
        return self.inner.moves_keep_times

    async def _url_for(self, path: str, expires: float) -> str | None:
        return await self.inner._url_for(path, expires)  # Signed locally: nothing to time.

    async def _get_content(self, path: str) -> bytes:
        started = perf_counter()
        try:
            return await self.inner._get_content(path)
        finally:
            self.observe("GetContent", perf_counter() - started)

    async def _put_content(self, path: str, content: bytes) -> None:
        started = perf_counter()
        try:
            await self.inner._put_content(path, content)
        finally:
            self.observe("PutContent", perf_counter() - started)

    def _read(self, path: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
        return self.inner._read(path, offset, length)

    async def _writer(self, path: str, append: bool) -> FileWriter:
        return await self.inner._writer(path, append)

    async def _stat(self, path: str) -> FileInfo:
        started = perf_counter()
        try:
            return await self.inner._stat(path)
        finally:
            self.observe("Stat", perf_counter() - started)

    async def _list(self, path: str) -> builtins.list[str]:
        started = perf_counter()
        try:
            return await self.inner._list(path)
        finally:
            self.observe("List", perf_counter() - started)

    async def _list_holding(self, path: str, inner: str) -> builtins.list[str]:
        started = perf_counter()
        try:
            return await self.inner._list_holding(path, inner)
        finally:
            self.observe("List", perf_counter() - started)

    async def _move(self, source: str, destination: str) -> None:
        started = perf_counter()
        try:
            await self.inner._move(source, destination)
        finally:
            self.observe("Move", perf_counter() - started)

    async def _delete(self, path: str) -> None:
        started = perf_counter()
        try:
            await self.inner._delete(path)
        finally:
            self.observe("Delete", perf_counter() - started)

    async def close(self) -> None:
        await self.inner.close()
