"""Locks across test processes, for the few things a test changes on the machine itself.

Under pytest-xdist several workers run at once; a test that changes a system-wide
path (``/etc/docker/certs.d``, which every dockerd reads) holds the lock of that
path while it does, so tests that change the same path run one after the other
whichever worker runs them. ``flock`` locks go away with the process that holds
them: a killed run leaves none behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _lock_path(name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")
    return Path(tempfile.gettempdir()) / f"registry-tests-{safe}.lock"


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """Held by one test process on this machine at a time (waits for the others)."""
    descriptor = os.open(_lock_path(name), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # Releases the lock.
