"""Build a driver from its config section; an unknown name is an error, never a fake."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from . import StorageDriver
from .filesystem import FilesystemDriver
from .inmemory import InMemoryDriver
from .instrumented import InstrumentedDriver, Observe

if TYPE_CHECKING:
    from ...config import Config

DriverFactory = Callable[[Mapping[str, object]], StorageDriver]


def _filesystem(parameters: Mapping[str, object]) -> StorageDriver:
    return FilesystemDriver(str(parameters["rootdirectory"]), fsync=parameters.get("fsync") is True)


def _inmemory(parameters: Mapping[str, object]) -> StorageDriver:
    return InMemoryDriver()


def _s3(parameters: Mapping[str, object]) -> StorageDriver:
    from ...config import Secret
    from .s3 import S3Driver  # aiobotocore is imported where S3 is used, not by every start.

    arguments = {
        name: value.reveal() if isinstance(value, Secret) else value
        for name, value in parameters.items()
    }
    return S3Driver(**arguments)  # type: ignore[arg-type]  # config.py typed each value.


DRIVERS: Mapping[str, DriverFactory] = {
    "filesystem": _filesystem,
    "inmemory": _inmemory,
    "s3": _s3,
}


def create_driver(
    name: str, parameters: Mapping[str, object], *, observe: Observe | None = None
) -> StorageDriver:
    """The named driver; with ``observe``, its actions are timed for the metrics."""
    try:
        factory = DRIVERS[name]
    except KeyError:
        raise ValueError(f"unknown storage driver {name!r}") from None
    driver = factory(parameters)
    return driver if observe is None else InstrumentedDriver(driver, observe)


def storage_identity(name: str, parameters: Mapping[str, object]) -> str:
    """What tells one storage from another, for a cache shared by several registries:
    the filesystem folder; S3's endpoint (as host:port), bucket and root directory;
    a storage one process holds is its own."""
    if name == "filesystem":
        return f"filesystem:{os.path.realpath(str(parameters['rootdirectory']))}"
    if name == "s3":
        endpoint = str(parameters.get("regionendpoint") or f"aws:{parameters.get('region')}")
        endpoint = re.sub(r"^https?://", "", endpoint.lower()).rstrip("/")
        root = str(parameters.get("rootdirectory") or "").strip("/")
        return f"s3:{endpoint}/{parameters['bucket']}/{root}"
    return f"{name}:{uuid.uuid4().hex}"


def with_cache(driver: StorageDriver, config: Config, *, lookups: bool = True) -> StorageDriver:
    """``driver`` behind the ``stat`` cache ``storage.cache.blobdescriptor`` asks for (none:
    ``driver`` itself). ``lookups=False``: a command's (``garbage-collect``), which only
    invalidates what it changes in Redis; a process's own cache needs nothing then."""
    from ...config import INMEMORY_TTL
    from .cached import CachedDriver, MemoryStatCache, StatCache

    kind = config.storage.cache.blobdescriptor
    if isinstance(driver, CachedDriver):
        return driver
    cache: StatCache
    if kind == "inmemory" and lookups:
        cache = MemoryStatCache(config.storage.cache.blobdescriptorsize, INMEMORY_TTL)
    elif kind == "redis":
        from ..redis_cache import RedisStatCache, namespace_for  # redis-py: only when used.

        identity = storage_identity(config.storage.driver, config.storage.parameters)
        cache = RedisStatCache.from_config(config.redis, namespace_for(identity))
    else:
        return driver
    return CachedDriver(driver, cache, lookups=lookups)
