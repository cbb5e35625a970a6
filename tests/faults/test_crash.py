"""Crash consistency: SIGKILL the server at random moments of concurrent pushes.

Each round, several clients push (monolithic, chunked, mounts, manifests,
indexes, a moving tag) against ``registry serve`` with two workers; at a
random moment the whole server (supervisor and workers, one process group)
is killed, then started again on the same storage. After every restart:
whatever answers is whole (tests/faults/invariants.py), whatever was
acknowledged still answers, every open upload session resumes from the
offset it reports or is cleanly unknown, and every push cut short succeeds
when its client retries it.

    FAULT_ROUNDS=300 FAULT_SEED=123 pytest tests/faults/test_crash.py -s

The seed is printed: the same seed replays the same pushes and kill times
(the interleaving of threads differs from run to run).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import RegistryProcess
from tests.faults.clients import Ledger, Pusher, shared_blobs
from tests.faults.invariants import StoreChecker

Factory = Callable[..., RegistryProcess]

#: Rounds of push, kill, restart, check: CI's default takes about a minute.
ROUNDS = int(os.environ.get("FAULT_ROUNDS", "30"))
#: Workers killed one at a time under load while the supervisor goes on.
WORKER_KILLS = int(os.environ.get("FAULT_WORKER_KILLS", "6"))
PUSHERS = 4
#: How long the pushes run before a kill, at most (seconds).
LOAD = 0.5
#: A worker that dies younger than this stops the whole server (server.EARLY_EXIT).
WORKER_MIN_AGE = 2.3


def _seed() -> int:
    seed = int(os.environ.get("FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nFAULT_SEED={seed}")
    return seed


def _config(root: Path) -> dict[str, object]:
    return {
        "storage": {
            "filesystem": {"rootdirectory": str(root)},
            # Purging at start would race the resumption of the sessions the kill left.
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "log": {"accesslog": {"disabled": True}},
    }


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as file:
                found += [int(child) for child in file.read().split()]
    except FileNotFoundError:
        pass
    return found


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody reaped yet (its sockets are closed)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _age(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as file:
        started = int(file.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as file:
        uptime = float(file.read().split()[0])
    return uptime - started / os.sysconf("SC_CLK_TCK")


def _wait(condition: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.01)


def kill_server(server: RegistryProcess) -> None:
    """SIGKILL the supervisor and every worker at once: one signal to the process group."""
    assert server.process is not None
    pid = server.process.pid
    assert os.getpgid(pid) == pid, "started through setsid: a process group of its own"
    members = [pid, *_children(pid)]
    os.killpg(pid, signal.SIGKILL)
    server.process.wait()
    server.process = None
    _wait(lambda: all(_gone(member) for member in members), "the killed workers to exit")


def _run_load(
    pushers: list[Pusher], url: str, stop: threading.Event, resilient: bool
) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=pusher.run, args=(url, stop), kwargs={"resilient": resilient})
        for pusher in pushers
    ]
    for thread in threads:
        thread.start()
    return threads


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a pusher hangs"


def _report(ledger: Ledger, violations: list[str], seed: int, started: float) -> None:
    print(f"seed {seed}, {time.monotonic() - started:.1f} s")
    for what, count in sorted(ledger.stats.items()):
        print(f"  {what}: {count}")
    assert not violations, f"{len(violations)} violations (FAULT_SEED={seed}):\n" + "\n".join(
        violations[:30]
    )


def test_pushes_survive_the_whole_server_killed(registry_factory: Factory, tmp_path: Path) -> None:
    seed = _seed()
    started = time.monotonic()
    rng = random.Random(seed)
    ledger = Ledger()
    shared = shared_blobs(seed)
    pushers = [Pusher(number, seed, ledger, shared) for number in range(PUSHERS)]
    server = registry_factory(_config(tmp_path / "storage"), workers=2, wrap=["setsid"])
    checker = StoreChecker(server.root, ledger)
    address = server.url.split("://", 1)[1]
    violations: list[str] = []
    for number in range(ROUNDS):
        stop = threading.Event()
        threads = _run_load(pushers, server.url, stop, resilient=False)
        time.sleep(rng.uniform(0.01, LOAD))
        kill_server(server)
        stop.set()
        _join(threads)
        server.start(addr=address)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            found = checker.check_acknowledged(client) + checker.check_store(client)
            for pusher in pushers:
                try:
                    pusher.recover(client)
                except (AssertionError, httpx.HTTPError) as error:
                    found.append(f"retry of pusher {pusher.number}: {error!r}")
                    pusher.job = pusher.session = None
        with ledger.lock:
            found += ledger.violations
            ledger.violations.clear()
        violations += [f"round {number}: {violation}" for violation in found]
        ledger.stats["rounds"] += 1
    with httpx.Client(base_url=server.url, timeout=60) as client:
        # Once more over everything: nothing checked in an early round broke later.
        checker.verified.clear()
        violations += checker.check_acknowledged(client) + checker.check_store(client)
    _report(ledger, violations, seed, started)


def test_pushes_survive_workers_killed_mid_request(
    registry_factory: Factory, tmp_path: Path
) -> None:
    """One worker SIGKILLed at a time under load: the supervisor replaces it, clients retry."""
    seed = _seed()
    started = time.monotonic()
    rng = random.Random(seed)
    ledger = Ledger()
    pushers = [Pusher(number, seed, ledger, shared_blobs(seed)) for number in range(PUSHERS)]
    server = registry_factory(_config(tmp_path / "storage"), workers=2)
    assert server.process is not None
    supervisor = server.process.pid
    stop = threading.Event()
    threads = _run_load(pushers, server.url, stop, resilient=True)
    for _ in range(WORKER_KILLS):
        time.sleep(rng.uniform(0.05, LOAD))
        workers = _children(supervisor)
        assert len(workers) == 2, workers
        victim = max(workers, key=_age)
        time.sleep(max(0.0, WORKER_MIN_AGE - _age(victim)))
        os.kill(victim, signal.SIGKILL)
        _wait(
            lambda victim=victim: (
                victim not in _children(supervisor) and len(_children(supervisor)) == 2
            ),
            "the supervisor to replace the killed worker",
        )
        ledger.stats["workers killed"] += 1
    time.sleep(LOAD)
    stop.set()
    _join(threads)
    assert server.process.poll() is None, "the supervisor survives its workers"
    violations = list(ledger.violations)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for pusher in pushers:
            try:
                pusher.recover(client)
            except (AssertionError, httpx.HTTPError) as error:
                violations.append(f"retry of pusher {pusher.number}: {error!r}")
        checker = StoreChecker(server.root, ledger)
        violations += checker.check_acknowledged(client) + checker.check_store(client)
    assert server.log().count("starting another") == WORKER_KILLS
    _report(ledger, violations, seed, started)
