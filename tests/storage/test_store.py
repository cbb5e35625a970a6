"""The registry's store over every driver: blobs, uploads, manifests, tags, referrers,
catalog and upload purging."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator

import pytest

from registry.manifests import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST
from registry.reference import Digest, InvalidReferenceError
from registry.storage import Store, paths
from registry.storage import uploads as uploads_module
from registry.storage.catalog import page
from registry.storage.driver import PathNotFoundError, StorageDriver
from registry.storage.errors import (
    BlobUnknownError,
    DigestMismatchError,
    ManifestBlobUnknownError,
    ManifestInvalidError,
    ManifestUnknownError,
    RepositoryUnknownError,
    SizeMismatchError,
    UploadBusyError,
    UploadRangeError,
    UploadUnknownError,
)
from registry.storage.purge import purge_uploads
from registry.storage.uploads import WRITE_BUFFER

from .content import (
    OCI_CONFIG,
    body,
    descriptor,
    digest_of,
    image_manifest,
    index_manifest,
    push_blob,
    push_image,
)

MIB = 1024 * 1024
ARTIFACT = "application/vnd.example.signature.v1"
SBOM = "application/vnd.example.sbom.v1"


async def read_blob(store: Store, digest: Digest, offset: int = 0, length: int | None = None):
    return b"".join([chunk async for chunk in store.blobs.read(digest, offset, length)])


async def upload_ids(driver: StorageDriver, name: str) -> list[str]:
    try:
        return await driver.list(paths.uploads(name))
    except PathNotFoundError:
        return []


# Blobs: content once, visible per repository


async def test_blob_is_visible_only_in_its_repository(store: Store) -> None:
    a, b = store.repository("team/a"), store.repository("team/b")
    data = b"layer data"
    digest = await push_blob(a, data)
    assert (await a.blobs.stat(digest)).size == len(data)
    assert await a.blobs.is_linked(digest)
    assert not await b.blobs.is_linked(digest)
    with pytest.raises(BlobUnknownError):
        await b.blobs.stat(digest)
    # The content itself is stored once, for everyone.
    assert (await store.blobs.stat(digest)).size == len(data)
    assert await read_blob(store, digest) == data


async def test_mount(store: Store) -> None:
    a, b = store.repository("a"), store.repository("b")
    digest = await push_blob(a, b"shared layer")
    info = await b.blobs.mount(digest, a.blobs)
    assert info is not None
    assert info.digest == digest
    assert info.size == len(b"shared layer")
    assert (await b.blobs.stat(digest)).size == len(b"shared layer")
    # Still one copy of the content.
    assert await store.driver.list(paths.blob_dir(digest).rsplit("/", 1)[0]) == [digest.hex]


async def test_an_upload_whose_stored_copy_is_hidden_before_it_links_stores_its_own(
    store: Store,
) -> None:
    """The content was stored already, so the upload keeps the stored copy; the garbage
    collector hides that copy before the link is written. The upload's own copy then
    takes its place: the client is told 201 only for a blob it can pull."""
    a, b = store.repository("a"), store.repository("b")
    data = b"old blob, pushed again as the collector hides it"
    digest = await push_blob(a, data)
    link = b.blobs.link

    async def hidden_then_linked(linked: Digest) -> None:
        await store.driver.move(paths.blob_data(linked), "/suite/hidden/data")
        await link(linked)

    b.blobs.link = hidden_then_linked  # type: ignore[method-assign]
    await push_blob(b, data)
    assert (await b.blobs.stat(digest)).size == len(data)
    assert await store.driver.get_content(paths.blob_data(digest)) == data
    await store.driver.delete("/suite")


async def test_a_mount_whose_blob_is_hidden_before_it_links_asks_for_an_upload(
    store: Store,
) -> None:
    a, b = store.repository("a"), store.repository("b")
    digest = await push_blob(a, b"old blob, mounted as the collector hides it")
    link = b.blobs.link

    async def hidden_then_linked(linked: Digest) -> None:
        await store.driver.move(paths.blob_data(linked), "/suite/hidden/data")
        await link(linked)

    b.blobs.link = hidden_then_linked  # type: ignore[method-assign]
    assert await b.blobs.mount(digest, a.blobs) is None
    await store.driver.delete("/suite")


def hide_layer_as_revision_is_written(store: Store, link: str, back_after: float | None) -> None:
    """The collector's race: the layer's link is hidden after the PUT checked it and
    before the revision link is written; put back ``back_after`` seconds later (its
    next look), or never."""
    put_content = store.driver.put_content

    async def hiding(path: str, content: bytes) -> None:
        if "/_manifests/revisions/" in path:
            await store.driver.move(link, "/suite/hidden/link")
            if back_after is not None:

                async def put_back() -> None:
                    await asyncio.sleep(back_after)
                    await store.driver.move("/suite/hidden/link", link)

                tasks.add(asyncio.create_task(put_back()))
        await put_content(path, content)

    tasks: set[asyncio.Task[None]] = set()
    store.driver.put_content = hiding  # type: ignore[method-assign]


async def test_a_manifest_is_answered_only_once_a_layer_hidden_under_it_is_back(
    store: Store,
) -> None:
    repo = store.repository("team/app")
    config, layer = b"{}", b"a layer the collector hides for a moment"
    await push_blob(repo, config)
    digest = await push_blob(repo, layer)
    hide_layer_as_revision_is_written(store, paths.layer_link("team/app", digest), 0.3)
    await repo.manifests.put("v1", image_manifest(config, [layer]), OCI_MANIFEST)
    # A pull right after the answer finds every blob.
    assert (await repo.blobs.stat(digest)).size == len(layer)


async def test_a_manifest_whose_layer_stays_hidden_is_refused(store: Store) -> None:
    repo = store.repository("team/app")
    subject, subject_manifest = await push_image(repo, "base")
    config, layer = b"{}", b"a layer the collector takes for good"
    await push_blob(repo, config)
    digest = await push_blob(repo, layer)
    hide_layer_as_revision_is_written(store, paths.layer_link("team/app", digest), None)
    with pytest.raises(ManifestBlobUnknownError):
        await repo.manifests.put(
            "v1", image_manifest(config, [layer], subject=subject_manifest), OCI_MANIFEST
        )
    # Not tagged, and not a referrer its subject would keep alive: the client pushes
    # the layer again, then the manifest.
    with pytest.raises(ManifestUnknownError):
        await repo.manifests.get("v1")
    assert await repo.manifests.referrers(subject, None) == []


async def test_mount_needs_the_blob_in_the_source(store: Store) -> None:
    a, b, c = store.repository("a"), store.repository("b"), store.repository("c")
    digest = await push_blob(a, b"only in a")
    # The content exists, but not in b: nothing to mount from b.
    assert await c.blobs.mount(digest, b.blobs) is None
    assert not await c.blobs.is_linked(digest)
    unknown = digest_of(b"pushed nowhere")
    assert await c.blobs.mount(unknown, a.blobs) is None
    with pytest.raises(BlobUnknownError):
        await c.blobs.stat(unknown)


async def test_unlink(store: Store) -> None:
    a, b = store.repository("a"), store.repository("b")
    digest = await push_blob(a, b"blob")
    await b.blobs.mount(digest, a.blobs)
    await a.blobs.unlink(digest)
    with pytest.raises(BlobUnknownError):
        await a.blobs.stat(digest)
    assert (await b.blobs.stat(digest)).size == 4
    with pytest.raises(BlobUnknownError):
        await a.blobs.unlink(digest)
    with pytest.raises(BlobUnknownError):
        await a.blobs.unlink(digest_of(b"never pushed"))


async def test_link_is_idempotent(store: Store) -> None:
    a = store.repository("a")
    digest = await push_blob(a, b"twice")
    await a.blobs.link(digest)
    assert await push_blob(a, b"twice") == digest
    assert (await a.blobs.stat(digest)).size == 5


async def test_blob_read_with_offset_and_length(store: Store) -> None:
    a = store.repository("a")
    data = os.urandom(3 * MIB + 5)
    digest = await push_blob(a, data)
    assert await read_blob(store, digest) == data
    assert await read_blob(store, digest, 10, 100) == data[10:110]
    assert await read_blob(store, digest, MIB - 1, MIB + 2) == data[MIB - 1 : 2 * MIB + 1]
    assert await read_blob(store, digest, len(data)) == b""


async def test_unknown_blob(store: Store) -> None:
    unknown = digest_of(b"nothing")
    with pytest.raises(BlobUnknownError):
        await store.blobs.stat(unknown)
    with pytest.raises(BlobUnknownError):
        await store.blobs.get(unknown)


async def test_repository_name_is_checked(store: Store) -> None:
    for name in ("", "A", "a/../b", "../a", "a//b", "a/", "/a", "a b", "a__" + "_b"):
        with pytest.raises(InvalidReferenceError):
            store.repository(name)


# Uploads


async def test_upload_start_append_complete(store: Store) -> None:
    repo = store.repository("library/app")
    session = await repo.uploads.start()
    assert session.size == 0
    assert session.name == "library/app"
    assert (await repo.uploads.status(session.id)).size == 0
    chunks = [b"first chunk, ", b"", b"second chunk, ", os.urandom(1000)]
    size = 0
    for chunk in chunks:
        appended = await repo.uploads.append(session.id, body(chunk), start=size)
        size += len(chunk)
        assert appended.size == size
        assert (await repo.uploads.status(session.id)).size == size
    data = b"".join(chunks)
    info = await repo.uploads.complete(session.id, digest_of(data))
    assert info.digest == digest_of(data)
    assert info.size == len(data)
    assert await read_blob(store, info.digest) == data
    assert (await repo.blobs.stat(info.digest)).size == len(data)
    # The session is gone.
    with pytest.raises(UploadUnknownError):
        await repo.uploads.status(session.id)
    with pytest.raises(UploadUnknownError):
        await repo.uploads.cancel(session.id)
    assert await upload_ids(store.driver, repo.name) == []


async def test_upload_without_start_offsets(store: Store) -> None:
    repo = store.repository("a")
    session = await repo.uploads.start()
    await repo.uploads.append(session.id, body(b"abc", b"def"))
    await repo.uploads.append(session.id, body(b"ghi"))
    info = await repo.uploads.complete(session.id, digest_of(b"abcdefghij"), body(b"j"))
    assert await read_blob(store, info.digest) == b"abcdefghij"


async def test_upload_large_streamed(store: Store) -> None:
    repo = store.repository("a")
    data = os.urandom(2 * WRITE_BUFFER + 12345)
    session = await repo.uploads.start()
    pieces = [data[i : i + 100_000] for i in range(0, len(data), 100_000)]
    half = len(pieces) // 2
    await repo.uploads.append(session.id, body(*pieces[:half]))
    info = await repo.uploads.complete(session.id, digest_of(data), body(*pieces[half:]))
    assert info.size == len(data)
    assert await read_blob(store, info.digest) == data


async def test_empty_blob(store: Store) -> None:
    repo = store.repository("a")
    session = await repo.uploads.start()
    info = await repo.uploads.complete(session.id, digest_of(b""))
    assert info.size == 0
    assert str(info.digest) == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert await read_blob(store, info.digest) == b""
    assert (await repo.blobs.stat(info.digest)).size == 0


async def test_upload_single_request(store: Store) -> None:
    repo = store.repository("a")
    data = b"monolithic"
    info = await repo.uploads.single(digest_of(data), body(data), len(data))
    assert info.digest == digest_of(data)
    assert await read_blob(store, info.digest) == data
    assert await upload_ids(store.driver, "a") == []


async def test_upload_single_request_failure_leaves_nothing(store: Store) -> None:
    repo = store.repository("a")
    with pytest.raises(DigestMismatchError):
        await repo.uploads.single(digest_of(b"other"), body(b"data"), 4)
    assert await upload_ids(store.driver, "a") == []
    with pytest.raises(BlobUnknownError):
        await store.blobs.stat(digest_of(b"data"))
    with pytest.raises(BlobUnknownError):
        await store.blobs.stat(digest_of(b"other"))


async def test_digest_mismatch_leaves_the_blob_invisible(store: Store) -> None:
    repo = store.repository("a")
    session = await repo.uploads.start()
    await repo.uploads.append(session.id, body(b"actual content"))
    claimed = digest_of(b"claimed content")
    with pytest.raises(DigestMismatchError) as raised:
        await repo.uploads.complete(session.id, claimed)
    assert raised.value.expected == str(claimed)
    assert raised.value.actual == str(digest_of(b"actual content"))
    for digest in (claimed, digest_of(b"actual content")):
        with pytest.raises(BlobUnknownError):
            await store.blobs.stat(digest)
        assert not await repo.blobs.is_linked(digest)
        with pytest.raises(PathNotFoundError):
            await store.driver.stat(paths.blob_dir(digest))
        with pytest.raises(PathNotFoundError):
            await store.driver.stat(paths.layer_link("a", digest))


async def test_digest_mismatch_with_last_chunk(store: Store) -> None:
    repo = store.repository("a")
    session = await repo.uploads.start()
    await repo.uploads.append(session.id, body(b"part one "))
    with pytest.raises(DigestMismatchError):
        await repo.uploads.complete(session.id, digest_of(b"part one part 2"), body(b"part two"))
    with pytest.raises(BlobUnknownError):
        await store.blobs.stat(digest_of(b"part one part two"))
    with pytest.raises(BlobUnknownError):
        await repo.blobs.stat(digest_of(b"part one part 2"))


def _ready(digest: Digest) -> asyncio.Future[Digest]:
    """A digest already known (the relay hands over a future; an unawaited one is fine)."""
    future: asyncio.Future[Digest] = asyncio.get_running_loop().create_future()
    future.set_result(digest)
    return future


async def test_a_digest_the_caller_computed_is_compared_not_recomputed(store: Store) -> None:
    """A blob pulled through is hashed beside its relay: the session only writes it."""
    repo = store.repository("a")
    content = b"pulled through"
    session = await repo.uploads.start()
    hashed = _ready(digest_of(content))
    await repo.uploads.complete(session.id, digest_of(content), body(content), hashed=hashed)
    assert await read_blob(store, digest_of(content)) == content
    assert await repo.blobs.is_linked(digest_of(content))
    # The caller's digest is what counts: one that differs from the one asked for is a
    # mismatch, whatever the bytes, and nothing is kept.
    other = b"other bytes"
    session = await repo.uploads.start()
    with pytest.raises(DigestMismatchError):
        await repo.uploads.complete(
            session.id, digest_of(other), body(other), hashed=_ready(digest_of(b"corrupt"))
        )
    with pytest.raises(BlobUnknownError):
        await store.blobs.stat(digest_of(other))
    assert not await repo.blobs.is_linked(digest_of(other))


async def test_a_callers_digest_is_ignored_for_a_session_that_has_chunks(store: Store) -> None:
    """It covers only the pieces given with it: a session with earlier chunks is hashed."""
    repo = store.repository("a")
    session = await repo.uploads.start()
    await repo.uploads.append(session.id, body(b"part one "))
    wrong = _ready(digest_of(b"part two"))
    with pytest.raises(DigestMismatchError):
        await repo.uploads.complete(
            session.id, digest_of(b"part two"), body(b"part two"), hashed=wrong
        )
    whole = digest_of(b"part one part two")
    await repo.uploads.complete(session.id, whole, body(b"part two"), hashed=_ready(whole))
    assert await read_blob(store, whole) == b"part one part two"


async def test_upload_range_errors(store: Store) -> None:
    repo = store.repository("a")
    session = await repo.uploads.start()
    await repo.uploads.append(session.id, body(b"0123456789"), start=0)
    for start in (0, 9, 11, 100):
        with pytest.raises(UploadRangeError) as raised:
            await repo.uploads.append(session.id, body(b"x"), start=start)
        assert raised.value.expected == 10
        assert raised.value.received == start
    with pytest.raises(UploadRangeError):
        await repo.uploads.complete(session.id, digest_of(b"0123456789x"), body(b"x"), start=5)
    # Nothing was written by the refused chunks.
    assert (await repo.uploads.status(session.id)).size == 10
    await repo.uploads.append(session.id, body(b"x"), start=10)
    info = await repo.uploads.complete(session.id, digest_of(b"0123456789x"))
    assert await read_blob(store, info.digest) == b"0123456789x"


async def test_upload_size_mismatch(store: Store) -> None:
    repo = store.repository("a")
    session = await repo.uploads.start()
    with pytest.raises(SizeMismatchError) as raised:
        await repo.uploads.append(session.id, body(b"12345"), length=4)
    assert raised.value.expected == 4
    assert raised.value.actual == 5


async def test_upload_unknown(store: Store) -> None:
    a, b = store.repository("a"), store.repository("b")
    session = await a.uploads.start()
    for upload_id in (
        "not-a-uuid",
        "../../../blobs",
        "",
        session.id.upper(),
        "00000000-0000-0000-0000-000000000000",
    ):
        with pytest.raises(UploadUnknownError):
            await a.uploads.status(upload_id)
        with pytest.raises(UploadUnknownError):
            await a.uploads.append(upload_id, body(b"x"))
        with pytest.raises(UploadUnknownError):
            await a.uploads.complete(upload_id, digest_of(b"x"))
        with pytest.raises(UploadUnknownError):
            await a.uploads.cancel(upload_id)
    # A session belongs to its repository.
    with pytest.raises(UploadUnknownError):
        await b.uploads.status(session.id)
    with pytest.raises(UploadUnknownError):
        await b.uploads.append(session.id, body(b"x"))
    assert (await a.uploads.status(session.id)).size == 0


async def test_upload_cancel(store: Store) -> None:
    repo = store.repository("a")
    session = await repo.uploads.start()
    await repo.uploads.append(session.id, body(b"abandoned"))
    await repo.uploads.cancel(session.id)
    with pytest.raises(UploadUnknownError):
        await repo.uploads.status(session.id)
    with pytest.raises(UploadUnknownError):
        await repo.uploads.complete(session.id, digest_of(b"abandoned"))
    with pytest.raises(BlobUnknownError):
        await store.blobs.stat(digest_of(b"abandoned"))
    assert await upload_ids(store.driver, "a") == []


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
async def test_upload_digest_algorithms(store: Store, algorithm: str) -> None:
    repo = store.repository("a")
    data = os.urandom(WRITE_BUFFER + 17)
    digest = digest_of(data, algorithm)
    assert len(digest.hex) == {"sha256": 64, "sha384": 96, "sha512": 128}[algorithm]
    session = await repo.uploads.start()
    await repo.uploads.append(session.id, body(data[:1000]))
    info = await repo.uploads.complete(session.id, digest, body(data[1000:]))
    assert info.digest == digest
    assert await read_blob(store, digest) == data
    assert (await repo.blobs.stat(digest)).size == len(data)
    await store.driver.stat(f"{paths.BLOBS}/{algorithm}/{digest.hex[:2]}/{digest.hex}/data")
    # A wrong claim is refused in every algorithm.
    with pytest.raises(DigestMismatchError):
        await repo.uploads.single(digest_of(b"other", algorithm), body(data), None)


# Uploads continued by another process (another worker, another instance)


async def test_upload_continued_by_another_store(driver: StorageDriver) -> None:
    first, second = Store(driver), Store(driver)
    chunks = [os.urandom(300_000), os.urandom(WRITE_BUFFER + 1), os.urandom(1234)]
    data = b"".join(chunks)
    session = await first.repository("a").uploads.start()
    await first.repository("a").uploads.append(session.id, body(chunks[0]), start=0)
    # Another worker has no hasher for this session: it must hash from storage.
    other = second.repository("a").uploads
    assert (await other.status(session.id)).size == len(chunks[0])
    await other.append(session.id, body(chunks[1]), start=len(chunks[0]))
    info = await other.complete(
        session.id, digest_of(data), body(chunks[2]), start=len(chunks[0]) + len(chunks[1])
    )
    assert info.digest == digest_of(data)
    assert info.size == len(data)
    assert await read_blob(first, info.digest) == data


async def test_upload_completed_by_a_store_that_never_saw_it(driver: StorageDriver) -> None:
    first, second = Store(driver), Store(driver)
    data = os.urandom(2 * WRITE_BUFFER)
    session = await first.repository("a").uploads.start()
    await first.repository("a").uploads.append(session.id, body(data))
    info = await second.repository("a").uploads.complete(session.id, digest_of(data))
    assert info.digest == digest_of(data)
    assert await read_blob(second, info.digest) == data


async def test_upload_hasher_behind_catches_up(driver: StorageDriver) -> None:
    """The first worker hashed chunk 1; chunk 2 went to another worker."""
    first, second = Store(driver), Store(driver)
    chunks = [b"chunk one. " * 1000, b"chunk two. " * 5000]
    data = b"".join(chunks)
    repo = first.repository("a")
    session = await repo.uploads.start()
    await repo.uploads.append(session.id, body(chunks[0]))
    await second.repository("a").uploads.append(session.id, body(chunks[1]))
    info = await repo.uploads.complete(session.id, digest_of(data))
    assert info.digest == digest_of(data)
    assert await read_blob(first, info.digest) == data


async def test_upload_hasher_behind_then_more_chunks(driver: StorageDriver) -> None:
    """Chunks alternate between two workers; each one's hasher falls behind in turn."""
    stores = [Store(driver), Store(driver)]
    chunks = [os.urandom(size) for size in (1000, 70_000, 3, WRITE_BUFFER + 5, 10, 999)]
    session = await stores[0].repository("a").uploads.start()
    offset = 0
    for i, chunk in enumerate(chunks):
        uploads = stores[i % 2].repository("a").uploads
        assert (await uploads.append(session.id, body(chunk), start=offset)).size == (
            offset + len(chunk)
        )
        offset += len(chunk)
    data = b"".join(chunks)
    last = os.urandom(100)
    info = (
        await stores[0]
        .repository("a")
        .uploads.complete(session.id, digest_of(data + last), body(last), start=offset)
    )
    assert info.digest == digest_of(data + last)
    assert await read_blob(stores[1], info.digest) == data + last


