"""Both collectors on the same tree: Debian's registry:2 (distribution 2.8.2) pushes it,
then ``docker-registry garbage-collect`` runs on one copy and ``registry garbage-collect``
on another, and what each removed is compared, file by file and folder by folder.

They remove the same, but where this registry differs on purpose (each difference
asserted exactly, so a change on either side shows):

* ours also removes the ``_layers`` links of the blobs it deletes (as distribution 3
  does; 2.8.2 leaves them dangling), and the empty folder registry:2's own manifest
  DELETE leaves behind;
* with ``--delete-untagged``, registry:2 deletes the children of a tagged index and
  untagged referrers of a tagged image, with their blobs (distribution #3004/#3178):
  the index it keeps no longer pulls; ours keeps them;
* a repository holding only manifests pushed by digest (no ``tags`` folder) stops
  registry:2's ``--delete-untagged`` before it deletes anything; ours collects it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from tests.go_registry import GoRegistry
from tests.pushing import (
    ACCEPT_MANIFESTS,
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    image_index,
    image_manifest,
    push_blob,
    push_image,
    push_manifest,
)

pytestmark = pytest.mark.e2e

PROJECT = Path(__file__).resolve().parents[2]
V2 = "docker/registry/v2"


@dataclass
class Pushed:
    """A tree registry:2 wrote, and the digests the comparisons name."""

    root: Path
    go: GoRegistry
    children: list[str] = field(default_factory=list)
    """Manifests of the tagged index, pushed by digest."""
    child_blobs: list[str] = field(default_factory=list)
    referrer: str = ""
    referrer_blobs: list[str] = field(default_factory=list)
    digest_only: str = ""
    digest_only_blobs: list[str] = field(default_factory=list)


def _image(client: httpx.Client, repo: str, name: str, **options: object) -> tuple[str, bytes]:
    config = json.dumps({"image": name, "repo": repo}).encode()
    layer = f"layer of {repo} {name}".encode()
    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    manifest = image_manifest(config, [layer], **options)  # type: ignore[arg-type]
    return digest_of(manifest), manifest


def _populate(client: httpx.Client, pushed: Pushed, *, digest_only_repository: bool) -> None:
    base = b"a base layer both repositories share"
    _, v1 = push_image(client, "app", "v1", layers=[base, b"app v1"])
    push_image(client, "app", "latest", layers=[base, b"the first latest"])
    push_image(client, "app", "latest", layers=[base, b"the second latest"])  # Untags the first.
    by_digest, manifest = _image(client, "app", "by digest")
    assert push_manifest(client, "app", by_digest, manifest).status_code == 201
    gone, _ = push_image(client, "app", "gone", layers=[b"only in a deleted manifest"])
    assert client.delete(f"/v2/app/manifests/{gone}").status_code == 202
    push_blob(client, "app", b"an orphan blob")
    # A tagged index whose children were pushed by digest, as buildx pushes them.
    children = []
    for arch in ("amd64", "arm64"):
        digest, manifest = _image(client, "app", f"child {arch}")
        assert push_manifest(client, "app", digest, manifest).status_code == 201
        children.append((OCI_MANIFEST, manifest))
        pushed.children.append(digest)
        document = json.loads(manifest)
        pushed.child_blobs += [document["config"]["digest"], document["layers"][0]["digest"]]
    assert push_manifest(client, "app", "multi", image_index(children)).status_code == 201
    # A signature of v1, pushed by digest as cosign and oras push them.
    signature = b"a signature of v1"
    signature_config = b'{"signature": true}'
    push_blob(client, "app", signature_config)
    push_blob(client, "app", signature)
    referrer = image_manifest(
        signature_config,
        [signature],
        artifact_type="application/vnd.example.signature",
        subject=descriptor(OCI_MANIFEST, v1),
    )
    pushed.referrer = digest_of(referrer)
    pushed.referrer_blobs = [digest_of(signature_config), digest_of(signature)]
    assert push_manifest(client, "app", pushed.referrer, referrer).status_code == 201
    # Another repository, the base layer mounted; and one with a blob and no manifest.
    mounted = client.post(f"/v2/other/blobs/uploads/?mount={digest_of(base)}&from=app")
    assert mounted.status_code == 201, mounted.text
    push_image(client, "other", "stable", layers=[base])
    push_blob(client, "blobs-only", b"pushed to a repository that never got a manifest")
    if digest_only_repository:
        digest, manifest = _image(client, "digest-only", "pushed by digest")
        assert push_manifest(client, "digest-only", digest, manifest).status_code == 201
        document = json.loads(manifest)
        pushed.digest_only = digest
        pushed.digest_only_blobs = [
            digest,
            document["config"]["digest"],
            document["layers"][0]["digest"],
        ]


def _push(tmp: Path, *, digest_only_repository: bool) -> Iterator[Pushed]:
    go = GoRegistry(tmp / "pushed", tmp)
    pushed = Pushed(go.root, go)
    go.start()
    try:
        with httpx.Client(base_url=go.url, headers=ACCEPT_MANIFESTS, timeout=30) as client:
            _populate(client, pushed, digest_only_repository=digest_only_repository)
    finally:
        go.stop()
    yield pushed


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:
    yield from _push(tmp_path_factory.mktemp("gc-tree"), digest_only_repository=False)


@pytest.fixture(scope="module")
def pushed_with_digest_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:
    yield from _push(tmp_path_factory.mktemp("gc-tree-digest-only"), digest_only_repository=True)


def _tree(root: Path) -> set[str]:
    """Every file and folder below the storage root (folders end with ``/``)."""
    return {
        str(path.relative_to(root)) + ("/" if path.is_dir() else "")
        for path in (root / V2).rglob("*")
    }


@dataclass
class Collected:
    removed: set[str]
    result: subprocess.CompletedProcess[str]


def _copy(pushed: Pushed, name: str) -> tuple[Path, Path]:
    """A copy of the tree, every file and folder two days old, and a config for it."""
    root = pushed.root.parent / name
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(pushed.root, root, symlinks=True)
    old = time.time() - 2 * 24 * 3600
    for path in root.rglob("*"):
        os.utime(path, (old, old))
    config = pushed.root.parent / f"{name}.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(root)}},
            }
        )
    )
    return root, config


def _collect(pushed: Pushed, who: str, *flags: str) -> Collected:
    root, config = _copy(pushed, f"{who}{''.join(flags)}")
    before = _tree(root)
    if who == "go":
        command = [pushed.go.binary, "garbage-collect", *flags, str(config)]
    else:  # With its default grace delay (1h): hiding, the second look, then deleting.
        command = [sys.executable, "-m", "registry", "garbage-collect", *flags, str(config)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=PROJECT, env=env, timeout=300
    )
    return Collected(before - _tree(root), result)


def _blob(digest: str) -> set[str]:
    hex_part = digest.split(":")[1]
    folder = f"{V2}/blobs/sha256/{hex_part[:2]}/{hex_part}"
    return {f"{folder}/", f"{folder}/data"}


def _revision(repo: str, digest: str) -> set[str]:
    folder = f"{V2}/repositories/{repo}/_manifests/revisions/sha256/{digest.split(':')[1]}"
    return {f"{folder}/", f"{folder}/link"}


def _links_of_removed_blobs(pushed: Pushed, removed: set[str]) -> set[str]:
    """The ``_layers`` links (and their folders) of every blob in ``removed``."""
    hexes = {path.split("/")[-2] for path in removed if path.endswith("/data")}
    links = set()
    for path in _tree(pushed.root):
        parts = path.rstrip("/").split("/")
        if "_layers" in parts and parts[-1 if path.endswith("/") else -2] in hexes:
            links.add(path)
    return links


def _empty_folders(pushed: Pushed) -> set[str]:
    """Folders of a blob, link or revision left empty (registry:2's manifest DELETE leaves
    one): ours removes them, as registry:2 removes a deleted blob's folder."""
    tree = _tree(pushed.root)
    return {
        path
        for path in tree
        if path.endswith("/")
        and len(path.rstrip("/").split("/")[-1]) == 64
        and not any(other.startswith(path) and other != path for other in tree)
    }


