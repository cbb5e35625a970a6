"""The catalog from an index: a page of ``n`` costs about ``n``, not the whole tree.

registry:2 walks every folder under ``repositories/`` for every catalog page,
so its cost grows with the tree. Here each process keeps the sorted names in
memory, read from a journal on storage that every writer appends to when it
makes a repository (``_catalog/repositories``, one name a line, beside
``repositories/`` where registry:2 never looks). Kept true to the tree:

* **a push through any worker, any instance on the same folder** appends the
  name before its manifest PUT is answered; a reader stats the journal (one
  call) before each page and reads what was appended since;
* **a tree written by another program** (registry:2, a restore, a hand edit) is
  walked once by each process before its first page, and every
  REINDEX_SECONDS by one process of all those sharing the folder (its turn:
  ``turns.py``); names the walk finds are appended, names
  it no longer finds make the journal be written anew, which every process
  then reads whole. A change at the top folder (a repository added or removed
  there by someone else) is seen at once: one ``stat`` per page notices it.
  Deeper hand edits wait for the next walk. Deleting the last manifest leaves
  ``_manifests`` in place, so the repository stays listed, as in registry:2.

Appenders hold a shared lock and check they wrote to the file in place, so
none is lost to a rewrite's rename. Drivers without a local folder keep
registry:2's walk (:class:`WalkedCatalog`). Where Redis is the cache
(``storage.cache.blobdescriptor: redis``), the catalog is a sorted set there, for
every driver (``redis_catalog.py``).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fcntl
import logging
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..reference import NAME_RE
from . import paths
from .catalog import repositories
from .driver import StorageDriver
from .driver.filesystem import FilesystemDriver, write_atomically

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

JOURNAL = f"{paths.ROOT}/_catalog/repositories"
#: How often the maintenance worker walks the tree for what another program wrote.
REINDEX_SECONDS = 600.0

Keep = Callable[[str], bool]


class Catalog(Protocol):
    async def page(self, last: str | None, limit: int, keep: Keep) -> tuple[list[str], bool]:
        """Names after ``last`` that ``keep`` accepts, at most ``limit``; whether more follow."""
        ...

    async def created(self, name: str) -> None:
        """``name`` has a manifest now (called before the PUT is answered)."""
        ...

    async def reindex(self) -> None:
        """Walk the tree for repositories another program wrote."""
        ...

    async def close(self) -> None: ...


def choose(names: list[str], last: str | None, limit: int, keep: Keep) -> tuple[list[str], bool]:
    """registry:2's page of sorted ``names``: those after ``last`` that ``keep``
    accepts, at most ``limit``; and whether more follow."""
    names = [name for name in names if keep(name)]
    if last:
        names = names[bisect.bisect_right(names, last) :]
    return names[:limit], len(names) > limit


class WalkedCatalog:
    """registry:2's way, for drivers with no local folder: a walk per page."""

    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver

    async def page(self, last: str | None, limit: int, keep: Keep) -> tuple[list[str], bool]:
        return choose(await repositories(self.driver), last, limit, keep)

    async def created(self, name: str) -> None:
        pass

    async def reindex(self) -> None:
        pass

    async def close(self) -> None:
        pass


