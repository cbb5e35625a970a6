"""Clients pushing the same blob and the same tag at once leave a consistent store."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import RegistryProcess, admin_auth
from tests.pushing import ACCEPT_MANIFESTS, OCI_MANIFEST, digest_of, image_manifest, with_query

Factory = Callable[..., RegistryProcess]
CLIENTS = 8
SHARED = os.urandom(2 * 1024 * 1024 + 3)


def _push_blob_in_chunks(client: httpx.Client, repo: str, data: bytes) -> str:
    started = client.post(f"/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202, started.text
    location = started.headers["Location"]
    piece = 512 * 1024
    for offset in range(0, len(data), piece):
        chunk = data[offset : offset + piece]
        response = client.patch(
            location,
            content=chunk,
            headers={"Content-Range": f"{offset}-{offset + len(chunk) - 1}"},
        )
        assert response.status_code == 202, response.text
        location = response.headers["Location"]
    digest = digest_of(data)
    done = client.put(with_query(location, digest=digest))
    assert done.status_code == 201, done.text
    return digest


def _push_one(
    base_url: str, repo: str, number: int, barrier: threading.Barrier, auth: httpx.Auth | None
) -> str:
    """One client: the shared blob, a config of its own, then the shared tag."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "client": number}).encode()
    with httpx.Client(base_url=base_url, timeout=60, auth=auth) as client:
        barrier.wait()
        _push_blob_in_chunks(client, repo, SHARED)
        _push_blob_in_chunks(client, repo, config)
        manifest = image_manifest(config, [SHARED])
        response = client.put(
            f"/v2/{repo}/manifests/race",
            content=manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert response.status_code == 201, response.text
        return digest_of(manifest)


def _assert_consistent(client: httpx.Client, repo: str, pushed: set[str]) -> None:
    blob = client.get(f"/v2/{repo}/blobs/{digest_of(SHARED)}")
    assert blob.status_code == 200
    assert blob.content == SHARED
    tagged = client.get(f"/v2/{repo}/manifests/race")
    assert tagged.status_code == 200
    digest = tagged.headers["Docker-Content-Digest"]
    assert digest in pushed
    assert digest_of(tagged.content) == digest
    document = json.loads(tagged.content)
    for referenced in (document["config"], *document["layers"]):
        content = client.get(f"/v2/{repo}/blobs/{referenced['digest']}")
        assert content.status_code == 200, referenced
        assert digest_of(content.content) == referenced["digest"]
        assert len(content.content) == referenced["size"]
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["race"]
    for other in pushed:
        assert client.get(f"/v2/{repo}/manifests/{other}").status_code == 200


def _race_with_threads(
    url: str, repo: str, auth: Callable[[], httpx.Auth | None] = lambda: None
) -> set[str]:
    barrier = threading.Barrier(CLIENTS)
    results: list[str] = []
    errors: list[BaseException] = []

    def run(number: int) -> None:
        try:
            results.append(_push_one(url, repo, number, barrier, auth()))
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    assert len(results) == CLIENTS
    return set(results)


def test_threads_push_the_same_blob_and_tag(
    client: httpx.Client, api_registry: RegistryProcess, repo: str
) -> None:
    pushed = _race_with_threads(api_registry.url, repo, lambda: admin_auth(api_registry))
    _assert_consistent(client, repo, pushed)


@pytest.mark.parametrize("workers", [2])
def test_threads_across_workers(registry_factory: Factory, workers: int) -> None:
    registry = registry_factory(workers=workers)
    pushed = _race_with_threads(registry.url, "race/workers")
    with httpx.Client(base_url=registry.url, timeout=30, headers=ACCEPT_MANIFESTS) as client:
        _assert_consistent(client, "race/workers", pushed)


async def _push_async(client: httpx.AsyncClient, repo: str, number: int) -> str:
    config = json.dumps({"os": "linux", "async client": number}).encode()
    for data in (SHARED, config):
        digest = digest_of(data)
        response = await client.post(
            f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data
        )
        assert response.status_code == 201, response.text
    manifest = image_manifest(config, [SHARED])
    response = await client.put(
        f"/v2/{repo}/manifests/race", content=manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code == 201, response.text
    return digest_of(manifest)


def test_async_clients_push_the_same_blob_and_tag(
    client: httpx.Client, api_registry: RegistryProcess, repo: str
) -> None:
    async def race() -> set[str]:
        async with httpx.AsyncClient(
            base_url=client.base_url, timeout=60, auth=admin_auth(api_registry)
        ) as async_client:
            results = await asyncio.gather(
                *(_push_async(async_client, repo, n) for n in range(CLIENTS))
            )
        return set(results)

    pushed = asyncio.run(race())
    assert len(pushed) == CLIENTS
    _assert_consistent(client, repo, pushed)
