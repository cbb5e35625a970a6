"""``expire``: cached repositories nothing pulled for that long are removed, their blobs
then collected; recently pulled ones and the registry's own pushes stay."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from registry.config import Config, ProxyUpstream, load_config
from registry.proxy.expiry import Expiry, PullStamps, period, read_stamp, write_stamp
from registry.reference import Digest
from registry.storage import Store, paths
from registry.storage.driver import StorageDriverError
from registry.storage.driver.factory import create_driver
from registry.storage.driver.inmemory import InMemoryDriver
from registry.storage.errors import BlobUnknownError
from tests.conftest import RegistryProcess
from tests.proxy.conftest import UPSTREAM_PASSWORD, UPSTREAM_USER, BasicUpstream, client_of
from tests.pushing import digest_of, push_image
from tests.services.ceph import CephS3

PROJECT = Path(__file__).resolve().parents[2]
HOUR = 3600.0
T = TypeVar("T")


def _proxy(url: str) -> dict[str, object]:
    upstream = {
        "prefix": "up",
        "remoteurl": url,
        "username": UPSTREAM_USER,
        "password": UPSTREAM_PASSWORD,
        "expire": "1h",
    }
    return {"proxy": {"upstreams": [upstream]}}


def _pull(client: httpx.Client, repo: str, registry: RegistryProcess) -> list[str]:
    """Manifest and blobs of ``repo:v1``, as a client pulls them: the digests, once the
    blobs are stored (the store finishes behind the client)."""
    manifest = client.get(f"/v2/{repo}/manifests/v1")
    assert manifest.status_code == 200, manifest.text
    document = manifest.json()
    digests = [manifest.headers["Docker-Content-Digest"]]
    for entry in [document["config"], *document["layers"]]:
        blob = client.get(f"/v2/{repo}/blobs/{entry['digest']}")
        assert blob.status_code == 200, blob.text
        assert digest_of(blob.content) == entry["digest"]
        digests.append(entry["digest"])

    async def linked(store: Store, config: Config) -> bool:
        blobs = store.repository(repo).blobs
        return all([await blobs.is_linked(Digest.parse(d)) for d in digests[1:]])

    deadline = time.monotonic() + 60
    while not _in_storage(registry, linked):
        assert time.monotonic() < deadline, f"{repo}: blobs not stored after 60 s"
        time.sleep(0.05)
    return digests


def _in_storage(registry: RegistryProcess, work: Callable[[Store, Config], Awaitable[T]]) -> T:
    """``work`` on the registry's storage, seen from this process (any driver)."""
    config = load_config(str(registry.workdir / "config.yml"), environ={})

    async def run() -> T:
        driver = create_driver(config.storage.driver, config.storage.parameters)
        store = Store(driver, config)
        try:
            return await work(store, config)
        finally:
            await store.close()

    return asyncio.run(run())


async def _stored(store: Store, digests: list[str]) -> list[bool]:
    found = []
    for digest in digests:
        try:
            await store.blobs.stat(Digest.parse(digest))
            found.append(True)
        except BlobUnknownError:
            found.append(False)
    return found