async def test_upload_hasher_behind_completed_with_last_chunk(driver: StorageDriver) -> None:
    first, second = Store(driver), Store(driver)
    chunks = [os.urandom(5000), os.urandom(6000), os.urandom(7000)]
    data = b"".join(chunks)
    session = await first.repository("a").uploads.start()
    await first.repository("a").uploads.append(session.id, body(chunks[0]))
    await second.repository("a").uploads.append(session.id, body(chunks[1]))
    info = await first.repository("a").uploads.complete(
        session.id, digest_of(data), body(chunks[2])
    )
    assert info.digest == digest_of(data)
    assert await read_blob(first, info.digest) == data


async def test_upload_hasher_behind_wrong_digest_is_refused(driver: StorageDriver) -> None:
    """Catching up must hash the bytes on disk, not trust what the first worker saw."""
    first, second = Store(driver), Store(driver)
    session = await first.repository("a").uploads.start()
    await first.repository("a").uploads.append(session.id, body(b"seen by the first"))
    await second.repository("a").uploads.append(session.id, body(b", then the second"))
    with pytest.raises(DigestMismatchError):
        await first.repository("a").uploads.complete(session.id, digest_of(b"seen by the first"))
    info = await first.repository("a").uploads.complete(
        session.id, digest_of(b"seen by the first, then the second")
    )
    assert await read_blob(first, info.digest) == b"seen by the first, then the second"


