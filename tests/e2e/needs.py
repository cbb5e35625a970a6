"""Clients the end-to-end tests need, and what to do when one is missing.

``E2E_REQUIRED=1`` (set by tests/run as root, so in CI) turns every skip for a
missing client into a failure. Not ``REGISTRY_...``: the registry would read
that as a configuration override.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require(binary: str, package: str) -> str:
    """The path of ``binary``; skip (or fail in CI) naming the package that provides it."""
    path = binary if os.path.isabs(binary) and os.access(binary, os.X_OK) else shutil.which(binary)
    if path is None or not os.access(path, os.X_OK):
        message = f"{binary} not found: install it with `apt-get install {package}`"
        if os.environ.get("E2E_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path
