"""Garbage collection over every driver: what is marked, what goes, what the grace delay
keeps, and pushes that race the collector (each race played at the moment it bites,
through the collector's wait for requests in flight)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from registry.manifests import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST
from registry.reference import Digest
from registry.storage import Repository, Store, paths
from registry.storage.blobs import exists, link_content
from registry.storage.driver import FileInfo, PathNotFoundError, StorageDriver
from registry.storage.driver.cached import CachedDriver
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.driver.inmemory import InMemoryDriver
from registry.storage.errors import BlobUnknownError, ManifestUnknownError
from registry.storage.gc import GarbageCollector, GCOptions, GCResult
from registry.storage.gc_scan import GC_ROOT, references

from .content import body, digest_of, image_manifest, index_manifest, push_blob, push_image

HOUR = 3600.0
ARTIFACT = "application/vnd.example.signature.v1"


class Clock:
    """Time for the collector: ``offset`` seconds ahead of the files' own times; its
    sleep moves it on, and may first play a request that races the collector."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self.during_sleep: Callable[[], Awaitable[None]] | None = None
        self.slept = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.offset += seconds
        if self.during_sleep is not None:
            race, self.during_sleep = self.during_sleep, None
            await race()


def collector(store: Store, clock: Clock | None = None, **options: object) -> GarbageCollector:
    clock = clock or Clock(2 * HOUR)  # By default everything stored is older than the grace.
    return GarbageCollector(
        collector_driver(store),
        GCOptions(**{"grace": HOUR, **options}),  # type: ignore[arg-type]
        clock=clock,
        sleep=clock.sleep,
    )


async def collect(store: Store, clock: Clock | None = None, **options: object) -> GCResult:
    return await collector(store, clock, **options).collect()


def collector_driver(store: Store) -> StorageDriver:
    """The driver a collector gets, as the app gives it: behind a ``stat`` cache, one
    that reads the storage itself and only invalidates."""
    driver = store.driver
    return driver.invalidating_only() if isinstance(driver, CachedDriver) else driver


def age(driver: StorageDriver, seconds: float) -> None:
    """Make everything stored ``seconds`` older, as if written that long ago."""
    while isinstance(driver, CachedDriver):
        driver = driver.inner  # The collector reads around the cache (collector_driver).
    if isinstance(driver, FilesystemDriver):
        for folder, _, names in os.walk(driver.root):
            for name in names:
                path = os.path.join(folder, name)
                stat = os.stat(path)
                os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))
    elif isinstance(driver, InMemoryDriver):
        for file in driver._files.values():
            file.modified -= seconds
    else:
        _age_objects(driver, seconds)


def _age_objects(driver: StorageDriver, seconds: float) -> None:
    """An object store's times cannot be set: the driver's stat answers them older instead,
    for every object last written before now (its Last-Modified is whole seconds, so the
    call waits for the next one: what is written after it is not aged)."""
    cutoff = math.floor(time.time())
    previous = driver._stat

    async def aged_stat(path: str) -> FileInfo:
        info = await previous(path)
        if info.is_dir or info.modified > cutoff:
            return info
        return dataclasses.replace(info, modified=info.modified - seconds)

    driver._stat = aged_stat  # type: ignore[method-assign]
    time.sleep(max(0.0, cutoff + 1 - time.time()))


async def blob_exists(store: Store, digest: Digest) -> bool:
    try:
        await store.blobs.stat(digest)
    except BlobUnknownError:
        return False
    return True


async def files(driver: StorageDriver, path: str = paths.ROOT) -> set[str]:
    try:
        children = await driver.list(path)
    except PathNotFoundError:
        return {path}
    found: set[str] = set()
    for child in children:
        found |= await files(driver, f"{path}/{child}")
    return found


async def pull(repo: Repository, reference: str) -> None:
    """Everything a client pulling ``reference`` reads answers, recursively."""
    stored = await repo.manifests.get(reference)
    refs = references(stored.data)
    assert refs is not None
    for blob in refs.blobs:
        await repo.blobs.stat(blob)
    for child in refs.children:
        await pull(repo, str(child))


# Mark and sweep