class IndexedCatalog:
    """The journal's names, sorted, in this process; see the module's docstring."""

    def __init__(self, root: str) -> None:
        self.journal = root + JOURNAL
        self.top = root + paths.REPOSITORIES
        self.names: list[str] = []
        self.known: set[str] = set()
        self._fd: int | None = None
        self._inode = 0
        self._offset = 0
        self._top_seen: tuple[int, int, int] | None = None
        self._walked = False
        self._walking = asyncio.Lock()

    # Reading

    async def page(self, last: str | None, limit: int, keep: Keep) -> tuple[list[str], bool]:
        if not self._walked:
            await self.reindex()
        self._read_journal()
        if self._top_changed():
            await self.reindex()
        return self._choose(last, limit, keep)

    def _choose(self, last: str | None, limit: int, keep: Keep) -> tuple[list[str], bool]:
        """A page from memory: a bisection and ``limit`` names."""
        start = bisect.bisect_right(self.names, last) if last else 0
        chosen: list[str] = []
        for index in range(start, len(self.names)):
            name = self.names[index]
            if keep(name):
                if len(chosen) == limit:
                    return chosen, True
                chosen.append(name)
        return chosen, False

    def _read_journal(self) -> None:
        """What was appended since the last look; all of it when the file was replaced.

        The file read stays open: its inode cannot be reused by a new journal while
        this process holds it, so a different inode at the path always means a new file.
        """
        try:
            status = os.stat(self.journal)
        except FileNotFoundError:
            return
        if not stat.S_ISREG(status.st_mode):
            return  # Not ours to read (see _append's warning).
        if self._fd is None or status.st_ino != self._inode:
            try:
                fd = os.open(self.journal, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return
            if self._fd is not None:
                os.close(self._fd)
            self._fd, self._inode, self._offset = fd, os.fstat(fd).st_ino, 0
            self.names, self.known = [], set()
            status = os.fstat(fd)
        if status.st_size <= self._offset:
            return
        data = os.pread(self._fd, status.st_size - self._offset, self._offset)
        end = data.rfind(b"\n") + 1  # A line being written is read next time.
        self._offset += end
        self._add(data[:end].decode("utf-8", "replace").splitlines())

    def _add(self, names: list[str]) -> None:
        fresh = {name for name in names if name not in self.known and NAME_RE.fullmatch(name)}
        if not fresh:
            return
        self.known |= fresh
        if len(fresh) > 16:
            self.names = sorted(self.known)
        else:
            for name in fresh:
                bisect.insort(self.names, name)

    def _forget(self, name: str) -> None:
        if name in self.known:
            self.known.discard(name)
            del self.names[bisect.bisect_left(self.names, name)]

    def _top_changed(self) -> bool:
        """The top folder changed in a way the journal does not explain: another program
        added a repository there (ours append before their folder counts), or removed
        one (forgotten at once). Deeper edits wait for the next walk."""
        seen = _signature(self.top)
        if seen == self._top_seen:
            return False
        self._top_seen = seen
        try:
            entries = set(os.listdir(self.top))
        except FileNotFoundError:
            entries = set()
        tops = {name.split("/", 1)[0] for name in self.known}
        for name in [name for name in self.names if name.split("/", 1)[0] not in entries]:
            self._forget(name)
        return any(entry not in tops and not entry.startswith("_") for entry in entries)

    # Writing

    async def created(self, name: str) -> None:
        self._read_journal()
        if name in self.known:
            return
        await self._append([name])

    async def _append(self, names: list[str]) -> None:
        try:
            await asyncio.to_thread(_append, self.journal, names)
        except OSError as error:
            # A read-only storage folder, say: this process still lists them; others
            # find them by their own walk.
            log.warning("catalog: cannot write %s: %s", self.journal, error.strerror or error)
            self._add(names)
            return
        self._read_journal()

    async def reindex(self) -> None:
        """Walk the tree (in a thread); append what is missing, forget what is gone."""
        async with self._walking:
            found = await asyncio.to_thread(_walk, self.top)
            self._read_journal()
            missing = sorted(found - self.known)
            stale = self.known - found
            if missing:
                await self._append(missing)
                log.info("catalog: %d repositories indexed from the tree", len(missing))
            if stale:
                # Written anew, so every process reads it again and forgets them too.
                with contextlib.suppress(OSError):  # A read-only folder: nothing to tidy.
                    await asyncio.to_thread(_rewrite, self.journal, self.top, stale)
                self._read_journal()
            for name in stale:
                self._forget(name)
            self._top_seen = _signature(self.top)
            self._walked = True

    async def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None



def _signature(folder: str) -> tuple[int, int, int] | None:
    """What changes when an entry is added or removed: the time alone may not (a
    clock tick is milliseconds), the count of subfolders (links) and size do."""
    try:
        status = os.stat(folder)
    except FileNotFoundError:
        return None
    return status.st_mtime_ns, status.st_nlink, status.st_size


def _walk(top: str) -> set[str]:
    """registry:2's rule, with os.scandir: a folder holding ``_manifests`` is a repository."""
    found: set[str] = set()
    stack = [("", top)]
    while stack:
        name, folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.name == "_manifests" and name:
                found.add(name)
            elif not entry.name.startswith("_") and entry.is_dir(follow_symlinks=False):
                stack.append((f"{name}/{entry.name}" if name else entry.name, entry.path))
    return found


def _append(journal: str, names: list[str]) -> None:
    """Whole lines in one write, under a shared lock on the file in place (a rewrite
    takes it exclusively, and an append that lost the race goes to the new file)."""
    os.makedirs(os.path.dirname(journal), exist_ok=True)
    data = "".join(f"{name}\n" for name in names).encode()
    while True:
        fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                if os.fstat(fd).st_ino != os.stat(journal).st_ino:
                    continue  # Replaced meanwhile: append to the new one.
            except FileNotFoundError:
                continue
            os.write(fd, data)
            return
        finally:
            os.close(fd)


def _rewrite(journal: str, top: str, stale: set[str]) -> None:
    """The journal anew without the names the walk found gone (each checked again now:
    a push may have made it again), once every append in progress ended."""
    try:
        fd = os.open(journal, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with open(journal, encoding="utf-8", errors="replace") as file:
            lines = set(file.read().splitlines())
        gone = {name for name in stale if not os.path.isdir(f"{top}/{name}/_manifests")}
        kept = sorted(name for name in lines - gone if NAME_RE.fullmatch(name))
        write_atomically(journal, "".join(f"{name}\n" for name in kept).encode())
    finally:
        os.close(fd)


def catalog_for(driver: StorageDriver, config: Config | None = None) -> Catalog:
    """A sorted set in Redis where ``config`` makes Redis the cache (shared by every
    instance, whatever the driver); else an index where the driver has a local folder;
    registry:2's walk elsewhere."""
    if config is not None and config.storage.cache.blobdescriptor == "redis":
        from .redis_catalog import RedisCatalog  # redis-py: only when used.

        return RedisCatalog.for_driver(driver, config)
    inner: object = driver
    while not isinstance(inner, FilesystemDriver) and hasattr(inner, "inner"):
        inner = inner.inner
    if isinstance(inner, FilesystemDriver):
        return IndexedCatalog(inner.root)
    return WalkedCatalog(driver)
