"""Where the cache reports what it did: the metrics' recorder, when metrics are on."""

from __future__ import annotations

from collections.abc import Callable

Observer = Callable[[str, str, int], None]
"""Called as ``(counter, kind, amount)``: ``requests``, ``hits``, ``misses`` or
``pulled_bytes``, of a ``blob`` or ``manifest``."""


def ignore(counter: str, kind: str, amount: int) -> None:
    """No metrics: nothing to report to."""