async def test_unreferenced_blobs_and_their_links_go_referenced_ones_stay(store: Store) -> None:
    a, b = store.repository("a"), store.repository("b")
    digest, _ = await push_image(a, "v1", layers=[b"shared", b"a only"])
    orphan = await push_blob(a, b"pushed, never in a manifest")
    await b.blobs.mount(orphan, a.blobs)
    result = await collect(store)
    await pull(a, "v1")
    assert not await blob_exists(store, orphan)
    for repo in (a, b):
        assert not await exists(store.driver, paths.layer_link(repo.name, orphan))
    assert result.blobs_deleted == 1 and result.deleted_blobs == (str(orphan),)
    assert result.bytes_freed == len(b"pushed, never in a manifest")
    assert result.links_deleted == 2
    assert result.manifests_deleted == 0
    assert result.blobs == 5 and result.blobs_kept == 4  # config, two layers, the manifest
    assert result.blobs_marked == 4
    assert result.pending == 0 and result.restored == 0
    assert result.duration >= 0 and not result.dry_run
    assert await manifest_digest(a, "v1") == digest


async def manifest_digest(repo: Repository, reference: str) -> Digest:
    return (await repo.manifests.get(reference)).digest


async def test_a_deleted_manifests_unique_blobs_go_and_shared_ones_stay(store: Store) -> None:
    a = store.repository("a")
    await push_image(a, "keep", layers=[b"shared layer"])
    gone, _ = await push_image(a, "gone", layers=[b"shared layer", b"only in gone"])
    await a.manifests.delete(gone)
    result = await collect(store)
    await pull(a, "keep")
    assert not await blob_exists(store, digest_of(b"only in gone"))
    assert not await blob_exists(store, gone)  # The manifest's own content.
    assert await blob_exists(store, digest_of(b"shared layer"))
    assert result.blobs_deleted == 3  # gone's config, its layer, the manifest itself


async def test_untagged_manifests_stay_without_delete_untagged(store: Store) -> None:
    a = store.repository("a")
    old, _ = await push_image(a, "latest", layers=[b"first"])
    await push_image(a, "latest", layers=[b"second"])  # The tag moves: old is untagged.
    by_digest, _ = await push_image(a, None, layers=[b"by digest"])
    result = await collect(store)
    assert result.blobs_deleted == 0 and result.manifests_deleted == 0
    await pull(a, str(old))
    await pull(a, str(by_digest))


async def test_delete_untagged_takes_the_manifest_its_tag_history_and_its_blobs(
    store: Store,
) -> None:
    a = store.repository("a")
    old, _ = await push_image(a, "latest", layers=[b"shared", b"first"])
    await push_image(a, "latest", layers=[b"shared", b"second"])
    await push_image(a, "other", layers=[b"other"])
    result = await collect(store, delete_untagged=True)
    assert result.deleted_manifests == (f"a@{old}",)
    with pytest.raises(ManifestUnknownError):
        await a.manifests.get(str(old))
    assert not await exists(store.driver, paths.tag_index_link("a", "latest", old))
    assert not await blob_exists(store, digest_of(b"first"))
    assert not await blob_exists(store, old)
    await pull(a, "latest")
    await pull(a, "other")
    assert await blob_exists(store, digest_of(b"shared"))


async def test_a_repository_of_manifests_pushed_by_digest_only(store: Store) -> None:
    """registry:2 2.8.2 aborts the whole run on such a repository (no tags folder)."""
    d, tagged = store.repository("d"), store.repository("tagged")
    digest, _ = await push_image(d, None, layers=[b"digest only"])
    await push_image(tagged, "v1")
    assert not await exists(store.driver, paths.tags("d"))
    assert (await collect(store)).manifests_deleted == 0
    await pull(d, str(digest))
    result = await collect(store, delete_untagged=True)
    assert result.deleted_manifests == (f"d@{digest}",)
    assert not await blob_exists(store, digest_of(b"digest only"))
    await pull(tagged, "v1")


