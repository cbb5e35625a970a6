"""Every storage test runs once per driver: add a driver to DRIVERS and it is covered.

Each test may write only below the folders in TEST_ROOTS. Teardown deletes
them and then fails if the driver still holds anything at all, temporary files
included (distribution's ``TearDownTest``). The s3 case runs on a real Ceph
RADOS Gateway (started once per session), each test under a root directory
of its own in one bucket; there, in-progress multipart uploads count too. The
filesystem+redis case is the filesystem behind the ``stat`` cache in a real Redis
(one per session), each test with a key namespace of its own: every suite test
passes through the cache.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from registry.storage import Store
from registry.storage.driver import PathNotFoundError, StorageDriver
from registry.storage.driver.cached import CachedDriver
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.driver.inmemory import InMemoryDriver
from tests.services.ceph import TEST_BUCKET, CephS3
from tests.services.redis import RedisServer

#: The only top-level folders a test may create: the suite's own and the registry's.
TEST_ROOTS = ("/suite", "/docker")


def filesystem_leftovers(driver: StorageDriver) -> list[str]:
    assert isinstance(driver, FilesystemDriver)
    found = []
    for folder, dirs, files in os.walk(driver.root):
        where = "/" + os.path.relpath(folder, driver.root).removeprefix(".").lstrip("/")
        where = where.rstrip("/")
        found += [f"{where}/{name}/" for name in dirs]
        found += [f"{where}/{name}" for name in files]
    return sorted(found)


def make_cached_filesystem(tmp: Path, redis: RedisServer, **settings: Any) -> CachedDriver:
    """The filesystem behind a Redis ``stat`` cache, in a key namespace of the test's own."""
    from registry.storage.redis_cache import RedisStatCache

    cache = RedisStatCache(
        [redis.addr],
        f"suite-{uuid.uuid4().hex[:12]}",
        password=redis.password,
        **settings,
    )
    return CachedDriver(FilesystemDriver(str(tmp / "root")), cache)


def cached_filesystem_leftovers(driver: StorageDriver) -> list[str]:
    assert isinstance(driver, CachedDriver)
    return filesystem_leftovers(driver.inner)


def inmemory_leftovers(driver: StorageDriver) -> list[str]:
    assert isinstance(driver, InMemoryDriver)
    return sorted(driver._files)


def make_s3(tmp: Path, gateway: CephS3, **settings: Any) -> StorageDriver:
    """A driver under a root directory of its own; parts at S3's 5 MiB minimum, so the
    suite's 6 MiB streams go through multipart uploads (and moves above 5 MiB too)."""
    from registry.storage.driver.s3 import MIN_PART, S3Driver

    parameters: dict[str, Any] = {
        **gateway.driver_parameters(TEST_BUCKET, f"/suite-{uuid.uuid4().hex[:12]}"),
        "chunksize": MIN_PART,
        "multipartcopychunksize": MIN_PART,
        "multipartcopythresholdsize": MIN_PART,
        **settings,
    }
    return S3Driver(**parameters)


async def s3_leftovers(driver: StorageDriver) -> list[str]:
    """Every object under the driver's root directory, locks included, and every
    multipart upload in progress there, listed raw (not through the driver's methods)."""
    from registry.storage.driver.s3 import S3Driver

    assert isinstance(driver, S3Driver)
    client = await driver._client()
    prefix = driver.key("/")
    found = []
    token: dict[str, str] = {}
    while True:
        page = await client.list_objects_v2(Bucket=driver.bucket, Prefix=prefix, **token)
        found += ["/" + item["Key"][len(prefix) :] for item in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            break
        token = {"ContinuationToken": page["NextContinuationToken"]}
    uploads = await client.list_multipart_uploads(Bucket=driver.bucket, Prefix=prefix)
    found += [
        f"/{upload['Key'][len(prefix) :]} (multipart upload {upload['UploadId']})"
        for upload in uploads.get("Uploads", [])
    ]
    return sorted(found)


@dataclass(frozen=True)
class DriverCase:
    name: str
    make: Callable[..., StorageDriver]
    """Called with the test's temporary folder, then the ``service`` fixture's value."""
    leftovers: Callable[[StorageDriver], list[str] | Awaitable[list[str]]] | None = None
    """Everything the backend holds, seen from outside the driver: files as
    driver paths, folders (where the backend has them) with a trailing ``/``.
    Without it, the tests look through the driver's own ``list``."""
    service: str | None = None
    """A (session) fixture the driver needs: a server to store in."""


async def walk(driver: StorageDriver, path: str) -> list[str]:
    """Every file below ``path``, found through the driver itself."""
    try:
        children = await driver.list(path)
    except PathNotFoundError:
        try:
            await driver.stat(path)
        except PathNotFoundError:
            return []
        return [path]
    found = []
    for child in children:
        found += await walk(driver, f"{path}/{child}")
    return found


async def stored(case: DriverCase, driver: StorageDriver) -> list[str]:
    """Every file (and folder) the driver holds, temporary files included where visible."""
    if case.leftovers is not None:
        found = case.leftovers(driver)
        return await found if inspect.isawaitable(found) else found
    return sorted([path for root in TEST_ROOTS for path in await walk(driver, root)])


DRIVERS = [
    DriverCase("inmemory", lambda tmp: InMemoryDriver(), inmemory_leftovers),
    DriverCase("filesystem", lambda tmp: FilesystemDriver(str(tmp / "root")), filesystem_leftovers),
    DriverCase("s3", make_s3, s3_leftovers, service="ceph_s3"),
    DriverCase(
        "filesystem+redis",
        make_cached_filesystem,
        cached_filesystem_leftovers,
        service="redis_server",
    ),
]


@pytest.fixture(params=DRIVERS, ids=[case.name for case in DRIVERS])
def driver_case(request: pytest.FixtureRequest) -> DriverCase:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def driver(
    driver_case: DriverCase, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[StorageDriver]:
    services = [request.getfixturevalue(driver_case.service)] if driver_case.service else []
    driver = driver_case.make(tmp_path, *services)
    yield driver
    for root in TEST_ROOTS:
        with contextlib.suppress(PathNotFoundError):
            await driver.delete(root)
        with pytest.raises(PathNotFoundError):
            await driver.list(root)
    assert await stored(driver_case, driver) == [], "the driver did not clean up"
    await driver.close()


@pytest.fixture
def store(driver: StorageDriver) -> Store:
    return Store(driver)
