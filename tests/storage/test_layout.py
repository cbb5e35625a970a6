"""registry:2's on-disk layout, both ways: what the store writes is what registry:2
reads, and a tree registry:2 wrote is served by the store."""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from registry.manifests import DOCKER_MANIFEST, OCI_MANIFEST
from registry.reference import Digest
from registry.storage import Store
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.errors import ManifestUnknownError
from registry.storage.purge import purge_uploads

from .content import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    body,
    digest_of,
    image_manifest,
    push_blob,
    push_image,
)

V2 = Path("docker/registry/v2")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def store(root: Path) -> Store:
    return Store(FilesystemDriver(str(root)))


def files(root: Path) -> dict[str, bytes]:
    """Every file below the root, by path relative to it."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def blob_path(digest: Digest) -> str:
    return f"{V2}/blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}/data"


def repo_path(name: str, rest: str) -> str:
    return f"{V2}/repositories/{name}/{rest}"


def link(digest: Digest) -> bytes:
    return f"{digest.algorithm}:{digest.hex}".encode()


# What the store writes


async def test_blob_layout(store: Store, root: Path) -> None:
    data = b"a layer"
    digest = await push_blob(store.repository("library/hello"), data)
    hex_ = hashlib.sha256(data).hexdigest()
    assert files(root) == {
        f"docker/registry/v2/blobs/sha256/{hex_[:2]}/{hex_}/data": data,
        f"docker/registry/v2/repositories/library/hello/_layers/sha256/{hex_}/link": (
            b"sha256:" + hex_.encode()
        ),
    }
    assert str(digest) == f"sha256:{hex_}"


async def test_link_files_have_no_newline(store: Store, root: Path) -> None:
    await push_image(store.repository("a"), "v1")
    links = {path: data for path, data in files(root).items() if path.endswith("/link")}
    assert len(links) == 5  # config, layer, revision, tag current, tag index
    for path, data in links.items():
        assert re.fullmatch(rb"sha256:[0-9a-f]{64}", data), path


async def test_image_layout(store: Store, root: Path) -> None:
    repo = store.repository("library/hello")
    config, layer = b'{"os": "linux"}', b"layer bytes"
    digest, manifest = await push_image(
        repo, "latest", config=config, layers=[layer], media_type=DOCKER_MANIFEST
    )
    config_digest, layer_digest = digest_of(config), digest_of(layer)
    name = "library/hello"
    assert files(root) == {
        blob_path(config_digest): config,
        blob_path(layer_digest): layer,
        blob_path(digest): manifest,
        repo_path(name, f"_layers/sha256/{config_digest.hex}/link"): link(config_digest),
        repo_path(name, f"_layers/sha256/{layer_digest.hex}/link"): link(layer_digest),
        repo_path(name, f"_manifests/revisions/sha256/{digest.hex}/link"): link(digest),
        repo_path(name, "_manifests/tags/latest/current/link"): link(digest),
        repo_path(name, f"_manifests/tags/latest/index/sha256/{digest.hex}/link"): link(digest),
        # The catalog's index, beside repositories/ where registry:2 never looks.
        f"{V2}/_catalog/repositories": b"library/hello\n",
    }


async def test_retag_layout(store: Store, root: Path) -> None:
    repo = store.repository("a")
    first, _ = await push_image(repo, "latest", layers=[b"one"])
    second, _ = await push_image(repo, "latest", layers=[b"two"])
    tree = files(root)
    assert tree[repo_path("a", "_manifests/tags/latest/current/link")] == link(second)
    # registry:2 keeps every digest a tag has pointed at in its index.
    for digest in (first, second):
        assert tree[repo_path("a", f"_manifests/tags/latest/index/sha256/{digest.hex}/link")] == (
            link(digest)
        )


async def test_pushing_a_manifest_again_renews_its_files_without_replacing_them(
    store: Store, root: Path
) -> None:
    """Same bytes: no rename (ext4 writes a replaced file back at once), but new times,
    which the garbage collector reads as a push; other bytes: replaced as before."""
    repo = store.repository("again")
    digest, manifest = await push_image(repo, "latest", layers=[b"one"])
    written = [
        root / blob_path(digest),
        root / repo_path("again", f"_manifests/revisions/sha256/{digest.hex}/link"),
        root / repo_path("again", "_manifests/tags/latest/current/link"),
        root / repo_path("again", f"_manifests/tags/latest/index/sha256/{digest.hex}/link"),
    ]
    for path in written:
        os.utime(path, (1_000_000, 1_000_000))
    inodes = [path.stat().st_ino for path in written]
    await repo.manifests.put("latest", manifest, OCI_MANIFEST)
    assert [path.stat().st_ino for path in written] == inodes
    assert all(path.stat().st_mtime > 1_000_000 for path in written)
    second, _ = await push_image(repo, "latest", layers=[b"two"])
    current = written[2]
    assert current.read_bytes() == link(second)
    assert current.stat().st_ino != inodes[2]


async def test_upload_layout(store: Store, root: Path) -> None:
    repo = store.repository("library/hello")
    before = datetime.now(UTC).replace(microsecond=0)
    session = await repo.uploads.start()
    await repo.uploads.append(session.id, body(b"first part"))
    upload = repo_path("library/hello", f"_uploads/{session.id}")
    tree = files(root)
    assert set(tree) == {f"{upload}/data", f"{upload}/startedat"}
    assert tree[f"{upload}/data"] == b"first part"
    # RFC 3339 in UTC, as registry:2 writes and parses it.
    started = tree[f"{upload}/startedat"].decode()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", started), started
    assert datetime.fromisoformat(started.replace("Z", "+00:00")) >= before
    assert str(uuid.UUID(session.id)) == session.id

    info = await repo.uploads.complete(
        session.id, digest_of(b"first part, last part"), body(b", last part")
    )
    assert files(root) == {
        blob_path(info.digest): b"first part, last part",
        repo_path("library/hello", f"_layers/sha256/{info.digest.hex}/link"): link(info.digest),
    }
    assert not (root / upload).exists()


async def test_sha512_layout(store: Store, root: Path) -> None:
    data = b"hashed with sha512"
    digest = digest_of(data, "sha512")
    await store.repository("a").uploads.single(digest, body(data), len(data))
    assert files(root) == {
        f"docker/registry/v2/blobs/sha512/{digest.hex[:2]}/{digest.hex}/data": data,
        repo_path("a", f"_layers/sha512/{digest.hex}/link"): f"sha512:{digest.hex}".encode(),
    }


async def test_mount_layout(store: Store, root: Path) -> None:
    a, b = store.repository("a"), store.repository("b/c")
    digest = await push_blob(a, b"shared")
    await b.blobs.mount(digest, a.blobs)
    assert files(root) == {
        blob_path(digest): b"shared",
        repo_path("a", f"_layers/sha256/{digest.hex}/link"): link(digest),
        repo_path("b/c", f"_layers/sha256/{digest.hex}/link"): link(digest),
    }


async def test_delete_layout(store: Store, root: Path) -> None:
    repo = store.repository("a")
    digest, manifest = await push_image(repo, "v1", layers=[b"layer"])
    await repo.manifests.tag("v2", digest)
    await repo.manifests.delete_tag("v2")
    assert not (root / repo_path("a", "_manifests/tags/v2")).exists()
    assert (root / repo_path("a", "_manifests/tags/v1/current/link")).exists()
    await repo.manifests.delete(digest)
    tree = files(root)
    # Links go; content stays until garbage collection, as with registry:2.
    assert not any("/_manifests/" in path for path in tree)
    assert tree[blob_path(digest)] == manifest
    assert tree[blob_path(digest_of(b"layer"))] == b"layer"


async def test_referrer_layout(store: Store, root: Path) -> None:
    repo = store.repository("a")
    subject, subject_manifest = await push_image(repo, "v1")
    referrer, _ = await push_image(
        repo, None, layers=[b"sig"], subject=subject_manifest, artifact_type="application/x"
    )
    path = repo_path("a", f"_referrers/sha256/{subject.hex}/sha256/{referrer.hex}/link")
    assert files(root)[path] == link(referrer)


async def test_no_temporary_files_left(store: Store, root: Path) -> None:
    repo = store.repository("a")
    for i in range(5):
        await push_image(repo, "latest", layers=[f"layer {i}".encode()])
    assert not [path for path in files(root) if "tmp" in path]


# What registry:2 wrote, served by the store


def write(root: Path, relative: str, data: bytes) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def registry2_tree(root: Path) -> dict[str, object]:
    """A repository as registry:2 2.8 leaves it after `docker push` and an unfinished push."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {}}).encode()
    layer = b"\x1f\x8b" + bytes(range(256)) * 40
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": DOCKER_CONFIG,
                "size": len(config),
                "digest": str(digest_of(config)),
            },
            "layers": [
                {"mediaType": DOCKER_LAYER, "size": len(layer), "digest": str(digest_of(layer))}
            ],
        },
        indent=3,
    ).encode()
    name = "library/hello-world"
    digests = {
        key: digest_of(value)
        for key, value in (("config", config), ("layer", layer), ("manifest", manifest))
    }
    for data in (config, layer, manifest):
        write(root, blob_path(digest_of(data)), data)
    for key in ("config", "layer"):
        write(root, repo_path(name, f"_layers/sha256/{digests[key].hex}/link"), link(digests[key]))
    m = digests["manifest"]
    write(root, repo_path(name, f"_manifests/revisions/sha256/{m.hex}/link"), link(m))
    write(root, repo_path(name, "_manifests/tags/latest/current/link"), link(m))
    write(root, repo_path(name, f"_manifests/tags/latest/index/sha256/{m.hex}/link"), link(m))
    upload_id = str(uuid.uuid4())
    write(root, repo_path(name, f"_uploads/{upload_id}/data"), b"half a layer")
    write(root, repo_path(name, f"_uploads/{upload_id}/startedat"), b"2024-01-02T15:04:05Z")
    # registry:2's resumable hash state: ours ignores it and re-hashes the data.
    write(root, repo_path(name, f"_uploads/{upload_id}/hashstates/sha256/12"), b"\x00" * 100)
    return {
        "name": name,
        "config": config,
        "layer": layer,
        "manifest": manifest,
        "digests": digests,
        "upload_id": upload_id,
    }