@pytest.mark.parametrize("index_type", [OCI_INDEX, DOCKER_MANIFEST_LIST])
async def test_the_children_of_a_kept_index_stay(store: Store, index_type: str) -> None:
    """distribution#3004/#3178: registry:2's --delete-untagged deletes them."""
    a = store.repository("a")
    child_type = DOCKER_MANIFEST if index_type == DOCKER_MANIFEST_LIST else None
    options = {"media_type": child_type} if child_type else {}
    children = [
        (await push_image(a, None, layers=[f"layer {i}".encode()], **options))[1] for i in range(2)
    ]
    inner = index_manifest(children[:1], media_type=index_type)
    await a.manifests.put(str(digest_of(inner)), inner, index_type)
    outer = index_manifest([*children[1:], inner], media_type=index_type)
    await a.manifests.put("multi", outer, index_type)
    stray, _ = await push_image(a, None, layers=[b"stray"])
    result = await collect(store, delete_untagged=True)
    await pull(a, "multi")  # Both children, the nested index and its child.
    assert result.deleted_manifests == (f"a@{stray}",)
    # An untagged index takes its children along.
    await a.manifests.delete_tag("multi")
    result = await collect(store, delete_untagged=True)
    assert result.manifests_deleted == 4
    assert await files(store.driver, paths.BLOBS) <= {paths.BLOBS}


async def test_referrers_stay_with_their_subject_and_go_with_it(store: Store) -> None:
    a = store.repository("a")
    subject, subject_bytes = await push_image(a, "v1", layers=[b"subject layer"])
    signature, signature_bytes = await push_image(
        a, None, config=b"{}", layers=[b"signature"], subject=subject_bytes, artifact_type=ARTIFACT
    )
    countersignature, _ = await push_image(
        a,
        None,
        config=b"{}",
        layers=[b"countersignature"],
        subject=signature_bytes,
        artifact_type=ARTIFACT,
    )
    result = await collect(store, delete_untagged=True)
    assert result.manifests_deleted == 0 and result.blobs_deleted == 0
    listed = await a.manifests.referrers(subject, None)
    assert [entry["digest"] for entry in listed] == [str(signature)]
    await pull(a, str(countersignature))
    # The subject untagged: it goes, and everything that referred to it.
    await a.manifests.delete_tag("v1")
    result = await collect(store, delete_untagged=True)
    assert sorted(result.deleted_manifests) == sorted(
        f"a@{d}" for d in (subject, signature, countersignature)
    )
    assert not await exists(store.driver, paths.referrer_link("a", subject, signature))
    assert not await blob_exists(store, digest_of(b"countersignature"))


# The grace delay


async def test_nothing_younger_than_the_grace_delay_is_taken(store: Store) -> None:
    a = store.repository("a")
    untagged, _ = await push_image(a, None, layers=[b"young manifest"])
    orphan = await push_blob(a, b"young orphan")
    for options in ({}, {"delete_untagged": True}):
        result = await collect(store, Clock(0), **options)
        assert result.blobs_deleted == 0 and result.manifests_deleted == 0
        assert result.young == 1  # The orphan; the manifest is kept as young itself.
        assert await blob_exists(store, orphan)
        await pull(a, str(untagged))
    result = await collect(store, delete_untagged=True)
    assert result.manifests_deleted == 1 and result.blobs_deleted == 4


async def test_a_blob_stored_but_not_yet_linked_is_kept(store: Store) -> None:
    """An upload moves its data into the store, then links it: a collection between the
    two sees young content that nothing links."""
    data = b"committed, link on its way"
    digest = digest_of(data)
    await store.blobs.put(digest, data)
    result = await collect(store, Clock(0))
    assert result.young == 1 and await blob_exists(store, digest)
    assert (await collect(store)).deleted_blobs == (str(digest),)


async def test_an_old_blob_linked_again_is_young_again(store: Store) -> None:
    """A mount, or a push of a layer the store already holds, links an old blob: until the
    manifest follows, only the fresh link says it is wanted."""
    a, b, c = store.repository("a"), store.repository("b"), store.repository("c")
    gone, _ = await push_image(a, "gone", layers=[b"old layer"])
    await a.manifests.delete(gone)
    layer = digest_of(b"old layer")
    age(store.driver, 2 * HOUR)
    await b.blobs.mount(layer, a.blobs)  # Linked now, the content 2 h old.
    assert await push_blob(c, b"old layer") == layer  # Stored already: only linked.
    result = await collect(store, Clock(0))
    assert result.young == 1 and result.blobs_deleted == 2  # gone's config and manifest
    for repo in (b, c):
        assert (await repo.blobs.stat(layer)).size == len(b"old layer")
    assert await a.blobs.is_linked(layer)  # The blob stays, and so do its links.


