"""Garbage collection: delete the blobs no manifest reaches, and with ``delete_untagged``
the manifests no tag reaches; offline (``registry garbage-collect``) or online,
beside pushes and pulls (``storage.maintenance.gc``). docs/gc.md tells the story.

**Mark.** In each repository the roots are its manifests (with ``delete_untagged``
only the tagged ones); a kept manifest keeps its index children and its
referrers (manifests whose ``subject`` it is), recursively, and marks itself,
its config, layers and children. Nothing younger than the grace delay is taken:
a blob whose data or any ``_layers`` link is young, a manifest whose revision
link is young, whatever a tag pointed at if the tag moved within the delay.

**Sweep, in two steps**, because a push may check that a blob exists just before
the collector takes it and link or refer to it just after. Candidates (with
every ``_layers`` link to them) are first *hidden*: moved into ``_gc``, where
neither clients nor registry:2 see them, so a push from then on finds them
missing and uploads them again. After requests in flight had ``RECHECK``
seconds to finish, the tree is read again and whatever became needed is put
back (a new manifest refers to it, a push linked it); what is still garbage
is deleted for good once hidden for ``settle`` seconds. Without a grace delay
(``settle`` 0, the registry stopped, as registry:2 requires) candidates are
deleted at once, as registry:2 does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..reference import Digest
from . import paths
from .driver import PathNotFoundError, StorageDriver
from .driver.filesystem import TEMPORARY_MARK, FilesystemDriver
from .gc_scan import GC_ROOT, Hidden, Progress, RepositoryScan, Scan, Scanner

log = logging.getLogger(__name__)

#: How long requests in flight get to finish before hidden content is checked again.
RECHECK = 2.0
#: Where an app keeps its :class:`OnlineCollector` (``app.extensions``), in the one
#: worker that collects.
GC_EXTENSION = "registry.gc"
#: A ``_gc`` folder with nothing to put back is removed once this old (never a fresh
#: one: another collector may be between writing an entry's origin and moving its file).
STALE = 600.0


@dataclass(frozen=True, slots=True)
class GCOptions:
    delete_untagged: bool = False
    """Also delete manifests no tag reaches (registry:2's ``--delete-untagged``)."""
    dry_run: bool = False
    grace: float = 3600.0
    """Nothing younger than this (seconds) is removed."""
    settle: float = RECHECK
    """Hidden content is deleted for good once hidden this long; 0 deletes at once."""
    tidy: bool = True
    """Remove the folders deleted content leaves (registry:2 does). Not beside a running
    registry: a push creating a file in a folder removed under it would fail."""


@dataclass(frozen=True, slots=True)
class GCResult:
    """What a collection did; the numbers metrics and the command's summary show."""

    repositories: int
    manifests: int
    """Manifests found, in all repositories."""
    manifests_deleted: int
    blobs: int
    """Blobs in the store when the collection started."""
    blobs_marked: int
    blobs_deleted: int
    bytes_freed: int
    blobs_kept: int
    pending: int
    """Blobs and manifests hidden, to be deleted for good by a later pass."""
    restored: int
    """Hidden content put back because a push needed it meanwhile."""
    young: int
    """Blobs no manifest reaches, kept because younger than the grace delay."""
    links_deleted: int
    temporary_files_deleted: int
    unreadable: tuple[str, ...]
    """Manifests whose content could not be read (``name@digest``): their blobs are unknown."""
    deleted_blobs: tuple[str, ...]
    deleted_manifests: tuple[str, ...]
    """``name@digest`` of each manifest deleted."""
    duration: float
    dry_run: bool


@dataclass(slots=True)
class _Tally:
    repositories: int = 0
    manifests: int = 0
    blobs: int = 0
    blobs_marked: int = 0
    bytes_freed: int = 0
    removed_live: int = 0
    restored: int = 0
    restored_data: int = 0
    young: int = 0
    links_deleted: int = 0
    temporary_files_deleted: int = 0
    pending: int = 0
    unreadable: set[str] = field(default_factory=set)
    deleted_blobs: list[str] = field(default_factory=list)
    deleted_manifests: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Decision:
    kept: dict[str, set[Digest]]
    """Manifests that stay, per repository (live or hidden)."""
    referenced: set[Digest]
    """Blobs a kept manifest reaches (the manifests' own data included)."""
    young_links: set[Digest]
    """Blobs linked somewhere within the grace delay."""
    linked: set[Digest]
    """Blobs with any live ``_layers`` link."""

    @property
    def marked(self) -> set[Digest]:
        return self.referenced | self.young_links


def _hidden_by_repository(scan: Scan) -> dict[str, set[Digest]]:
    found: dict[str, set[Digest]] = {}
    for item in scan.hidden:
        if item.kind == "revision" and item.repository is not None:
            found.setdefault(item.repository, set()).add(item.digest)
    return found


def decide(scan: Scan, *, delete_untagged: bool, cutoff: float) -> Decision:
    """What stays, from one reading of the tree; ``cutoff``: anything written later is young."""
    hidden = _hidden_by_repository(scan)
    decision = Decision({}, set(), set(), set())
    for name in sorted(set(scan.repositories) | set(hidden)):
        repository = scan.repositories.get(name) or RepositoryScan(name)
        revisions = set(repository.revisions) | hidden.get(name, set())
        kept = _kept(scan, repository, revisions, delete_untagged, cutoff)
        decision.kept[name] = kept
        for digest in kept:
            decision.referenced.add(digest)
            refs = scan.manifests.get(digest)
            if refs is not None:
                decision.referenced |= refs.blobs | refs.children
        for digest, modified in repository.layers.items():
            decision.linked.add(digest)
            if modified > cutoff:
                decision.young_links.add(digest)
    return decision


def _kept(
    scan: Scan,
    repository: RepositoryScan,
    revisions: set[Digest],
    delete_untagged: bool,
    cutoff: float,
) -> set[Digest]:
    if not delete_untagged:
        roots = set(revisions)
    else:
        roots = {digest for digest, modified in repository.revisions.items() if modified > cutoff}
        for tag in repository.tags:
            if tag.current in revisions:
                roots.add(tag.current)
            # Moved within the grace delay: a client may be pulling what it named.
            roots.update(digest for digest in tag.replaced_after(cutoff) if digest in revisions)
    referrers: dict[Digest, list[Digest]] = {}
    for digest in revisions:
        refs = scan.manifests.get(digest)
        if refs is not None and refs.subject is not None:
            referrers.setdefault(refs.subject, []).append(digest)
    kept: set[Digest] = set()
    stack = list(roots)
    while stack:
        digest = stack.pop()
        if digest in kept:
            continue
        kept.add(digest)
        refs = scan.manifests.get(digest)
        if refs is not None:
            stack.extend(child for child in refs.children if child in revisions)
        stack.extend(referrers.get(digest, ()))
    return kept


class GarbageCollector:
    """Runs collections over one driver; keeps what it read of manifests between runs."""

    def __init__(
        self,
        driver: StorageDriver,
        options: GCOptions,
        *,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = asyncio.sleep,
    ) -> None:
        self.driver = driver
        self.options = options
        self.progress = progress
        self.clock = clock
        self._sleep = sleep
        self._scanner = Scanner(driver, progress)
        self._entries = 0
        self._warned: set[str] = set()
        self._batches: set[str] = set()

    def _tell(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)

    async def collect(self) -> GCResult:
        """One collection: mark and hide (or delete); then check again, put back what a
        push needed meanwhile, and delete for good what stayed hidden ``settle`` seconds."""
        started = time.monotonic()
        options = self.options
        cutoff = self.clock() - options.grace
        tally = _Tally()
        hid = await self._pass(tally, cutoff, hide_new=True)
        if hid and not options.dry_run and options.settle > 0:
            await self._wait(min(options.settle, RECHECK))
            await self._pass(tally, cutoff, hide_new=False)
        if not options.dry_run:
            tally.temporary_files_deleted = await self._sweep_temporary(cutoff)
        return GCResult(
            repositories=tally.repositories,
            manifests=tally.manifests,
            manifests_deleted=len(tally.deleted_manifests),
            blobs=tally.blobs,
            blobs_marked=tally.blobs_marked,
            blobs_deleted=len(tally.deleted_blobs),
            bytes_freed=tally.bytes_freed,
            blobs_kept=tally.blobs - tally.removed_live + tally.restored_data,
            pending=tally.pending,
            restored=tally.restored,
            young=tally.young,
            links_deleted=tally.links_deleted,
            temporary_files_deleted=tally.temporary_files_deleted,
            unreadable=tuple(sorted(tally.unreadable)),
            deleted_blobs=tuple(tally.deleted_blobs),
            deleted_manifests=tuple(tally.deleted_manifests),
            duration=time.monotonic() - started,
            dry_run=options.dry_run,
        )

    async def _wait(self, seconds: float) -> None:
        self._tell("waiting for requests in flight", 0, 1)
        waited = self._sleep(seconds)
        if asyncio.iscoroutine(waited):
            await waited
        self._tell("waiting for requests in flight", 1, 1)

    async def _pass(self, tally: _Tally, cutoff: float, *, hide_new: bool) -> bool:
        """Read, decide, act; True when something was hidden (a check must follow)."""
        now = self.clock()
        scan = await self._scanner.scan(STALE, now)
        decision = decide(scan, delete_untagged=self.options.delete_untagged, cutoff=cutoff)
        if hide_new:
            tally.repositories = len(scan.repositories)
            tally.manifests = sum(len(repo.revisions) for repo in scan.repositories.values())
            tally.blobs = len(scan.blobs)
            tally.blobs_marked = len(decision.marked)
            tally.unreadable = {
                f"{name}@{digest}"
                for name, kept in decision.kept.items()
                for digest in kept
                if scan.manifests.get(digest) is None
            }
            for entry in tally.unreadable - self._warned:
                self._warned.add(entry)  # Once per collector, not at every interval.
                log.warning(
                    "garbage collection: cannot read manifest %s; its blobs are unknown", entry
                )
        tally.pending = 0
        await self._settle_hidden(scan, decision, tally, now)
        if not hide_new:
            return False
        revisions, blobs, young = self._candidates(scan, decision, cutoff)
        tally.young = young
        if self.options.dry_run:
            tally.deleted_manifests += [f"{name}@{digest}" for name, digest in revisions]
            tally.deleted_blobs += [str(digest) for digest in blobs]
            tally.bytes_freed += sum(scan.blobs[d].size for d in blobs if d in scan.blobs)
            return False
        if self.options.settle <= 0:
            await self._delete_now(scan, revisions, blobs, tally)
            return False
        return await self._hide(scan, revisions, blobs, tally, now, cutoff)

    def _candidates(
        self, scan: Scan, decision: Decision, cutoff: float
    ) -> tuple[list[tuple[str, Digest]], list[Digest], int]:
        """Manifests and blobs to take; and how many blobs only the grace delay saves."""
        revisions = [
            (name, digest)
            for name, repository in sorted(scan.repositories.items())
            for digest in sorted(repository.revisions, key=str)
            if digest not in decision.kept.get(name, set())
        ]
        hidden_blobs = scan.hidden_blobs()
        blobs: list[Digest] = []
        young = 0
        for digest, info in sorted(scan.blobs.items(), key=lambda item: str(item[0])):
            if digest in decision.referenced:
                continue
            if info.modified > cutoff or digest in decision.young_links:
                young += 1
            else:
                blobs.append(digest)
        # Links to content that is gone (registry:2's collector leaves them): old ones go too.
        dangling = decision.linked - set(scan.blobs) - set(hidden_blobs) - decision.marked
        blobs += sorted(dangling, key=str)
        return revisions, blobs, young

    def _links_to(self, scan: Scan, digest: Digest) -> list[str]:
        return [
            name
            for name, repository in sorted(scan.repositories.items())
            if digest in repository.layers
        ]

    # Hiding, putting back and deleting

    async def _hide(
        self,
        scan: Scan,
        revisions: list[tuple[str, Digest]],
        blobs: list[Digest],
        tally: _Tally,
        now: float,
        cutoff: float,
    ) -> bool:
        """Hide each candidate, each checked again right before: the scan may be seconds old."""
        batch = f"{int(now * 1000)}-{secrets.token_hex(4)}"
        self._batches.add(batch)
        total = len(revisions) + len(blobs)
        hid = False
        names = await self._scanner.repositories_with_links()
        # Manifests first: nothing reaches their blobs once they are hidden.
        for done, (name, digest) in enumerate(revisions, 1):
            self._tell("hiding", done, total)
            if not await self._untouched_revision(scan, name, digest, cutoff):
                continue
            entry = await self._hide_file(batch, paths.revision_link(name, digest))
            if entry is None:
                continue
            if await self._renewed([entry], cutoff) or await self._needed_revision(
                scan, name, digest
            ):
                await self._unhide([entry])
                continue
            hid = True
            tally.pending += 1
        for done, digest in enumerate(blobs, len(revisions) + 1):
            self._tell("hiding", done, total)
            if not await self._untouched_blob(scan, digest, cutoff, names):
                tally.young += 1
                continue
            data = None
            if digest in scan.blobs:
                data = await self._hide_file(batch, paths.blob_data(digest))
            entries = [data] if data is not None else []
            for name in self._links_to(scan, digest):
                entry = await self._hide_file(batch, paths.layer_link(name, digest))
                entries += [entry] if entry is not None else []
            if not entries:
                continue
            if await self._renewed(entries, cutoff) or not await self._untouched_blob(
                scan, digest, cutoff, names
            ):
                await self._unhide(entries)
                tally.young += 1
                continue
            hid = True
            if data is not None:
                tally.pending += 1
                tally.removed_live += 1
        return hid

    async def _renewed(self, entries: list[str], cutoff: float) -> bool:
        """Whether a hidden file was written again between its check and its hiding:
        a push that renewed a link (or stored the data again) there was answered.
        Known only where a move keeps the file's time; elsewhere the window stays."""
        if not self.driver.moves_keep_times:
            return False
        for entry in entries:
            info = await self._scanner.stat(f"{entry}/file")
            if info is not None and info.modified > cutoff:
                return True
        return False

    async def _unhide(self, entries: list[str]) -> None:
        """Put hidden files back at once, before anyone could miss them for long."""
        for entry in entries:
            origin = (await self.driver.get_content(f"{entry}/origin")).decode()
            try:
                await self.driver.stat(origin)
            except PathNotFoundError:
                with contextlib.suppress(PathNotFoundError):
                    await self.driver.move(f"{entry}/file", origin)
            await self._delete(entry)

    async def _untouched_revision(
        self, scan: Scan, name: str, digest: Digest, cutoff: float
    ) -> bool:
        """Not pushed again (a tag is set by pushing the manifest), nor named by a manifest
        stored since the scan."""
        link = await self._scanner.stat(paths.revision_link(name, digest))
        if link is None or link.modified > cutoff:
            return False
        return digest not in await self._scanner.new_references(scan, name)

    async def _needed_revision(self, scan: Scan, name: str, digest: Digest) -> bool:
        """Pushed again since it was hidden, or named by a manifest stored since the scan."""
        if await self._scanner.stat(paths.revision_link(name, digest)) is not None:
            return True
        return digest in await self._scanner.new_references(scan, name)

    async def _untouched_blob(
        self, scan: Scan, digest: Digest, cutoff: float, names: list[str]
    ) -> bool:
        """Not stored again, not linked anywhere since the scan (a mount, an upload of
        content already stored), not named by a manifest stored since in a repository
        holding it (one that checked its link before the link is hidden)."""
        data = await self._scanner.stat(paths.blob_data(digest))
        if data is not None and data.modified > cutoff:
            return False
        # A manifest's own data has no layer link: its revisions are where it is held.
        holders = {name for name, repo in scan.repositories.items() if digest in repo.revisions}
        # Once hidden, the links are gone from where the loop below looks: the scan still
        # knows where they were, and a manifest stored there since may name the blob.
        holders.update(self._links_to(scan, digest))
        for name in names:
            link = await self._scanner.stat(paths.layer_link(name, digest))
            if link is None:
                continue
            known = scan.repositories.get(name)
            if link.modified > cutoff or known is None or digest not in known.layers:
                return False
            holders.add(name)
        for name in sorted(holders):
            if digest in await self._scanner.new_references(scan, name):
                return False
        return True

    async def _hide_file(self, batch: str, origin: str) -> str | None:
        """Move one file into ``_gc``: its origin is written first, so it can always go
        back. Its entry there, or None when it was gone (a delete through the API)."""
        self._entries += 1
        entry = f"{GC_ROOT}/{batch}/{self._entries}"
        await self.driver.put_content(f"{entry}/origin", origin.encode())
        try:
            await self.driver.move(origin, f"{entry}/file")
        except PathNotFoundError:
            await self._delete(entry)
            return None
        return entry

    async def _settle_hidden(
        self, scan: Scan, decision: Decision, tally: _Tally, now: float
    ) -> None:
        """Put back what became needed; delete what stayed hidden ``settle`` seconds."""
        needed = decision.marked | decision.linked
        for done, item in enumerate(scan.hidden, 1):
            self._tell("checking hidden content", done, len(scan.hidden))
            if item.kind == "revision":
                keep = item.digest in decision.kept.get(item.repository or "", set())
            else:
                # A live link to hidden content was written after it was hidden: a push
                # that found it just before was told it is there.
                keep = item.digest in needed
            if keep:
                if not self.options.dry_run:
                    await self._put_back(scan, item, tally, _why(scan, decision, item))
            elif now - item.hidden_at >= self.options.settle:
                await self._delete_hidden(scan, item, tally)
            else:
                tally.pending += item.kind != "layer"
        if not self.options.dry_run:
            for entry in scan.stale_entries + scan.empty_batches:
                await self._delete(entry)
            for folder in scan.empty_folders:
                await self._remove_folder(folder)
            await self._drop_own_batches()

    async def _drop_own_batches(self) -> None:
        """This collector's batches once empty (another's may be between two writes)."""
        for batch in sorted(self._batches):
            path = f"{GC_ROOT}/{batch}"
            try:
                if await self.driver.list(path):
                    continue
            except PathNotFoundError:
                pass
            self._batches.discard(batch)
            await self._delete(path)
        await self._remove_folder(GC_ROOT)

    async def _put_back(self, scan: Scan, item: Hidden, tally: _Tally, why: str) -> None:
        if item.kind == "blob" and item.digest in scan.blobs:
            await self._delete(item.entry)  # Pushed again meanwhile: the new copy stays.
        else:
            try:
                await self.driver.move(item.file, item.origin)
            except PathNotFoundError:
                return  # Another collector put it back first.
            await self._delete(item.entry)
            if item.kind == "blob":
                tally.restored_data += 1
        if item.kind != "layer":
            tally.restored += 1
            log.info("garbage collection: put back %s %s: %s", item.kind, item.digest, why)

    async def _delete_hidden(self, scan: Scan, item: Hidden, tally: _Tally) -> None:
        if item.kind == "blob":
            tally.deleted_blobs.append(str(item.digest))
            if item.digest not in scan.blobs:
                tally.bytes_freed += item.size
        elif item.kind == "revision":
            name = item.repository or ""
            tally.deleted_manifests.append(f"{name}@{item.digest}")
            repository = scan.repositories.get(name)
            if not self.options.dry_run and (
                repository is None or item.digest not in repository.revisions
            ):
                await self._forget_manifest(scan, name, item.digest)
        else:
            tally.links_deleted += 1
        if not self.options.dry_run:
            await self._delete(item.entry)
            await self._remove_folder(item.origin.rsplit("/", 1)[0])

    async def _delete_now(
        self,
        scan: Scan,
        revisions: list[tuple[str, Digest]],
        blobs: list[Digest],
        tally: _Tally,
    ) -> None:
        """registry:2's sweep, for a registry that is stopped: no hiding, no second look."""
        total = len(revisions) + len(blobs)
        for done, (name, digest) in enumerate(revisions, 1):
            await self._delete(paths.revision_dir(name, digest))
            await self._forget_manifest(scan, name, digest)
            tally.deleted_manifests.append(f"{name}@{digest}")
            self._tell("deleting", done, total)
        for done, digest in enumerate(blobs, len(revisions) + 1):
            info = scan.blobs.get(digest)
            if info is not None:
                await self._delete(paths.blob_dir(digest))
                tally.deleted_blobs.append(str(digest))
                tally.bytes_freed += info.size
                tally.removed_live += 1
            for name in self._links_to(scan, digest):
                await self._delete(paths.layer_link(name, digest).removesuffix("/link"))
                tally.links_deleted += 1
            self._tell("deleting", done, total)

    async def _forget_manifest(self, scan: Scan, name: str, digest: Digest) -> None:
        """What only pointed at a deleted manifest: tag history entries (as registry:2
        deletes them) and its entry in the referrers index."""
        repository = scan.repositories.get(name)
        for tag in repository.tags if repository is not None else ():
            if digest in tag.history:
                index_link = paths.tag_index_link(name, tag.name, digest)
                await self._delete(index_link.removesuffix("/link"))
        refs = scan.manifests.get(digest)
        if refs is not None and refs.subject is not None:
            link = paths.referrer_link(name, refs.subject, digest)
            await self._delete(link.removesuffix("/link"))

    async def _delete(self, path: str) -> None:
        with contextlib.suppress(PathNotFoundError):
            await self.driver.delete(path)

    async def _remove_folder(self, path: str) -> None:
        """An empty folder (a filesystem's; other drivers have none), with ``tidy`` only."""
        root = _filesystem_root(self.driver) if self.options.tidy else None
        if root is not None:
            with contextlib.suppress(OSError):
                os.rmdir(root + path)  # Never a folder holding anything.

    async def _sweep_temporary(self, cutoff: float) -> int:
        """``.tmp~`` files a crash left (the filesystem driver's half-written files),
        once older than the grace delay: a younger one may be a write in progress."""
        root = _filesystem_root(self.driver)
        if root is None:
            return 0
        return await asyncio.to_thread(_remove_temporary, root + paths.ROOT, cutoff)


def _why(scan: Scan, decision: Decision, item: Hidden) -> str:
    """Why hidden content is needed again, for the log."""
    if item.kind == "revision":
        return "tagged, or reached from a kept manifest, since it was hidden"
    if item.digest in scan.blobs:
        return "pushed again"
    if item.digest in decision.referenced:
        return "a manifest pushed meanwhile refers to it"
    return "a push linked it meanwhile"


def _filesystem_root(driver: object) -> str | None:
    """The folder of a filesystem driver, also behind a wrapper (metrics' instrumented one)."""
    while not isinstance(driver, FilesystemDriver) and hasattr(driver, "inner"):
        driver = driver.inner
    return driver.root if isinstance(driver, FilesystemDriver) else None


def _remove_temporary(root: str, cutoff: float) -> int:
    removed = 0
    for folder, _, files in os.walk(root):
        for name in files:
            if TEMPORARY_MARK not in name:
                continue
            path = os.path.join(folder, name)
            try:
                if os.lstat(path).st_mtime <= cutoff:
                    os.unlink(path)
                    removed += 1
            except FileNotFoundError:
                continue
    return removed


async def collect(
    driver: StorageDriver, options: GCOptions, *, progress: Progress | None = None
) -> GCResult:
    """One collection over ``driver``."""
    return await GarbageCollector(driver, options, progress=progress).collect()


def summary(result: GCResult) -> str:
    """One line for logs."""
    verb = "would delete" if result.dry_run else "deleted"
    return (
        f"{result.blobs_marked} blobs marked, {verb} {result.blobs_deleted} blobs "
        f"({result.bytes_freed} bytes) and {result.manifests_deleted} manifests; "
        f"{result.blobs_kept} blobs kept, {result.young} kept as younger than the grace delay, "
        f"{result.pending} hidden until checked again, {result.restored} put back; "
        f"{result.duration:.2f}s"
    )


class OnlineCollector:
    """The collector of a running registry: a collection every ``interval`` seconds, in
    one worker. Hidden content is deleted for good only after a whole grace delay,
    so a push that found a blob before it was hidden has that long to use it."""

    def __init__(
        self,
        driver: StorageDriver,
        *,
        interval: float,
        grace: float,
        delete_untagged: bool,
        on_result: Callable[[GCResult], None] | None = None,
    ) -> None:
        options = GCOptions(delete_untagged=delete_untagged, grace=grace, settle=grace, tidy=False)
        self.collector = GarbageCollector(driver, options)
        self.interval = interval
        self.on_result = on_result
        self.last_result: GCResult | None = None
        """The latest collection's numbers (None before the first one)."""
        self.runs = 0
        self.failures = 0

    async def run_forever(self) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(self.interval)

    async def run_once(self) -> GCResult | None:
        try:
            result = await self.collector.collect()
        except Exception:
            self.failures += 1
            log.exception("garbage collection failed; retrying at the next interval")
            return None
        self.runs += 1
        self.last_result = result
        if _worth_telling(result):
            log.info("garbage collection: %s", summary(result))
        if self.on_result is not None:
            self.on_result(result)
        return result


def _worth_telling(result: GCResult) -> bool:
    return any(
        (
            result.blobs_deleted,
            result.manifests_deleted,
            result.restored,
            result.temporary_files_deleted,
            result.unreadable,
        )
    )


def format_items(result: GCResult) -> Iterable[str]:
    """registry:2's lines for what a collection deleted (or would delete)."""
    for entry in result.deleted_manifests:
        yield f"manifest eligible for deletion: {entry}"
    for digest in result.deleted_blobs:
        yield f"blob eligible for deletion: {digest}"
