"""What garbage collection reads: the tree as it is, read once per pass, never written.

A pass reads every repository (revisions, tags, ``_layers`` links, each with
its modification time), every blob, every manifest's references and the
content hidden by earlier passes (``_gc``). The collector decides from that
picture alone, so deciding is a pure function and the tree is read in one place.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ..manifests import MAX_MANIFEST_SIZE
from ..reference import NAME_PATTERN, Digest, InvalidReferenceError
from . import paths
from .blobs import read_link
from .catalog import folders
from .driver import FileInfo, PathNotFoundError, StorageDriver

#: Hidden content waits here between a pass that hides it and the one that deletes
#: it for good (or puts it back): ``_gc/<batch>/<entry>/{origin,file}``. Outside
#: ``blobs`` and ``repositories``, so registry:2 and the API never see it.
GC_ROOT = f"{paths.ROOT}/_gc"

#: A manifest larger than this is not read (nothing legitimate comes close).
_MAX_READ = 4 * MAX_MANIFEST_SIZE

_BLOB_RE = re.compile(rf"{re.escape(paths.BLOBS)}/([a-z0-9]+)/[a-f0-9]{{2}}/([a-f0-9]+)/data")
_LAYER_RE = re.compile(
    rf"{re.escape(paths.REPOSITORIES)}/({NAME_PATTERN})/_layers/([a-z0-9]+)/([a-f0-9]+)/link"
)
_REVISION_RE = re.compile(
    rf"{re.escape(paths.REPOSITORIES)}/({NAME_PATTERN})/_manifests/revisions/([a-z0-9]+)/([a-f0-9]+)/link"
)

Progress = Callable[[str, int, int], None]
"""Called as ``progress(phase, done, total)`` while a pass reads or writes."""


def digest_at(algorithm: str, hex_part: str) -> Digest | None:
    """The digest a folder name stands for, or None for a name that is not one."""
    try:
        return Digest.parse(f"{algorithm}:{hex_part}")
    except InvalidReferenceError:
        return None


@dataclass(frozen=True, slots=True)
class References:
    """What a stored manifest points at, read leniently: a reference is never missed
    for a field this registry would refuse (schema 1, old ORAS artifacts)."""

    blobs: frozenset[Digest]
    children: frozenset[Digest]
    subject: Digest | None


def _digest_in(entry: object, key: str = "digest") -> Digest | None:
    if not isinstance(entry, dict):
        return None
    value = entry.get(key)
    if not isinstance(value, str):
        return None
    try:
        return Digest.parse(value)
    except InvalidReferenceError:
        return None


def references(data: bytes) -> References | None:
    """The references of a manifest of any kind; None when it is not a JSON object."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    blobs: set[Digest] = set()
    children: set[Digest] = set()

    def collect(key: str, into: set[Digest], field_name: str = "digest") -> None:
        entries = document.get(key)
        for entry in entries if isinstance(entries, list) else ():
            found = _digest_in(entry, field_name)
            if found is not None:
                into.add(found)

    config = _digest_in(document.get("config"))
    if config is not None:
        blobs.add(config)
    collect("layers", blobs)
    collect("blobs", blobs)  # OCI artifact manifests (ORAS, image-spec 1.1-rc)
    collect("fsLayers", blobs, "blobSum")  # Docker schema 1
    collect("manifests", children)
    return References(frozenset(blobs), frozenset(children), _digest_in(document.get("subject")))


@dataclass(slots=True)
class Tag:
    name: str
    current: Digest | None
    history: dict[Digest, float]
    """Every digest under ``index/`` (what the tag has pointed at), with the time its
    link was written: when the tag was set to it."""

    def replaced_after(self, cutoff: float) -> list[Digest]:
        """What the tag named until some time after ``cutoff``: a client that read the tag
        then may still be pulling it."""
        ordered = sorted(self.history.items(), key=lambda item: item[1])
        return [
            digest
            for (digest, _), (_, next_set) in itertools.pairwise(ordered)
            if next_set > cutoff and digest != self.current
        ]


@dataclass(slots=True)
class RepositoryScan:
    name: str
    revisions: dict[Digest, float] = field(default_factory=dict)
    """Manifests linked in the repository, with the time of their link."""
    tags: list[Tag] = field(default_factory=list)
    layers: dict[Digest, float] = field(default_factory=dict)
    """``_layers`` links, with their times."""


@dataclass(frozen=True, slots=True)
class Hidden:
    """One file a pass moved into ``_gc``, and where it came from."""

    entry: str
    """Its folder, ``_gc/<batch>/<n>``."""
    origin: str
    hidden_at: float
    kind: str
    """``blob``, ``layer`` (a ``_layers`` link) or ``revision``."""
    digest: Digest
    repository: str | None
    size: int

    @property
    def file(self) -> str:
        return f"{self.entry}/file"