async def test_what_a_tag_pointed_at_stays_while_the_tag_moved_within_the_grace(
    store: Store,
) -> None:
    a = store.repository("a")
    zeroth, _ = await push_image(a, "latest", layers=[b"zeroth"])
    age(store.driver, 3 * HOUR)
    first, _ = await push_image(a, "latest", layers=[b"first"])
    age(store.driver, 2 * HOUR)
    await push_image(a, "latest", layers=[b"second"])  # Moves the tag now.
    result = await collect(store, Clock(0), delete_untagged=True)
    assert result.deleted_manifests == (f"a@{zeroth}",)  # Replaced long ago.
    await pull(a, str(first))  # A client that read the tag a moment ago may still pull it.
    result = await collect(store, Clock(2 * HOUR), delete_untagged=True)
    assert result.deleted_manifests == (f"a@{first}",)


# Races with pushes


class PlayingCollector(GarbageCollector):
    """A collector that plays one request, once, at a moment its subclass chooses."""

    race: Callable[[], Awaitable[None]] | None = None

    async def _play(self) -> None:
        if self.race is not None:
            race, self.race = self.race, None
            await race()


class RacingCollector(PlayingCollector):
    """Plays a request between the collector's reading of the tree and its hiding of the
    first candidate: the scan may be seconds old by then on a large store."""

    async def _untouched_revision(self, *args: object) -> bool:  # type: ignore[override]
        await self._play()
        return await super()._untouched_revision(*args)  # type: ignore[arg-type]

    async def _untouched_blob(self, *args: object) -> bool:  # type: ignore[override]
        await self._play()
        return await super()._untouched_blob(*args)  # type: ignore[arg-type]


class LateCollector(PlayingCollector):
    """Plays the request after the collector's last check of a candidate, right before it
    hides the first file: the request finds the file where it was and writes it again."""

    async def _hide_file(self, batch: str, origin: str) -> str | None:
        await self._play()
        return await super()._hide_file(batch, origin)


def racing(
    store: Store,
    race: Callable[[], Awaitable[None]],
    clock: Clock | None = None,
    kind: type[PlayingCollector] = RacingCollector,
    **options: object,
) -> GarbageCollector:
    clock = clock or Clock(2 * HOUR)
    collector = kind(
        collector_driver(store),
        GCOptions(**{"grace": HOUR, **options}),  # type: ignore[arg-type]
        clock=clock,
        sleep=clock.sleep,
    )
    collector.race = race
    return collector


def late(
    store: Store, race: Callable[[], Awaitable[None]], clock: Clock, **options: object
) -> GarbageCollector:
    return racing(store, race, clock, LateCollector, **options)


async def test_a_blob_linked_again_as_it_is_hidden_is_put_back_at_once(store: Store) -> None:
    """An upload that found the old blob stored renews its link just before the collector
    hides both: the client was told 201, so the blob must not stay hidden, let alone go."""
    if not store.driver.moves_keep_times:
        pytest.skip("an object store's move is a copy with a time of its own")
    a = store.repository("a")
    orphan = await push_blob(a, b"old orphan, pushed again")
    age(store.driver, 2 * HOUR)

    async def linked_again() -> None:
        await a.blobs.link(orphan)

    result = await late(store, linked_again, Clock()).collect()
    assert result.blobs_deleted == 0 and result.pending == 0
    assert await a.blobs.is_linked(orphan) and await blob_exists(store, orphan)
    assert await files(store.driver, GC_ROOT) <= {GC_ROOT}


async def test_a_manifest_pushed_again_as_it_is_hidden_is_put_back_at_once(
    store: Store,
) -> None:
    if not store.driver.moves_keep_times:
        pytest.skip("an object store's move is a copy with a time of its own")
    a = store.repository("a")
    digest, manifest = await push_image(a, None, layers=[b"untagged, pushed again"])
    age(store.driver, 2 * HOUR)

    async def pushed_again() -> None:
        await a.manifests.put(str(digest), manifest, OCI_MANIFEST)

    result = await late(store, pushed_again, Clock(), delete_untagged=True).collect()
    assert result.manifests_deleted == 0 and result.blobs_deleted == 0
    await pull(a, str(digest))
    assert await files(store.driver, GC_ROOT) <= {GC_ROOT}