@pytest.mark.parametrize("algorithm", ["sha384", "sha512"])
async def test_upload_continued_by_another_store_other_algorithms(
    driver: StorageDriver, algorithm: str
) -> None:
    first, second = Store(driver), Store(driver)
    chunks = [os.urandom(4000), os.urandom(WRITE_BUFFER)]
    data = b"".join(chunks)
    session = await first.repository("a").uploads.start()
    await first.repository("a").uploads.append(session.id, body(chunks[0]))
    await second.repository("a").uploads.append(session.id, body(chunks[1]))
    info = await first.repository("a").uploads.complete(session.id, digest_of(data, algorithm))
    assert info.digest == digest_of(data, algorithm)
    assert (
        hashlib.new(algorithm, await read_blob(first, info.digest)).hexdigest() == info.digest.hex
    )


async def test_upload_cancelled_by_another_store(driver: StorageDriver) -> None:
    first, second = Store(driver), Store(driver)
    session = await first.repository("a").uploads.start()
    await first.repository("a").uploads.append(session.id, body(b"data"))
    await second.repository("a").uploads.cancel(session.id)
    with pytest.raises(UploadUnknownError):
        await first.repository("a").uploads.append(session.id, body(b"more"))
    with pytest.raises(UploadUnknownError):
        await first.repository("a").uploads.complete(session.id, digest_of(b"data"))