def parse_origin(origin: str) -> tuple[str, str | None, Digest] | None:
    """(kind, repository, digest) of a path that can be hidden; None for any other."""
    found = _BLOB_RE.fullmatch(origin)
    if found:
        digest = digest_at(found.group(1), found.group(2))
        return ("blob", None, digest) if digest else None
    for kind, pattern in (("layer", _LAYER_RE), ("revision", _REVISION_RE)):
        found = pattern.fullmatch(origin)
        if found:
            digest = digest_at(found.group(2), found.group(3))
            return (kind, found.group(1), digest) if digest else None
    return None


def batch_time(name: str) -> float | None:
    """When a batch was hidden: its name starts with the time in milliseconds."""
    head = name.split("-", 1)[0]
    return int(head) / 1000 if head.isdigit() else None


@dataclass(slots=True)
class Scan:
    repositories: dict[str, RepositoryScan] = field(default_factory=dict)
    blobs: dict[Digest, FileInfo] = field(default_factory=dict)
    """Blob data in the store, with size and time."""
    hidden: list[Hidden] = field(default_factory=list)
    stale_entries: list[str] = field(default_factory=list)
    """``_gc`` folders holding nothing that can be put back (a crash mid-hide, long ago)."""
    empty_batches: list[str] = field(default_factory=list)
    empty_folders: list[str] = field(default_factory=list)
    """Folders of blobs, links and revisions without their file (hidden or deleted before)."""
    manifests: dict[Digest, References | None] = field(default_factory=dict)
    """References of every manifest of every repository (None: unreadable)."""

    def hidden_blobs(self) -> dict[Digest, Hidden]:
        return {item.digest: item for item in self.hidden if item.kind == "blob"}


