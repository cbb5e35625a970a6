"""The catalog in Redis (``storage/redis_catalog.py``) held to the walk it stands for.

On a real ``redis-server`` (and, once, a real Ceph gateway); no mocks. An "instance"
is a store as a registry process builds it: its own driver on the shared storage,
its own stat cache and connection to the shared Redis, the same configuration.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from registry.config import CacheConfig, Config, RedisConfig, Secret, StorageConfig
from registry.reference import Digest
from registry.storage import Store, paths
from registry.storage.catalog import repositories
from registry.storage.catalog_index import IndexedCatalog, WalkedCatalog
from registry.storage.driver import (
    FileInfo,
    FileWriter,
    StorageDriver,
)
from registry.storage.driver.cached import CachedDriver
from registry.storage.driver.factory import storage_identity, with_cache
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.driver.inmemory import InMemoryDriver
from registry.storage.redis_cache import RedisStatCache, namespace_for
from registry.storage.redis_catalog import READY, RedisCatalog
from tests.services.ceph import CephS3
from tests.services.redis import RedisServer

from .conftest import make_s3, s3_leftovers
from .content import push_image

LOGGER = "registry.storage.redis_cache"


def everything(name: str) -> bool:
    return True


class Hooked(StorageDriver):
    """A driver that runs a test's code when the catalog's walk lists the top folder,
    or when something looks for a repository's ``_manifests``: races made on cue."""

    name: ClassVar[str] = "hooked"

    def __init__(self, inner: StorageDriver) -> None:
        self.inner = inner
        self.walks = 0
        self.on_walk: Callable[[], Awaitable[None]] | None = None
        self.on_manifests: Callable[[str], Awaitable[None]] | None = None

    async def _list(self, path: str) -> builtins.list[str]:
        children = await self.inner._list(path)
        if path == paths.REPOSITORIES:
            self.walks += 1
            if self.on_walk is not None:  # The top folder is listed: what it makes is missed.
                await self.on_walk()
        return children

    async def _stat(self, path: str) -> FileInfo:
        try:
            return await self.inner._stat(path)
        finally:
            if self.on_manifests is not None and path.endswith("/_manifests"):
                name = path.removeprefix(paths.REPOSITORIES + "/").removesuffix("/_manifests")
                await self.on_manifests(name)

    async def _get_content(self, path: str) -> bytes:
        return await self.inner._get_content(path)

    async def _put_content(self, path: str, content: bytes) -> None:
        await self.inner._put_content(path, content)

    def _read(self, path: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
        return self.inner._read(path, offset, length)

    async def _writer(self, path: str, append: bool) -> FileWriter:
        return await self.inner._writer(path, append)

    async def _move(self, source: str, destination: str) -> None:
        await self.inner._move(source, destination)

    async def _delete(self, path: str) -> None:
        await self.inner._delete(path)

    async def close(self) -> None:
        await self.inner.close()


def config_of(server: RedisServer, driver: str, parameters: dict[str, object]) -> Config:
    """``storage.cache.blobdescriptor: redis`` with this Redis."""
    return Config(
        storage=StorageConfig(
            driver=driver, parameters=parameters, cache=CacheConfig(blobdescriptor="redis")
        ),
        redis=RedisConfig(addrs=(server.addr,), password=Secret(server.password)),
    )


class Instance:
    """One registry process on the shared storage: a store with the catalog in Redis."""

    def __init__(
        self, server: RedisServer, root: Path, storage: StorageDriver | None = None, **options: Any
    ) -> None:
        parameters: dict[str, object] = {"rootdirectory": str(root)}
        self.server = server
        self.hooked = Hooked(storage or FilesystemDriver(str(root)))
        namespace = namespace_for(storage_identity("filesystem", parameters))
        cache = RedisStatCache([server.addr], namespace, password=server.password, **options)
        config = config_of(server, "filesystem", parameters)
        self.store = Store(CachedDriver(self.hooked, cache), config)
        assert isinstance(self.store.catalog, RedisCatalog)
        self.catalog: RedisCatalog = self.store.catalog
        self.raw = self.hooked.inner
        """The storage behind the registry's back."""

    async def listed(self, last: str | None = None) -> list[str]:
        names, more = await self.catalog.page(last, sys.maxsize, everything)
        assert not more
        return names

    async def walked(self) -> list[str]:
        return await repositories(self.raw)

    async def push(self, name: str, tag: str = "v1") -> Digest:
        digest, _ = await push_image(self.store.repository(name), tag)
        return digest

    def members(self) -> list[str]:
        """The set as Redis holds it, seen from outside; markers left out."""
        with self.server.client() as client:
            found = [member.decode() for member in client.zrange(self.catalog.key, 0, -1)]
        return [member for member in found if not member.startswith("!")]

    def ready(self) -> bool:
        with self.server.client() as client:
            return client.zscore(self.catalog.key, READY) is not None


@pytest.fixture
async def instances(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[list[Instance]]:
    """Two instances on one folder and one Redis."""
    made = [Instance(redis_server, tmp_path / "shared") for _ in range(2)]
    yield made
    for instance in made:
        await instance.store.close()


async def make_by_hand(driver: StorageDriver, name: str) -> None:
    """A repository as another program leaves it, written with the driver itself."""
    link = f"{paths.manifests(name)}/revisions/sha256/{'ab' * 32}/link"
    await driver.put_content(link, b"sha256:" + b"ab" * 32)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == LOGGER and record.levelno == logging.WARNING
    ]


# --- choosing the catalog ---


async def test_redis_as_the_cache_keeps_the_catalog_there_for_every_driver(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """As ``create_app`` builds it: the catalog shares the stat cache's connection and
    namespace; without Redis, the index or the walk as before."""
    parameters: dict[str, object] = {"rootdirectory": str(tmp_path)}
    config = config_of(redis_server, "filesystem", parameters)
    store = Store(with_cache(FilesystemDriver(str(tmp_path)), config), config)
    assert isinstance(store.catalog, RedisCatalog)
    assert isinstance(store.driver, CachedDriver)
    assert isinstance(store.driver.cache, RedisStatCache)
    assert store.catalog.connection is store.driver.cache.connection
    namespace = namespace_for(storage_identity("filesystem", parameters))
    assert store.catalog.key == f"{namespace}:catalog"
    await store.close()
    assert isinstance(Store(FilesystemDriver(str(tmp_path))).catalog, IndexedCatalog)
    assert isinstance(Store(InMemoryDriver()).catalog, WalkedCatalog)
    # No stat cache in the driver (a test's): a connection of its own, closed with it.
    alone = Store(InMemoryDriver(), config)
    assert isinstance(alone.catalog, RedisCatalog)
    await push_image(alone.repository("alone"), "v1")
    assert await alone.repositories() == ["alone"]
    await alone.close()
    assert alone.catalog.connection.closed


# --- pages ---


def ends_in(digit: str) -> Callable[[str], bool]:
    return lambda name: name.endswith(digit)


async def test_pages_and_last_and_n_are_the_walks(instances: list[Instance]) -> None:
    a, b = instances
    names = sorted([f"r{n:03}" for n in range(0, 60, 2)] + [f"team/r{n:02}" for n in range(12)])
    for name in names[:5]:
        await a.push(name)
    for name in names[5:]:
        await make_by_hand(a.raw, name)
    walk = WalkedCatalog(a.raw)
    # Not ready: the first page walks, and fills the set; the next ones read Redis.
    assert not b.ready()
    assert await b.catalog.page(None, 7, everything) == await walk.page(None, 7, everything)
    assert b.ready()
    assert b.members() == names
    walks = b.hooked.walks
    lasts = [None, "", "!", "!ready", " ", "0", "r", "r000", "r001", "r058", "r0580", "team",
             "team/", "team/r05", "team/r11", "z", "\U0001f600", "\udcff"]  # fmt: skip
    for last in lasts:
        for n in (0, 1, 2, 7, 29, 42, 43, 100, 1000, sys.maxsize):
            for keep in (everything, ends_in("2"), ends_in("x")):
                expected = await walk.page(last, n, keep)
                assert await b.catalog.page(last, n, keep) == expected, (last, n)
    seen: list[str] = []  # Page after page of 5: every name, in order, once.
    last = None
    while True:
        page, more = await b.catalog.page(last, 5, everything)
        seen += page
        if not more:
            break
        last = page[-1]
    assert seen == names
    assert b.hooked.walks == walks, "pages of a ready set never walk"
    assert await a.listed() == await b.listed() == await a.walked() == names


async def test_a_push_through_one_instance_is_listed_by_the_other_at_once(
    instances: list[Instance],
) -> None:
    a, b = instances
    assert await b.listed() == []
    assert b.ready()
    walks = b.hooked.walks
    digests = []
    for n in range(12):
        digests.append(await a.push(f"team/app{n:02}"))
        assert f"team/app{n:02}" in a.members()  # Before the PUT was answered.
        assert await b.listed() == [f"team/app{i:02}" for i in range(n + 1)]
    assert b.hooked.walks == walks
    # Deleting the last manifest leaves _manifests, so the name stays, as in registry:2.
    await a.store.repository("team/app03").manifests.delete(digests[3])
    await b.catalog.reindex()
    assert "team/app03" in await b.listed()
    assert await b.listed() == await b.walked()


async def test_a_tree_written_behind_the_back_is_listed_after_a_reindex(
    instances: list[Instance],
) -> None:
    """registry:2 on the same storage, a restore, a hand edit: the set follows at the
    next reindex, names added and names gone alike."""
    a, b = instances
    for name in ("kept", "team/kept"):
        await a.push(name)
    assert await b.listed() == ["kept", "team/kept"]
    for name in ("hand", "team/hand", "team/deep/hand"):
        await make_by_hand(a.raw, name)
    await a.raw.delete(paths.repository("kept"))
    assert await b.listed() == ["kept", "team/kept"]  # From the set, until a reindex.
    await a.catalog.reindex()
    expected = ["hand", "team/deep/hand", "team/hand", "team/kept"]
    assert await b.listed() == await a.listed() == await b.walked() == expected
    assert b.members() == expected
    await a.raw.delete(paths.repository("team"))
    await b.catalog.reindex()
    assert await a.listed() == await a.walked() == ["hand"]
    await a.push("team/kept", "v2")  # And back again, at once.
    assert await b.listed() == ["hand", "team/kept"]


async def test_a_name_created_during_a_reindex_is_kept(instances: list[Instance]) -> None:
    """Pushes that race the walk, made on cue: one while the walk lists (not in the
    snapshot), one re-made just before the check that would remove it, one between
    that check and the removal."""
    a, b = instances
    for name in ("early", "recheck", "racing"):
        await a.push(name)
    assert await a.listed() == ["early", "racing", "recheck"]
    await b.raw.delete(paths.repository("recheck"))
    await b.raw.delete(paths.repository("racing"))

    async def during_walk() -> None:
        a.hooked.on_walk = None
        await b.push("during")  # After the snapshot, and missed by the walk.
        await b.push("recheck", "v2")  # Missed by the walk, found by the check.

    racing: list[str] = []

    async def after_check(name: str) -> None:
        if name == "recheck":
            assert "recheck" in a.members(), "never taken out, even for a moment"
        if name == "racing" and not racing:
            racing.append(name)
            await b.push("racing", "v2")  # The check said "gone" just before.

    a.hooked.on_walk = during_walk
    a.hooked.on_manifests = after_check
    try:
        await a.catalog.reindex()
    finally:
        a.hooked.on_manifests = None
    assert racing == ["racing"]
    assert await b.listed() == await b.walked() == ["during", "early", "racing", "recheck"]
    assert a.ready()


async def test_pages_waiting_for_a_fill_share_its_walk(instances: list[Instance]) -> None:
    """A new deployment: pages that arrive while the first one walks wait for it, and
    read the set it filled, rather than each walking the whole tree again."""
    a, _ = instances
    for name in ("p", "q", "r"):
        await make_by_hand(a.raw, name)
    release = asyncio.Event()
    walking = asyncio.Event()

    async def hold() -> None:
        walking.set()
        await release.wait()

    a.hooked.on_walk = hold
    first = asyncio.create_task(a.catalog.page(None, 2, everything))
    await walking.wait()
    a.hooked.on_walk = None
    others = [asyncio.create_task(a.catalog.page(last, 2, everything)) for last in (None, "p")]
    await asyncio.sleep(0.2)  # They find no marker, and wait (a local Redis answers in µs).
    release.set()
    assert await first == (["p", "q"], True)
    assert [await other for other in others] == [(["p", "q"], True), (["q", "r"], False)]
    assert a.hooked.walks == 1


# --- Redis away, emptied, or losing the set ---


async def test_a_redis_that_dies_leaves_the_catalog_to_the_walk(
    tmp_path: Path, private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Pages stay complete and pushes succeed, with one warning; Redis back without
    its data: pages walk until one of them has filled the set again."""
    caplog.set_level(logging.INFO)
    options = {"dial_timeout": 0.2, "timeout": 0.2, "backoff": 0.2}
    a = Instance(private_redis, tmp_path, **options)
    b = Instance(private_redis, tmp_path, **options)
    for name in ("one", "two"):
        await a.push(name)
    assert await b.listed() == ["one", "two"]
    private_redis.kill()
    for n in range(3):
        await a.push(f"while-down{n}")  # Its ZADD fails: remembered.
        await make_by_hand(a.raw, f"by-hand{n}")
        for instance in (a, b):
            assert await instance.listed() == await instance.walked()
            expected = await WalkedCatalog(a.raw).page("one", 1, everything)
            assert await instance.catalog.page("one", 1, everything) == expected
    await a.catalog.reindex()  # Nothing to fill: the walk alone, and no error.
    assert len(warnings_of(caplog)) == 2, warnings_of(caplog)  # One per process.
    assert private_redis.password not in caplog.text
    private_redis.start()  # Empty: the set and its marker are gone.
    await asyncio.sleep(0.3)
    expected = await a.walked()
    assert await b.listed() == expected  # Walked, and filled.
    assert b.ready()
    assert b.members() == expected
    assert await a.listed() == expected
    assert "answers again" in caplog.text
    assert len(warnings_of(caplog)) == 2
    for instance in (a, b):
        await instance.store.close()


async def test_names_pushed_while_redis_is_away_are_added_when_it_answers(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    """Redis frozen (its data kept): a's ZADD times out, the next is not even tried;
    b still reads the set that misses them, until a reaches Redis again."""
    options = {"dial_timeout": 0.2, "timeout": 0.2, "backoff": 0.2}
    a = Instance(private_redis, tmp_path, **options)
    b = Instance(private_redis, tmp_path, **options)
    await a.push("before")
    assert await b.listed() == ["before"]
    private_redis.freeze()
    try:
        await a.push("timed-out")
        await a.push("not-tried")
    finally:
        private_redis.thaw()
    assert "not-tried" not in b.members()
    assert "not-tried" not in await b.listed()  # The staleness the module's docstring owns to.
    await asyncio.sleep(0.3)
    await a.catalog.page(None, 1, everything)  # a reaches Redis: replays first.
    assert await b.listed() == await b.walked() == ["before", "not-tried", "timed-out"]
    for instance in (a, b):
        await instance.store.close()


async def test_a_flushed_redis_falls_back_to_the_walk_until_refilled(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    a, b = Instance(private_redis, tmp_path), Instance(private_redis, tmp_path)
    for name in ("x", "y/z"):
        await a.push(name)
    await a.catalog.reindex()
    assert a.ready()
    for refill in ("reindex", "page"):
        with private_redis.client() as client:
            client.flushall()
        await make_by_hand(a.raw, f"hand-{refill}")
        walks = b.hooked.walks
        if refill == "reindex":  # The maintenance work's.
            await a.catalog.reindex()
        else:  # No marker: the page is the walk's, which fills the set.
            assert await b.catalog.page(None, 1, everything) == (["hand-page"], True)
            assert b.hooked.walks == walks + 1
        assert a.ready()
        assert a.members() == await a.walked()
        walks = b.hooked.walks
        assert await b.listed() == await b.walked()
        assert b.hooked.walks == walks
    for instance in (a, b):
        await instance.store.close()


async def test_a_set_lost_during_the_walk_is_not_marked_ready(instances: list[Instance]) -> None:
    """Names pushed before the loss would be missing: only a walk that began after it
    may mark the set ready."""
    a, b = instances
    await a.push("first")

    async def lose_the_set() -> None:
        a.hooked.on_walk = None
        await b.push("pushed")  # Listed by no walk so far...
        with a.server.client() as client:
            client.delete(a.catalog.key)  # ...and gone from Redis.

    a.hooked.on_walk = lose_the_set
    assert await a.listed() == ["first"]  # The walk's answer, from before the push.
    assert not a.ready()
    assert await b.listed() == ["first", "pushed"]  # Not ready: walked, and filled.
    assert a.ready()
    assert a.members() == ["first", "pushed"]


# --- S3 ---


async def test_two_instances_on_one_bucket_share_the_catalog(
    tmp_path: Path, ceph_s3: CephS3, redis_server: RedisServer
) -> None:
    """On a real Ceph gateway: pushes through one listed by the other at once, a tree
    written behind the registry's back listed after a reindex, pages as the walk's."""
    first = make_s3(tmp_path, ceph_s3)
    parameters = {"rootdirectory": first.prefix}  # type: ignore[attr-defined]
    second = make_s3(tmp_path, ceph_s3, **parameters)
    config = config_of(
        redis_server, "s3", {**ceph_s3.driver_parameters("registry-tests"), **parameters}
    )
    a = Store(with_cache(first, config), config)
    b = Store(with_cache(second, config), config)
    assert isinstance(a.catalog, RedisCatalog) and isinstance(b.catalog, RedisCatalog)
    assert a.catalog.key == b.catalog.key
    try:
        for name in ("s3/one", "s3/two"):
            await push_image(a.repository(name), "v1")
            assert name in await b.repositories()
        await make_by_hand(second, "s3/by-hand")
        await first.delete(paths.repository("s3/one"))
        assert await b.repositories() == ["s3/one", "s3/two"]
        await b.catalog.reindex()
        assert await a.repositories() == await repositories(first) == ["s3/by-hand", "s3/two"]
        walk = WalkedCatalog(first)
        for last in (None, "s3", "s3/by-hand", "s3/two"):
            for n in (0, 1, 2, 3):
                assert await a.catalog.page(last, n, everything) == await walk.page(
                    last, n, everything
                )
    finally:
        await first.delete("/docker")
        assert await s3_leftovers(first) == []
        await a.close()
        await b.close()