# Manifests and tags


async def test_manifest_put_get_by_tag_and_digest(store: Store) -> None:
    repo = store.repository("library/app")
    digest, manifest = await push_image(repo, "v1")
    for reference in ("v1", str(digest)):
        stored = await repo.manifests.get(reference)
        assert stored.data == manifest
        assert stored.digest == digest
        assert stored.media_type == OCI_MANIFEST
    assert await repo.manifests.resolve("v1") == digest
    assert await repo.manifests.exists(digest)
    assert await repo.manifests.tags() == ["v1"]
    # The manifest is served through the blob endpoint too.
    assert (await repo.blobs.stat(digest)).size == len(manifest)


async def test_manifest_is_stored_byte_for_byte(store: Store) -> None:
    repo = store.repository("a")
    await push_blob(repo, b"{}")
    manifest = (
        b'{ "schemaVersion" :2,\n"config":{"mediaType":"'
        + OCI_CONFIG.encode()
        + b'","size":2,"digest":"'
        + str(digest_of(b"{}")).encode()
        + b'"},"layers":[]  }\n\n'
    )
    digest, parsed = await repo.manifests.put("t", manifest, OCI_MANIFEST)
    assert digest == digest_of(manifest)
    assert parsed.media_type == OCI_MANIFEST
    assert (await Store(store.driver).repository("a").manifests.get("t")).data == manifest


async def test_manifest_put_by_digest(store: Store) -> None:
    repo = store.repository("a")
    await push_blob(repo, b"config")
    manifest = image_manifest(b"config", [])
    digest, _ = await repo.manifests.put(str(digest_of(manifest)), manifest, OCI_MANIFEST)
    assert (await repo.manifests.get(str(digest))).data == manifest
    assert await repo.manifests.tags() == []


async def test_manifest_put_by_sha512_digest(store: Store) -> None:
    repo = store.repository("a")
    await push_blob(repo, b"config")
    manifest = image_manifest(b"config", [])
    sha512 = digest_of(manifest, "sha512")
    digest, _ = await repo.manifests.put(str(sha512), manifest, OCI_MANIFEST)
    assert digest == sha512
    assert (await repo.manifests.get(str(sha512))).data == manifest
    with pytest.raises(ManifestUnknownError):
        await repo.manifests.get(str(digest_of(manifest)))


async def test_manifest_put_digest_mismatch(store: Store) -> None:
    repo = store.repository("a")
    await push_blob(repo, b"config")
    manifest = image_manifest(b"config", [])
    with pytest.raises(DigestMismatchError):
        await repo.manifests.put(str(digest_of(b"other")), manifest, OCI_MANIFEST)
    with pytest.raises(ManifestUnknownError):
        await repo.manifests.get(str(digest_of(manifest)))
    with pytest.raises(BlobUnknownError):
        await store.blobs.stat(digest_of(manifest))


async def test_manifest_invalid(store: Store) -> None:
    repo = store.repository("a")
    for data in (b"", b"not json", b"[]", b'{"schemaVersion": 1}', b'{"schemaVersion": 2}'):
        with pytest.raises(ManifestInvalidError):
            await repo.manifests.put("t", data, OCI_MANIFEST)
    too_big = b'{"schemaVersion": 2, "x": "' + b"a" * (4 * MIB) + b'"}'
    with pytest.raises(ManifestInvalidError):
        await repo.manifests.put("t", too_big, OCI_MANIFEST)
    with pytest.raises(RepositoryUnknownError):
        await repo.manifests.tags()


async def test_manifest_unknown(store: Store) -> None:
    repo = store.repository("a")
    await push_image(repo, "v1")
    for reference in ("v2", str(digest_of(b"nothing"))):
        with pytest.raises(ManifestUnknownError):
            await repo.manifests.get(reference)
    # A manifest of another repository is unknown here.
    other_digest, _ = await push_image(store.repository("b"), "v1", layers=[b"b"])
    with pytest.raises(ManifestUnknownError):
        await repo.manifests.get(str(other_digest))


async def test_retag(store: Store) -> None:
    repo = store.repository("a")
    first, _ = await push_image(repo, "latest", layers=[b"one"])
    second, _ = await push_image(repo, "latest", layers=[b"two"])
    assert first != second
    assert (await repo.manifests.get("latest")).digest == second
    assert (await repo.manifests.get(str(first))).digest == first
    await repo.manifests.tag("stable", first)
    assert await repo.manifests.resolve("stable") == first
    assert await repo.manifests.tags() == ["latest", "stable"]


async def test_delete_tag(store: Store) -> None:
    repo = store.repository("a")
    digest, _ = await push_image(repo, "v1")
    await repo.manifests.tag("v2", digest)
    await repo.manifests.delete_tag("v1")
    with pytest.raises(ManifestUnknownError):
        await repo.manifests.get("v1")
    assert await repo.manifests.tags() == ["v2"]
    # The manifest stays, by digest and through its other tag.
    assert (await repo.manifests.get(str(digest))).digest == digest
    assert (await repo.manifests.get("v2")).digest == digest
    with pytest.raises(ManifestUnknownError):
        await repo.manifests.delete_tag("v1")
    with pytest.raises(ManifestUnknownError):
        await repo.manifests.delete_tag("never")