async def test_registry2_tree_is_served(store: Store, registry2_tree: dict[str, object]) -> None:
    tree = registry2_tree
    name = str(tree["name"])
    digests: dict[str, Digest] = tree["digests"]  # type: ignore[assignment]
    assert await store.repositories() == [name]
    repo = store.repository(name)
    assert await repo.manifests.tags() == ["latest"]
    for reference in ("latest", str(digests["manifest"])):
        stored = await repo.manifests.get(reference)
        assert stored.data == tree["manifest"]
        assert stored.digest == digests["manifest"]
        assert stored.media_type == DOCKER_MANIFEST
    for key in ("config", "layer"):
        info = await repo.blobs.stat(digests[key])
        assert info.size == len(tree[key])  # type: ignore[arg-type]
        data = b"".join([chunk async for chunk in store.blobs.read(digests[key])])
        assert data == tree[key]
    # Other repositories do not see its blobs.
    assert not await store.repository("other").blobs.is_linked(digests["layer"])


async def test_registry2_upload_is_continued(
    store: Store, root: Path, registry2_tree: dict[str, object]
) -> None:
    name, upload_id = str(registry2_tree["name"]), str(registry2_tree["upload_id"])
    uploads = store.repository(name).uploads
    assert (await uploads.status(upload_id)).size == len(b"half a layer")
    data = b"half a layer, and the rest"
    info = await uploads.complete(upload_id, digest_of(data), body(b", and the rest"), start=12)
    assert info.digest == digest_of(data)
    assert (root / blob_path(info.digest)).read_bytes() == data
    assert not (root / repo_path(name, f"_uploads/{upload_id}")).exists()


