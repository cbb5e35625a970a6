"""Purge abandoned upload sessions (registry:2's ``storage.maintenance.uploadpurging``)."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from . import paths
from .catalog import folders
from .driver import PathNotFoundError, StorageDriver

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PurgeResult:
    purged: list[str]
    kept: int


def _started_at(text: bytes) -> float | None:
    try:
        return datetime.fromisoformat(text.decode().strip().replace("Z", "+00:00")).timestamp()
    except (UnicodeDecodeError, ValueError):
        return None


async def _upload_dirs(driver: StorageDriver) -> list[tuple[str, str]]:
    """(repository, upload id) of every session, in repositories with or without manifests."""
    return [
        (name, upload_id)
        async for name, children in folders(driver)
        if "_uploads" in children
        for upload_id in await driver.list(paths.uploads(name))
    ]


async def _modified(driver: StorageDriver, name: str, upload_id: str) -> float | None:
    """When the session last changed: the time of its data file, since a folder's
    time is not part of the driver contract (the in-memory driver has none)."""
    for path in (paths.upload_data(name, upload_id), paths.upload_dir(name, upload_id)):
        try:
            return (await driver.stat(path)).modified
        except PathNotFoundError:
            continue
    return None


async def purge_uploads(
    driver: StorageDriver, older_than: float, *, dry_run: bool = False, now: float | None = None
) -> PurgeResult:
    """Delete sessions started more than ``older_than`` seconds ago."""
    now = time.time() if now is None else now
    purged: list[str] = []
    kept = 0
    for name, upload_id in await _upload_dirs(driver):
        started: float | None
        try:
            started = _started_at(
                await driver.get_content(paths.upload_started_at(name, upload_id))
            )
        except PathNotFoundError:
            started = None
        if started is None:
            started = await _modified(driver, name, upload_id)
            if started is None:
                continue
        if now - started < older_than:
            kept += 1
            continue
        purged.append(f"{name}/{upload_id}")
        if not dry_run:
            with contextlib.suppress(PathNotFoundError):
                await driver.delete(paths.upload_dir(name, upload_id))
    return PurgeResult(purged, kept)
