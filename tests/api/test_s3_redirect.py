"""Blob GETs on S3 answer 307 to a presigned URL of the gateway, as registry:2 does,
unless ``storage.redirect.disable``; on a real Ceph RADOS Gateway."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import RegistryProcess
from tests.pushing import digest_of, push_blob
from tests.services.ceph import TEST_BUCKET, CephS3

BLOB = os.urandom(3 * 1024 * 1024 + 11)


@pytest.fixture
def root(ceph_s3: CephS3) -> Iterator[str]:
    """A root directory of the test's own in the shared bucket, emptied afterwards."""
    name = f"/redirect-{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.closing(ceph_s3.client()) as client:
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=TEST_BUCKET, Prefix=name.lstrip("/") + "/"
        ):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=TEST_BUCKET, Key=item["Key"])


def start(
    registry_factory: object, ceph_s3: CephS3, root: str, **storage: object
) -> RegistryProcess:
    config = {"storage": {"s3": ceph_s3.driver_parameters(TEST_BUCKET, root), **storage}}
    return registry_factory(config)  # type: ignore[operator,no-any-return]


def test_a_blob_get_goes_to_the_gateway_and_a_head_does_not(
    registry_factory: object, ceph_s3: CephS3, root: str
) -> None:
    registry = start(registry_factory, ceph_s3, root)
    with httpx.Client(base_url=registry.url) as client:
        digest = push_blob(client, "team/app", BLOB)
        got = client.get(f"/v2/team/app/blobs/{digest}")
        assert got.status_code == 307, got.text
        assert got.headers["Docker-Content-Digest"] == digest
        location = got.headers["Location"]
        assert location.startswith(ceph_s3.endpoint + "/")
        assert "Signature" in location or "X-Amz-Signature" in location
        head = client.head(f"/v2/team/app/blobs/{digest}")
        assert head.status_code == 200
        assert head.headers["Content-Length"] == str(len(BLOB))
        # Not in the repository: no URL is handed out.
        assert client.get(f"/v2/other/blobs/{digest}").status_code == 404
    # The client fetches the bytes from the gateway itself, whole or a range.
    fetched = httpx.get(location)
    assert fetched.status_code == 200 and digest_of(fetched.content) == digest
    ranged = httpx.get(location, headers={"Range": "bytes=1000-1999"})
    assert ranged.status_code == 206 and ranged.content == BLOB[1000:2000]


def test_with_redirects_disabled_the_registry_streams_the_blob(
    registry_factory: object, ceph_s3: CephS3, root: str
) -> None:
    registry = start(registry_factory, ceph_s3, root, redirect={"disable": True})
    with httpx.Client(base_url=registry.url) as client:
        digest = push_blob(client, "team/app", BLOB)
        got = client.get(f"/v2/team/app/blobs/{digest}")
        assert got.status_code == 200 and got.content == BLOB
        ranged = client.get(f"/v2/team/app/blobs/{digest}", headers={"Range": "bytes=5-9"})
        assert ranged.status_code == 206 and ranged.content == BLOB[5:10]