class Scanner:
    """Reads the tree for a pass; keeps manifests' references across passes (content
    by digest never changes), and lets the event loop breathe on large trees."""

    def __init__(self, driver: StorageDriver, progress: Progress | None = None) -> None:
        self.driver = driver
        self.progress = progress
        self._references: dict[Digest, References | None] = {}
        self._operations = 0

    async def _breathe(self) -> None:
        # The filesystem driver lists and stats inline: a serving worker must still answer.
        self._operations += 1
        if self._operations % 200 == 0:
            await asyncio.sleep(0)

    async def _list(self, path: str) -> list[str]:
        await self._breathe()
        try:
            return await self.driver.list(path)
        except PathNotFoundError:
            return []

    async def _stat(self, path: str) -> FileInfo | None:
        await self._breathe()
        try:
            info = await self.driver.stat(path)
        except PathNotFoundError:
            return None
        return None if info.is_dir else info

    def _tell(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)

    async def scan(self, stale_after: float, now: float) -> Scan:
        """Read everything a decision needs; ``_gc`` leftovers older than ``stale_after``
        seconds that hold nothing to put back are listed for removal."""
        scan = Scan()
        await self._scan_hidden(scan, stale_after, now)
        found = [
            (name, children)
            async for name, children in folders(self.driver)
            if "_manifests" in children or "_layers" in children
        ]
        for done, (name, children) in enumerate(found, 1):
            scan.repositories[name] = await self._scan_repository(scan, name, children)
            self._tell("reading repositories", done, len(found))
        await self._scan_blobs(scan)
        await self._read_manifests(scan)
        return scan

    async def _scan_repository(self, scan: Scan, name: str, children: list[str]) -> RepositoryScan:
        repository = RepositoryScan(name)
        if "_manifests" in children:
            revisions = f"{paths.manifests(name)}/revisions"
            await self._scan_links(scan, revisions, repository.revisions)
            for tag in await self._list(paths.tags(name)):
                repository.tags.append(await self._scan_tag(name, tag))
        if "_layers" in children:
            await self._scan_links(scan, paths.layers(name), repository.layers)
        return repository

    async def _scan_links(self, scan: Scan, base: str, into: dict[Digest, float]) -> None:
        """``<base>/<algorithm>/<hex>/link`` files, by digest, with their times."""
        for algorithm in await self._list(base):
            for hex_part in await self._list(f"{base}/{algorithm}"):
                digest = digest_at(algorithm, hex_part)
                info = await self._stat(f"{base}/{algorithm}/{hex_part}/link")
                if digest is not None and info is not None:
                    into[digest] = info.modified
                elif digest is not None:
                    scan.empty_folders.append(f"{base}/{algorithm}/{hex_part}")

    async def _scan_tag(self, name: str, tag: str) -> Tag:
        await self._breathe()
        current = await read_link(self.driver, paths.tag_current_link(name, tag))
        history: dict[Digest, float] = {}
        base = f"{paths.tag_dir(name, tag)}/index"
        for algorithm in await self._list(base):
            for hex_part in await self._list(f"{base}/{algorithm}"):
                digest = digest_at(algorithm, hex_part)
                info = await self._stat(f"{base}/{algorithm}/{hex_part}/link")
                if digest is not None:
                    history[digest] = info.modified if info is not None else 0.0
        return Tag(tag, current, history)

    async def _scan_blobs(self, scan: Scan) -> None:
        folders_found = [
            (algorithm, prefix)
            for algorithm in await self._list(paths.BLOBS)
            for prefix in await self._list(f"{paths.BLOBS}/{algorithm}")
        ]
        for done, (algorithm, prefix) in enumerate(folders_found, 1):
            for hex_part in await self._list(f"{paths.BLOBS}/{algorithm}/{prefix}"):
                digest = digest_at(algorithm, hex_part)
                if digest is None or digest.hex[:2] != prefix:
                    continue
                info = await self._stat(paths.blob_data(digest))
                if info is not None:
                    scan.blobs[digest] = info
                else:
                    scan.empty_folders.append(paths.blob_dir(digest))
            self._tell("reading blobs", done, len(folders_found))

    async def _scan_hidden(self, scan: Scan, stale_after: float, now: float) -> None:
        for batch in await self._list(GC_ROOT):
            hidden_at = batch_time(batch)
            stale = hidden_at is None or now - hidden_at > stale_after
            entries = await self._list(f"{GC_ROOT}/{batch}")
            if not entries:
                if stale:
                    scan.empty_batches.append(f"{GC_ROOT}/{batch}")
                continue
            for name in entries:
                entry = f"{GC_ROOT}/{batch}/{name}"
                item = await self._hidden_entry(entry, hidden_at or 0.0)
                if item is not None:
                    scan.hidden.append(item)
                elif stale:
                    # Never a young one: another collector may be between its two writes.
                    scan.stale_entries.append(entry)

    async def _hidden_entry(self, entry: str, hidden_at: float) -> Hidden | None:
        info = await self._stat(f"{entry}/file")
        if info is None:
            return None
        try:
            origin = (await self.driver.get_content(f"{entry}/origin")).decode().strip()
        except (PathNotFoundError, UnicodeDecodeError):
            return None
        parsed = parse_origin(origin)
        if parsed is None:
            return None
        kind, repository, digest = parsed
        return Hidden(entry, origin, hidden_at, kind, digest, repository, info.size)

    # Looks right before hiding something: what changed since the scan?

    async def stat(self, path: str) -> FileInfo | None:
        return await self._stat(path)

    async def repositories_with_links(self) -> list[str]:
        return [name async for name, children in folders(self.driver) if "_layers" in children]

    async def new_references(self, scan: Scan, name: str) -> set[Digest]:
        """What the manifests stored in ``name`` since ``scan`` refer to (blobs, children,
        subjects): a manifest whose check passed before content was hidden may land after."""
        known = scan.repositories.get(name)
        base = f"{paths.manifests(name)}/revisions"
        found: set[Digest] = set()
        for algorithm in await self._list(base):
            for hex_part in await self._list(f"{base}/{algorithm}"):
                digest = digest_at(algorithm, hex_part)
                if digest is None or (known is not None and digest in known.revisions):
                    continue
                refs = self._references.get(digest)
                if refs is None:
                    refs = await self._read_references(scan.hidden_blobs(), digest)
                    self._references[digest] = refs
                if refs is None:
                    continue  # Not a manifest of any kind: it refers to nothing.
                found |= refs.blobs | refs.children
                if refs.subject is not None:
                    found.add(refs.subject)
        # An index keeps what its children name: the children may be old manifests.
        queue = [digest for digest in found if digest in scan.manifests]
        while queue:
            child = scan.manifests.get(queue.pop())
            if child is None:
                continue
            for digest in child.blobs | child.children:
                if digest not in found:
                    found.add(digest)
                    queue.append(digest)
        return found

    async def _read_manifests(self, scan: Scan) -> None:
        """References of every manifest of every repository, live or hidden."""
        wanted = {digest for repo in scan.repositories.values() for digest in repo.revisions}
        wanted |= {item.digest for item in scan.hidden if item.kind == "revision"}
        hidden = scan.hidden_blobs()
        for done, digest in enumerate(sorted(wanted, key=str), 1):
            if digest not in self._references or self._references[digest] is None:
                self._references[digest] = await self._read_references(hidden, digest)
            scan.manifests[digest] = self._references[digest]
            if done % 100 == 0 or done == len(wanted):
                self._tell("reading manifests", done, len(wanted))
        for digest in [d for d in self._references if d not in wanted]:
            del self._references[digest]  # Gone from every repository: forget it.

    async def _read_references(
        self, hidden: dict[Digest, Hidden], digest: Digest
    ) -> References | None:
        """From the blob store, or from ``_gc`` when an earlier pass hid the manifest's data."""
        path = paths.blob_data(digest)
        info = await self._stat(path)
        if info is None:
            if digest not in hidden:
                return None
            path = hidden[digest].file
            info = await self._stat(path)
        if info is None or info.size > _MAX_READ:
            return None
        try:
            return references(await self.driver.get_content(path))
        except PathNotFoundError:
            return None
