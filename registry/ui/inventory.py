"""What the web pages show, read from the store: repositories, tags, images, sizes.

Content by digest never changes, so what is read of a manifest or an image
config is cached for good (bounded); what a repository holds changes with every
push, so its summary is kept only briefly (and dropped by the pages' own deletes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..manifests import INDEXES, ManifestError, parse_manifest
from ..reference import Digest
from ..storage import Store, paths
from ..storage.blobs import read_link
from ..storage.driver import PathNotFoundError, StorageDriverError
from ..storage.errors import BlobUnknownError, ManifestUnknownError, RepositoryUnknownError

#: Seconds a repository's summary (tag count, size, last push) or the storage page's sums
#: are served before they are computed again (in the background).
SUMMARY_SECONDS = 15.0
#: Repositories whose summaries are kept (about 1 KB each).
SUMMARIES = 16384
#: Storage reads one page starts at once.
CONCURRENCY = 32
#: Largest image config read for display.
MAX_CONFIG = 1024 * 1024

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    """A bounded mapping that forgets the least recently used entry."""

    def __init__(self, capacity: int) -> None:
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._capacity = capacity

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)


class Refreshed(Generic[K, V]):
    """Values kept once computed. One older than ``fresh`` seconds is still served, while a
    new one is computed in the background (once per key): a page never waits for a
    repository it has shown before, however large."""

    def __init__(self, capacity: int, fresh: float, clock: Callable[[], float]) -> None:
        self._values: Lru[K, tuple[float, V]] = Lru(capacity)
        self._fresh = fresh
        self._clock = clock
        self._running: dict[K, asyncio.Task[None]] = {}

    async def get(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        kept = self._values.get(key)
        if kept is None:
            value = await compute()
            self._values.put(key, (self._clock(), value))
            return value
        at, value = kept
        if self._clock() - at >= self._fresh and key not in self._running:
            self._running[key] = asyncio.create_task(self._refresh(key, compute))
        return value

    async def _refresh(self, key: K, compute: Callable[[], Awaitable[V]]) -> None:
        try:
            self._values.put(key, (self._clock(), await compute()))
        except Exception:
            log.warning("ui: refreshing %s failed; the last value stays", key, exc_info=True)
        finally:
            del self._running[key]

    def forget(self, key: K) -> None:
        self._values.pop(key)

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


@dataclass(frozen=True, slots=True)
class Layer:
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True, slots=True)
class Child:
    """A manifest an index lists."""

    digest: Digest
    size: int
    media_type: str
    platform: Platform | None


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """The parts of an image config worth showing."""

    created: str = ""
    platform: Platform | None = None
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    exposed_ports: tuple[str, ...] = ()
    history: tuple[tuple[str, str, bool], ...] = ()
    """(created, created_by, empty_layer) per step."""


@dataclass(frozen=True, slots=True)
class Image:
    """One manifest, as the pages show it."""

    digest: Digest
    media_type: str
    manifest_size: int
    artifact_type: str | None
    config_digest: str | None
    config_media_type: str | None
    layers: tuple[Layer, ...]
    children: tuple[Child, ...]
    annotations: tuple[tuple[str, str], ...]
    subject: str | None
    config: ImageConfig | None
    config_size: int

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEXES

    @property
    def size(self) -> int:
        """What pulling it transfers: the manifest, its config and layers (an index: the
        index itself; its children's sizes are added by :meth:`Inventory.image_size`)."""
        return self.manifest_size + sum(layer.size for layer in self.layers) + self.config_size

    @property
    def platforms(self) -> list[Platform]:
        found = [child.platform for child in self.children if child.platform is not None]
        if not found and self.config is not None and self.config.platform is not None:
            found = [self.config.platform]
        return found


@dataclass(frozen=True, slots=True)
class TagRow:
    tag: str
    digest: Digest | None
    pushed: float | None
    image: Image | None
    size: int


@dataclass(slots=True)
class Summary:
    """A repository in the list: how many tags, how big, when last pushed."""

    name: str
    tags: int
    size: int
    pushed: float | None
    blobs: dict[str, int] = field(default_factory=dict)
    """Every blob its tagged images reference, by digest, with its size."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Storage used per repository, and in total with shared blobs counted once."""

    rows: list[tuple[str, int, int]]
    """(repository, size, size of the blobs no other listed repository references)."""
    total: int
    shared: int
    """Bytes referenced by more than one repository."""


class Inventory:
    """The pages' reads, over one store."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._images: Lru[Digest, Image] = Lru(16384)
        self._configs: Lru[str, tuple[ImageConfig | None, int]] = Lru(8192)
        self._summaries: Refreshed[str, Summary] = Refreshed(SUMMARIES, SUMMARY_SECONDS, clock)
        self._usages: Refreshed[tuple[str, ...], Usage] = Refreshed(16, SUMMARY_SECONDS, clock)
        self._limit = asyncio.Semaphore(CONCURRENCY)

    def forget(self, name: str) -> None:
        """Drop what is known of a repository (after a change made here)."""
        self._summaries.forget(name)

    async def close(self) -> None:
        await self._summaries.close()
        await self._usages.close()

    async def _bounded(self, work: Awaitable[V]) -> V:
        async with self._limit:
            return await work

    async def gather(self, works: Iterable[Awaitable[V]]) -> list[V]:
        """Storage reads, at most CONCURRENCY at once (for reads only: a bounded call that
        waited on more bounded calls could wait for ever)."""
        return list(await asyncio.gather(*(self._bounded(work) for work in works)))

    async def summaries(self, names: list[str]) -> list[Summary]:
        """Summaries of ``names``, a batch at a time (each reads with :meth:`gather`)."""
        found: list[Summary] = []
        for start in range(0, len(names), CONCURRENCY):
            batch = names[start : start + CONCURRENCY]
            found += await asyncio.gather(*(self.summary(name) for name in batch))
        return found

    # --- tags ---

    async def tags(self, name: str) -> list[str]:
        """The tag folders, sorted: one listing, whatever the number of tags (a folder
        without its link, left by a crash, shows as a row without a digest)."""
        manifests = self.store.repository(name).manifests
        try:
            return sorted(await self.store.driver.list(paths.tags(name)))
        except PathNotFoundError:
            await manifests.tags()  # RepositoryUnknownError when there is no repository.
            return []

    async def tag_link(self, name: str, tag: str) -> tuple[Digest | None, float | None]:
        """The digest a tag points at and when it was last pointed (pushed)."""
        path = paths.tag_current_link(name, tag)
        driver = self.store.driver
        try:
            digest, info = await asyncio.gather(read_link(driver, path), driver.stat(path))
        except PathNotFoundError:
            return None, None
        return digest, info.modified or None

    async def tags_of(self, name: str, digest: Digest, limit: int | None = None) -> list[str]:
        """The tags pointing at ``digest``, among the first ``limit`` (None: all)."""
        tags = (await self.tags(name))[:limit]
        links = await self.gather(self.tag_link(name, tag) for tag in tags)
        return [tag for tag, (linked, _) in zip(tags, links, strict=True) if linked == digest]

    async def tag_rows(self, name: str, tags: list[str]) -> list[TagRow]:
        links = await self.gather(self.tag_link(name, tag) for tag in tags)
        images = await self.gather(self.image_or_none(name, digest) for digest, _ in links)
        # Not bounded itself: an index's size reads its children through gather.
        sizes = await asyncio.gather(*(self.image_size(name, image) for image in images))
        return [
            TagRow(tag, digest, pushed, image, size)
            for tag, (digest, pushed), image, size in zip(tags, links, images, sizes, strict=True)
        ]

    # --- images ---

    async def image_or_none(self, name: str, digest: Digest | None) -> Image | None:
        if digest is None:
            return None
        try:
            return await self.image(name, digest)
        except (ManifestUnknownError, ManifestError):
            return None

    async def image(self, name: str, digest: Digest) -> Image:
        """A manifest of ``name`` (which must hold it), with its config read."""
        manifests = self.store.repository(name).manifests
        if not await manifests.exists(digest):
            raise ManifestUnknownError(str(digest))
        cached = self._images.get(digest)
        if cached is not None:
            return cached
        stored = await manifests.load(digest)
        manifest = parse_manifest(stored.data)
        document = _json_object(stored.data)
        config_digest = config_type = None
        layers: list[Layer] = []
        children: list[Child] = []
        if manifest.is_index:
            for entry in _list(document.get("manifests")):
                child = _child(entry)
                if child is not None:
                    children.append(child)
        else:
            config_entry = document.get("config")
            if isinstance(config_entry, dict):
                config_digest = _str(config_entry.get("digest")) or None
                config_type = _str(config_entry.get("mediaType")) or None
            layers = [
                Layer(str(blob.digest), blob.size, blob.media_type)
                for blob in manifest.blobs
                if str(blob.digest) != config_digest
            ]
        config, config_size = None, 0
        if config_digest is not None:
            config, config_size = await self._config(config_digest, config_type or "")
        image = Image(
            digest=digest,
            media_type=manifest.media_type,
            manifest_size=len(stored.data),
            artifact_type=manifest.artifact_type,
            config_digest=config_digest,
            config_media_type=config_type,
            layers=tuple(layers),
            children=tuple(children),
            annotations=tuple(sorted(manifest.annotations.items())),
            subject=str(manifest.subject.digest) if manifest.subject else None,
            config=config,
            config_size=config_size,
        )
        self._images.put(digest, image)
        return image

    async def _config(self, digest_text: str, media_type: str) -> tuple[ImageConfig | None, int]:
        cached = self._configs.get(digest_text)
        if cached is not None:
            return cached
        try:
            digest = Digest.parse(digest_text)
            info = await self.store.blobs.stat(digest)
        except (ValueError, BlobUnknownError):
            return None, 0
        config = None
        if info.size <= MAX_CONFIG and media_type.endswith("json"):
            try:
                config = image_config(await self.store.blobs.get(digest))
            except (BlobUnknownError, StorageDriverError):
                config = None
        result = (config, info.size)
        self._configs.put(digest_text, result)
        return result

    async def image_size(self, name: str, image: Image | None) -> int:
        """What pulling ``image`` transfers; an index counts each child once."""
        if image is None:
            return 0
        if not image.is_index:
            return image.size
        children = await self.gather(self.image_or_none(name, c.digest) for c in image.children)
        blobs: dict[str, int] = {}
        for child in children:
            if child is not None:
                _add_blobs(blobs, child)
        return image.manifest_size + sum(blobs.values())

    async def referrers(self, name: str, digest: Digest) -> dict[str, list[dict[str, object]]]:
        """The manifests whose subject is ``digest``, by artifact type."""
        found = await self.store.repository(name).manifests.referrers(digest, None)
        grouped: dict[str, list[dict[str, object]]] = {}
        for descriptor in found:
            kind = str(descriptor.get("artifactType") or descriptor.get("mediaType") or "")
            grouped.setdefault(kind, []).append(descriptor)
        return dict(sorted(grouped.items()))

    # --- repositories ---

    async def summary(self, name: str) -> Summary:
        return await self._summaries.get(name, lambda: self._summary(name))

    async def _summary(self, name: str) -> Summary:
        try:
            tags = await self.store.repository(name).manifests.tags()
        except RepositoryUnknownError:
            tags = []
        links = await self.gather(self.tag_link(name, tag) for tag in tags)
        digests = {digest for digest, _ in links if digest is not None}
        images = await self.gather(self.image_or_none(name, digest) for digest in digests)
        blobs: dict[str, int] = {}
        for image in images:
            if image is None:
                continue
            _add_blobs(blobs, image)
            if image.is_index:
                children = await self.gather(
                    self.image_or_none(name, child.digest) for child in image.children
                )
                for child in children:
                    if child is not None:
                        _add_blobs(blobs, child)
        times = [pushed for _, pushed in links if pushed is not None]
        return Summary(name, len(tags), sum(blobs.values()), max(times) if times else None, blobs)

    async def usage(self, names: list[str]) -> Usage:
        return await self._usages.get(tuple(names), lambda: self._usage(names))

    async def _usage(self, names: list[str]) -> Usage:
        summaries = await self.summaries(names)
        holders: dict[str, int] = {}
        sizes: dict[str, int] = {}
        for summary in summaries:
            for digest, size in summary.blobs.items():
                holders[digest] = holders.get(digest, 0) + 1
                sizes[digest] = size
        rows = [
            (
                summary.name,
                summary.size,
                sum(size for digest, size in summary.blobs.items() if holders[digest] == 1),
            )
            for summary in summaries
        ]
        rows.sort(key=lambda row: (-row[1], row[0]))
        shared = sum(size for digest, size in sizes.items() if holders[digest] > 1)
        return Usage(rows, sum(sizes.values()), shared)


def _add_blobs(blobs: dict[str, int], image: Image) -> None:
    blobs[str(image.digest)] = image.manifest_size
    if image.config_digest is not None:
        blobs[image.config_digest] = image.config_size
    for layer in image.layers:
        blobs[layer.digest] = layer.size


def _json_object(data: bytes) -> dict[str, object]:
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _strings(value: object) -> tuple[str, ...]:
    return tuple(item for item in _list(value) if isinstance(item, str))


def _platform(value: object) -> Platform | None:
    if not isinstance(value, dict):
        return None
    os, architecture = _str(value.get("os")), _str(value.get("architecture"))
    if not os and not architecture:
        return None
    return Platform(os, architecture, _str(value.get("variant")))


def _child(entry: object) -> Child | None:
    if not isinstance(entry, dict):
        return None
    try:
        digest = Digest.parse(_str(entry.get("digest")))
    except ValueError:
        return None
    size = entry.get("size")
    return Child(
        digest,
        size if isinstance(size, int) else 0,
        _str(entry.get("mediaType")),
        _platform(entry.get("platform")),
    )


def image_config(data: bytes) -> ImageConfig:
    """The shown parts of an image config; anything malformed is left out, not refused."""
    document = _json_object(data)
    inner = document.get("config")
    run = inner if isinstance(inner, dict) else {}
    labels = run.get("Labels")
    ports = run.get("ExposedPorts")
    history = []
    for step in _list(document.get("history")):
        if isinstance(step, dict):
            history.append(
                (
                    _str(step.get("created")),
                    _str(step.get("created_by")) or _str(step.get("comment")),
                    step.get("empty_layer") is True,
                )
            )
    return ImageConfig(
        created=_str(document.get("created")),
        platform=_platform(document),
        entrypoint=_strings(run.get("Entrypoint")),
        cmd=_strings(run.get("Cmd")),
        env=_strings(run.get("Env")),
        workdir=_str(run.get("WorkingDir")),
        user=_str(run.get("User")),
        labels=tuple(
            sorted((str(k), str(v)) for k, v in labels.items()) if isinstance(labels, dict) else ()
        ),
        exposed_ports=tuple(sorted(str(p) for p in ports)) if isinstance(ports, dict) else (),
        history=tuple(history),
    )
