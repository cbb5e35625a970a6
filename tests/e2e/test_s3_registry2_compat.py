"""Drop-in for registry:2 on S3: one bucket and root directory, served by Debian's Go
registry (distribution 2.8.2) and by ours at the same time.

An image pushed through ours is pulled byte for byte through the Go registry, and the
reverse, on a real Ceph RADOS Gateway: the key layout is registry:2's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.go_registry import GoRegistry
from tests.pushing import ACCEPT_MANIFESTS, digest_of, push_image
from tests.services.ceph import CephS3

pytestmark = pytest.mark.e2e

ROOT = "/shared-registry"


@pytest.fixture
def go_registry(
    ceph_s3: CephS3, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GoRegistry]:
    # Its S3 driver crashes at start when AWS_CA_BUNDLE is set (measured).
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    registry = GoRegistry(tmp_path / "unused", tmp_path)
    settings = yaml.safe_load(registry.config.read_text())
    # 2.8.2 has no forcepathstyle: with a regionendpoint it always addresses by path.
    settings["storage"] = {
        "s3": {
            key: value
            for key, value in ceph_s3.driver_parameters(s3_bucket, ROOT).items()
            if key != "forcepathstyle"
        },
        "delete": {"enabled": True},
    }
    registry.config.write_text(yaml.safe_dump(settings))  # Credentials in a file, not argv.
    yield registry.start()
    registry.stop()


@pytest.fixture
def ours(ceph_s3: CephS3, s3_bucket: str, registry_factory: Any) -> Any:
    return registry_factory(
        {"storage": {"s3": ceph_s3.driver_parameters(s3_bucket, ROOT), "delete": {"enabled": True}}}
    )


def pull(url: str, repo: str, tag: str) -> tuple[bytes, dict[str, bytes]]:
    """The manifest and every blob it names, as a client pulls them (redirects followed:
    registry:2 sends blob reads to the store's presigned URLs)."""
    with httpx.Client(base_url=url, follow_redirects=True, timeout=60) as client:
        manifest = client.get(f"/v2/{repo}/manifests/{tag}", headers=ACCEPT_MANIFESTS)
        assert manifest.status_code == 200, manifest.text
        document = manifest.json()
        blobs = {}
        for item in [document["config"], *document["layers"]]:
            blob = client.get(f"/v2/{repo}/blobs/{item['digest']}")
            assert blob.status_code == 200, blob.text
            blobs[item["digest"]] = blob.content
        return manifest.content, blobs


def layers() -> list[bytes]:
    # One layer above the 10 MiB part size (a multipart upload), one small.
    return [os.urandom(12 * 1024 * 1024 + 7), b"a small layer"]


def test_ours_pushes_go_registry_pulls(ours: Any, go_registry: GoRegistry) -> None:
    pushed_layers = layers()
    with httpx.Client(base_url=ours.url, timeout=60) as client:
        digest, manifest = push_image(client, "compat/from-ours", "v1", layers=pushed_layers)
    pulled_manifest, blobs = pull(go_registry.url, "compat/from-ours", "v1")
    assert pulled_manifest == manifest
    assert digest_of(pulled_manifest) == digest
    for layer in pushed_layers:
        assert blobs[digest_of(layer)] == layer
    tags = httpx.get(f"{go_registry.url}/v2/compat/from-ours/tags/list").json()
    assert tags == {"name": "compat/from-ours", "tags": ["v1"]}


def test_go_registry_pushes_ours_pulls(ours: Any, go_registry: GoRegistry) -> None:
    pushed_layers = layers()
    with httpx.Client(base_url=go_registry.url, timeout=60) as client:
        digest, manifest = push_image(client, "compat/from-go", "v1", layers=pushed_layers)
    pulled_manifest, blobs = pull(ours.url, "compat/from-go", "v1")
    assert pulled_manifest == manifest
    assert digest_of(pulled_manifest) == digest
    for layer in pushed_layers:
        assert blobs[digest_of(layer)] == layer
    assert httpx.get(f"{ours.url}/v2/_catalog").json() == {"repositories": ["compat/from-go"]}
