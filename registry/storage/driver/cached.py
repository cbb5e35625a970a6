"""A driver that caches ``stat`` answers for content that never changes once written.

registry:2's ``storage.cache.blobdescriptor`` saves the storage round trips of blob
and link checks; on S3 each ``stat`` is an HTTP request (about 7 ms). This wrapper
does that at the driver: it caches **only** ``stat`` of

* blob data, ``blobs/<alg>/<2 hex>/<hex>/data``,
* ``_layers`` links, ``repositories/<name>/_layers/<alg>/<hex>/link``,
* ``_manifests/revisions`` links, ``.../_manifests/revisions/<alg>/<hex>/link``,

whose bytes never change once written (a digest names them), and only answers that
found a file: "not found" always goes to storage, since a push makes it wrong at any
moment. Every write through the wrapper invalidates what it touches: ``put_content``,
a writer's commit, cancel, rollback and close, both ends of a ``move``, and
``delete`` of a path and everything below it. Tags, uploads and listings pass
straight through.

Where the answers are kept is a :class:`StatCache`: :class:`MemoryStatCache`
(``inmemory``: this process's, a bounded LRU) or ``RedisStatCache``
(``registry/storage/redis_cache.py``: shared by every worker and instance).
"""

from __future__ import annotations

import builtins
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from .. import paths
from . import FileInfo, FileWriter, StorageDriver

_NAME = r"[^/_][^/]*(?:/[^/_][^/]*)*"  # Repository name components never start with "_".
_CACHEABLE = re.compile(
    rf"{re.escape(paths.BLOBS)}/[^/]+/[^/]+/[^/]+/data"
    rf"|{re.escape(paths.REPOSITORIES)}/(?P<name>{_NAME})"
    r"/(?:_layers|_manifests/revisions)/[^/]+/[^/]+/link"
)


def cacheable(path: str) -> bool:
    """Whether ``stat(path)`` may be cached: content named by its digest."""
    return _CACHEABLE.fullmatch(path) is not None


def repository_of(path: str) -> str | None:
    """The repository a cacheable link belongs to; None for blob data."""
    found = _CACHEABLE.fullmatch(path)
    return found.group("name") if found is not None else None


@dataclass(frozen=True, slots=True)
class Scope:
    """What a write to (or delete of) a path can make stale in the cache."""

    leaf: str | None = None
    """The one cacheable file at or below the path."""
    names: str | None = None
    """A repository name (or its first components): every link of that repository,
    and of repositories nested in it (``a/b`` for ``a``), goes."""
    everything: bool = False
    """A folder above the repositories or inside ``blobs``: all of the storage's answers."""


def scope_of(path: str) -> Scope | None:
    """What changing ``path`` invalidates; None when nothing cacheable is at or below it."""
    if path == paths.ROOT or paths.ROOT.startswith(path + "/"):
        return Scope(everything=True)
    if not path.startswith(paths.ROOT + "/"):
        return None
    parts = path[len(paths.ROOT) + 1 :].split("/")
    if parts[0] == "blobs":
        if len(parts) <= 3:  # blobs, blobs/<alg>, blobs/<alg>/<2 hex>: rare, so coarse.
            return Scope(everything=True)
        if len(parts) == 4 or (len(parts) == 5 and parts[4] == "data"):
            return Scope(leaf="/".join((paths.ROOT, *parts[:4], "data")))
        return None
    if parts[0] != "repositories":
        return None
    names: list[str] = []
    for part in parts[1:]:
        if part.startswith("_"):
            break
        names.append(part)
    rest = parts[1 + len(names) :]
    if not rest:  # A repository's folder (nested ones live inside), or above.
        return Scope(names="/".join(names)) if names else Scope(everything=True)
    if not names:
        return None
    name = "/".join(names)
    if rest[0] == "_layers":
        folder, below = rest[:1], rest[1:]
    elif rest[0] == "_manifests" and (len(rest) == 1 or rest[1] == "revisions"):
        folder, below = ["_manifests", "revisions"], rest[2:]
    else:
        return None  # Tags, uploads, referrers: never cached.
    if len(below) <= 1:
        return Scope(names=name)
    if len(below) == 2 or (len(below) == 3 and below[2] == "link"):
        return Scope(leaf="/".join((paths.REPOSITORIES, *names, *folder, *below[:2], "link")))
    return None


@dataclass(frozen=True, slots=True)
class Miss:
    """A lookup that found nothing usable, and what it saw: a fill is accepted only if
    nothing invalidated the path since (see each cache), so an answer read from storage
    just before a delete is never cached just after it."""

    path: str
    seen: object = None
    """The cache's own record of what the lookup saw; None: do not fill."""


class StatCache(Protocol):
    """Where the wrapper keeps ``stat`` answers, keyed by path. Never raises for its own
    troubles (a Redis down): it then misses, and the wrapper asks the storage."""

    async def get(self, path: str) -> FileInfo | Miss: ...

    async def set(self, miss: Miss, info: FileInfo) -> None:
        """Remember ``info``, found in storage after ``miss``."""

    async def delete(self, path: str) -> None:
        """Forget ``path`` and everything below it."""

    async def close(self) -> None: ...