def _collect_garbage(registry: RegistryProcess) -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "registry", "garbage-collect", "--grace", "0",
            str(registry.workdir / "config.yml"),
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        env={k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")},
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _expire_and_collect(registry: RegistryProcess, upstream: BasicUpstream) -> None:
    """The whole path on the registry's storage, whatever its driver."""
    with upstream.client() as client:
        push_image(client, "team/old", "v1", layers=[b"old layer"], config=b'{"old": 1}')
        push_image(client, "team/fresh", "v1", layers=[b"fresh layer"], config=b'{"fresh": 1}')
        push_image(client, "team/bare", "v1", layers=[b"bare layer"], config=b'{"bare": 1}')
    # Blobs stored on S3 are answered with a redirect to the bucket.
    with client_of(registry, follow_redirects=True) as client:
        old = _pull(client, "up/team/old", registry)
        fresh = _pull(client, "up/team/fresh", registry)
        bare = _pull(client, "up/team/bare", registry)
        own = push_image(client, "own/app", "v1", layers=[b"own layer"], config=b'{"own": 1}')[0]
        now = time.time()

        async def prepare(store: Store, config: Config) -> float | None:
            pulled = await read_stamp(store.driver, "up/team/old")
            assert pulled is not None and now - 60 < pulled <= now + 1
            assert await read_stamp(store.driver, "own/app") is None  # Never stamped.
            await write_stamp(store.driver, "up/team/old", now - 2 * HOUR)
            await store.driver.delete(paths.proxy_pulled("up/team/bare"))  # Cached before.
            return await read_stamp(store.driver, "up/team/fresh")

        fresh_stamp = _in_storage(registry, prepare)
        # Pulled again within the period: the stamp is not written again.
        _pull(client, "up/team/fresh", registry)
        assert _in_storage(registry, lambda s, c: read_stamp(s.driver, "up/team/fresh")) == (
            fresh_stamp
        )

        async def expire(store: Store, config: Config) -> None:
            expiry = Expiry(store, config.proxy.upstreams, clock=lambda: now)
            assert await expiry.run() == ["up/team/old"]
            assert await expiry.run() == []
            names = await store.repositories()
            assert "up/team/old" not in names
            assert {"up/team/fresh", "up/team/bare", "own/app"} <= set(names)
            gone = store.repository("up/team/old")
            assert not await gone.manifests.exists(Digest.parse(old[0]))
            assert not await gone.blobs.is_linked(Digest.parse(old[1]))
            assert await read_stamp(store.driver, "up/team/old") is None
            assert await read_stamp(store.driver, "up/team/bare") == now  # Its time starts.
            assert await read_stamp(store.driver, "own/app") is None
            assert await _stored(store, old) == [True] * 3  # Left to the collector.

        _in_storage(registry, expire)
        _collect_garbage(registry)

        async def collected(store: Store, config: Config) -> None:
            assert await _stored(store, old) == [False] * 3
            assert await _stored(store, fresh + bare) == [True] * 6
            assert await store.repository("own/app").manifests.exists(Digest.parse(own))

        _in_storage(registry, collected)
        fetched = len(upstream.requests("GET /v2/team/old/manifests/"))
        assert _pull(client, "up/team/old", registry) == old  # From the upstream again.
        assert len(upstream.requests("GET /v2/team/old/manifests/")) > fetched
        assert client.get(f"/v2/own/app/manifests/{own}").status_code == 200


def test_expired_repository_removed_then_collected(
    basic_upstream: BasicUpstream, registry_factory: Callable[..., RegistryProcess]
) -> None:
    registry = registry_factory(_proxy(basic_upstream.url))
    _expire_and_collect(registry, basic_upstream)
    v2 = registry.root / "docker/registry/v2"
    assert (v2 / "_proxy/up/team/fresh/_pulled").is_file()
    assert not (v2 / "_proxy/own").exists()
    assert (v2 / "repositories/own/app/_layers").is_dir()


def test_expired_repository_removed_on_s3(
    basic_upstream: BasicUpstream,
    registry_factory: Callable[..., RegistryProcess],
    ceph_s3: CephS3,
    s3_bucket: str,
) -> None:
    storage = {"s3": ceph_s3.driver_parameters(s3_bucket, "/registry")}
    registry = registry_factory({**_proxy(basic_upstream.url), "storage": storage})
    _expire_and_collect(registry, basic_upstream)


def test_the_server_runs_the_expiry(
    basic_upstream: BasicUpstream, registry_factory: Callable[..., RegistryProcess]
) -> None:
    with basic_upstream.client() as client:
        push_image(client, "team/app", "v1", layers=[b"a layer"])
    registry = registry_factory(_proxy(basic_upstream.url))
    with client_of(registry) as client:
        _pull(client, "up/team/app", registry)
    registry.stop()
    v2 = registry.root / "docker/registry/v2"
    (v2 / "_proxy/up/team/app/_pulled").write_text(json.dumps({"at": time.time() - 2 * HOUR}))
    (v2 / "_maintenance/proxy-expiry").unlink()  # Due at once, not an interval after the last.
    registry.start()
    log = registry.log_with("proxy: up/team/app expired")
    assert "proxy: up/team/app expired: not pulled for 2.0 h (expire: 1.0 h)" in log
    assert not (v2 / "repositories/up/team/app/_manifests").exists()
    assert not (v2 / "repositories/up/team/app/_layers").exists()


# --- in this process, on the in-memory driver ---


class CountingDriver(InMemoryDriver):
    """Counts the stamps written; can be made to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps = 0
        self.failing = False

    async def _put_content(self, path: str, content: bytes) -> None:
        if path.startswith(paths.PROXY):
            if self.failing:
                raise StorageDriverError(path)
            self.stamps += 1
        await super()._put_content(path, content)


def test_a_stamp_is_written_once_per_period() -> None:
    driver = CountingDriver()
    clock = [1000.0]
    stamps = PullStamps(driver, clock=lambda: clock[0], monotonic=lambda: clock[0])
    expire = 10 * HOUR  # A period of an hour.

    async def pulls(name: str, times: int, expire: float = expire) -> None:
        for _ in range(times):
            await stamps.pulled(name, expire)

    asyncio.run(pulls("up/a", 50))
    assert driver.stamps == 1
    clock[0] += period(expire) - 1
    asyncio.run(pulls("up/a", 50))
    assert driver.stamps == 1
    clock[0] += 1
    asyncio.run(pulls("up/a", 50))
    assert driver.stamps == 2
    assert asyncio.run(read_stamp(driver, "up/a")) == clock[0]
    asyncio.run(pulls("up/b", 3))
    asyncio.run(pulls("up/never", 3, expire=0))
    assert driver.stamps == 3
    driver.failing = True
    asyncio.run(pulls("up/c", 2))  # Logged, never raised; tried again at the next pull.
    driver.failing = False
    asyncio.run(pulls("up/c", 1))
    assert driver.stamps == 4


def _link(name: str) -> str:
    return paths.tag_current_link(name, "v1")


def test_expiry_keeps_what_it_must() -> None:
    """Nested names, an upstream that never expires, the registry's own, a bad stamp."""
    driver = InMemoryDriver()
    store = Store(driver)
    upstreams = (
        ProxyUpstream("http://kept.example", prefix="kept", expire=0.0),
        ProxyUpstream("http://up.example", prefix="up", expire=HOUR),
    )
    now = 100 * HOUR
    expiry = Expiry(store, upstreams, clock=lambda: now)
    assert expiry.enabled and expiry.interval == HOUR / 10
    assert not Expiry(store, upstreams[:1]).enabled
    names = ("up/a", "up/a/b", "kept/x", "own/x", "up/bad")

    async def run() -> list[str]:
        for name in names:
            await driver.put_content(_link(name), b"sha256:" + b"0" * 64)
            await write_stamp(driver, name, 0.0)
        await write_stamp(driver, "up/a/b", now - 10)
        await driver.put_content(paths.proxy_pulled("up/bad"), b"not json")
        removed = await expiry.run()
        assert await store.repositories() == sorted({"up/a/b", "kept/x", "own/x", "up/bad"})
        assert await read_stamp(driver, "up/bad") == now
        assert await read_stamp(driver, "up/a/b") == now - 10
        return removed

    assert asyncio.run(run()) == ["up/a"]


@pytest.mark.parametrize("expire", [0.0, 60.0, 7 * 24 * HOUR])
def test_the_period_is_a_tenth_of_expire_at_most_an_hour(expire: float) -> None:
    assert period(expire) == min(HOUR, expire / 10)
