"""containerd's ``ctr`` against the registry: push an imported index, pull it elsewhere, mount.

The containerd is the one the private Docker engine runs (its socket is under
the engine's exec root); the test works in namespaces of its own, so the
engine's images are never touched. The content is an OCI archive the test
writes, so every digest is known in advance.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from . import images
from .clients import access_lines, check_image_blobs, manifest, query, run
from .conftest import DockerEngine
from .needs import require

pytestmark = pytest.mark.e2e


class Ctr:
    def __init__(self, engine: DockerEngine, namespace: str) -> None:
        self.binary = require("ctr", "containerd")
        self.socket = engine.root / "exec" / "containerd" / "containerd.sock"
        assert self.socket.exists(), f"no containerd socket at {self.socket}"
        self.namespace = namespace

    def __call__(self, *args: str, check: bool = True) -> str:
        command = [self.binary, "--address", str(self.socket), "--namespace", self.namespace]
        return run([*command, *args], check=check).stdout

    def image_digests(self) -> dict[str, str]:
        """Image name -> the digest of its target (manifest or index)."""
        found = {}
        for line in self("images", "ls").splitlines()[1:]:
            fields = line.split()
            digest = next(f for f in fields if re.fullmatch(r"sha256:[0-9a-f]{64}", f))
            found[fields[0]] = digest
        return found

    def content(self) -> set[str]:
        return {line.split()[0] for line in self("content", "ls", "--quiet").splitlines()}

    def remove_all(self) -> None:
        images_here = self("images", "ls", "--quiet", check=False).split()
        if images_here:
            self("images", "rm", "--sync", *images_here, check=False)
        blobs = self("content", "ls", "--quiet", check=False).split()
        if blobs:
            self("content", "rm", *blobs, check=False)
        self("namespaces", "remove", self.namespace, check=False)


def test_ctr_push_pull_index_and_mount(
    registry_factory, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    registry = registry_factory(workers=2)
    host = f"127.0.0.1:{registry.port}"
    amd64 = images.image([{"etc/ctr/amd64.txt": b"containerd amd64\n"}], architecture="amd64")
    arm64 = images.image([{"etc/ctr/arm64.txt": b"containerd arm64\n"}], architecture="arm64")
    both = images.index([amd64, arm64])
    single = images.image(
        [{"etc/ctr/base.txt": b"base\n"}, {"etc/ctr/single.txt": b"single\n"}],
        docker=True,
        rendering="docker",
    )
    layout = images.Layout(tmp_path / "layout", {"multi": both, "single": single}).write()
    archive = layout.archive(tmp_path / "ctr.tar")

    suffix = uuid.uuid4().hex[:8]
    pusher = Ctr(docker_engine, f"e2e-push-{suffix}")
    puller = Ctr(docker_engine, f"e2e-pull-{suffix}")
    try:
        pusher(
            "images",
            "import",
            "--all-platforms",
            "--no-unpack",
            "--base-name",
            f"{host}/ctr/app",
            str(archive),
        )
        assert pusher.image_digests() == {
            f"{host}/ctr/app:multi": both.digest,
            f"{host}/ctr/app:single": single.digest,
        }
        for tag in ("multi", "single"):
            pusher("images", "push", "--plain-http", f"{host}/ctr/app:{tag}")
        assert manifest(registry.url, "ctr/app", "multi").content == both.manifest
        assert manifest(registry.url, "ctr/app", "single").content == single.manifest
        for child in (amd64, arm64):
            assert manifest(registry.url, "ctr/app", child.digest).content == child.manifest
            check_image_blobs(registry.url, "ctr/app", child.digest)
        check_image_blobs(registry.url, "ctr/app", "single")

        # Pulled into a namespace that has none of it.
        puller("images", "pull", "--plain-http", "--all-platforms", f"{host}/ctr/app:multi")
        puller("images", "pull", "--plain-http", f"{host}/ctr/app:single")
        assert puller.image_digests() == {
            f"{host}/ctr/app:multi": both.digest,
            f"{host}/ctr/app:single": single.digest,
        }
        assert set(both.blobs()) | set(single.blobs()) <= puller.content()
        by_digest = f"{host}/ctr/app@{single.digest}"
        puller("images", "pull", "--plain-http", by_digest)

        # Pushed from the puller to another repository: containerd mounts what it pulled.
        puller("images", "tag", f"{host}/ctr/app:single", f"{host}/ctr/copy:single")
        puller("images", "push", "--plain-http", f"{host}/ctr/copy:single")
        assert manifest(registry.url, "ctr/copy", "single").content == single.manifest
        mounts = access_lines(registry.log(), "POST", r"^/v2/ctr/copy/blobs/uploads/\?")
        mounted = {query(path)["mount"] for path, status in mounts if status == 201}
        assert {layer.digest for layer in single.layers} <= mounted, mounts
        assert all(query(path)["from"] == "ctr/app" for path, _ in mounts)
    finally:
        pusher.remove_all()
        puller.remove_all()