async def test_delete_by_digest_removes_its_tags(store: Store) -> None:
    repo = store.repository("a")
    doomed, _ = await push_image(repo, "v1", layers=[b"one"])
    await repo.manifests.tag("v1.0", doomed)
    kept, _ = await push_image(repo, "v2", layers=[b"two"])
    await repo.manifests.delete(doomed)
    for reference in ("v1", "v1.0", str(doomed)):
        with pytest.raises(ManifestUnknownError):
            await repo.manifests.get(reference)
    assert await repo.manifests.tags() == ["v2"]
    assert (await repo.manifests.get("v2")).digest == kept
    assert not await repo.manifests.exists(doomed)
    assert not await repo.blobs.is_linked(doomed)
    with pytest.raises(ManifestUnknownError):
        await repo.manifests.delete(doomed)
    # A second process, with nothing cached, agrees.
    with pytest.raises(ManifestUnknownError):
        await Store(store.driver).repository("a").manifests.get(str(doomed))


async def test_delete_by_digest_keeps_a_tag_that_moved_on(store: Store) -> None:
    repo = store.repository("a")
    old, _ = await push_image(repo, "latest", layers=[b"old"])
    new, _ = await push_image(repo, "latest", layers=[b"new"])
    await repo.manifests.delete(old)
    assert (await repo.manifests.get("latest")).digest == new


async def test_delete_in_one_repository_only(store: Store) -> None:
    a, b = store.repository("a"), store.repository("b")
    layers, config = [b"same layer"], b'{"same": "config"}'
    digest_a, _ = await push_image(a, "v1", layers=layers, config=config)
    digest_b, _ = await push_image(b, "v1", layers=layers, config=config)
    assert digest_a == digest_b
    await a.manifests.delete(digest_a)
    assert (await b.manifests.get("v1")).digest == digest_b
    assert (await b.manifests.get(str(digest_b))).digest == digest_b


async def test_tags_of_unknown_repository(store: Store) -> None:
    with pytest.raises(RepositoryUnknownError):
        await store.repository("nothing/here").manifests.tags()
    # Only blobs: not a repository to the catalog, nor to tags/list (as registry:2).
    repo = store.repository("blobs/only")
    await push_blob(repo, b"x")
    with pytest.raises(RepositoryUnknownError):
        await repo.manifests.tags()


async def test_manifest_blob_unknown(store: Store) -> None:
    a, b = store.repository("a"), store.repository("b")
    config, layer = b'{"config": 1}', b"layer in a only"
    await push_blob(a, config)
    await push_blob(a, layer)
    await push_blob(b, config)
    manifest = image_manifest(config, [layer])
    with pytest.raises(ManifestBlobUnknownError) as raised:
        await b.manifests.put("v1", manifest, OCI_MANIFEST)
    assert raised.value.digest == str(digest_of(layer))
    with pytest.raises(ManifestUnknownError):
        await b.manifests.get("v1")
    # Nothing of the refused manifest was stored.
    with pytest.raises(BlobUnknownError):
        await store.blobs.stat(digest_of(manifest))
    await b.blobs.mount(digest_of(layer), a.blobs)
    digest, _ = await b.manifests.put("v1", manifest, OCI_MANIFEST)
    assert (await b.manifests.get("v1")).digest == digest


async def test_manifest_config_unknown(store: Store) -> None:
    repo = store.repository("a")
    await push_blob(repo, b"layer")
    with pytest.raises(ManifestBlobUnknownError) as raised:
        await repo.manifests.put("v1", image_manifest(b"missing", [b"layer"]), OCI_MANIFEST)
    assert raised.value.digest == str(digest_of(b"missing"))


async def test_manifest_foreign_layer(store: Store) -> None:
    repo = store.repository("a")
    await push_blob(repo, b"config")
    foreign = b"windows base layer"
    document = json.loads(image_manifest(b"config", []))
    document["layers"] = [
        descriptor(
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            foreign,
            urls=["https://example.com/layer"],
        )
    ]
    manifest = json.dumps(document).encode()
    digest, _ = await repo.manifests.put("v1", manifest, OCI_MANIFEST)
    assert (await repo.manifests.get("v1")).digest == digest


async def test_index(store: Store) -> None:
    repo = store.repository("a")
    amd64, amd64_manifest = await push_image(repo, None, layers=[b"amd64"])
    arm64, arm64_manifest = await push_image(repo, None, layers=[b"arm64"])
    index = index_manifest([amd64_manifest, arm64_manifest])
    digest, parsed = await repo.manifests.put("multi", index, OCI_INDEX)
    assert parsed.is_index
    assert [child.digest for child in parsed.children] == [amd64, arm64]
    stored = await repo.manifests.get("multi")
    assert stored.media_type == OCI_INDEX
    assert stored.digest == digest


async def test_index_children_must_be_in_the_repository(store: Store) -> None:
    a, b = store.repository("a"), store.repository("b")
    config, layers = b'{"os": "linux"}', [b"child layer"]
    _, child = await push_image(a, "child", config=config, layers=layers)
    index = index_manifest([child])
    with pytest.raises(ManifestBlobUnknownError) as raised:
        await b.manifests.put("multi", index, OCI_INDEX)
    assert raised.value.digest == str(digest_of(child))
    await push_image(b, "child", config=config, layers=layers)
    await b.manifests.put("multi", index, OCI_INDEX)
    assert (await b.manifests.get("multi")).data == index


async def test_docker_manifests(store: Store) -> None:
    repo = store.repository("a")
    _, manifest = await push_image(repo, "v1", media_type=DOCKER_MANIFEST)
    assert (await repo.manifests.get("v1")).media_type == DOCKER_MANIFEST
    listed = index_manifest([manifest], media_type=DOCKER_MANIFEST_LIST)
    await repo.manifests.put("list", listed, DOCKER_MANIFEST_LIST)
    assert (await repo.manifests.get("list")).media_type == DOCKER_MANIFEST_LIST


MEDIA_TYPE_CASES = {
    "oci manifest": (OCI_MANIFEST, True),
    "oci manifest, no mediaType": (OCI_MANIFEST, False),
    "docker manifest": (DOCKER_MANIFEST, True),
    "oci index": (OCI_INDEX, True),
    "oci index, no mediaType": (OCI_INDEX, False),
    "docker list": (DOCKER_MANIFEST_LIST, True),
}


@pytest.mark.parametrize(
    ("media_type", "declared"), MEDIA_TYPE_CASES.values(), ids=MEDIA_TYPE_CASES
)
async def test_media_type_is_the_same_in_every_process(
    store: Store, media_type: str, declared: bool
) -> None:
    """The type a manifest is served with cannot depend on which worker pushed it."""
    repo = store.repository("a")
    _, child = await push_image(repo, None)
    if media_type in (OCI_INDEX, DOCKER_MANIFEST_LIST):
        document = json.loads(index_manifest([child], media_type=media_type))
    else:
        config = json.loads(child)["config"]
        document = {"schemaVersion": 2, "mediaType": media_type, "config": config, "layers": []}
    if not declared:
        del document["mediaType"]
    data = json.dumps(document).encode()
    digest, parsed = await repo.manifests.put("t", data, media_type)
    assert parsed.media_type == media_type
    here = await repo.manifests.get("t")
    elsewhere = await Store(store.driver).repository("a").manifests.get(str(digest))
    assert here.media_type == elsewhere.media_type == media_type


