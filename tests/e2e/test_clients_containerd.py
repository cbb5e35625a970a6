"""containerd's ``ctr`` against the registry: push, pull, mount, and a resumed download.

The containerd is the one the private Docker engine runs (its socket is under
the engine's exec root); the tests work in namespaces of their own, so the
engine's images are never touched. containerd keeps one content store for all
namespaces and lets a namespace take content another already has without
downloading it, so what a test pulls is fresh content that only the registry
holds (pushed over HTTP by the test), and the access log shows it was fetched.
Every image is made by the test, so every digest is known in advance.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from . import images
from .clients import access_lines, check_image_blobs, manifest, push_content, query, run
from .conftest import DockerEngine
from .needs import require

pytestmark = pytest.mark.e2e


class Ctr:
    def __init__(self, engine: DockerEngine, namespace: str) -> None:
        self.binary = require("ctr", "containerd")
        self.socket = engine.root / "exec" / "containerd" / "containerd.sock"
        assert self.socket.exists(), f"no containerd socket at {self.socket}"
        self.namespace = namespace

    @property
    def command(self) -> list[str]:
        return [self.binary, "--address", str(self.socket), "--namespace", self.namespace]

    def __call__(self, *args: str, check: bool = True) -> str:
        return run([*self.command, *args], check=check).stdout

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


@pytest.fixture
def namespaces(docker_engine: DockerEngine):  # type: ignore[no-untyped-def]
    """Makes ``Ctr`` clients in namespaces of their own; empties and removes them afterwards."""
    made: list[Ctr] = []
    suffix = uuid.uuid4().hex[:8]

    def make(role: str) -> Ctr:
        made.append(Ctr(docker_engine, f"e2e-{role}-{suffix}"))
        return made[-1]

    yield make
    for ctr in made:
        ctr.remove_all()


def fetched(log: str, name: str) -> dict[str, list[tuple[int, int]]]:
    """Blob digest -> (status, bytes sent) of every GET of a blob of ``name``."""
    found: dict[str, list[tuple[int, int]]] = {}
    pattern = rf'"GET /v2/{re.escape(name)}/blobs/(sha256:[0-9a-f]{{64}}) HTTP/1.1" (\d+) (\d+) '
    for digest, status, sent in re.findall(pattern, log):
        found.setdefault(digest, []).append((int(status), int(sent)))
    return found


def test_ctr_pushes_an_imported_index_and_image(
    registry_factory, namespaces, tmp_path: Path
) -> None:
    registry = registry_factory(workers=2)
    host = f"127.0.0.1:{registry.port}"
    marker = uuid.uuid4().hex.encode()
    amd64 = images.image([{"etc/ctr/amd64.txt": marker}], architecture="amd64")
    arm64 = images.image([{"etc/ctr/arm64.txt": marker}], architecture="arm64")
    both = images.index([amd64, arm64])
    single = images.image(
        [{"etc/ctr/base.txt": marker}, {"etc/ctr/single.txt": b"single\n"}],
        docker=True,
        rendering="docker",
    )
    layout = images.Layout(tmp_path / "layout", {"multi": both, "single": single}).write()
    archive = layout.archive(tmp_path / "ctr.tar")

    pusher = namespaces("push")
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


def test_ctr_pulls_and_pushes_elsewhere_by_mounting(registry_factory, namespaces) -> None:
    registry = registry_factory(workers=2)
    host = f"127.0.0.1:{registry.port}"
    amd64 = images.image([{"data/amd64.bin": os.urandom(256 * 1024)}], architecture="amd64")
    arm64 = images.image([{"data/arm64.bin": os.urandom(256 * 1024)}], architecture="arm64")
    both = images.index([amd64, arm64])
    single = images.image(
        [{"data/base.bin": os.urandom(64 * 1024)}, {"etc/single.txt": b"single\n"}],
        docker=True,
        rendering="docker",
    )
    push_content(registry.url, "ctr/app", "multi", both)
    push_content(registry.url, "ctr/app", "single", single)

    puller = namespaces("pull")
    puller("images", "pull", "--plain-http", "--all-platforms", f"{host}/ctr/app:multi")
    puller("images", "pull", "--plain-http", f"{host}/ctr/app:single")
    assert puller.image_digests() == {
        f"{host}/ctr/app:multi": both.digest,
        f"{host}/ctr/app:single": single.digest,
    }
    assert set(both.blobs()) | set(single.blobs()) <= puller.content()
    # Every config and layer came from the registry, whole (containerd checks the digest).
    downloads = fetched(registry.log(), "ctr/app")
    for image in (amd64, arm64, single):
        for digest, data in image.blobs().items():
            if digest != image.digest:
                assert (200, len(data)) in downloads.get(digest, []), (digest, downloads)
    by_digest = f"{host}/ctr/app@{single.digest}"
    puller("images", "pull", "--plain-http", by_digest)
    assert puller.image_digests()[by_digest] == single.digest

    # Pushed from there to another repository: containerd mounts what it pulled.
    puller("images", "tag", f"{host}/ctr/app:single", f"{host}/ctr/copy:single")
    puller("images", "push", "--plain-http", f"{host}/ctr/copy:single")
    assert manifest(registry.url, "ctr/copy", "single").content == single.manifest
    mounts = access_lines(registry.log(), "POST", r"^/v2/ctr/copy/blobs/uploads/\?")
    mounted = {query(path)["mount"] for path, status in mounts if status == 201}
    assert {layer.digest for layer in single.layers} <= mounted, mounts
    assert all(query(path)["from"] == "ctr/app" for path, _ in mounts)
    assert access_lines(registry.log(), "PATCH", r"^/v2/ctr/copy/") == []


def test_ctr_resumes_an_interrupted_download_with_range(registry_factory, namespaces) -> None:
    """containerd keeps a partial download and asks for the rest with ``Range: bytes=N-``.

    The partial download is made with ``ctr content ingest`` under the key a
    pull uses (``layer-<digest>``) and cut short; the pull then resumes it, and
    containerd commits the layer only if the whole blob hashes to its digest.
    """
    registry = registry_factory(workers=2)
    host = f"127.0.0.1:{registry.port}"
    content = images.image([{"data/random.bin": os.urandom(3 * 1024 * 1024)}])
    push_content(registry.url, "ctr/resume", "1", content)
    (layer,) = content.layers
    half = len(layer.blob) // 2

    resumer = namespaces("resume")
    ingest = [
        *resumer.command,
        "content",
        "ingest",
        "--expected-size",
        str(len(layer.blob)),
        "--expected-digest",
        layer.digest,
        f"layer-{layer.digest}",
    ]
    cut = subprocess.run(ingest, input=layer.blob[:half], capture_output=True, timeout=120)
    assert b"unexpected EOF" in cut.stderr, cut.stderr
    assert f"layer-{layer.digest}" in resumer("content", "active")

    resumer("images", "pull", "--plain-http", f"{host}/ctr/resume:1")
    assert resumer.image_digests() == {f"{host}/ctr/resume:1": content.digest}
    assert layer.digest in resumer.content()
    assert fetched(registry.log(), "ctr/resume")[layer.digest] == [(206, len(layer.blob) - half)]
