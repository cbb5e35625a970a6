"""Every storage test runs once per driver: add a driver to DRIVERS and it is covered.

Each test may write only below the folders in TEST_ROOTS. Teardown deletes
them and then fails if the driver still holds anything at all, temporary files
included (distribution's ``TearDownTest``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from registry.storage import Store
from registry.storage.driver import PathNotFoundError, StorageDriver
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.driver.inmemory import InMemoryDriver

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


def inmemory_leftovers(driver: StorageDriver) -> list[str]:
    assert isinstance(driver, InMemoryDriver)
    return sorted(driver._files)


@dataclass(frozen=True)
class DriverCase:
    name: str
    make: Callable[[Path], StorageDriver]
    leftovers: Callable[[StorageDriver], list[str]] | None = None
    """Everything the backend holds, seen from outside the driver: files as
    driver paths, folders (where the backend has them) with a trailing ``/``.
    Without it, the tests look through the driver's own ``list``."""


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
        return case.leftovers(driver)
    return sorted([path for root in TEST_ROOTS for path in await walk(driver, root)])


DRIVERS = [
    DriverCase("inmemory", lambda tmp: InMemoryDriver(), inmemory_leftovers),
    DriverCase("filesystem", lambda tmp: FilesystemDriver(str(tmp / "root")), filesystem_leftovers),
]


@pytest.fixture(params=DRIVERS, ids=[case.name for case in DRIVERS])
def driver_case(request: pytest.FixtureRequest) -> DriverCase:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def driver(driver_case: DriverCase, tmp_path: Path) -> AsyncIterator[StorageDriver]:
    driver = driver_case.make(tmp_path)
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
