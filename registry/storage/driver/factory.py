"""Build a driver from its config section; an unknown name is an error, never a fake."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from . import StorageDriver
from .filesystem import FilesystemDriver
from .inmemory import InMemoryDriver
from .instrumented import InstrumentedDriver, Observe

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
