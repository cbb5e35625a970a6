"""Freed memory goes back to the system, so a worker's footprint follows its load.

glibc keeps what a burst of requests freed inside the heap, and in one more
arena per thread that allocated (hashing, file reads and writes run in
threads): without help a worker's resident memory only grows, by 25 MiB after
eight concurrent pushes in ``bench/compare.py``, and stays there. Two glibc
calls keep it near idle: fewer arenas for the helper threads, and a periodic
``malloc_trim``, which also hands back the free pages in the middle of the heap
(about 1 ms after a burst, microseconds when there is nothing to return).
Elsewhere than glibc both are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
from typing import Any

#: glibc's ``mallopt`` option for the most arenas (``malloc.h``).
M_ARENA_MAX = -8
#: The event loop's thread and a helper thread each keep an arena: more only
#: holds more freed memory, and the threads seldom allocate at the same moment.
ARENAS = 2
#: Seconds between trims: a burst's memory is back within a second of its end.
TRIM_INTERVAL = 1.0


def _glibc() -> Any | None:
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt  # noqa: B018 - raises AttributeError off glibc
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int = ARENAS) -> None:
    """Called before the process starts any thread: arenas are made per thread."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, arenas)


async def trim_until(stop: asyncio.Event, interval: float = TRIM_INTERVAL) -> None:
    """Hand freed heap pages back every ``interval`` seconds until ``stop`` is set."""
    libc = _glibc()
    if libc is None:
        return
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        libc.malloc_trim(0)