class MemoryStatCache:
    """``inmemory``: one process's answers, least recently used dropped beyond ``size``.

    Another worker (or instance) does not see this process's invalidations: what it
    deleted may still be found here for ``ttl`` seconds, hence a short ``ttl``. A
    fill racing an invalidation in this process is refused (an epoch counter).
    """

    def __init__(self, size: int = 10_000, ttl: float = 5.0) -> None:
        self.size = size
        self.ttl = ttl
        self._entries: OrderedDict[str, tuple[FileInfo, float, str | None]] = OrderedDict()
        self._epoch = 0

    async def get(self, path: str) -> FileInfo | Miss:
        entry = self._entries.get(path)
        if entry is not None:
            info, expires, _ = entry
            if time.monotonic() < expires:
                self._entries.move_to_end(path)
                return info
            del self._entries[path]
        return Miss(path, self._epoch)

    async def set(self, miss: Miss, info: FileInfo) -> None:
        if miss.seen != self._epoch:
            return  # Something was invalidated meanwhile; maybe this very path.
        self._entries[miss.path] = (info, time.monotonic() + self.ttl, repository_of(miss.path))
        self._entries.move_to_end(miss.path)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    async def delete(self, path: str) -> None:
        scope = scope_of(path)
        if scope is None:
            return
        self._epoch += 1
        if scope.everything:
            self._entries.clear()
        elif scope.leaf is not None:
            self._entries.pop(scope.leaf, None)
        elif scope.names is not None:
            prefix = scope.names + "/"
            for key in [
                key
                for key, (_, _, name) in self._entries.items()
                if name is not None and (name == scope.names or name.startswith(prefix))
            ]:
                del self._entries[key]

    async def close(self) -> None:
        self._entries.clear()


class _InvalidatingWriter(FileWriter):
    """A writer to a cacheable path: each step that changes the file invalidates it."""

    def __init__(self, inner: FileWriter, cache: StatCache, path: str) -> None:
        self.inner = inner
        self.cache = cache
        self.path = path

    @property
    def size(self) -> int:
        return self.inner.size

    async def write(self, data: bytes) -> None:
        await self.inner.write(data)

    async def write_parts(self, parts: Sequence[bytes]) -> None:
        await self.inner.write_parts(parts)

    async def commit(self) -> None:
        try:
            await self.inner.commit()
        finally:
            await self.cache.delete(self.path)

    async def cancel(self) -> None:
        try:
            await self.inner.cancel()
        finally:
            await self.cache.delete(self.path)

    async def rollback(self) -> None:
        try:
            await self.inner.rollback()
        finally:
            await self.cache.delete(self.path)

    async def close(self) -> None:
        try:
            await self.inner.close()
        finally:
            await self.cache.delete(self.path)


class CachedDriver(StorageDriver):
    """``inner`` with its ``stat`` answers for immutable content kept in ``cache``.

    ``lookups=False`` (:meth:`invalidating_only`): every read goes to storage, writes
    still invalidate. For the garbage collector, which must see the storage as it is
    and would otherwise fill the cache with every file it scans.
    """

    name: ClassVar[str] = "cached"

    def __init__(self, inner: StorageDriver, cache: StatCache, *, lookups: bool = True) -> None:
        self.inner = inner
        self.cache = cache
        self.lookups = lookups

    def invalidating_only(self) -> CachedDriver:
        """The same driver and cache, reads uncached; closing it closes both, as this."""
        return CachedDriver(self.inner, self.cache, lookups=False)

    @property
    def moves_keep_times(self) -> bool:
        return self.inner.moves_keep_times

    async def _url_for(self, path: str, expires: float) -> str | None:
        return await self.inner._url_for(path, expires)

    async def _get_content(self, path: str) -> bytes:
        return await self.inner._get_content(path)

    async def _put_content(self, path: str, content: bytes) -> None:
        try:
            await self.inner._put_content(path, content)
        finally:
            await self._invalidate(path)

    def _read(self, path: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
        return self.inner._read(path, offset, length)

    async def _writer(self, path: str, append: bool) -> FileWriter:
        writer = await self.inner._writer(path, append)
        if scope_of(path) is None:
            return writer  # Uploads' chunks: no cost added.
        return _InvalidatingWriter(writer, self.cache, path)

    async def _stat(self, path: str) -> FileInfo:
        if not self.lookups or not cacheable(path):
            return await self.inner._stat(path)
        found = await self.cache.get(path)
        if isinstance(found, FileInfo):
            return found
        info = await self.inner._stat(path)  # Not found raises: never cached.
        if not info.is_dir:
            await self.cache.set(found, info)
        return info

    async def _list(self, path: str) -> builtins.list[str]:
        return await self.inner._list(path)

    async def _list_holding(self, path: str, inner: str) -> builtins.list[str]:
        return await self.inner._list_holding(path, inner)

    async def _move(self, source: str, destination: str) -> None:
        try:
            await self.inner._move(source, destination)
        finally:
            await self._invalidate(source)
            await self._invalidate(destination)

    async def _delete(self, path: str) -> None:
        try:
            await self.inner._delete(path)
        finally:
            await self._invalidate(path)

    async def _invalidate(self, path: str) -> None:
        if scope_of(path) is not None:
            await self.cache.delete(path)

    async def close(self) -> None:
        try:
            await self.inner.close()
        finally:
            await self.cache.close()
