"""What ``registry garbage-collect`` shows a person: a progress bar on a terminal, and a summary."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TextIO

from . import gc as gc_module
from .driver import StorageDriver, StorageDriverError
from .gc import RECHECK, GarbageCollector, GCOptions, GCResult, format_items

log = logging.getLogger(__name__)

_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(size: int) -> str:
    value = float(size)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    if seconds and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


class ProgressBar:
    """One line redrawn in place (``\\r``): the phase, a bar and its counts.

    Only for a terminal: redrawn at most ten times a second, and erased by
    :meth:`close` so the summary starts on a clean line.
    """

    WIDTH = 28

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._drawn = 0.0
        self._phase = ""
        self._length = 0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if phase == self._phase and done < total and now - self._drawn < 0.1:
            return
        self._phase, self._drawn = phase, now
        filled = self.WIDTH * done // total if total else self.WIDTH
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        line = f"{phase:<32} [{bar}] {done}/{total}"
        self.stream.write("\r" + line.ljust(self._length))
        self.stream.flush()
        self._length = len(line)

    def close(self) -> None:
        if self._length:
            self.stream.write("\r" + " " * self._length + "\r")
            self.stream.flush()
            self._length = 0


def report(result: GCResult, grace: float) -> str:
    """The summary printed at the end (registry:2's count line first, as scripts grep it)."""
    verb = "would be deleted" if result.dry_run else "deleted"
    freed = "would be freed" if result.dry_run else "freed"
    lines = [
        f"{result.blobs_marked} blobs marked, {result.blobs_deleted} blobs and "
        f"{result.manifests_deleted} manifests eligible for deletion",
        f"repositories: {result.repositories}, manifests: {result.manifests}, "
        f"blobs: {result.blobs}",
        f"blobs kept:        {result.blobs_kept}"
        + (
            f" ({result.young} only because younger than the grace delay of "
            f"{human_duration(grace)})"
            if result.young
            else ""
        ),
        f"blobs {verb}: {result.blobs_deleted} ({human_size(result.bytes_freed)} {freed})",
        f"manifests {verb}: {result.manifests_deleted}",
    ]
    if result.links_deleted or result.temporary_files_deleted:
        lines.append(
            f"also {verb}: {result.links_deleted} _layers links, "
            f"{result.temporary_files_deleted} temporary files"
        )
    if result.restored:
        lines.append(f"put back (a push needed them meanwhile): {result.restored}")
    if result.pending:
        lines.append(f"hidden, deleted by the next collection once checked again: {result.pending}")
    for entry in result.unreadable:
        lines.append(f"warning: cannot read manifest {entry}: the blobs it refers to are unknown")
    lines.append(f"done in {result.duration:.2f}s")
    return "\n".join(lines)


def garbage_collect(
    driver: StorageDriver,
    *,
    grace: float,
    delete_untagged: bool,
    dry_run: bool,
    quiet: bool,
    out: TextIO | None = None,
) -> int:
    """``registry garbage-collect``: one collection, told on ``out``; the exit status.

    0: done (a dry run too); 1: the storage failed midway (what was deleted stays
    deleted, what was hidden is checked again by the next collection).
    """
    out = sys.stdout if out is None else out
    options = GCOptions(
        delete_untagged=delete_untagged,
        dry_run=dry_run,
        grace=grace,
        # Requests in flight get a short while; a registry stopped (grace 0) none at all.
        settle=min(grace, RECHECK),
    )
    if quiet:
        logging.getLogger(gc_module.__name__).setLevel(logging.WARNING)
    bar = ProgressBar(out) if out.isatty() and not quiet else None
    try:
        result = asyncio.run(_collect(driver, options, bar))
    except StorageDriverError as error:
        log.error("garbage collection stopped: %s", error)
        return 1
    except OSError as error:
        log.error("garbage collection stopped: %s", error)
        return 1
    finally:
        if bar is not None:
            bar.close()
    if not quiet:
        for line in format_items(result):
            print(line, file=out)
        print(report(result, grace), file=out)
    return 0


async def _collect(driver: StorageDriver, options: GCOptions, bar: ProgressBar | None) -> GCResult:
    try:
        return await GarbageCollector(driver, options, progress=bar).collect()
    finally:
        await driver.close()
