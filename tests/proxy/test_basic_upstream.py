"""registry:2's ``proxy`` section in front of the Go registry with htpasswd (Basic)."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.api.support import assert_error
from tests.conftest import RegistryProcess
from tests.go_registry import GoRegistry
from tests.proxy.conftest import (
    UPSTREAM_PASSWORD,
    UPSTREAM_USER,
    BasicUpstream,
    client_of,
    proxy_section,
    spool_files,
    wait_stored,
)
from tests.pushing import (
    ACCEPT_MANIFESTS,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    descriptor,
    digest_of,
    image_manifest,
    push_blob,
    push_image,
    push_manifest,
)
from tests.services.redis import RedisServer

REPO = "team/app"


def _pull(client: httpx.Client, repo: str, reference: str) -> dict[str, bytes]:
    """Manifest and blobs, as a client pulls them; by digest."""
    manifest = client.get(f"/v2/{repo}/manifests/{reference}")
    assert manifest.status_code == 200, manifest.text
    pulled = {manifest.headers["Docker-Content-Digest"]: manifest.content}
    document = manifest.json()
    for entry in [document["config"], *document["layers"]]:
        blob = client.get(f"/v2/{repo}/blobs/{entry['digest']}")
        assert blob.status_code == 200, blob.text
        assert digest_of(blob.content) == entry["digest"]
        pulled[entry["digest"]] = blob.content
    return pulled


def test_pulled_through_then_served_with_the_upstream_stopped(
    basic_upstream: BasicUpstream, registry_factory: Callable[..., RegistryProcess]
) -> None:
    with basic_upstream.client() as upstream:
        digest, manifest = push_image(upstream, REPO, "v1", layers=[b"layer one", b"layer two"])
    registry = registry_factory(proxy_section(basic_upstream.url))
    with client_of(registry) as client:
        pulled = _pull(client, REPO, "v1")
        assert pulled[digest] == manifest
        assert digest_of(manifest) == digest
        wait_stored(registry, REPO, [d for d in pulled if d != digest])
        # Stored as a push leaves it: tag link, revision link, layer links, blob data.
        repo = registry.root / "docker/registry/v2/repositories" / REPO
        algorithm, hex_digest = digest.split(":")
        tag_link = repo / "_manifests/tags/v1/current/link"
        assert tag_link.read_text() == digest
        assert (repo / "_manifests/revisions" / algorithm / hex_digest / "link").exists()
        for blob in pulled:
            hex_blob = blob.split(":")[1]
            assert (
                registry.root / "docker/registry/v2/blobs/sha256" / hex_blob[:2] / hex_blob / "data"
            ).exists()
        assert not list((repo / "_uploads").glob("*")) if (repo / "_uploads").exists() else True
        log = registry.log_with(f"/v2/{REPO}/blobs/")
        assert "cache=miss" in log

        basic_upstream.stop()
        again = _pull(client, REPO, "v1")
        assert again == pulled
        assert client.head(f"/v2/{REPO}/manifests/v1").status_code == 200
        log = registry.log_with("may be stale")
        assert f"{REPO}:v1 served from the cache and may be stale" in log
        assert "cache=stale" in log
        # The tag list: this registry's own, when the upstream cannot answer.
        assert client.get(f"/v2/{REPO}/tags/list").json() == {"name": REPO, "tags": ["v1"]}
        # Nothing cached and nobody to ask: 503, a spec error body.
        missing = client.get(f"/v2/{REPO}/manifests/v2")
        assert_error(missing, 503, "UNAVAILABLE")
        missing_blob = client.get(f"/v2/{REPO}/blobs/{digest_of(b'never pushed')}")
        assert_error(missing_blob, 503, "UNAVAILABLE")
    log = registry.log()
    assert UPSTREAM_PASSWORD not in log
    assert base64.b64encode(f"{UPSTREAM_USER}:{UPSTREAM_PASSWORD}".encode()).decode() not in log


def test_a_moved_tag_is_served_old_within_ttl_and_new_after(
    basic_upstream: BasicUpstream, registry_factory: Callable[..., RegistryProcess]
) -> None:
    with basic_upstream.client() as upstream:
        old, _ = push_image(upstream, REPO, "latest", layers=[b"old layer"])
        registry = registry_factory(proxy_section(basic_upstream.url, ttl="1h"))
        with client_of(registry) as client:
            first = client.get(f"/v2/{REPO}/manifests/latest")
            assert first.headers["Docker-Content-Digest"] == old
            new, _ = push_image(upstream, REPO, "latest", layers=[b"new layer"])
            heads_before = len(basic_upstream.requests(f"HEAD /v2/{REPO}/manifests/latest"))
            within = client.get(f"/v2/{REPO}/manifests/latest")
            assert within.headers["Docker-Content-Digest"] == old
            assert "cache=hit" in registry.log_with("cache=hit")
            # Nothing asked upstream within the ttl.
            assert len(basic_upstream.requests(f"HEAD /v2/{REPO}/manifests/latest")) == heads_before
            # The tag's last check, as the storage keeps it, an hour and more ago.
            link = (
                registry.root
                / "docker/registry/v2/repositories"
                / REPO
                / "_manifests/tags/latest/current/link"
            )
            past = time.time() - 3700
            os.utime(link, (past, past))
            after = client.get(f"/v2/{REPO}/manifests/latest")
            assert after.status_code == 200
            assert after.headers["Docker-Content-Digest"] == new
            assert (
                len(basic_upstream.requests(f"HEAD /v2/{REPO}/manifests/latest"))
                == heads_before + 1
            )
            # Checked again now: the next read is a hit, with no upstream request.
            assert (
                client.get(f"/v2/{REPO}/manifests/latest").headers["Docker-Content-Digest"] == new
            )
            assert (
                len(basic_upstream.requests(f"HEAD /v2/{REPO}/manifests/latest"))
                == heads_before + 1
            )


def test_pushes_and_deletes_are_refused_as_registry2_refuses_them(
    basic_upstream: BasicUpstream, registry_factory: Callable[..., RegistryProcess]
) -> None:
    registry = registry_factory(
        {**proxy_section(basic_upstream.url), "storage": {"delete": {"enabled": True}}}
    )
    with client_of(registry) as client:
        assert_error(client.post(f"/v2/{REPO}/blobs/uploads/"), 405, "UNSUPPORTED")
        assert_error(client.put(f"/v2/{REPO}/manifests/v1", content=b"{}"), 405, "UNSUPPORTED")
        assert_error(client.delete(f"/v2/{REPO}/manifests/v1"), 405, "UNSUPPORTED")
        digest = digest_of(b"x")
        assert_error(client.delete(f"/v2/{REPO}/blobs/{digest}"), 405, "UNSUPPORTED")


def test_concurrent_pulls_of_a_missing_blob_fetch_it_once(
    basic_upstream: BasicUpstream, registry_factory: Callable[..., RegistryProcess]
) -> None:
    big = os.urandom(20 * 1024 * 1024)
    with basic_upstream.client() as upstream:
        digest = push_blob(upstream, REPO, big)
    registry = registry_factory(proxy_section(basic_upstream.url))
    results: list[tuple[int, str]] = []

    def pull() -> None:
        with client_of(registry) as client:
            response = client.get(f"/v2/{REPO}/blobs/{digest}")
            results.append((response.status_code, digest_of(response.content)))

    threads = [threading.Thread(target=pull) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [(200, digest)] * 6
    # One transfer (a first request without credentials learns the challenge: 401).
    fetched = basic_upstream.requests(f'GET /v2/{REPO}/blobs/{digest} HTTP/1.1" 200')
    assert len(fetched) == 1, basic_upstream.requests(f"/v2/{REPO}/blobs/")
    with client_of(registry) as client:
        ranged = client.get(f"/v2/{REPO}/blobs/{digest}", headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206
        assert ranged.content == big[10:20]


def race_for_one_blob(upstream: BasicUpstream, registries: list[RegistryProcess]) -> None:
    """16 clients, spread over ``registries`` and two repositories sharing the blob, ask
    for it at once: each gets it, and the upstream sends it once."""
    shared = os.urandom(8 * 1024 * 1024)
    repos = [REPO, "team/other"]
    with upstream.client() as client:
        digests = {push_blob(client, repo, shared) for repo in repos}
    (digest,) = digests
    clients = 16
    start = threading.Barrier(clients)
    results: list[tuple[str, int, str]] = []

    def pull(number: int) -> None:
        repo = repos[number % 2]
        with client_of(registries[number // 2 % len(registries)]) as client:
            assert client.get("/v2/").status_code == 200  # Connected before the race.
            start.wait()
            response = client.get(f"/v2/{repo}/blobs/{digest}")
            results.append((repo, response.status_code, digest_of(response.content)))

    threads = [threading.Thread(target=pull, args=(number,)) for number in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == sorted((repos[i % 2], 200, digest) for i in range(clients))
    fetched = upstream.requests(f'GET /v2/team/app/blobs/{digest} HTTP/1.1" 200')
    fetched += upstream.requests(f'GET /v2/team/other/blobs/{digest} HTTP/1.1" 200')
    assert len(fetched) == 1, fetched
    for registry in registries:
        wait_stored(registry, REPO, [digest])
        wait_stored(registry, "team/other", [digest])


def test_concurrent_pulls_in_several_workers_and_repositories_fetch_a_blob_once(
    basic_upstream: BasicUpstream, registry_factory: Callable[..., RegistryProcess]
) -> None:
    """The kernel hands connections to any worker, and two images share a layer: still
    one transfer from upstream (the others wait for it and are served from storage)."""
    registry = registry_factory(proxy_section(basic_upstream.url), workers=2)
    race_for_one_blob(basic_upstream, [registry])


def test_instances_on_one_storage_and_redis_fetch_a_blob_once(
    basic_upstream: BasicUpstream,
    registry_factory: Callable[..., RegistryProcess],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """Three instances behind a balancer (each with its own run folder) share storage
    and Redis: their claims are leases in Redis, so still one transfer from upstream."""
    storage = {
        "filesystem": {"rootdirectory": str(tmp_path / "shared-data")},
        "cache": {"blobdescriptor": "redis"},
    }
    config = {**proxy_section(basic_upstream.url), "storage": storage}
    config["redis"] = {"addr": redis_server.addr, "password": redis_server.password}
    instances = [registry_factory(config, workers=workers) for workers in (2, 1, 1)]
    race_for_one_blob(basic_upstream, instances)
    with redis_server.client() as redis:  # Every lease released.
        assert not list(redis.scan_iter("registry:*:proxy-claim:*"))


def test_a_blob_head_on_a_miss_asks_upstream_and_stores_nothing(
    basic_upstream: BasicUpstream, registry_factory: Callable[..., RegistryProcess]
) -> None:
    with basic_upstream.client() as upstream:
        digest = push_blob(upstream, REPO, b"a blob for HEAD")
    registry = registry_factory(proxy_section(basic_upstream.url))
    with client_of(registry) as client:
        head = client.head(f"/v2/{REPO}/blobs/{digest}")
        assert head.status_code == 200
        assert head.headers["Content-Length"] == str(len(b"a blob for HEAD"))
        assert head.headers["Docker-Content-Digest"] == digest
        hex_blob = digest.split(":")[1]
        assert not (
            registry.root / "docker/registry/v2/blobs/sha256" / hex_blob[:2] / hex_blob
        ).exists()
        unknown = client.head(f"/v2/{REPO}/blobs/{digest_of(b'nowhere')}")
        assert unknown.status_code == 404


def test_tags_come_from_upstream(
    basic_upstream: BasicUpstream, registry_factory: Callable[..., RegistryProcess]
) -> None:
    with basic_upstream.client() as upstream:
        for tag in ("a", "b", "c"):
            push_image(upstream, REPO, tag)
    registry = registry_factory(proxy_section(basic_upstream.url))
    with client_of(registry) as client:
        listed = client.get(f"/v2/{REPO}/tags/list")
        assert listed.status_code == 200, listed.text
        assert listed.json() == {"name": REPO, "tags": ["a", "b", "c"]}
        first = client.get(f"/v2/{REPO}/tags/list", params={"n": "2"})
        assert first.json()["tags"] == ["a", "b"]
        assert 'rel="next"' in first.headers["Link"]
        rest = client.get(f"/v2/{REPO}/tags/list", params={"n": "2", "last": "b"})
        assert rest.json()["tags"] == ["c"]


def test_an_index_and_its_images_by_digest(
    basic_upstream: BasicUpstream, registry_factory: Callable[..., RegistryProcess]
) -> None:
    with basic_upstream.client() as upstream:
        children = []
        for architecture in ("arm64", "amd64"):
            config = json.dumps({"architecture": architecture, "os": "linux"}).encode()
            layer = f"layer for {architecture}".encode()
            push_blob(upstream, REPO, config)
            push_blob(upstream, REPO, layer)
            child = image_manifest(config, [layer], media_type=DOCKER_MANIFEST)
            pushed = push_manifest(upstream, REPO, digest_of(child), child, DOCKER_MANIFEST)
            assert pushed.status_code == 201, pushed.text
            children.append(
                descriptor(
                    DOCKER_MANIFEST, child, platform={"architecture": architecture, "os": "linux"}
                )
            )
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": children}
        ).encode()
        assert push_manifest(upstream, REPO, "multi", index, DOCKER_LIST).status_code == 201
    registry = registry_factory(proxy_section(basic_upstream.url))
    with client_of(registry) as client:
        # A client that cannot read lists gets the linux/amd64 image, as from registry:2.
        old = client.get(f"/v2/{REPO}/manifests/multi", headers={"Accept": DOCKER_MANIFEST})
        assert old.status_code == 200, old.text
        assert old.headers["Docker-Content-Digest"] == children[1]["digest"]
        listed = client.get(f"/v2/{REPO}/manifests/multi")
        assert listed.headers["Docker-Content-Digest"] == digest_of(index)
        for child in children:
            _pull(client, REPO, str(child["digest"]))


def test_a_client_gone_mid_transfer_leaves_the_blob_cached(
    basic_upstream: BasicUpstream, registry_factory: Callable[..., RegistryProcess]
) -> None:
    big = os.urandom(20 * 1024 * 1024)
    with basic_upstream.client() as upstream:
        digest = push_blob(upstream, REPO, big)
    registry = registry_factory(proxy_section(basic_upstream.url))
    with client_of(registry) as client:
        with client.stream("GET", f"/v2/{REPO}/blobs/{digest}") as response:
            assert response.status_code == 200
            next(response.iter_raw())  # Then the client goes away.
        hex_blob = digest.split(":")[1]
        link = (
            registry.root
            / "docker/registry/v2/repositories"
            / REPO
            / "_layers/sha256"
            / hex_blob
            / "link"
        )
        for _ in range(400):
            if link.exists():
                break
            time.sleep(0.05)
        again = client.get(f"/v2/{REPO}/blobs/{digest}")
        assert again.status_code == 200
        assert digest_of(again.content) == digest
    fetched = basic_upstream.requests(f'GET /v2/{REPO}/blobs/{digest} HTTP/1.1" 200')
    assert len(fetched) == 1
    assert spool_files(registry) == []
    assert "cache=hit" in registry.log_with("cache=hit")


def test_a_slow_client_does_not_hold_back_the_stored_copy(
    basic_upstream: BasicUpstream, registry_factory: Callable[..., RegistryProcess]
) -> None:
    """The client reads one piece, then nothing until the blob is stored: what it has
    not read waits in a spool file, and it then gets every byte."""
    big = os.urandom(40 * 1024 * 1024)
    with basic_upstream.client() as upstream:
        digest = push_blob(upstream, REPO, big)
    registry = registry_factory(proxy_section(basic_upstream.url))
    with client_of(registry) as client:
        received = bytearray()
        with client.stream("GET", f"/v2/{REPO}/blobs/{digest}") as response:
            assert response.status_code == 200
            pieces = response.iter_raw()
            received += next(pieces)
            wait_stored(registry, REPO, [digest])
            for piece in pieces:
                received += piece
        assert digest_of(bytes(received)) == digest
        assert client.get(f"/v2/{REPO}/blobs/{digest}").content == big
    assert spool_files(registry) == []  # Closed, and no name was ever left behind.
    assert "cache=hit" in registry.log_with("cache=hit")


def test_refused_credentials_are_a_404_and_a_warning(
    basic_upstream: BasicUpstream, registry_factory: Callable[..., RegistryProcess]
) -> None:
    with basic_upstream.client() as upstream:
        push_image(upstream, REPO, "v1")
    wrong = {
        "proxy": {"remoteurl": basic_upstream.url, "username": "admin", "password": "wrong-pw"}
    }
    registry = registry_factory(wrong)
    with client_of(registry) as client:
        assert_error(client.get(f"/v2/{REPO}/manifests/v1"), 404, "MANIFEST_UNKNOWN")
    log = registry.log_with("refused access")
    assert "WARNING registry.proxy.app[" in log and "the upstream refused access (401)" in log
    assert "wrong-pw" not in log


def test_registry2_serves_what_was_pulled_through(
    basic_upstream: BasicUpstream,
    registry_factory: Callable[..., RegistryProcess],
    tmp_path: Path,
) -> None:
    """The cache is storage as a push leaves it: registry:2 on the same folder serves it."""
    with basic_upstream.client() as upstream:
        digest, _ = push_image(upstream, REPO, "v1", layers=[b"for registry:2"])
    registry = registry_factory(proxy_section(basic_upstream.url))
    with client_of(registry) as client:
        pulled = _pull(client, REPO, "v1")
    registry.stop()
    go = GoRegistry(registry.root, tmp_path).start()
    try:
        with httpx.Client(base_url=go.url, headers=ACCEPT_MANIFESTS, timeout=60) as client:
            assert _pull(client, REPO, "v1") == pulled
            assert client.get(f"/v2/{REPO}/manifests/v1").headers["Docker-Content-Digest"] == digest
    finally:
        go.stop()
