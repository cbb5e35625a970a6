"""Docker's own lab for its open source registry, word for word, against ours.

    registry serve                       # instead of: docker run -d -p 5000:5000 registry:2
    curl localhost:5000/v2/_catalog      # {"repositories":[]}
    docker image tag nginx localhost:5000/w3:v1.0
    docker image push localhost:5000/w3:v1.0
    curl localhost:5000/v2/_catalog      # {"repositories":["w3"]}

The registry runs with no config file at all; the port is a free one.
"""

from __future__ import annotations

import json

import httpx
import pytest

from .conftest import DockerEngine

pytestmark = pytest.mark.e2e


def test_lab_push_catalog_pull_run(
    registry_factory, docker_engine: DockerEngine, busybox_image: str
) -> None:
    registry = registry_factory(use_config=False, addr="localhost:0", workers=2)
    assert (registry.workdir / "data").is_dir(), "storage defaults to ./data"
    port = registry.port

    empty = httpx.get(f"http://localhost:{port}/v2/_catalog")
    assert empty.status_code == 200
    assert empty.text == '{"repositories":[]}\n'

    image = f"localhost:{port}/w3:v1.0"
    docker_engine.docker("image", "tag", busybox_image, image)
    pushed = docker_engine.docker("image", "push", image)
    assert "v1.0: digest: sha256:" in pushed.stdout
    pushed_digest = pushed.stdout.split("digest: ")[1].split()[0]

    listed = httpx.get(f"http://localhost:{port}/v2/_catalog")
    assert listed.text == '{"repositories":["w3"]}\n'

    manifest = httpx.get(
        f"http://localhost:{port}/v2/w3/manifests/v1.0",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    assert manifest.headers["Docker-Content-Digest"] == pushed_digest
    assert (
        json.loads(manifest.content)["mediaType"]
        == "application/vnd.docker.distribution.manifest.v2+json"
    )

    docker_engine.docker("image", "rm", image)
    assert docker_engine.docker("image", "inspect", image, check=False).returncode != 0
    pulled = docker_engine.docker("image", "pull", image)
    assert pushed_digest in pulled.stdout
    ran = docker_engine.docker(
        "run", "--rm", "--network", "none", image, "/bin/busybox", "echo", "hello from w3"
    )
    assert ran.stdout.strip() == "hello from w3"

    access = registry.log()
    assert '"PUT /v2/w3/manifests/v1.0 HTTP/1.1" 201' in access
    assert (
        '"GET /v2/w3/manifests/v1.0 HTTP/1.1" 200' in access
        or "HEAD /v2/w3/manifests/v1.0" in access
    )
