"""Health checks: registry:2's ``health`` section, run in one worker, seen by every worker.

As in registry:2, each configured check runs in the background every
``interval``; one whose failures reach its ``threshold`` makes the instance
unhealthy: ``/debug/health`` answers 503 naming it, and every public request
is a 503 UNAVAILABLE, which takes the instance out of a load balancer's
rotation (creating a ``health.file`` is the drain switch).

The checks run in the maintenance worker only: probes of other services are
not multiplied by the workers, a threshold counts one series of failures, and
every worker gives the same answer. The results go to a small file in the
supervisor's run folder, which every worker reads again when it changes
(checked every POLL_SECONDS), so the gate on the request path reads an
attribute. Unlike registry:2, each check runs once at start, not one interval
later: a registry started while its drain file exists refuses traffic as soon
as the first results are read (within POLL_SECONDS), and its ``/readyz``
answers 503 until every check has run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from .api.native import Reply, error_reply, send_reply
from .config import HealthConfig, HTTPCheck, TCPCheck
from .errors import ErrorCode, RegistryError
from .storage import paths
from .storage.driver import PathNotFoundError, StorageDriver

log = logging.getLogger(__name__)

#: How soon a worker sees results the checking worker wrote.
POLL_SECONDS = 0.5
RESULTS_FILE = "health.json"


class CheckFailedError(Exception):
    """A probe's answer: the message registry:2 gives for it."""


Probe = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    """What ``/debug/health`` calls it: registry:2's (the file, the URI, the address)."""
    interval: float
    threshold: int
    probe: Probe


def storage_probe(driver: StorageDriver) -> Probe:
    """The storage answers a stat of the registry's tree; a tree not made yet is an answer."""

    async def probe() -> None:
        try:
            await driver.stat(paths.ROOT)
        except PathNotFoundError:
            pass
        except Exception as error:
            raise CheckFailedError(str(error) or type(error).__name__) from None

    return probe


def file_probe(path: str) -> Probe:
    absolute = os.path.abspath(path)

    async def probe() -> None:
        try:
            os.stat(absolute)  # One stat: not worth a thread.
        except FileNotFoundError:
            return
        except OSError as error:
            raise CheckFailedError(str(error)) from None
        raise CheckFailedError("file exists")

    return probe


def http_probe(check: HTTPCheck) -> Probe:
    """A HEAD of the URI (redirects followed, as Go's client does) must give the status."""
    timeout = check.timeout or check.interval

    def head() -> int:
        request = urllib.request.Request(check.uri, method="HEAD")
        for name, values in check.headers.items():
            request.add_header(name, ", ".join(values))
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code

    async def probe() -> None:
        try:
            async with asyncio.timeout(timeout):
                status = await asyncio.to_thread(head)
        except (OSError, TimeoutError, ValueError) as error:
            reason = getattr(error, "reason", None) or error or "timed out"
            raise CheckFailedError(f"error while checking: {check.uri}: {reason}") from None
        if status != check.statuscode:
            raise CheckFailedError(f"downstream service returned unexpected status: {status}")

    return probe


def tcp_probe(check: TCPCheck) -> Probe:
    host, _, port = check.addr.rpartition(":")
    host = host.strip("[]") or "localhost"
    timeout = check.timeout or check.interval

    async def probe() -> None:
        try:
            async with asyncio.timeout(timeout):
                _, writer = await asyncio.open_connection(host, int(port))
        except (OSError, TimeoutError):
            raise CheckFailedError(f"connection to {check.addr} failed") from None
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    return probe


def checks_of(config: HealthConfig, driver: StorageDriver, driver_name: str) -> list[Check]:
    """The configured checks, named as registry:2 names them."""
    checks = []
    storage = config.storagedriver
    if storage.enabled:
        checks.append(
            Check(
                f"storagedriver_{driver_name}",
                storage.interval,
                storage.threshold,
                storage_probe(driver),
            )
        )
    for file in config.file:
        checks.append(Check(file.file, file.interval, 0, file_probe(file.file)))
    for http in config.http:
        checks.append(Check(http.uri, http.interval, http.threshold, http_probe(http)))
    for tcp in config.tcp:
        checks.append(Check(tcp.addr, tcp.interval, tcp.threshold, tcp_probe(tcp)))
    return checks


