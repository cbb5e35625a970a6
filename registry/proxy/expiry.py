"""Cached repositories that nothing pulled for ``expire`` are removed; the garbage
collector then takes their blobs.

* **When a repository was last pulled** is a stamp per repository,
  ``_proxy/<name>/_pulled`` (``{"at": unix time}``) beside ``repositories/``, where
  registry:2 never looks. It goes through the storage driver, so every worker and
  instance on the same folder or bucket shares it and a restart keeps it; the time is
  in the file, not its modification time, which a copy of the storage may not keep.
* **Not a write per pull**: a process writes a repository's stamp at most once per
  :func:`period` (a tenth of ``expire``, at most an hour). A stamp is then late by less
  than a tenth of ``expire``: never enough to remove a repository in use.
* **The removal runs once per deployment** (``registry.storage.turns``), every
  :func:`period` of the shortest ``expire``. It looks only at repositories an upstream
  serves, never at the registry's own. A repository without a stamp (cached before
  expiry was configured, or by registry:2) gets one then: its time starts at the first
  run that sees it, so an upgrade removes nothing at once.
* **What goes** is what deleting the repository takes: ``_manifests`` (tags and
  revisions), ``_layers`` and ``_referrers``, and the stamp. ``_uploads`` stays (a pull
  through in progress writes there; upload purging takes abandoned ones), and so do
  the blobs: another repository may use them, and only the garbage collector
  (``registry garbage-collect``, or online ``storage.maintenance.gc``) can tell, with
  its grace for pushes racing it. A pull afterwards fetches from the upstream again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..config import ProxyUpstream
from ..storage import Store, paths
from ..storage.driver import PathNotFoundError, StorageDriver, StorageDriverError
from .routing import route

log = logging.getLogger(__name__)

#: The longest a stamp may lag behind the last pull, and the longest between two runs.
MAX_PERIOD = 3600.0
#: Stamps written by this process that are remembered before the stale ones are dropped.
REMEMBERED = 10_000


def period(expire: float) -> float:
    """How often a stamp is rewritten, and the expiry runs, for ``expire``."""
    return min(MAX_PERIOD, expire / 10)


async def read_stamp(driver: StorageDriver, name: str) -> float | None:
    """When ``name`` was last pulled; None when nobody recorded it (or unreadable)."""
    try:
        content = await driver.get_content(paths.proxy_pulled(name))
        return float(json.loads(content)["at"])
    except PathNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None


async def write_stamp(driver: StorageDriver, name: str, at: float) -> None:
    await driver.put_content(paths.proxy_pulled(name), json.dumps({"at": at}).encode())


@dataclass
class PullStamps:
    """This process's record of pulls: a stamp write per repository per :func:`period`."""

    driver: StorageDriver
    clock: Callable[[], float] = time.time
    """The time written in the stamp."""
    monotonic: Callable[[], float] = time.monotonic
    """The time the throttle counts in (a wall clock set back must not stop stamps)."""
    written: dict[str, float] = field(default_factory=dict)
    """Repository name -> when this process last wrote its stamp (``monotonic``)."""

    async def pulled(self, name: str, expire: float) -> None:
        """Record a pull of ``name``; storage failures are logged, never fail the pull."""
        if expire <= 0:
            return  # Never removed: nothing to record.
        now = self.monotonic()
        last = self.written.get(name)
        if last is not None and now - last < period(expire):
            return
        self.written[name] = now  # Before the write: concurrent pulls write once.
        if len(self.written) > REMEMBERED:
            self.written = {
                known: at for known, at in self.written.items() if now - at < MAX_PERIOD
            }
        try:
            await write_stamp(self.driver, name, self.clock())
        except StorageDriverError as error:
            self.written.pop(name, None)
            log.warning("proxy: %s: cannot record the pull (%s)", name, error)


def _days(seconds: float) -> str:
    return f"{seconds / 86400:.1f} days" if seconds >= 86400 else f"{seconds / 3600:.1f} h"


@dataclass
class Expiry:
    """The removal of cached repositories nothing pulled for their upstream's ``expire``."""

    store: Store
    upstreams: Sequence[ProxyUpstream]
    clock: Callable[[], float] = time.time

    @property
    def enabled(self) -> bool:
        return any(upstream.expire > 0 for upstream in self.upstreams)

    @property
    def interval(self) -> float:
        """How often :meth:`run` is due: removals are late by at most a tenth of ``expire``."""
        return period(min(upstream.expire for upstream in self.upstreams if upstream.expire > 0))

    async def run(self) -> list[str]:
        """One pass over the catalog; the repositories removed."""
        now = self.clock()
        removed = []
        for name in await self.store.repositories():
            target = route(self.upstreams, name)
            if target is None or target.upstream.expire <= 0:
                continue  # The registry's own, or kept forever.
            try:
                if await self._expire(name, target.upstream.expire, now):
                    removed.append(name)
            except StorageDriverError as error:
                log.warning("proxy: %s: cannot remove the expired repository (%s)", name, error)
        if removed:
            await self.store.catalog.reindex()  # Gone from the catalog at once.
        return removed

    async def _expire(self, name: str, expire: float, now: float) -> bool:
        driver = self.store.driver
        last = await read_stamp(driver, name)
        if last is None:
            await write_stamp(driver, name, now)
            return False
        idle = now - last
        if idle < expire:
            return False
        # Manifests first: no tag then names a manifest whose layers are gone.
        for path in (
            paths.manifests(name),
            paths.layers(name),
            paths.all_referrers(name),
            paths.proxy_pulled(name),
        ):
            with contextlib.suppress(PathNotFoundError):
                await driver.delete(path)
        log.info(
            "proxy: %s expired: not pulled for %s (expire: %s); its manifests and tags are "
            "removed, its blobs go at the next garbage collection",
            name, _days(idle), _days(expire),
        )  # fmt: skip
        return True