async def test_registry2_tree_accepts_new_pushes(
    store: Store, root: Path, registry2_tree: dict[str, object]
) -> None:
    name = str(registry2_tree["name"])
    repo = store.repository(name)
    config, layer = registry2_tree["config"], registry2_tree["layer"]
    manifest = image_manifest(config, [layer], media_type=OCI_MANIFEST)  # type: ignore[arg-type]
    digest, _ = await repo.manifests.put("oci", manifest, OCI_MANIFEST)
    assert await repo.manifests.tags() == ["latest", "oci"]
    await repo.manifests.delete_tag("latest")
    assert await repo.manifests.tags() == ["oci"]
    assert (root / repo_path(name, "_manifests/tags/oci/current/link")).read_bytes() == link(digest)


async def test_registry2_upload_purged_by_its_startedat(
    store: Store, registry2_tree: dict[str, object]
) -> None:
    name, upload_id = str(registry2_tree["name"]), str(registry2_tree["upload_id"])
    now = datetime(2024, 1, 3, 15, 4, 5, tzinfo=UTC).timestamp()
    kept = await purge_uploads(store.driver, 2 * 24 * 3600, now=now)
    assert kept.purged == []
    purged = await purge_uploads(store.driver, 23 * 3600, now=now)
    assert purged.purged == [f"{name}/{upload_id}"]


async def test_link_with_a_trailing_newline_is_read(store: Store, root: Path) -> None:
    digest, _ = await push_image(store.repository("a"), "v1")
    current = root / repo_path("a", "_manifests/tags/v1/current/link")
    current.write_bytes(link(digest) + b"\n")
    assert (await store.repository("a").manifests.get("v1")).digest == digest


async def test_tag_without_revision_is_unknown(
    store: Store, root: Path, registry2_tree: dict[str, object]
) -> None:
    """registry:2 serves a tag only when the repository holds the manifest's revision:
    a manifest stored for another repository is not served through a stray tag."""
    name = str(registry2_tree["name"])
    digests: dict[str, Digest] = registry2_tree["digests"]  # type: ignore[assignment]
    manifest = digests["manifest"]
    write(root, repo_path("other", "_manifests/tags/stray/current/link"), link(manifest))
    write(root, repo_path("other", f"_layers/sha256/{digests['layer'].hex}/link"), b"x")
    with pytest.raises(ManifestUnknownError):
        await store.repository("other").manifests.get("stray")
    with pytest.raises(ManifestUnknownError):
        await store.repository("other").manifests.get(str(manifest))
    # In its own repository, a revision removed by hand takes its tags' manifest with it.
    (root / repo_path(name, f"_manifests/revisions/sha256/{manifest.hex}/link")).unlink()
    with pytest.raises(ManifestUnknownError):
        await store.repository(name).manifests.get("latest")