def _only_ours(pushed: Pushed, removed: set[str]) -> set[str]:
    return _links_of_removed_blobs(pushed, removed) | _empty_folders(pushed)


def test_both_collectors_remove_the_same_blobs(pushed: Pushed) -> None:
    go = _collect(pushed, "go")
    ours = _collect(pushed, "ours")
    assert go.result.returncode == 0, go.result.stdout + go.result.stderr
    assert ours.result.returncode == 0, ours.result.stdout + ours.result.stderr
    assert go.removed, "nothing to collect: the test would prove nothing"
    assert ours.removed - go.removed == _only_ours(pushed, go.removed)
    assert go.removed - ours.removed == set()
    # The numbers agree too: registry:2's count line is ours' first summary line.
    deleted = len([path for path in go.removed if path.endswith("/data")])
    assert f"{deleted} blobs and 0 manifests eligible for deletion" in go.result.stdout
    assert f"{deleted} blobs and 0 manifests eligible for deletion" in ours.result.stdout
    links = len(_links_of_removed_blobs(pushed, go.removed)) // 2
    assert links >= 3 and f"also deleted: {links} _layers links" in ours.result.stdout


def test_delete_untagged_removes_the_same_but_what_registry2_breaks(pushed: Pushed) -> None:
    go = _collect(pushed, "go", "--delete-untagged")
    ours = _collect(pushed, "ours", "--delete-untagged")
    assert go.result.returncode == 0, go.result.stdout + go.result.stderr
    assert ours.result.returncode == 0, ours.result.stdout + ours.result.stderr
    broken: set[str] = set()  # What registry:2 takes from a tagged index and a tagged image.
    for child in pushed.children:
        broken |= _revision("app", child)
    for blob in pushed.child_blobs + pushed.referrer_blobs + [pushed.referrer]:
        broken |= _blob(blob)
    broken |= _revision("app", pushed.referrer)
    assert go.removed - ours.removed == broken
    assert ours.removed - go.removed == _only_ours(pushed, ours.removed)
    untagged = [p for p in ours.removed if "/revisions/" in p and p.endswith("/link")]
    assert len(untagged) == 2  # The first latest, the image pushed by digest.
    # Served by registry:2 itself: its own result no longer pulls the index; ours does.
    assert _pull_multi(pushed, "go--delete-untagged") == 404
    assert _pull_multi(pushed, "ours--delete-untagged") == 200