@pytest.mark.parametrize("media_type", [DOCKER_MANIFEST, DOCKER_MANIFEST_LIST])
async def test_docker_manifest_without_media_type_is_refused(store: Store, media_type: str) -> None:
    """Without the field the bytes say OCI: the type would change once the cache is gone."""
    repo = store.repository("a")
    _, child = await push_image(repo, None)
    if media_type == DOCKER_MANIFEST_LIST:
        document = json.loads(index_manifest([child], media_type=media_type))
    else:
        document = {"schemaVersion": 2, "config": json.loads(child)["config"], "layers": []}
    document.pop("mediaType", None)
    with pytest.raises(ManifestInvalidError):
        await repo.manifests.put("t", json.dumps(document).encode(), media_type)


# Referrers


async def test_referrers(store: Store) -> None:
    repo = store.repository("a")
    subject, subject_manifest = await push_image(repo, "v1")
    signature, signature_manifest = await push_image(
        repo,
        None,
        layers=[b"signature"],
        subject=subject_manifest,
        artifact_type=ARTIFACT,
        annotations={"org.example.signed-by": "me"},
    )
    sbom, sbom_manifest = await push_image(
        repo,
        None,
        layers=[b"sbom"],
        config=b"{}",
        config_type=SBOM,  # no artifactType: the config's media type stands in
        subject=subject_manifest,
    )
    found = await repo.manifests.referrers(subject, None)
    by_digest = {entry["digest"]: entry for entry in found}
    assert len(found) == 2
    assert by_digest[str(signature)] == {
        "mediaType": OCI_MANIFEST,
        "digest": str(signature),
        "size": len(signature_manifest),
        "artifactType": ARTIFACT,
        "annotations": {"org.example.signed-by": "me"},
    }
    assert by_digest[str(sbom)] == {
        "mediaType": OCI_MANIFEST,
        "digest": str(sbom),
        "size": len(sbom_manifest),
        "artifactType": SBOM,
    }
    assert await repo.manifests.referrers(subject, ARTIFACT) == [by_digest[str(signature)]]
    assert await repo.manifests.referrers(subject, SBOM) == [by_digest[str(sbom)]]
    assert await repo.manifests.referrers(subject, "application/vnd.example.none") == []
    assert await repo.manifests.referrers(signature, None) == []


async def test_referrers_removed_on_delete(store: Store) -> None:
    repo = store.repository("a")
    subject, subject_manifest = await push_image(repo, "v1")
    referrer, _ = await push_image(
        repo, "sig", layers=[b"sig"], subject=subject_manifest, artifact_type=ARTIFACT
    )
    assert len(await repo.manifests.referrers(subject, None)) == 1
    # Deleting a tag leaves the manifest, so it still refers.
    await repo.manifests.delete_tag("sig")
    assert len(await repo.manifests.referrers(subject, None)) == 1
    await repo.manifests.delete(referrer)
    assert await repo.manifests.referrers(subject, None) == []
    assert await Store(store.driver).repository("a").manifests.referrers(subject, None) == []
    with pytest.raises(PathNotFoundError):
        await store.driver.stat(paths.referrer_link("a", subject, referrer))


async def test_referrer_pushed_before_its_subject(store: Store) -> None:
    repo = store.repository("a")
    subject_config = b'{"subject": true}'
    subject_manifest = image_manifest(subject_config, [b"subject layer"])
    subject = digest_of(subject_manifest)
    referrer, _ = await push_image(
        repo, None, layers=[b"sig"], subject=subject_manifest, artifact_type=ARTIFACT
    )
    assert [entry["digest"] for entry in await repo.manifests.referrers(subject, None)] == [
        str(referrer)
    ]
    await push_image(repo, "v1", config=subject_config, layers=[b"subject layer"])
    assert (await repo.manifests.get("v1")).digest == subject
    assert [entry["digest"] for entry in await repo.manifests.referrers(subject, None)] == [
        str(referrer)
    ]


async def test_referrers_per_repository(store: Store) -> None:
    a, b = store.repository("a"), store.repository("b")
    config, layers = b'{"x": 1}', [b"x"]
    subject, subject_manifest = await push_image(a, "v1", config=config, layers=layers)
    await push_image(b, "v1", config=config, layers=layers)
    await push_image(a, None, layers=[b"sig"], subject=subject_manifest, artifact_type=ARTIFACT)
    assert len(await a.manifests.referrers(subject, None)) == 1
    assert await b.manifests.referrers(subject, None) == []


async def test_index_as_referrer(store: Store) -> None:
    repo = store.repository("a")
    subject, subject_manifest = await push_image(repo, "v1")
    _, child = await push_image(repo, None, layers=[b"child"])
    index = index_manifest(
        [child], subject=subject_manifest, artifact_type=ARTIFACT, annotations={"k": "v"}
    )
    digest, _ = await repo.manifests.put(str(digest_of(index)), index, OCI_INDEX)
    assert await repo.manifests.referrers(subject, None) == [
        {
            "mediaType": OCI_INDEX,
            "digest": str(digest),
            "size": len(index),
            "artifactType": ARTIFACT,
            "annotations": {"k": "v"},
        }
    ]


async def test_referrers_of_unknown_subject(store: Store) -> None:
    repo = store.repository("a")
    await push_image(repo, "v1")
    assert await repo.manifests.referrers(digest_of(b"unknown"), None) == []


# Catalog


async def test_catalog(store: Store) -> None:
    names = ["a", "a/b", "a/b/c", "b/c", "c-d/e.f/g_h", "z0"]
    for name in names:
        await push_image(store.repository(name), "v1")
    # Repositories with only blobs or uploads are not listed (as registry:2).
    await push_blob(store.repository("blobs/only"), b"x")
    await store.repository("uploads/only").uploads.start()
    assert await store.repositories() == sorted(names)
    # A second process lists the same.
    assert await Store(store.driver).repositories() == sorted(names)


async def test_catalog_ignores_underscore_folders(store: Store) -> None:
    await push_image(store.repository("a"), "v1")
    # Folders below a repository's own `_` folders are never repositories,
    # whatever they hold.
    stray = f"{paths.repository('a')}/_uploads/x/_manifests/revisions/link"
    await store.driver.put_content(stray, b"")
    await store.driver.put_content(f"{paths.REPOSITORIES}/_hidden/_manifests/tags/x", b"")
    assert await store.repositories() == ["a"]


async def test_catalog_empty(store: Store) -> None:
    assert await store.repositories() == []


def test_page() -> None:
    names = ["a", "b", "b/c", "c", "d"]
    assert page(names, None, None) == (names, False)
    assert page(names, None, 2) == (["a", "b"], True)
    assert page(names, "b", 2) == (["b/c", "c"], True)
    assert page(names, "c", 2) == (["d"], False)
    assert page(names, "c", 1) == (["d"], False)
    assert page(names, "d", 2) == ([], False)
    assert page(names, "zzz", None) == ([], False)
    assert page(names, "", 5) == (names, False)
    assert page(names, None, 5) == (names, False)
    assert page(names, "a0", None) == (["b", "b/c", "c", "d"], False)
    assert page([], None, 3) == ([], False)


# Purging abandoned uploads