@dataclass(slots=True)
class HealthState:
    """What this worker knows: the failing checks, as the checking worker last wrote them."""

    folder: str | None
    """The supervisor's run folder; None: one process, results kept in memory only."""
    configured: bool = False
    failures: dict[str, str] = field(default_factory=dict)
    ran: bool = False
    """Every check has run at least once."""
    serving: bool = False
    """This worker's app has started and is not stopping."""
    _seen: tuple[int, int, int] | None = None

    @property
    def path(self) -> str | None:
        return os.path.join(self.folder, RESULTS_FILE) if self.folder else None

    def read(self) -> None:
        """Take the results file's contents, if it changed since the last read."""
        path = self.path
        if path is None:
            return
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return
        seen = (info.st_mtime_ns, info.st_size, info.st_ino)
        if seen == self._seen:
            return
        try:
            with open(path, encoding="utf-8") as file:
                results = json.load(file)
        except (OSError, ValueError):
            return  # Replaced meanwhile: read at the next poll.
        self._seen = seen
        self.failures = dict(results.get("failures", {}))
        self.ran = bool(results.get("ran", False))

    async def watch(self) -> None:
        while True:
            self.read()
            await asyncio.sleep(POLL_SECONDS)

    def readiness(self) -> dict[str, str]:
        """Why this worker should not get traffic (empty: it should)."""
        reasons = dict(self.failures)
        if not self.serving:
            reasons["worker"] = "not serving"
        if self.configured and not self.ran:
            reasons["health"] = "checks have not run yet"
        return reasons


class _Threshold:
    """registry:2's threshold updater: a failure counts once it repeats ``threshold`` times."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.count = 0
        self.error: str | None = None

    def update(self, error: str | None) -> None:
        if error is None:
            self.count = 0
        elif self.count < self.threshold:
            self.count += 1
        self.error = error

    @property
    def reported(self) -> str | None:
        return self.error if self.count >= self.threshold else None


class HealthChecker:
    """Runs the checks (in the maintenance worker) and writes what they report for all workers."""

    def __init__(self, checks: list[Check], state: HealthState) -> None:
        self.checks = checks
        self.state = state
        self.updaters = {check.name: _Threshold(check.threshold) for check in checks}
        self.ran: set[str] = set()
        self.epoch = time.time_ns()
        """Results from a newer checker (a reload's) win over ours: see _publish."""
        self.superseded = asyncio.Event()

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._poll(check)) for check in self.checks]
        try:
            await self.superseded.wait()
            log.info("health checks: a newer worker runs them now")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _poll(self, check: Check) -> None:
        updater = self.updaters[check.name]
        while True:
            try:
                await check.probe()
                error = None
            except CheckFailedError as failure:
                error = str(failure)
            except Exception as failure:  # A probe's own bug is a failure too, not a dead check.
                log.exception("health check %s failed unexpectedly", check.name)
                error = f"{type(failure).__name__}: {failure}"
            before = updater.reported
            updater.update(error)
            after = updater.reported
            if after != before:
                if after is None:
                    log.info("health check %s passes again", check.name)
                else:
                    log.warning("health check %s fails: %s", check.name, after)
            first = check.name not in self.ran
            self.ran.add(check.name)
            if after != before or first:
                self._publish()
            await asyncio.sleep(check.interval)

    def _publish(self) -> None:
        failures = {
            name: updater.reported
            for name, updater in self.updaters.items()
            if updater.reported is not None
        }
        ran = len(self.ran) == len(self.checks)
        path = self.state.path
        if path is not None:
            with contextlib.suppress(OSError, ValueError), open(path, encoding="utf-8") as file:
                if json.load(file).get("epoch", 0) > self.epoch:
                    self.superseded.set()
                    return
            results = {"epoch": self.epoch, "failures": failures, "ran": ran}
            # Replaced whole (no fsync: the folder lives as long as the server does).
            temporary = f"{path}.{os.getpid()}.tmp"
            with open(temporary, "w", encoding="utf-8") as file:
                json.dump(results, file)
            os.replace(temporary, path)
        self.state.failures = failures
        self.state.ran = ran


#: registry:2's answer to every request while a check fails.
UNHEALTHY = RegistryError(
    ErrorCode.UNAVAILABLE, detail="health check failed: please see /debug/health"
)


class HealthGate:
    """Layer of the public app: while a check fails, every request is a 503, as in registry:2."""

    def __init__(self, app: object, state: HealthState) -> None:
        self.app = app
        self.state = state

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http" and self.state.failures:
            method = scope["method"]
            reply: Reply = error_reply(UNHEALTHY, method)
            await send_reply(reply, receive, send, method)
            return
        await self.app(scope, receive, send)  # type: ignore[operator]