async def test_a_manifest_stored_as_its_layer_is_hidden_brings_it_back_at_once(
    store: Store,
) -> None:
    """The manifest's PUT checked its layers (HEAD 200 to the client, then the PUT's
    own checks) before the collector hid them, and was answered: the look right after
    hiding must find it, though the layers' links it would look in are hidden too."""
    a = store.repository("a")
    await push_blob(a, b"{}")
    await push_blob(a, b"old orphan layer, named as it is hidden")
    age(store.driver, 2 * HOUR)
    manifest = image_manifest(b"{}", [b"old orphan layer, named as it is hidden"])

    async def stored() -> None:
        await a.manifests.put("v1", manifest, OCI_MANIFEST)

    result = await late(store, stored, Clock()).collect()
    assert result.blobs_deleted == 0 and result.pending == 0 and result.restored == 0
    await pull(a, "v1")
    assert await files(store.driver, GC_ROOT) <= {GC_ROOT}


async def test_a_manifest_stored_between_scan_and_hiding_keeps_its_blobs(store: Store) -> None:
    """A client found old, unreferenced layers (HEAD 200) and pushes its manifest while the
    collector reads the tree: nothing it names is hidden, not even for a moment."""
    a = store.repository("a")
    await push_blob(a, b"{}")
    await push_blob(a, b"old orphan layer")

    async def push() -> None:
        await push_image(a, "v1", config=b"{}", layers=[b"old orphan layer"])

    result = await racing(store, push).collect()
    assert result.blobs_deleted == 0 and result.pending == 0 and result.restored == 0
    await pull(a, "v1")


async def test_a_mount_between_scan_and_hiding_keeps_the_blob(store: Store) -> None:
    """The link the mount writes is seen right before hiding: never hidden at all."""
    a, b = store.repository("a"), store.repository("b")
    orphan = await push_blob(a, b"old orphan, mounted")
    await push_image(b, "v1", config=b"{}", layers=[b"b's own layer"])

    async def mount() -> None:
        assert await b.blobs.mount(orphan, a.blobs) is not None

    result = await racing(store, mount).collect()
    assert result.blobs_deleted == 0 and result.restored == 0 and result.young == 1
    assert await b.blobs.is_linked(orphan) and await blob_exists(store, orphan)


async def test_a_mount_into_a_new_repository_as_the_blob_is_hidden_brings_it_back(
    store: Store,
) -> None:
    """A repository created after the collector listed them is not looked at before
    hiding; its link is found on the second look and the blob put back."""
    a, b = store.repository("a"), store.repository("b")
    orphan = await push_blob(a, b"old orphan, mounted into a new repository")

    async def mount() -> None:
        assert await b.blobs.mount(orphan, a.blobs) is not None

    result = await racing(store, mount).collect()
    assert result.blobs_deleted == 0 and result.restored == 1
    assert await b.blobs.is_linked(orphan) and await blob_exists(store, orphan)
    assert await files(store.driver, GC_ROOT) <= {GC_ROOT}


async def test_an_index_stored_between_scan_and_hiding_keeps_its_children(store: Store) -> None:
    a = store.repository("a")
    _, child = await push_image(a, None, layers=[b"child layer"])

    async def push_index() -> None:
        index = index_manifest([child])
        await a.manifests.put("multi", index, OCI_INDEX)

    result = await racing(store, push_index, delete_untagged=True).collect()
    assert result.manifests_deleted == 0 and result.blobs_deleted == 0 and result.restored == 0
    await pull(a, "multi")


async def test_a_blob_linked_right_after_it_was_hidden_comes_back(store: Store) -> None:
    """An upload completing found the blob stored (so kept it and only linked it) just
    before the collector hid it: the link is written after, and the client told 201."""
    a, b = store.repository("a"), store.repository("b")
    orphan = await push_blob(a, b"about to be pushed again")
    clock = Clock(2 * HOUR)

    async def upload_completes() -> None:
        assert not await blob_exists(store, orphan)  # Hidden: nobody sees it...
        await b.blobs.link(orphan)  # ...but this push checked before, and links now.

    clock.during_sleep = upload_completes
    result = await collect(store, clock)
    assert clock.slept > 0
    assert result.restored == 1 and result.blobs_deleted == 0
    assert (await b.blobs.stat(orphan)).size == len(b"about to be pushed again")
    # Its old link in a came back too; nothing is left in _gc.
    assert await a.blobs.is_linked(orphan)
    assert await files(store.driver, GC_ROOT) <= {GC_ROOT}


