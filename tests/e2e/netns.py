"""Network namespaces joined to the host by a veth pair: a second "machine" on a real address.

A registry (or an engine, or sshd) started inside one is reached from the host
at a non-loopback address, so the Docker engine treats it as the remote
registry it would be in production: no localhost exception.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from .needs import require

_counter = itertools.count()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass(frozen=True)
class NetworkNamespace:
    name: str
    address: str
    """This namespace's address, as the host and other namespaces reach it."""
    host_address: str
    """The host's end of the veth pair."""

    def prefix(self) -> list[str]:
        """Prepend to a command to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def run(
        self, *command: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix(), *command], capture_output=True, text=True, check=check, timeout=timeout
        )


#: Each namespace takes a /30 of 10.231.0.0/16 by its serial number.
SERIALS = 16000


def _claim_veth() -> tuple[int, str, str]:
    """A serial number no live namespace of any test process has, claimed by creating its
    veth pair (``rhN``, ``rnN``): creating a link is atomic and fails where the name is
    taken, so two pytest-xdist workers (or two runs) never share a name or an address."""
    start = (os.getpid() * 7 + next(_counter) * 101) % SERIALS
    for step in range(SERIALS):
        serial = (start + step) % SERIALS
        host_end, ns_end = f"rh{serial}", f"rn{serial}"
        created = subprocess.run(
            ["ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end],
            capture_output=True,
            text=True,
        )
        if created.returncode == 0:
            return serial, host_end, ns_end
        if "exists" not in created.stderr:
            raise RuntimeError(f"ip link add {host_end}: {created.stderr}")
    raise RuntimeError("every veth name for a test namespace is taken")


@contextmanager
def network_namespace() -> Iterator[NetworkNamespace]:
    """A fresh namespace on its own /30 in 10.231.0.0/16; removed with its veth afterwards."""
    require("ip", "iproute2")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    serial, host_end, ns_end = _claim_veth()
    third, fourth = divmod(serial * 4, 256)
    name = f"regtest-{os.getpid()}-{serial}"
    host_address = f"10.231.{third}.{fourth + 1}"
    address = f"10.231.{third}.{fourth + 2}"
    try:
        _ip("netns", "add", name)
        _ip("link", "set", ns_end, "netns", name)
        _ip("addr", "add", f"{host_address}/30", "dev", host_end)
        _ip("link", "set", host_end, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{address}/30", "dev", ns_end)
        _ip("netns", "exec", name, "ip", "link", "set", ns_end, "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        # Back to the host (and through it, to other namespaces) by the host's end.
        _ip("netns", "exec", name, "ip", "route", "add", "default", "via", host_address)
        yield NetworkNamespace(name, address, host_address)
    finally:
        subprocess.run(["ip", "link", "del", host_end], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