async def test_purge_uploads_by_age(store: Store) -> None:
    old = await store.repository("a").uploads.start()
    nested = await store.repository("a/b").uploads.start()
    now = time.time()
    result = await purge_uploads(store.driver, 3600, now=now)
    assert result.purged == []
    assert result.kept == 2
    result = await purge_uploads(store.driver, 3600, now=now + 7200)
    assert sorted(result.purged) == sorted([f"a/{old.id}", f"a/b/{nested.id}"])
    assert result.kept == 0
    for name, session in (("a", old), ("a/b", nested)):
        with pytest.raises(UploadUnknownError):
            await store.repository(name).uploads.status(session.id)


async def test_purge_uploads_keeps_young_ones(store: Store) -> None:
    repo = store.repository("a")
    old = await repo.uploads.start()
    await store.driver.put_content(paths.upload_started_at("a", old.id), b"2020-01-02T03:04:05Z")
    young = await repo.uploads.start()
    result = await purge_uploads(store.driver, 7 * 24 * 3600)
    assert result.purged == [f"a/{old.id}"]
    assert result.kept == 1
    assert await upload_ids(store.driver, "a") == [young.id]


async def test_purge_uploads_dry_run(store: Store) -> None:
    session = await store.repository("a").uploads.start()
    result = await purge_uploads(store.driver, 60, dry_run=True, now=time.time() + 3600)
    assert result.purged == [f"a/{session.id}"]
    assert (await store.repository("a").uploads.status(session.id)).size == 0


@pytest.mark.parametrize("startedat", [None, b"", b"yesterday", b"\xff\xfe"])
async def test_purge_uploads_falls_back_to_modification_time(
    store: Store, startedat: bytes | None
) -> None:
    """Without a readable ``startedat``, the session's files tell its age."""
    repo = store.repository("a")
    session = await repo.uploads.start()
    await repo.uploads.append(session.id, body(b"data"))
    started_path = paths.upload_started_at("a", session.id)
    if startedat is None:
        await store.driver.delete(started_path)
    else:
        await store.driver.put_content(started_path, startedat)
    result = await purge_uploads(store.driver, 3600)
    assert result.purged == []
    assert result.kept == 1
    result = await purge_uploads(store.driver, 3600, now=time.time() + 7200)
    assert result.purged == [f"a/{session.id}"]
    with pytest.raises(UploadUnknownError):
        await repo.uploads.status(session.id)


async def test_purge_uploads_without_uploads(store: Store) -> None:
    assert (await purge_uploads(store.driver, 0)).purged == []
    await push_image(store.repository("a"), "v1")
    result = await purge_uploads(store.driver, 0, now=time.time() + 10)
    assert result.purged == []
    assert result.kept == 0
    assert (await store.repository("a").manifests.get("v1")).media_type == OCI_MANIFEST


# Concurrency


async def test_concurrent_uploads_of_the_same_blob(store: Store) -> None:
    repo = store.repository("a")
    data = os.urandom(3 * WRITE_BUFFER + 1)
    digest = digest_of(data)
    sessions = [await repo.uploads.start() for _ in range(4)]
    await asyncio.gather(*(repo.uploads.append(s.id, body(data[:1000])) for s in sessions))
    results = await asyncio.gather(
        *(repo.uploads.complete(s.id, digest, body(data[1000:])) for s in sessions)
    )
    assert {info.digest for info in results} == {digest}
    assert {info.size for info in results} == {len(data)}
    assert await read_blob(store, digest) == data
    assert (await repo.blobs.stat(digest)).size == len(data)
    assert await upload_ids(store.driver, "a") == []
    folder = paths.blob_dir(digest)
    assert await store.driver.list(folder) == ["data"]


async def test_concurrent_uploads_of_the_same_blob_in_two_repositories(store: Store) -> None:
    a, b = store.repository("a"), store.repository("b")
    data = os.urandom(WRITE_BUFFER + 3)
    digest = digest_of(data)
    infos = await asyncio.gather(
        a.uploads.single(digest, body(data), len(data)),
        b.uploads.single(digest, body(data), len(data)),
    )
    assert [info.digest for info in infos] == [digest, digest]
    for repo in (a, b):
        assert (await repo.blobs.stat(digest)).size == len(data)
    assert await read_blob(store, digest) == data