async def test_a_manifest_pushed_as_its_blob_was_hidden_brings_it_back(store: Store) -> None:
    """A manifest whose references were checked just before the collector hid one of them,
    and stored just after."""
    a = store.repository("a")
    layer = await push_blob(a, b"layer of a manifest on its way")
    config = await push_blob(a, b"{}")
    manifest = image_manifest(b"{}", [b"layer of a manifest on its way"])
    digest = digest_of(manifest)
    clock = Clock(2 * HOUR)

    async def manifest_stored() -> None:
        assert not await blob_exists(store, layer)
        # What Manifests.put writes once its check passed.
        await store.blobs.put(digest, manifest)
        await store.driver.put_content(paths.revision_link("a", digest), link_content(digest))
        await a.manifests.tag("v1", digest)

    clock.during_sleep = manifest_stored
    result = await collect(store, clock)
    assert result.restored == 2 and result.blobs_deleted == 0
    await pull(a, "v1")
    assert await blob_exists(store, config)


async def test_an_untagged_manifest_tagged_as_it_was_hidden_comes_back(store: Store) -> None:
    a = store.repository("a")
    digest, _ = await push_image(a, None, layers=[b"untagged, then tagged"])
    clock = Clock(2 * HOUR)

    async def tagged() -> None:
        with pytest.raises(ManifestUnknownError):
            await a.manifests.get(str(digest))
        await a.manifests.tag("late", digest)  # A tag written by a push that checked before.

    clock.during_sleep = tagged
    result = await collect(store, clock, delete_untagged=True)
    assert result.restored == 4  # The manifest, its content, config and layer.
    assert result.manifests_deleted == 0 and result.blobs_deleted == 0
    await pull(a, "late")


async def test_a_push_after_hiding_finds_the_blob_missing_and_uploads_it(store: Store) -> None:
    """Hidden blobs lose their links too: a client that checks finds nothing, uploads
    again, and a manifest cannot refer to the hidden copy."""
    a = store.repository("a")
    orphan = await push_blob(a, b"hidden, then uploaded")
    clock = Clock(2 * HOUR)

    async def pushed_again() -> None:
        assert not await a.blobs.is_linked(orphan)
        await push_blob(a, b"hidden, then uploaded")
        await push_image(a, "v1", layers=[b"hidden, then uploaded"])

    clock.during_sleep = pushed_again
    result = await collect(store, clock)
    assert result.restored == 1  # Stored again: the hidden copy is dropped, nothing freed.
    assert result.blobs_deleted == 0 and result.bytes_freed == 0
    await pull(a, "v1")
    assert await files(store.driver, GC_ROOT) <= {GC_ROOT}


async def test_hidden_content_waits_for_the_settle_delay(store: Store) -> None:
    """Online, content stays hidden for a whole grace delay before it is deleted."""
    a = store.repository("a")
    orphan = await push_blob(a, b"orphan")
    clock = Clock(2 * HOUR)
    online = collector(store, clock, settle=HOUR, tidy=False)
    result = await online.collect()
    assert result.pending == 1 and result.blobs_deleted == 0
    assert not await blob_exists(store, orphan)
    assert not await a.blobs.is_linked(orphan)
    clock.offset += HOUR / 2
    assert (await online.collect()).pending == 1
    clock.offset += HOUR
    result = await online.collect()
    assert result.deleted_blobs == (str(orphan),) and result.bytes_freed == len(b"orphan")
    assert result.links_deleted == 1 and result.pending == 0
    assert await files(store.driver, GC_ROOT) <= {GC_ROOT}


async def test_an_interrupted_collection_is_finished_by_the_next(store: Store) -> None:
    """A collection stopped after hiding (a crash, a restart): the next one puts back
    what is needed since and deletes the rest."""
    a = store.repository("a")
    needed = await push_blob(a, b"needed later")
    garbage = await push_blob(a, b"garbage")
    clock = Clock(2 * HOUR)
    await collector(store, clock, settle=HOUR).collect()  # Hides both, then "crashes".
    assert not await blob_exists(store, needed) and not await blob_exists(store, garbage)
    await store.driver.put_content(paths.layer_link("b", needed), link_content(needed))
    result = await collect(store, Clock(4 * HOUR))  # A new process.
    assert result.restored == 1 and result.deleted_blobs == (str(garbage),)
    assert await blob_exists(store, needed)


# The rest of the store


