"""The same image pushed by skopeo, podman and docker: the same blobs, stored once.

Which content makes the digests equal, and why:

* The image is written by the test (``images.py``): a Docker schema 2
  manifest, its config, and two gzip layers compressed here once. The manifest
  is rendered as the Docker engine renders every manifest it pushes (Go's
  ``MarshalIndent`` with three spaces, distribution's field order).
* skopeo copies it from a ``dir:`` folder with ``--preserve-digests``: every
  byte goes as written, so the manifest digest is the file's.
* podman loads the same content from an OCI archive. Its storage keeps layers
  uncompressed, so on push containers/image looks for the compressed blobs it
  knows (its blob-info cache recorded them when skopeo pushed and when podman
  loaded) and mounts them from skopeo's repository instead of recompressing.
  Since it swapped the layers' uncompressed digests for those compressed
  ones, it writes the manifest anew, always compact (Go's ``Marshal``), with
  the same fields in the same order: the digest of the compact rendering of
  the same document, whatever the input's whitespace.
* docker pulls skopeo's push (recording where each compressed layer came
  from) and pushes it again: it mounts the layers rather than recompressing
  them (a ``docker load`` would have recompressed them with Go's gzip), and
  builds its manifest in its own rendering, which is the rendering the file
  was written in: the same bytes, the same digest as skopeo's.

So config and layers are one set of blobs whichever client pushed, and the
storage folder holds each once; the manifest exists in exactly two
renderings, Docker's (skopeo, docker) and containers/image's compact one
(podman). No client can be made to push the other's rendering: docker always
re-renders, and podman re-renders whenever it reuses compressed layers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import images
from .clients import (
    ContainersTools,
    check_image_blobs,
    containers_tools,
    manifest,
    skopeo,
    stored_blobs,
)
from .conftest import DockerEngine

pytestmark = pytest.mark.e2e


@pytest.fixture
def tools(tmp_path: Path) -> Iterator[ContainersTools]:
    yield from containers_tools(tmp_path)


def test_skopeo_podman_docker_push_the_same_blobs(
    registry_factory, docker_engine: DockerEngine, tools: ContainersTools, tmp_path: Path
) -> None:
    registry = registry_factory()
    host = f"127.0.0.1:{registry.port}"
    marker = uuid.uuid4().hex.encode()  # Fresh content: no client has seen these blobs before.
    content = images.image(
        [{"bin/busybox": Path("/bin/busybox").read_bytes()}, {"etc/cross.txt": marker}],
        docker=True,
        rendering="docker",
    )
    document = json.loads(content.manifest)
    compact = images.digest_of(images.render(document, "compact"))

    # skopeo: the bytes as written.
    folder = images.write_dir(tmp_path / "dir", content)
    skopeo(
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        f"dir:{folder}",
        f"docker://{host}/cross/skopeo:1",
    )
    assert manifest(registry.url, "cross/skopeo", "1").content == content.manifest

    # podman: loaded from an OCI archive of the same content, pushed as v2s2.
    archive = (
        images.Layout(tmp_path / "layout", {"cross": content})
        .write()
        .archive(tmp_path / "cross.tar")
    )
    pusher = tools.podman("pusher")
    pusher("load", "-i", str(archive))
    digest_file = tmp_path / "podman.digest"
    pusher(
        "push",
        "--tls-verify=false",
        "--format",
        "v2s2",
        "--digestfile",
        str(digest_file),
        "localhost/cross:latest",
        f"docker://{host}/cross/podman:1",
    )
    podman_digest = digest_file.read_text().strip()
    assert podman_digest == compact
    served = manifest(registry.url, "cross/podman", "1")
    assert json.loads(served.content) == document

    # docker: pulled from skopeo's push, pushed again.
    docker_engine.docker("pull", f"{host}/cross/skopeo:1")
    docker_engine.docker("tag", f"{host}/cross/skopeo:1", f"{host}/cross/docker:1")
    pushed = docker_engine.docker("push", f"{host}/cross/docker:1").stdout
    assert f"1: digest: {content.digest} " in pushed, pushed
    assert pushed.count("Mounted from cross/skopeo") == len(content.layers), pushed
    assert manifest(registry.url, "cross/docker", "1").content == content.manifest
    ran = docker_engine.docker(
        "run",
        "--rm",
        "--network",
        "none",
        f"{host}/cross/docker:1",
        "/bin/busybox",
        "cat",
        "/etc/cross.txt",
    ).stdout
    assert ran.encode() == marker
    for reference in ("skopeo", "docker"):
        docker_engine.docker("image", "rm", f"{host}/cross/{reference}:1")

    # The same config and layers in all three repositories, each stored once.
    for name in ("cross/skopeo", "cross/podman", "cross/docker"):
        pushed_document = check_image_blobs(registry.url, name, "1")
        assert pushed_document["config"] == document["config"]
        assert pushed_document["layers"] == document["layers"]
    assert stored_blobs(registry.root) == sorted({*content.blobs(), compact})
