"""podman and buildah against the registry, on storage of their own (vfs, in the test's folder).

buildah builds an image ``FROM scratch`` (busybox-static and a file added),
commits and pushes it; podman, on a second, empty storage, pulls it back and
the test checks the digest podman records and the file it holds. Containers
get ``--ulimit`` values within this machine's hard limits: runc may not raise
a limit, and podman's defaults ask for more than a container host often gives.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from . import images
from .clients import ContainersTools, check_image_blobs, containers_tools, manifest
from .conftest import busybox_tar

pytestmark = pytest.mark.e2e

PLAIN = "--tls-verify=false"
LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")


@pytest.fixture
def tools(tmp_path: Path) -> Iterator[ContainersTools]:
    yield from containers_tools(tmp_path)


def test_buildah_from_scratch_pushed_and_pulled_by_podman(
    registry_factory, tools: ContainersTools, tmp_path: Path
) -> None:
    registry = registry_factory(workers=2)
    host = f"127.0.0.1:{registry.port}"
    builder = tools.buildah("builder")
    message = b"written by buildah from scratch\n"
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(busybox_tar({"hello.txt": message}))

    container = builder("from", "scratch").stdout.strip()
    builder("add", container, str(rootfs), "/")  # A local tar is unpacked into the image.
    builder("config", "--cmd", "/bin/cat /hello.txt", "--label", "made-by=buildah", container)
    builder("commit", "--format", "oci", container, "localhost/scratch-built:1")
    digest_file = tmp_path / "pushed.digest"
    builder(
        "push",
        PLAIN,
        "--digestfile",
        str(digest_file),
        "localhost/scratch-built:1",
        f"docker://{host}/built/scratch:1",
    )
    pushed = digest_file.read_text().strip()
    served = manifest(registry.url, "built/scratch", "1")
    assert served.headers["Docker-Content-Digest"] == pushed
    assert served.headers["Content-Type"] == images.OCI_MANIFEST
    document = check_image_blobs(registry.url, "built/scratch", "1")
    assert len(document["layers"]) == 1  # type: ignore[arg-type]

    # podman with a storage of its own: nothing is shared with the builder.
    puller = tools.podman("puller")
    puller("pull", PLAIN, f"{host}/built/scratch:1")
    inspected = json.loads(puller("image", "inspect", f"{host}/built/scratch:1").stdout)[0]
    assert inspected["Digest"] == pushed
    assert f"{host}/built/scratch@{pushed}" in inspected["RepoDigests"]
    assert inspected["Labels"]["made-by"] == "buildah"
    ran = puller("run", "--rm", "--network", "none", *LIMITS, f"{host}/built/scratch:1").stdout
    assert ran.encode() == message

    # The file as stored, without a container: podman save, then the layer itself.
    saved = tmp_path / "saved"
    puller("save", "--format", "oci-dir", "-o", str(saved), f"{host}/built/scratch:1")
    top = json.loads((saved / "index.json").read_text())
    saved_manifest = json.loads(
        (saved / "blobs" / "sha256" / top["manifests"][0]["digest"][7:]).read_bytes()
    )
    layer = saved_manifest["layers"][0]
    blob = (saved / "blobs" / "sha256" / layer["digest"][7:]).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == layer["digest"][7:]
    assert message in _gunzip_if_needed(blob)


def _gunzip_if_needed(data: bytes) -> bytes:
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def test_podman_push_pull_formats(registry_factory, tools: ContainersTools, tmp_path: Path) -> None:
    """An OCI archive loaded into podman, pushed as v2s2 and as OCI, pulled on a clean storage."""
    registry = registry_factory()
    host = f"127.0.0.1:{registry.port}"
    content = images.image(
        [{"bin/busybox": Path("/bin/busybox").read_bytes()}, {"etc/podman.txt": b"podman\n"}]
    )
    layout = images.Layout(tmp_path / "layout", {"podman": content}).write()
    archive = layout.archive(tmp_path / "podman.tar")

    pusher = tools.podman("pusher")
    pusher("load", "-i", str(archive))
    loaded = f"{host}/pod/app:loaded"
    pusher("tag", pusher("images", "-q").stdout.split()[0], loaded)
    digests = {}
    for kind in ("v2s2", "oci"):
        digest_file = tmp_path / f"{kind}.digest"
        pusher(
            "push",
            PLAIN,
            "--format",
            kind,
            "--digestfile",
            str(digest_file),
            loaded,
            f"docker://{host}/pod/app:{kind}",
        )
        digests[kind] = digest_file.read_text().strip()
        served = manifest(registry.url, "pod/app", kind)
        assert served.headers["Docker-Content-Digest"] == digests[kind]
        document = check_image_blobs(registry.url, "pod/app", kind)
        expected_type = images.DOCKER_MANIFEST if kind == "v2s2" else images.OCI_MANIFEST
        assert document["mediaType"] == expected_type
        config = httpx.get(
            f"{registry.url}/v2/pod/app/blobs/{document['config']['digest']}"  # type: ignore[index]
        ).json()
        assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in content.layers]

    puller = tools.podman("puller")
    for kind, digest in digests.items():
        reference = f"{host}/pod/app:{kind}"
        puller("pull", PLAIN, reference)
        inspected = json.loads(puller("image", "inspect", reference).stdout)[0]
        # One image (one config) with both manifests: Digest names the first pulled.
        assert f"{host}/pod/app@{digest}" in inspected["RepoDigests"]
        ran = puller(
            "run",
            "--rm",
            "--network",
            "none",
            *LIMITS,
            reference,
            "/bin/busybox",
            "cat",
            "/etc/podman.txt",
        ).stdout
        assert ran == "podman\n"
    # By digest too.
    by_digest = f"{host}/pod/app@{digests['oci']}"
    puller("pull", PLAIN, by_digest)
    inspected = json.loads(puller("image", "inspect", by_digest).stdout)[0]
    assert f"{host}/pod/app@{digests['oci']}" in inspected["RepoDigests"]
