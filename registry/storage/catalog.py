"""The repository list: every folder under ``repositories/`` that holds ``_manifests``.

The same rule registry:2 uses, so both list the same repositories from one tree.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from . import paths
from .driver import PathNotFoundError, StorageDriver


async def folders(driver: StorageDriver, prefix: str = "") -> AsyncIterator[tuple[str, list[str]]]:
    """Every folder below ``repositories/`` as (name, its children), skipping ``_`` folders."""
    base = f"{paths.REPOSITORIES}/{prefix}" if prefix else paths.REPOSITORIES
    try:
        children = await driver.list(base)
    except PathNotFoundError:
        return
    if prefix:
        yield prefix, children
    for child in children:
        if not child.startswith("_"):
            async for found in folders(driver, f"{prefix}/{child}" if prefix else child):
                yield found


async def repositories(driver: StorageDriver) -> list[str]:
    """All repository names, sorted."""
    return sorted([name async for name, children in folders(driver) if "_manifests" in children])


def page(names: list[str], last: str | None, limit: int | None) -> tuple[list[str], bool]:
    """Names after ``last`` (exclusive), at most ``limit``; and whether more follow."""
    if last:
        names = [name for name in names if name > last]
    if limit is None or len(names) <= limit:
        return names, False
    return names[:limit], True
