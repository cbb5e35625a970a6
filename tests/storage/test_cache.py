"""The ``stat`` cache (``storage.cache.blobdescriptor``): what it keeps, what invalidates it,
two registries sharing one Redis and one folder, and a Redis that goes away.

All on a real ``redis-server``; no mocks. "Instances" are two wrappers over the same
folder, each with a Redis client of its own, as two registries would have.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from registry.config import RedisTLS
from registry.reference import Digest
from registry.storage import Store, paths
from registry.storage.driver import (
    FileInfo,
    FileWriter,
    PathNotFoundError,
    StorageDriver,
)
from registry.storage.driver.cached import CachedDriver, MemoryStatCache, Miss, StatCache
from registry.storage.driver.factory import storage_identity
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.redis_cache import RedisStatCache, check_tls_files, namespace_for
from tests.services.ports import free_port
from tests.services.redis import RedisServer, RedisTLSFiles, require_redis

LOGGER = "registry.storage.redis_cache"


def digest(data: bytes) -> Digest:
    return Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())


class Counting(StorageDriver):
    """Counts the stats that reach the storage."""

    name: ClassVar[str] = "counting"

    def __init__(self, inner: StorageDriver) -> None:
        self.inner = inner
        self.stats = 0

    async def _stat(self, path: str) -> FileInfo:
        self.stats += 1
        return await self.inner._stat(path)

    async def _get_content(self, path: str) -> bytes:
        return await self.inner._get_content(path)

    async def _put_content(self, path: str, content: bytes) -> None:
        await self.inner._put_content(path, content)

    def _read(self, path: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
        return self.inner._read(path, offset, length)

    async def _writer(self, path: str, append: bool) -> FileWriter:
        return await self.inner._writer(path, append)

    async def _list(self, path: str) -> builtins.list[str]:
        return await self.inner._list(path)

    async def _move(self, source: str, destination: str) -> None:
        await self.inner._move(source, destination)

    async def _delete(self, path: str) -> None:
        await self.inner._delete(path)


class Instance:
    """One registry's view of the shared folder: its own driver, cache and Redis client."""

    def __init__(self, root: Path, cache: StatCache) -> None:
        self.counting = Counting(FilesystemDriver(str(root)))
        self.driver = CachedDriver(self.counting, cache)
        self.store = Store(self.driver)

    @property
    def stats(self) -> int:
        return self.counting.stats

    async def exists(self, path: str) -> bool:
        try:
            await self.driver.stat(path)
        except PathNotFoundError:
            return False
        return True

    async def size(self, path: str) -> int:
        return (await self.driver.stat(path)).size


def redis_cache(server: RedisServer, namespace: str, **options: Any) -> RedisStatCache:
    return RedisStatCache([server.addr], namespace, password=server.password, **options)


def shared_namespace(root: Path) -> str:
    """What a registry configured with this folder would use."""
    return namespace_for(storage_identity("filesystem", {"rootdirectory": str(root)}))


MakeCache = Callable[[Path], StatCache]


@pytest.fixture(params=["inmemory", "redis"])
def make_cache(request: pytest.FixtureRequest) -> MakeCache:
    """Both caches; a Redis one is shared by every instance on the same folder."""
    if request.param == "inmemory":
        return lambda root: MemoryStatCache()
    server: RedisServer = request.getfixturevalue("redis_server")
    return lambda root: redis_cache(server, shared_namespace(root))


