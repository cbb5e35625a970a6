"""``registry garbage-collect``: registry:2's command and flags, its summary, progress bar
and exit statuses, run as a real process on a real storage folder."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from registry.reference import Digest
from registry.storage import Store, paths
from registry.storage.driver import PathNotFoundError
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.driver.s3 import S3Driver
from tests.services.ceph import CephS3

from .conftest import TEST_BUCKET
from .content import digest_of, push_blob, push_image

PROJECT = Path(__file__).resolve().parents[2]
DAY = 24 * 3600


@dataclass
class Tree:
    root: Path
    config: Path
    kept: Digest
    untagged: Digest
    orphan: Digest

    def exists(self, path: str) -> bool:
        return (self.root / path.lstrip("/")).exists()

    def files(self) -> set[str]:
        return {str(p.relative_to(self.root)) for p in self.root.rglob("*")}


def make_tree(tmp_path: Path, *, age: float = DAY) -> Tree:
    root = tmp_path / "data"

    async def populate() -> tuple[Digest, Digest]:
        store = Store(FilesystemDriver(str(root)))
        repo = store.repository("team/app")
        kept, _ = await push_image(repo, "v1", layers=[b"kept layer"])
        await push_image(repo, "v2", layers=[b"old v2 layer"])
        await push_image(repo, "v2", layers=[b"new v2 layer"])  # The first v2 is untagged.
        orphan = await push_blob(repo, b"an orphan blob")
        return kept, orphan

    kept, orphan = asyncio.run(populate())
    untagged = _untagged(root)
    if age:
        for path in root.rglob("*"):
            os.utime(path, (time.time() - age,) * 2)
    config = tmp_path / "config.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(root)}},
            }
        )
    )
    return Tree(root, config, kept, untagged, orphan)


def _untagged(root: Path) -> Digest:
    """The v2 manifest the tag moved away from."""
    tags = root / "docker/registry/v2/repositories/team/app/_manifests/tags/v2"
    current = (tags / "current/link").read_text()
    (history,) = [p.name for p in (tags / "index/sha256").iterdir() if p.name not in current]
    return Digest("sha256", history)


def collect(tree: Tree, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "registry", "garbage-collect", *args, str(tree.config)],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        env={k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")},
        timeout=120,
    )


def test_collects_an_aged_tree_and_tells_what_went(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    done = collect(tree)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\r" not in out  # No progress bar when the output is not a terminal.
    assert f"blob eligible for deletion: {tree.orphan}\n" in out
    assert "8 blobs marked, 1 blobs and 0 manifests eligible for deletion" in out
    assert "blobs deleted: 1 (14 bytes freed)" in out
    assert "also deleted: 1 _layers links" in out
    assert not tree.exists(paths.blob_dir(tree.orphan))
    assert not tree.exists(paths.layer_link("team/app", tree.orphan))
    assert tree.exists(paths.blob_data(tree.kept))
    assert tree.exists(paths.revision_link("team/app", tree.untagged))
    assert not tree.exists("/docker/registry/v2/_gc")
    again = collect(tree)
    assert "0 blobs and 0 manifests eligible for deletion" in again.stdout


def test_young_content_is_kept_unless_the_grace_is_zero(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, age=0)
    done = collect(tree)
    assert done.returncode == 0, done.stderr
    assert "blobs kept:        9 (1 only because younger than the grace delay of 1h)" in (
        done.stdout
    )
    assert tree.exists(paths.blob_data(tree.orphan))
    quiet = collect(tree, "--grace", "0", "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "" and quiet.stderr == ""
    assert not tree.exists(paths.blob_dir(tree.orphan))


def test_dry_run_and_delete_untagged(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    before = tree.files()
    dry = collect(tree, "-d", "-m")
    assert dry.returncode == 0, dry.stderr
    assert f"manifest eligible for deletion: team/app@{tree.untagged}" in dry.stdout
    assert "blobs would be deleted: 3" in dry.stdout  # untagged's layer and itself; the orphan
    assert tree.files() == before
    done = collect(tree, "--delete-untagged")
    assert done.returncode == 0, done.stderr
    assert "manifests deleted: 1" in done.stdout
    assert not tree.exists(paths.revision_dir("team/app", tree.untagged))
    assert not tree.exists(paths.blob_dir(digest_of(b"old v2 layer")))
    assert tree.exists(paths.blob_data(digest_of(b"new v2 layer")))


def test_exit_statuses(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    bad = collect(tree, "--grace", "soon")
    assert bad.returncode == 2 and "--grace" in bad.stderr
    memory = Tree(tree.root, tmp_path / "memory.yml", tree.kept, tree.untagged, tree.orphan)
    memory.config.write_text("version: 0.1\nstorage:\n  inmemory: {}\n")
    refused = collect(memory)
    assert refused.returncode == 2 and "storage.inmemory" in refused.stderr
    # A storage error midway (a symbolic link loop where a blob should be): status 1.
    data = tree.root / paths.blob_data(tree.orphan).lstrip("/")
    data.unlink()
    data.symlink_to(data)
    failed = collect(tree)
    assert failed.returncode == 1
    assert "garbage collection stopped" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "registry", "garbage-collect", "--grace", "0", str(tree.config)],
        stdout=follower,
        stderr=subprocess.PIPE,
        cwd=PROJECT,
    )
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the process closed the terminal.
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.wait(timeout=60) == 0
    assert process.stderr is not None
    errors = process.stderr.read()
    process.stderr.close()
    assert errors == b""
    text = output.decode()
    assert "\r" in text and "reading repositories" in text and "] 1/1" in text
    assert "blobs deleted: 1" in text


def test_the_help_documents_the_exit_statuses() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "registry", "garbage-collect", "--help"],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        timeout=60,
    )
    assert shown.returncode == 0
    for word in ("--dry-run", "--delete-untagged", "--quiet", "--grace", "exit status", "130"):
        assert word in shown.stdout


def test_collects_a_bucket(tmp_path: Path, ceph_s3: CephS3) -> None:
    """The command runs on storage.s3 as on a folder (registry:2's does too)."""
    root = f"/gc-command-{uuid.uuid4().hex[:12]}"
    parameters = ceph_s3.driver_parameters(TEST_BUCKET, root)

    async def populate() -> tuple[Digest, Digest]:
        store = Store(S3Driver(**parameters))  # type: ignore[arg-type]
        repo = store.repository("team/app")
        kept, _ = await push_image(repo, "v1", layers=[b"kept layer in a bucket"])
        orphan = await push_blob(repo, b"an orphan blob in a bucket")
        await store.driver.close()
        return kept, orphan

    async def present(digest: Digest) -> bool:
        driver = S3Driver(**parameters)  # type: ignore[arg-type]
        try:
            await driver.stat(paths.blob_data(digest))
        except PathNotFoundError:
            return False
        finally:
            await driver.close()
        return True

    async def clean() -> None:
        driver = S3Driver(**parameters)  # type: ignore[arg-type]
        with contextlib.suppress(PathNotFoundError):
            await driver.delete("/docker")
        await driver.close()

    kept, orphan = asyncio.run(populate())
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"version": 0.1, "storage": {"s3": parameters}}))
    try:
        done = collect(Tree(tmp_path, config, kept, kept, orphan), "--grace", "0")
        assert done.returncode == 0, done.stderr
        assert "blobs deleted: 1" in done.stdout
        assert not asyncio.run(present(orphan))
        assert asyncio.run(present(kept))
    finally:
        asyncio.run(clean())