async def test_a_dry_run_changes_nothing(store: Store) -> None:
    a = store.repository("a")
    await push_image(a, "v1")
    untagged, _ = await push_image(a, None)
    orphan = await push_blob(a, b"orphan")
    before = await files(store.driver)
    clock = Clock(2 * HOUR)
    result = await collect(store, clock, dry_run=True, delete_untagged=True)
    assert result.dry_run and clock.slept == 0
    assert result.deleted_manifests == (f"a@{untagged}",)
    assert str(orphan) in result.deleted_blobs and result.blobs_deleted == 4
    assert await files(store.driver) == before


async def test_upload_sessions_are_left_to_upload_purging(store: Store) -> None:
    a = store.repository("a")
    data = b"a blob on its way"
    session = await a.uploads.start()
    await a.uploads.append(session.id, body(data[:5]))
    result = await collect(store)
    assert result.blobs == 0
    info = await a.uploads.complete(session.id, digest_of(data), body(data[5:]))
    assert (await a.blobs.stat(info.digest)).size == len(data)


async def test_an_unreadable_manifest_is_reported_and_the_rest_collected(store: Store) -> None:
    a = store.repository("a")
    digest, _ = await push_image(a, "v1", layers=[b"kept by v1"])
    await store.driver.delete(paths.blob_dir(digest))  # The manifest's content is lost.
    orphan = await push_blob(a, b"orphan")
    result = await collect(store)
    assert result.unreadable == (f"a@{digest}",)
    assert not await blob_exists(store, orphan)


async def test_an_empty_store(store: Store) -> None:
    result = await collect(store, delete_untagged=True)
    assert (result.repositories, result.blobs, result.blobs_deleted) == (0, 0, 0)


async def test_registry2_mode_deletes_at_once(store: Store) -> None:
    """Without a grace delay (the registry stopped): no hiding, no wait, registry:2's sweep."""
    a = store.repository("a")
    await push_image(a, "v1")
    orphan = await push_blob(a, b"orphan")
    clock = Clock(0)
    result = await collect(store, clock, grace=0, settle=0)
    assert clock.slept == 0 and result.blobs_deleted == 1
    assert not await blob_exists(store, orphan)
    assert not await exists(store.driver, paths.layer_link("a", orphan).removesuffix("/link"))


async def test_old_temporary_files_go(store: Store) -> None:
    driver = store.driver
    while isinstance(driver, CachedDriver):
        driver = driver.inner
    if not isinstance(driver, FilesystemDriver):
        pytest.skip("only the filesystem driver writes temporary files")
    a = store.repository("a")
    await push_image(a, "v1")
    folder = Path(driver.root + paths.layers("a"))
    old, young = folder / ".link.tmp~0123456789ab", folder / ".link.tmp~ba9876543210"
    write_files({old: b"half", young: b"half"}, age=0)
    write_files({old: b"half"}, age=2 * HOUR)
    result = await collect(store, Clock(0))
    assert result.temporary_files_deleted == 1
    assert temporaries(folder) == [young.name]
    young.unlink()


def temporaries(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if "tmp~" in name)


def write_files(contents: dict[Path, bytes], age: float) -> None:
    for path, data in contents.items():
        path.write_bytes(data)
        os.utime(path, (time.time() - age,) * 2)


def test_references_are_read_from_every_kind_of_manifest() -> None:
    d = [f"sha256:{str(i) * 64}" for i in range(6)]
    schema1 = {"schemaVersion": 1, "fsLayers": [{"blobSum": d[0]}, {"blobSum": d[1]}]}
    artifact = {"blobs": [{"digest": d[2]}], "subject": {"digest": d[3]}}
    index = {"manifests": [{"digest": d[4]}, {"digest": "not a digest"}], "config": {}}
    image = {"config": {"digest": d[5]}, "layers": [{"digest": d[0]}, "junk"]}
    found = {
        name: references(json.dumps(document).encode())
        for name, document in (
            ("schema1", schema1),
            ("artifact", artifact),
            ("index", index),
            ("image", image),
        )
    }
    assert found["schema1"] is not None and {str(x) for x in found["schema1"].blobs} == set(d[:2])
    assert found["artifact"] is not None and str(found["artifact"].subject) == d[3]
    assert found["index"] is not None and {str(x) for x in found["index"].children} == {d[4]}
    assert found["image"] is not None and {str(x) for x in found["image"].blobs} == {d[5], d[0]}
    assert references(b"not json") is None and references(b"[1]") is None