@pytest.fixture
async def instances(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[list[Instance]]:
    """Two instances on one folder and one Redis."""
    root = tmp_path / "shared"
    made = [Instance(root, redis_cache(redis_server, shared_namespace(root))) for _ in range(2)]
    yield made
    for instance in made:
        await instance.driver.close()


BLOB = b"a layer"
LAYER = digest(BLOB)


async def put_blob(driver: StorageDriver, data: bytes) -> str:
    path = paths.blob_data(digest(data))
    await driver.put_content(path, data)
    return path


# --- what is cached, and for how long ---


async def test_a_hit_does_not_reach_the_storage(tmp_path: Path, make_cache: MakeCache) -> None:
    instance = Instance(tmp_path, make_cache(tmp_path))
    path = await put_blob(instance.driver, BLOB)
    link = paths.layer_link("lib/app", LAYER)
    await instance.driver.put_content(link, str(LAYER).encode())
    for _ in range(5):
        assert await instance.size(path) == len(BLOB)
        assert await instance.exists(link)
    assert instance.stats == 2  # One fill each.
    assert await instance.store.repository("lib/app").blobs.stat(LAYER)
    assert instance.stats == 2
    await instance.driver.close()


async def test_not_found_and_mutable_files_always_reach_the_storage(
    tmp_path: Path, make_cache: MakeCache
) -> None:
    instance = Instance(tmp_path, make_cache(tmp_path))
    missing = paths.blob_data(digest(b"never pushed"))
    tag = paths.tag_current_link("app", "latest")
    await instance.driver.put_content(tag, str(LAYER).encode())
    for _ in range(3):
        assert not await instance.exists(missing)
        assert await instance.exists(tag)
        assert await instance.exists(paths.repository("app"))  # A folder.
    assert instance.stats == 9
    await instance.driver.close()


async def test_every_write_invalidates(tmp_path: Path, make_cache: MakeCache) -> None:
    instance = Instance(tmp_path, make_cache(tmp_path))
    driver = instance.driver
    path = paths.blob_data(LAYER)
    await driver.put_content(path, b"one")
    assert await instance.size(path) == 3
    await driver.put_content(path, b"three")  # Never done to a blob; still right.
    assert await instance.size(path) == 5
    writer = await driver.writer(path)
    await writer.write(b"seven!!")
    await writer.commit()
    await writer.close()
    assert await instance.size(path) == 7
    writer = await driver.writer(path, append=True)
    await writer.write(b"+1")
    await writer.commit()
    assert await instance.size(path) == 9
    await writer.rollback()
    await writer.close()
    assert await instance.size(path) == 7
    await driver.close()


# --- two instances, one Redis, one folder ---


async def test_a_link_written_through_one_is_seen_by_the_other_at_once(
    instances: list[Instance],
) -> None:
    a, b = instances
    await put_blob(a.driver, BLOB)
    repo_b = b.store.repository("app").blobs
    assert not await repo_b.is_linked(LAYER)
    await a.store.repository("app").blobs.link(LAYER)
    assert await repo_b.is_linked(LAYER)
    assert (await repo_b.stat(LAYER)).size == len(BLOB)


async def test_a_blob_deleted_through_one_is_gone_on_the_other_at_once(
    instances: list[Instance],
) -> None:
    a, b = instances
    path = await put_blob(a.driver, BLOB)
    link = paths.layer_link("app", LAYER)
    await a.driver.put_content(link, str(LAYER).encode())
    assert await b.exists(path) and await b.exists(link)
    stats = b.stats
    assert await b.exists(path) and await b.exists(link)
    assert b.stats == stats, "b answers from the cache"
    await a.store.repository("app").blobs.unlink(LAYER)
    await a.driver.delete(paths.blob_dir(LAYER))
    assert not await b.exists(link)
    assert not await b.exists(path)
    assert not await a.exists(path)


async def test_a_move_invalidates_source_and_destination(instances: list[Instance]) -> None:
    a, b = instances
    source = await put_blob(a.driver, b"source, eleven bytes")
    destination = await put_blob(a.driver, b"short")
    assert await b.size(source) == 20 and await b.size(destination) == 5  # Both cached.
    await a.driver.move(source, destination)
    assert not await b.exists(source)
    assert await b.size(destination) == 20


async def test_deleting_a_repository_invalidates_what_was_cached_under_it(
    instances: list[Instance],
) -> None:
    a, b = instances
    await put_blob(a.driver, BLOB)
    inside = [
        paths.layer_link("lib/app", LAYER),
        paths.revision_link("lib/app", LAYER),
        paths.layer_link("lib/app/nested", LAYER),  # Its folder is inside lib/app's.
    ]
    outside = [paths.layer_link("lib/other", LAYER), paths.layer_link("lib", LAYER)]
    for link in inside + outside:
        await a.driver.put_content(link, str(LAYER).encode())
        assert await b.exists(link)
    await a.driver.delete(paths.repository("lib/app"))
    for link in inside:
        assert not await b.exists(link), link
    stats = b.stats
    for link in outside:
        assert await b.exists(link), link
    assert b.stats == stats, "other repositories' answers stay cached"
    assert await b.exists(paths.blob_data(LAYER))
    await a.driver.delete(paths.REPOSITORIES)
    for link in outside:
        assert not await b.exists(link), link


async def test_deleting_inside_a_repository_or_above_everything(
    instances: list[Instance],
) -> None:
    a, b = instances
    path = await put_blob(a.driver, BLOB)
    layer, revision = paths.layer_link("app", LAYER), paths.revision_link("app", LAYER)
    for link in (layer, revision):
        await a.driver.put_content(link, str(LAYER).encode())
    assert await b.exists(layer) and await b.exists(revision) and await b.exists(path)
    await a.driver.delete(paths.layers("app"))
    assert not await b.exists(layer)
    assert await b.exists(revision)
    await a.driver.delete(paths.manifests("app"))
    assert not await b.exists(revision)
    assert await b.exists(path)
    await a.driver.delete("/docker")
    assert not await b.exists(path)


async def test_a_fill_that_raced_a_delete_is_refused(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """b read the storage before a deleted, and stores its answer after: turned away."""
    namespace = shared_namespace(tmp_path)
    a, b = redis_cache(redis_server, namespace), redis_cache(redis_server, namespace)
    info = FileInfo(paths.blob_data(LAYER), 7, time.time(), False)
    link = FileInfo(paths.layer_link("app", LAYER), 71, time.time(), False)
    revision = FileInfo(paths.revision_link("lib/app", LAYER), 71, time.time(), False)
    for invalidated, path, answer in (
        (paths.blob_dir(LAYER), info.path, info),  # A tombstone.
        (paths.repository("app"), link.path, link),  # A repository's generation.
        ("/docker", revision.path, revision),  # The namespace's generation.
    ):
        miss = await b.get(path)
        assert isinstance(miss, Miss)
        await a.delete(invalidated)
        await b.set(miss, answer)
        assert isinstance(await b.get(path), Miss), invalidated
        fresh = await b.get(path)
        assert isinstance(fresh, Miss)
        await b.set(fresh, answer)  # A lookup after the delete fills as usual.
        assert await b.get(path) == answer
    memory = MemoryStatCache()
    miss = await memory.get(info.path)
    assert isinstance(miss, Miss)
    await memory.delete(paths.blob_dir(LAYER))
    await memory.set(miss, info)
    assert isinstance(await memory.get(info.path), Miss)
    await a.close()
    await b.close()


async def test_every_key_has_a_ttl(tmp_path: Path, redis_server: RedisServer) -> None:
    namespace = shared_namespace(tmp_path)
    instance = Instance(tmp_path, redis_cache(redis_server, namespace, ttl=60))
    path = await put_blob(instance.driver, BLOB)
    link = paths.layer_link("a/b", LAYER)
    await instance.driver.put_content(link, str(LAYER).encode())
    assert await instance.exists(path) and await instance.exists(link)
    await instance.driver.delete(paths.repository("a/b"))
    with pytest.raises(PathNotFoundError):  # Invalidated all the same.
        await instance.driver.delete(paths.blob_dir(digest(b"gone")))
    await instance.driver.delete(paths.BLOBS)
    with redis_server.client() as client:
        keys = sorted(key.decode() for key in client.keys(f"{namespace}:*"))
        ttls = {key: client.ttl(key) for key in keys}
    assert sorted(keys) == sorted(
        [
            f"{namespace}:f:/blobs/sha256/{LAYER.hex[:2]}/{LAYER.hex}/data",
            f"{namespace}:f:/repositories/a/b/_layers/sha256/{LAYER.hex}/link",
            f"{namespace}:f:/blobs/sha256/{digest(b'gone').hex[:2]}/{digest(b'gone').hex}/data",
            f"{namespace}:g:a/b",
            f"{namespace}:g",
        ]
    )
    for key, ttl in ttls.items():
        limit = 120 if key.startswith(f"{namespace}:g") else 60
        assert limit - 5 < ttl <= limit, (key, ttl)
    await instance.driver.close()


async def test_the_collector_view_reads_the_storage_and_still_invalidates(
    instances: list[Instance],
) -> None:
    a, b = instances
    path = await put_blob(a.driver, BLOB)
    collector = a.driver.invalidating_only()
    stats = a.stats
    for _ in range(3):
        assert (await collector.stat(path)).size == len(BLOB)
    assert a.stats == stats + 3
    assert await b.exists(path)
    await collector.delete(paths.blob_dir(LAYER))
    assert not await b.exists(path)


async def test_separate_storage_keeps_separate_answers(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two registries on different folders, one Redis: a blob one has is not the other's."""
    one = Instance(tmp_path / "one", redis_cache(redis_server, shared_namespace(tmp_path / "one")))
    two = Instance(tmp_path / "two", redis_cache(redis_server, shared_namespace(tmp_path / "two")))
    path = await put_blob(one.driver, BLOB)
    assert await one.exists(path)
    assert not await two.exists(path)
    for instance in (one, two):
        await instance.driver.close()
    s3 = {"bucket": "b", "region": "r", "rootdirectory": "/x/"}
    same = [
        storage_identity("s3", {**s3, "regionendpoint": endpoint})
        for endpoint in ("http://S3.example:7480", "s3.example:7480", "https://s3.example:7480/")
    ]
    assert len(set(same)) == 1
    assert storage_identity("s3", {**s3, "rootdirectory": "x"}) == storage_identity("s3", s3)
    assert storage_identity("s3", {**s3, "rootdirectory": "y"}) != storage_identity("s3", s3)
    assert storage_identity("s3", {**s3, "bucket": "c"}) != storage_identity("s3", s3)


# --- Redis away ---


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == LOGGER and record.levelno == logging.WARNING
    ]


async def wait_until(check: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.05)
    pytest.fail("still not so after 10 s")


async def test_a_redis_that_dies_is_bypassed_with_one_warning_then_used_again(
    tmp_path: Path, private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    instance = Instance(tmp_path, redis_cache(private_redis, "dies", backoff=0.5))
    path = await put_blob(instance.driver, BLOB)
    other = await put_blob(instance.driver, b"another layer")
    assert await instance.exists(path) and await instance.exists(path)
    assert instance.stats == 1
    private_redis.kill()
    started = time.monotonic()
    for _ in range(20):
        assert await instance.size(path) == len(BLOB)
        assert not await instance.exists(paths.blob_data(digest(b"never")))
    await instance.driver.delete(paths.blob_dir(digest(b"another layer")))
    assert not await instance.exists(other)
    assert time.monotonic() - started < 2, "no waiting on a Redis that is gone"
    assert instance.stats == 1 + 40 + 1  # Every answer from storage meanwhile.
    assert len(warnings_of(caplog)) == 1, warnings_of(caplog)
    assert private_redis.addr in warnings_of(caplog)[0]
    assert private_redis.password not in caplog.text
    private_redis.start()
    await asyncio.sleep(0.6)

    async def cached_again() -> bool:
        before = instance.stats
        await instance.driver.stat(path)
        await instance.driver.stat(path)
        return instance.stats - before <= 1

    await wait_until(cached_again)
    with private_redis.client() as client:
        assert client.keys("dies:f:*")
    assert "answers again" in caplog.text
    assert len(warnings_of(caplog)) == 1
    await instance.driver.close()


async def test_a_frozen_redis_times_out_and_missed_invalidations_are_replayed(
    tmp_path: Path, private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that stops answering costs one short timeout, then nothing; what an
    instance deleted meanwhile is invalidated as soon as it reaches Redis again."""
    options = {"dial_timeout": 0.2, "timeout": 0.2, "backoff": 0.5}
    a = Instance(tmp_path, redis_cache(private_redis, "frozen", **options))
    b = Instance(tmp_path, redis_cache(private_redis, "frozen", **options))
    first = await put_blob(a.driver, BLOB)
    second = await put_blob(a.driver, b"second layer")
    for path in (first, second):
        assert await b.exists(path) and await a.exists(path)
    private_redis.freeze()
    try:
        started = time.monotonic()
        # Times out (Redis may still apply it once it wakes: it was sent).
        await a.driver.delete(paths.blob_dir(LAYER))
        assert not await a.exists(first)
        assert time.monotonic() - started < 1.5
        # Redis is left alone now: this invalidation waits in a, unsent.
        await a.driver.delete(paths.blob_dir(digest(b"second layer")))
        assert not await a.exists(second)
        assert time.monotonic() - started < 1.5
    finally:
        private_redis.thaw()
    assert len(warnings_of(caplog)) == 1
    # b reaches Redis, which a did not tell yet: the race the module's docstring owns to.
    assert await b.exists(second)
    await asyncio.sleep(0.6)
    await a.exists(paths.blob_data(digest(b"anything")))  # a reaches Redis: replays.
    assert not await b.exists(second)
    assert not await b.exists(first)
    for instance in (a, b):
        await instance.driver.close()


async def test_the_first_address_that_answers_is_used(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    cache = RedisStatCache(
        [dead, redis_server.addr], "addrs", password=redis_server.password, dial_timeout=0.5
    )
    instance = Instance(tmp_path, cache)
    path = await put_blob(instance.driver, BLOB)
    assert await instance.exists(path) and await instance.exists(path)
    assert instance.stats == 1
    assert cache.connection.addr == redis_server.addr
    await instance.driver.close()


async def test_tls_with_a_client_certificate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``redis.tls``: Redis's certificate checked against ``clientcas``, ours sent; without
    ours, Redis refuses the connection and the cache steps aside (with its one warning)."""
    files = RedisTLSFiles.make(tmp_path / "certs")
    server = RedisServer(tmp_path / "redis", require_redis(), tls=files).start()
    try:
        tls = RedisTLS(
            enabled=True,
            certificate=str(files.client_cert),
            key=str(files.client_key),
            clientcas=(str(files.ca_cert),),
        )
        check_tls_files(tls)
        instance = Instance(tmp_path / "data", redis_cache(server, "tls", tls=tls))
        path = await put_blob(instance.driver, BLOB)
        assert await instance.exists(path) and await instance.exists(path)
        assert instance.stats == 1
        with server.client() as client:
            assert client.keys("tls:f:*")
        await instance.driver.close()

        anonymous = RedisTLS(enabled=True, clientcas=(str(files.ca_cert),))
        refused = Instance(tmp_path / "data", redis_cache(server, "tls", tls=anonymous))
        assert await refused.exists(path) and await refused.exists(path)
        assert refused.stats == 2
        assert len(warnings_of(caplog)) == 1
        await refused.driver.close()
    finally:
        server.remove()
