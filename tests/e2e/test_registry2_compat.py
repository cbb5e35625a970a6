"""Drop-in for registry:2: one storage folder, served in turn by Debian's Go registry and ours.

Images pushed by ``docker-registry`` (distribution 2.8.2) are pulled from ours,
and the reverse, with the real Docker engine; registry:2's own garbage
collector reads the tree ours wrote (referrers index included) without error.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.go_registry import GoRegistry
from tests.pushing import (
    OCI_MANIFEST,
    descriptor,
    digest_of,
    image_manifest,
    push_blob,
    push_manifest,
)

from .conftest import DockerEngine, busybox_tar

pytestmark = pytest.mark.e2e


@pytest.fixture
def go_registry(tmp_path: Path) -> Iterator[GoRegistry]:
    registry = GoRegistry(tmp_path / "shared-storage", tmp_path)
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def two_layer_image(docker_engine: DockerEngine) -> str:
    """An image with a second layer, so links for several blobs are exercised."""
    reference = "e2e/compat:latest"
    docker_engine.import_image(reference, busybox_tar({"etc/compat.txt": b"written by the test\n"}))
    return reference


def _pull_and_run(engine: DockerEngine, image: str) -> str:
    engine.docker("image", "rm", image, check=False)
    engine.docker("image", "pull", image)
    ran = engine.docker(
        "run", "--rm", "--network", "none", image, "/bin/busybox", "cat", "/etc/compat.txt"
    )
    return ran.stdout


def test_go_registry_pushes_ours_serves(
    go_registry: GoRegistry, registry_factory, docker_engine: DockerEngine, two_layer_image: str
) -> None:
    go_registry.start()
    go_image = f"localhost:{go_registry.port}/compat/from-go:1.0"
    docker_engine.docker("image", "tag", two_layer_image, go_image)
    pushed = docker_engine.docker("image", "push", go_image)
    digest = pushed.stdout.split("digest: ")[1].split()[0]
    go_registry.stop()

    ours = registry_factory({"storage": {"filesystem": {"rootdirectory": str(go_registry.root)}}})
    catalog = httpx.get(f"{ours.url}/v2/_catalog").json()
    assert catalog == {"repositories": ["compat/from-go"]}
    assert httpx.get(f"{ours.url}/v2/compat/from-go/tags/list").json() == {
        "name": "compat/from-go",
        "tags": ["1.0"],
    }
    ours_image = f"localhost:{ours.port}/compat/from-go:1.0"
    docker_engine.docker("image", "tag", two_layer_image, ours_image)
    docker_engine.docker("image", "rm", ours_image)
    assert _pull_and_run(docker_engine, ours_image) == "written by the test\n"
    head = httpx.head(f"{ours.url}/v2/compat/from-go/manifests/1.0")
    assert head.headers["Docker-Content-Digest"] == digest


def test_ours_pushes_go_registry_serves(
    go_registry: GoRegistry, registry_factory, docker_engine: DockerEngine, two_layer_image: str
) -> None:
    ours = registry_factory({"storage": {"filesystem": {"rootdirectory": str(go_registry.root)}}})
    ours_image = f"localhost:{ours.port}/compat/from-ours:2.0"
    docker_engine.docker("image", "tag", two_layer_image, ours_image)
    pushed = docker_engine.docker("image", "push", ours_image)
    digest = pushed.stdout.split("digest: ")[1].split()[0]
    # An artifact referring to the image: ours indexes it under _referrers.
    with httpx.Client(base_url=ours.url) as client:
        subject = client.get(
            "/v2/compat/from-ours/manifests/2.0",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        config = b"{}"
        signature = b"a signature"
        push_blob(client, "compat/from-ours", config)
        push_blob(client, "compat/from-ours", signature)
        artifact = image_manifest(
            config,
            [signature],
            artifact_type="application/vnd.example.signature",
            subject=descriptor(subject.headers["Content-Type"], subject.content),
        )
        assert (
            push_manifest(
                client, "compat/from-ours", digest_of(artifact), artifact, OCI_MANIFEST
            ).status_code
            == 201
        )
        referrers = client.get(f"/v2/compat/from-ours/referrers/{digest}").json()
        assert [m["digest"] for m in referrers["manifests"]] == [digest_of(artifact)]
    ours.stop()
    assert (
        go_registry.root / "docker/registry/v2/repositories/compat/from-ours/_referrers"
    ).is_dir()

    go_registry.start()
    assert httpx.get(f"{go_registry.url}/v2/_catalog").json() == {
        "repositories": ["compat/from-ours"]
    }
    assert httpx.get(f"{go_registry.url}/v2/compat/from-ours/tags/list").json()["tags"] == ["2.0"]
    go_image = f"localhost:{go_registry.port}/compat/from-ours:2.0"
    docker_engine.docker("image", "tag", two_layer_image, go_image)
    docker_engine.docker("image", "rm", go_image)
    assert _pull_and_run(docker_engine, go_image) == "written by the test\n"
    fetched = httpx.get(
        f"{go_registry.url}/v2/compat/from-ours/manifests/{digest_of(artifact)}",
        headers={"Accept": OCI_MANIFEST},
    )
    assert fetched.status_code == 200 and fetched.content == artifact
    go_registry.stop()

    collected = go_registry.garbage_collect()
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert "blobs marked" in collected.stdout + collected.stderr