async def test_concurrent_uploads_in_two_stores(driver: StorageDriver) -> None:
    stores = [Store(driver), Store(driver)]
    data = os.urandom(2 * WRITE_BUFFER)
    digest = digest_of(data)

    async def push(store: Store) -> None:
        uploads = store.repository("a").uploads
        session = await uploads.start()
        await uploads.append(session.id, body(data[: WRITE_BUFFER // 2]))
        await uploads.complete(session.id, digest, body(data[WRITE_BUFFER // 2 :]))

    await asyncio.gather(*(push(store) for store in stores))
    assert await read_blob(stores[0], digest) == data


async def test_concurrent_tagging_of_the_same_tag(store: Store) -> None:
    repo = store.repository("a")
    manifests = {}
    for i in range(5):
        config = f'{{"n": {i}}}'.encode()
        await push_blob(repo, config)
        manifests[digest_of(image_manifest(config, []))] = image_manifest(config, [])
    results = await asyncio.gather(
        *(repo.manifests.put("latest", data, OCI_MANIFEST) for data in manifests.values())
    )
    assert {digest for digest, _ in results} == set(manifests)
    tagged = await repo.manifests.get("latest")
    assert tagged.digest in manifests
    assert tagged.data == manifests[tagged.digest]
    assert await repo.manifests.tags() == ["latest"]
    for digest, data in manifests.items():
        assert (await repo.manifests.get(str(digest))).data == data
        # Every digest the tag pointed at is in its index, as registry:2 keeps it.
        await store.driver.stat(paths.tag_index_link("a", "latest", digest))
    # Deleting what the tag points at removes the tag.
    await repo.manifests.delete(tagged.digest)
    assert await repo.manifests.tags() == []


async def test_concurrent_pushes_to_many_repositories(store: Store) -> None:
    names = [f"team/app-{i}" for i in range(8)]
    results = await asyncio.gather(
        *(
            push_image(store.repository(name), "v1", layers=[b"common", name.encode()])
            for name in names
        )
    )
    assert await store.repositories() == names
    for name, (digest, manifest) in zip(names, results, strict=True):
        stored = await store.repository(name).manifests.get("v1")
        assert stored.digest == digest
        assert stored.data == manifest


@pytest.mark.parametrize("processes", [1, 2])
async def test_concurrent_completion_of_one_session(driver: StorageDriver, processes: int) -> None:
    """A client retrying its final PUT: one completion wins, the other finds no session.

    With two processes neither has a hasher for the session, so both read the
    data file while the other may be moving it into the store."""
    stores = [Store(driver) for _ in range(processes)]
    store = stores[0]
    data = os.urandom(4 * WRITE_BUFFER + 1)
    digest = digest_of(data)
    session = await Store(driver).repository("a").uploads.start()
    await Store(driver).repository("a").uploads.append(session.id, body(data))
    results = await asyncio.gather(
        stores[0].repository("a").uploads.complete(session.id, digest),
        stores[-1].repository("a").uploads.complete(session.id, digest),
        return_exceptions=True,
    )
    completed = [result for result in results if not isinstance(result, BaseException)]
    failed = [result for result in results if isinstance(result, BaseException)]
    assert completed
    assert all(info.digest == digest for info in completed)
    assert all(isinstance(error, UploadUnknownError) for error in failed), failed
    assert await read_blob(store, digest) == data
    assert await upload_ids(store.driver, "a") == []


async def test_interrupted_chunk_can_be_resumed(store: Store) -> None:
    """A client that disconnects mid-chunk resumes from the offset the session reports."""
    repo = store.repository("a")
    data = os.urandom(3 * WRITE_BUFFER)
    session = await repo.uploads.start()

    async def broken():
        yield data[:WRITE_BUFFER]
        yield data[WRITE_BUFFER : WRITE_BUFFER + WRITE_BUFFER // 2]
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        await repo.uploads.append(session.id, broken())
    offset = (await repo.uploads.status(session.id)).size
    assert 0 <= offset <= WRITE_BUFFER + WRITE_BUFFER // 2
    info = await repo.uploads.complete(
        session.id, digest_of(data), body(data[offset:]), start=offset
    )
    assert info.digest == digest_of(data)
    assert await read_blob(store, info.digest) == data


class HeldReads(StorageDriver):
    """Another process's view of a driver whose reads of one path wait for a signal."""

    name = "held"

    def __init__(self, inner: StorageDriver, held: str) -> None:
        self.inner = inner
        self.held = held
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()

    async def _get_content(self, path: str) -> bytes:
        return await self.inner.get_content(path)

    async def _put_content(self, path: str, content: bytes) -> None:
        await self.inner.put_content(path, content)

    async def _read(self, path: str, offset: int, length: int | None):
        if path == self.held:
            self.waiting.set()
            await self.release.wait()
        async for chunk in self.inner.read(path, offset, length):
            yield chunk

    async def _writer(self, path: str, append: bool):
        return await self.inner.writer(path, append=append)

    async def _stat(self, path: str):
        return await self.inner.stat(path)

    async def _list(self, path: str) -> list[str]:
        return await self.inner.list(path)

    async def _move(self, source: str, destination: str) -> None:
        await self.inner.move(source, destination)

    async def _delete(self, path: str) -> None:
        await self.inner.delete(path)


async def reading(held: HeldReads, task: asyncio.Task[object]) -> None:
    """Wait until the task is held reading; fail, never hang, if it ends first."""
    waiting = asyncio.create_task(held.waiting.wait())
    await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
    if not waiting.done():
        waiting.cancel()
        pytest.fail(f"the completion ended without reading the session: {task.result()!r}")


async def test_completions_of_one_session_run_one_after_the_other(driver: StorageDriver) -> None:
    """Completed by two workers at once: the second waits for the first, then finds it done."""
    data = b"raced " * 1000
    digest = digest_of(data)
    session = await Store(driver).repository("a").uploads.start()
    await Store(driver).repository("a").uploads.append(session.id, body(data))
    held = HeldReads(driver, paths.upload_data("a", session.id))
    first = asyncio.create_task(Store(held).repository("a").uploads.complete(session.id, digest))
    await reading(held, first)
    second = asyncio.create_task(Store(driver).repository("a").uploads.complete(session.id, digest))
    await asyncio.sleep(0.2)
    assert not second.done()  # Waiting for the first one's writer.
    held.release.set()
    assert (await first).digest == digest
    with pytest.raises(UploadUnknownError):
        await second
    assert await read_blob(Store(driver), digest) == data
    assert await upload_ids(driver, "a") == []


async def test_completion_racing_a_cancel_elsewhere(driver: StorageDriver) -> None:
    session = await Store(driver).repository("a").uploads.start()
    await Store(driver).repository("a").uploads.append(session.id, body(b"cancelled"))
    held = HeldReads(driver, paths.upload_data("a", session.id))
    late = asyncio.create_task(
        Store(held).repository("a").uploads.complete(session.id, digest_of(b"cancelled"))
    )
    await reading(held, late)
    await Store(driver).repository("a").uploads.cancel(session.id)
    held.release.set()
    with pytest.raises(UploadUnknownError):
        await late
    with pytest.raises(BlobUnknownError):
        await Store(driver).blobs.stat(digest_of(b"cancelled"))


async def test_upload_of_many_small_pieces(store: Store) -> None:
    """A body that arrives in tiny pieces (small HTTP chunks) is stored whole."""
    repo = store.repository("a")
    pieces = [os.urandom(64) for _ in range(3 * WRITE_BUFFER // 64 + 5)]
    data = b"".join(pieces)
    session = await repo.uploads.start()
    await repo.uploads.append(session.id, body(*pieces[:100]))
    info = await repo.uploads.complete(session.id, digest_of(data), body(*pieces[100:]))
    assert info.size == len(data)
    assert await read_blob(store, info.digest) == data


# Upload sessions: one writer at a time, every chunk whole or not at all


async def test_concurrent_chunks_are_serialised_and_all_kept(store: Store) -> None:
    """20 chunks sent at once to one session: each is either refused or kept whole."""
    repo = store.repository("a")
    session = await repo.uploads.start()
    chunks = [bytes([n]) * (64 * 1024 + n) for n in range(20)]

    async def send(chunk: bytes) -> int:
        async def trickle() -> AsyncIterator[bytes]:
            for start in range(0, len(chunk), 4096):
                await asyncio.sleep(0)  # Let the others in, as a network would.
                yield chunk[start : start + 4096]

        done = await repo.uploads.append(session.id, trickle())
        return done.size

    await asyncio.gather(*(send(chunk) for chunk in chunks))
    data = b"".join([c async for c in store.driver.read(paths.upload_data("a", session.id))])
    assert len(data) == sum(len(chunk) for chunk in chunks)
    # Never interleaved: the session is the chunks, one after the other, in some order.
    offset, seen = 0, set()
    while offset < len(data):
        number = data[offset]
        assert data[offset : offset + len(chunks[number])] == chunks[number]
        seen.add(number)
        offset += len(chunks[number])
    assert seen == set(range(20))


async def test_a_chunk_of_the_wrong_size_leaves_the_session_as_it_was(store: Store) -> None:
    repo = store.repository("a")
    session = await repo.uploads.start()
    await repo.uploads.append(session.id, body(b"first"))
    with pytest.raises(SizeMismatchError):
        await repo.uploads.append(session.id, body(b"x" * 100_000), length=10)
    assert (await repo.uploads.status(session.id)).size == 5
    done = await repo.uploads.complete(session.id, digest_of(b"first!"), body(b"!"))
    assert await read_blob(store, done.digest) == b"first!"


async def test_a_chunk_cut_off_midway_leaves_the_session_as_it_was(store: Store) -> None:
    repo = store.repository("a")
    session = await repo.uploads.start()
    await repo.uploads.append(session.id, body(b"whole"))

    async def cut() -> AsyncIterator[bytes]:
        yield b"y" * (3 * WRITE_BUFFER)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await repo.uploads.append(session.id, cut())
    assert (await repo.uploads.status(session.id)).size == 5


async def test_a_last_chunk_with_the_wrong_digest_is_taken_back(store: Store) -> None:
    repo = store.repository("a")
    session = await repo.uploads.start()
    await repo.uploads.append(session.id, body(b"abc"))
    with pytest.raises(DigestMismatchError):
        await repo.uploads.complete(session.id, digest_of(b"abcdef"), body(b"XYZ"))
    assert (await repo.uploads.status(session.id)).size == 3
    done = await repo.uploads.complete(session.id, digest_of(b"abcdef"), body(b"def"))
    assert await read_blob(store, done.digest) == b"abcdef"


async def test_a_session_busy_for_too_long_is_refused(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uploads_module, "LOCK_WAIT", 0.2)
    repo = store.repository("a")
    session = await repo.uploads.start()
    holder = await store.driver.writer(paths.upload_data("a", session.id), append=True)
    try:
        with pytest.raises(UploadBusyError):
            await repo.uploads.append(session.id, body(b"late"))
    finally:
        await holder.close()
    assert (await repo.uploads.append(session.id, body(b"now"))).size == 3
