"""Loopback ports for services the tests start on a port they choose (Redis, Ceph,
haproxy, sshd, the Go registry, debug listeners).

A port is picked below Linux's ephemeral range (32768 and up), so no client
connection takes it between the pick and the service's bind, or while a test
has the service stopped. Under pytest-xdist each worker picks from a slice of
that range of its own, so two workers never pick the same port; within one
process a port is never handed out twice. The registry itself binds port 0
and needs none of this.
"""

from __future__ import annotations

import os
import random
import socket
import threading

LOW = 10000
#: Linux's default ``net.ipv4.ip_local_port_range`` starts here.
HIGH = 32768

_given: set[int] = set()
_lock = threading.Lock()


def worker_slice(low: int = LOW, high: int = HIGH) -> tuple[int, int]:
    """``[low, high)``, or this xdist worker's share of it (``gw0``, ``gw1``, ...)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or not worker[2:].isdigit() or count <= 1:
        return low, high
    # A worker xdist starts to replace a crashed one gets the next number: wrap around.
    index = int(worker[2:]) % count
    size = (high - low) // count
    return low + index * size, low + (index + 1) * size


def _free(port: int, host: str) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port_run(span: int = 1, host: str = "127.0.0.1") -> int:
    """The first of ``span`` consecutive ports, all free on ``host`` now and never
    handed out before by this process."""
    low, high = worker_slice()
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(low, high - span + 1)
        ports = range(base, base + span)
        with _lock:
            if _given.intersection(ports):
                continue
            if all(_free(port, host) for port in ports):
                _given.update(ports)
                return base
    raise RuntimeError(f"no run of {span} free loopback ports found in {low}-{high}")


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` (see the module's notes)."""
    return free_port_run(1, host)
