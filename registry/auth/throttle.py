"""Failed logins slow a client down, then lock it out for a while.

Every failed login is answered only after a delay, and a client (by peer
address) that fails ``failures`` times within ``window`` is refused with 429
for ``window``, whatever it sends, so a password cannot be guessed at network
speed. Counts live in each worker process: with N workers a client gets at
most N times the limit before every worker has locked it out.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque

from ..config import LoginLimits
from ..errors import ErrorCode, RegistryError

#: Clients tracked at once; the longest-quiet are forgotten first.
MAX_CLIENTS = 10_000


class LoginThrottle:
    def __init__(self, limits: LoginLimits) -> None:
        self.limits = limits
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._locked: dict[str, float] = {}

    def check(self, client: str) -> None:
        """Raise TOOMANYREQUESTS while ``client`` is locked out."""
        until = self._locked.get(client)
        if until is None:
            return
        left = until - time.monotonic()
        if left <= 0:
            del self._locked[client]
            return
        raise RegistryError(
            ErrorCode.TOOMANYREQUESTS,
            "too many failed logins from this address; try again later",
            headers={"Retry-After": str(math.ceil(left))},
        )

    def failed(self, client: str) -> None:
        now = time.monotonic()
        failures = self._failures.pop(client, None) or deque()
        failures.append(now)
        while failures and failures[0] <= now - self.limits.window:
            failures.popleft()
        self._failures[client] = failures
        if len(failures) >= self.limits.failures:
            self._locked[client] = now + self.limits.window
            failures.clear()
        while len(self._failures) > MAX_CLIENTS:
            self._failures.popitem(last=False)
        if len(self._locked) > MAX_CLIENTS:
            for stale in [c for c, until in self._locked.items() if until <= now]:
                del self._locked[stale]

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