def _pull_multi(pushed: Pushed, copy: str) -> int:
    """registry:2 serving a collected copy: the status of the worst read of ``app:multi``."""
    workdir = pushed.root.parent / f"serve-{copy}"
    workdir.mkdir(exist_ok=True)
    go = GoRegistry(pushed.root.parent / copy, workdir)
    go.start()
    try:
        with httpx.Client(base_url=go.url, timeout=30) as client:
            index = client.get("/v2/app/manifests/multi", headers={"Accept": OCI_INDEX})
            assert index.status_code == 200
            worst = 200
            for entry in index.json()["manifests"]:
                child = client.get(
                    f"/v2/app/manifests/{entry['digest']}", headers={"Accept": OCI_MANIFEST}
                )
                worst = max(worst, child.status_code)
                if child.status_code != 200:
                    continue
                document = child.json()
                for blob in [document["config"], *document["layers"]]:
                    worst = max(worst, client.get(f"/v2/app/blobs/{blob['digest']}").status_code)
            return worst
    finally:
        go.stop()


def test_a_repository_pushed_by_digest_only(pushed_with_digest_only: Pushed) -> None:
    pushed = pushed_with_digest_only
    assert not (pushed.root / V2 / "repositories/digest-only/_manifests/tags").exists()
    # Without --delete-untagged, both as before.
    go, ours = _collect(pushed, "go"), _collect(pushed, "ours")
    assert ours.removed - go.removed == _only_ours(pushed, go.removed)
    assert go.removed - ours.removed == set()
    # With it, registry:2 stops before deleting anything.
    go = _collect(pushed, "go", "--delete-untagged")
    assert go.result.returncode == 1
    assert "unknown repository name=digest-only" in go.result.stdout + go.result.stderr
    assert go.removed == set()
    ours = _collect(pushed, "ours", "--delete-untagged")
    assert ours.result.returncode == 0, ours.result.stdout + ours.result.stderr
    assert _revision("digest-only", pushed.digest_only) <= ours.removed
    for blob in pushed.digest_only_blobs:
        assert _blob(blob) <= ours.removed
    assert f"manifest eligible for deletion: digest-only@{pushed.digest_only}" in (
        ours.result.stdout
    )
