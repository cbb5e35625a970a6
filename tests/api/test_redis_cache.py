"""Registries sharing one folder and one Redis (``storage.cache.blobdescriptor: redis``):
a push, a pull, a delete through one, and every worker of every instance answers 404."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.conftest import RegistryProcess
from tests.pushing import ACCEPT_MANIFESTS, digest_of, push_image
from tests.services.redis import RedisServer

LAYER = b"a layer cached in redis " * 100


def config(root: Path, redis: RedisServer) -> dict[str, object]:
    return {
        "storage": {
            "filesystem": {"rootdirectory": str(root)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "redis"},
        },
        "redis": {
            "addr": redis.addr,
            "password": redis.password,
            "db": 0,
            "dialtimeout": "500ms",
            "readtimeout": "500ms",
            "writetimeout": "500ms",
            "pool": {"maxactive": 16},
        },
    }


@contextlib.contextmanager
def client_of(registry: RegistryProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry.url, timeout=30, headers=ACCEPT_MANIFESTS) as client:
        yield client


def test_push_pull_delete_through_a_shared_redis_cache(
    registry_factory: object, redis_server: RedisServer, tmp_path: Path
) -> None:
    root = tmp_path / "shared-data"
    settings = config(root, redis_server)
    a: RegistryProcess = registry_factory(settings, workers=2)  # type: ignore[operator]
    b: RegistryProcess = registry_factory(settings, workers=1)  # type: ignore[operator]
    repo, layer = "cache/app", digest_of(LAYER)
    with client_of(a) as on_a, client_of(b) as on_b:
        assert on_b.head(f"/v2/{repo}/blobs/{layer}").status_code == 404  # Not cached.
        digest, manifest = push_image(on_a, repo, "v1", layers=[LAYER])
        for client in (on_a, on_b):  # Pulled from both, the blob's answers cached.
            pulled = client.get(f"/v2/{repo}/manifests/v1")
            assert pulled.status_code == 200 and pulled.content == manifest
            for _ in range(4):  # Every worker.
                head = client.head(f"/v2/{repo}/blobs/{layer}")
                assert head.status_code == 200
                assert head.headers["Content-Length"] == str(len(LAYER))
            assert client.get(f"/v2/{repo}/blobs/{layer}").content == LAYER
        with redis_server.client() as redis:
            cached = [key.decode() for key in redis.keys("registry:*:f:*")]
        assert any(key.endswith(f"/_layers/sha256/{layer[7:]}/link") for key in cached), cached
        assert any(key.endswith(f"/{layer[7:]}/data") for key in cached), cached

        deleted = on_a.delete(f"/v2/{repo}/blobs/{layer}")
        assert deleted.status_code == 202, deleted.text
        for client in (on_a, on_b, on_a, on_b, on_a, on_b):
            assert client.head(f"/v2/{repo}/blobs/{layer}").status_code == 404
            assert client.get(f"/v2/{repo}/blobs/{layer}").status_code == 404
        # The manifest, still there, is served as before.
        assert on_b.head(f"/v2/{repo}/manifests/{digest}").status_code == 200
    for registry in (a, b):
        log = registry.log()
        assert redis_server.password not in log
        assert "redis cache" not in log, log  # Never fell back: no warning.


def test_an_inmemory_cache_answers_and_forgets_what_is_deleted(
    registry_factory: object, tmp_path: Path
) -> None:
    """registry:2's stock ``blobdescriptor: inmemory``, one worker: what it deleted is gone."""
    settings = {
        "storage": {
            "filesystem": {"rootdirectory": str(tmp_path / "data")},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
    }
    registry: RegistryProcess = registry_factory(settings, workers=1)  # type: ignore[operator]
    repo, layer = "cache/memory", digest_of(LAYER)
    with client_of(registry) as client:
        push_image(client, repo, "v1", layers=[LAYER])
        for _ in range(3):
            assert client.head(f"/v2/{repo}/blobs/{layer}").status_code == 200
        assert client.delete(f"/v2/{repo}/blobs/{layer}").status_code == 202
        assert client.head(f"/v2/{repo}/blobs/{layer}").status_code == 404
    assert "warning" not in registry.log().lower()
