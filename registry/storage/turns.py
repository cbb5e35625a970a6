"""Work done once per deployment, not once per instance: upload purging, online garbage
collection, the catalog's walk.

Every instance on the same storage (a folder, a bucket) runs the same timers; before a
job runs, its instance takes the job's *turn*: a small file under ``_maintenance/``
(beside ``repositories/``, where registry:2 never looks) holding when the job last
ran. The turn is the storage driver's one-appender lock on that file (``flock`` on a
filesystem, a conditional-PUT lock object on S3), held while the job runs, so two
instances never run it at once; a job that ran less than its interval ago (by any
instance) is not run again. An instance that dies holding a turn frees it at once on a
filesystem (the kernel drops the lock) and after the lock's lease on S3 (5 minutes).

Nothing here needs Redis: the storage every instance already shares is enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable

from . import paths
from .driver import BusyError, PathNotFoundError, StorageDriver, StorageDriverError

log = logging.getLogger(__name__)

FOLDER = f"{paths.ROOT}/_maintenance"
#: Checks of a turn are spread by up to this share of the interval, so instances
#: started together do not all ask at once.
JITTER = 0.1


def _identity() -> str:
    """This process, as a stamp names it and an operator finds it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _stamp() -> bytes:
    return json.dumps({"at": time.time(), "by": _identity()}).encode()


def _last_run(content: bytes) -> tuple[float, str]:
    """When the job last ran, and where ('' if never, or unreadable: due now)."""
    try:
        stamp = json.loads(content)
        return float(stamp["at"]), str(stamp.get("by", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return 0.0, ""


class Turns:
    """Which instance runs a job now; one per process."""

    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver

    def _path(self, job: str) -> str:
        return f"{FOLDER}/{job}"

    async def run(self, job: str, interval: float, work: Callable[[], Awaitable[object]]) -> float:
        """Run ``work`` if ``job`` is due and no other process runs it; the seconds until
        it is due again (as far as this process can tell)."""
        path = self._path(job)
        try:
            content = await self.driver.get_content(path)
        except PathNotFoundError:
            content = b""
            with contextlib.suppress(StorageDriverError):
                await self.driver.put_content(path, b"")
        wait = _last_run(content)[0] + interval - time.time()
        if wait > 0:
            return wait
        try:
            holder = await self.driver.writer(path, append=True)
        except (BusyError, PathNotFoundError):
            return interval  # Another process has the turn (or just renewed the file).
        try:
            # Read again under the lock: another process may have run it meanwhile.
            last, by = _last_run(await self.driver.get_content(path))
            wait = last + interval - time.time()
            if wait > 0:
                return wait
            if by != _identity():
                # Said when the job moves here (not at every run), so an operator sees
                # which instance does the deployment's maintenance.
                log.info("%s: runs in this process now (before: %s)", job, by or "nowhere")
            try:
                await work()
            finally:
                await self.driver.put_content(path, _stamp())
        finally:
            with contextlib.suppress(StorageDriverError):
                await holder.close()
        return interval

    async def every(
        self, job: str, interval: float, work: Callable[[], Awaitable[object]]
    ) -> None:
        """Run ``job`` every ``interval`` seconds across all processes sharing the storage."""
        while True:
            try:
                wait = await self.run(job, interval, work)
            except StorageDriverError as error:
                log.warning("%s: cannot take its turn (%s); trying again later", job, error)
                wait = interval
            await asyncio.sleep(max(wait, 0.0) + random.uniform(0, JITTER * interval))
