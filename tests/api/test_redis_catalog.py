"""``/v2/_catalog`` from Redis (``storage.cache.blobdescriptor: redis``): registries on one
folder and one Redis list each other's pushes at once, page like registry:2, and keep
answering, complete, while Redis is down."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx

from registry.storage.driver.factory import storage_identity
from registry.storage.redis_cache import namespace_for
from tests.conftest import RegistryProcess
from tests.pushing import ACCEPT_MANIFESTS, push_image
from tests.services.redis import RedisServer


def config(root: Path, redis: RedisServer) -> dict[str, object]:
    return {
        "storage": {
            "filesystem": {"rootdirectory": str(root)},
            "cache": {"blobdescriptor": "redis"},
        },
        "redis": {
            "addr": redis.addr,
            "password": redis.password,
            "dialtimeout": "200ms",
            "readtimeout": "200ms",
            "writetimeout": "200ms",
        },
    }


@contextlib.contextmanager
def client_of(registry: RegistryProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry.url, timeout=30, headers=ACCEPT_MANIFESTS) as client:
        yield client


def catalog(client: httpx.Client, **query: str) -> tuple[list[str], str | None]:
    answer = client.get("/v2/_catalog", params=query)
    assert answer.status_code == 200, answer.text
    return answer.json()["repositories"], answer.headers.get("Link")


def test_a_push_through_one_registry_is_in_the_others_catalog_at_once(
    registry_factory: object, redis_server: RedisServer, tmp_path: Path
) -> None:
    root = tmp_path / "shared-data"
    settings = config(root, redis_server)
    a: RegistryProcess = registry_factory(settings, workers=2)  # type: ignore[operator]
    b: RegistryProcess = registry_factory(settings, workers=2)  # type: ignore[operator]
    with client_of(a) as on_a, client_of(b) as on_b:
        assert catalog(on_b) == ([], None)
        names = []
        for n in range(6):
            names.append(f"team/app{n}")
            push_image(on_a, names[-1], "v1")
            for _ in range(2):  # Both workers.
                assert catalog(on_b)[0] == names
        page, link = catalog(on_b, n="4")
        assert page == names[:4]
        assert link is not None and "last=team%2Fapp3" in link and "n=4" in link
        assert catalog(on_b, n="4", last="team/app3") == (names[4:], None)
    namespace = namespace_for(storage_identity("filesystem", {"rootdirectory": str(root)}))
    with redis_server.client() as redis:
        members = {member.decode() for member in redis.zrange(f"{namespace}:catalog", 0, -1)}
    assert members == {"!ready", *names}
    for registry in (a, b):
        assert "redis cache" not in registry.log()


def test_the_catalog_is_complete_while_redis_is_down(
    registry_factory: object, private_redis: RedisServer, tmp_path: Path
) -> None:
    registry: RegistryProcess = registry_factory(  # type: ignore[operator]
        config(tmp_path / "data", private_redis), workers=1
    )
    with client_of(registry) as client:
        push_image(client, "before", "v1")
        assert catalog(client)[0] == ["before"]
        private_redis.kill()
        push_image(client, "during", "v1")  # Answered all the same.
        for _ in range(5):
            assert catalog(client)[0] == ["before", "during"]
            assert catalog(client, n="1", last="before") == (["during"], None)
    log = registry.log()
    assert log.count("redis cache: ") == 1, log  # One warning for the outage.
    assert private_redis.password not in log
