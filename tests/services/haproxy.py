"""A throw-away load balancer (Debian's ``haproxy``) in front of several registry instances.

Requests are spread round-robin, one by one (not one connection to one instance), so
the PATCHes of one chunked upload reach different instances, as behind any balancer
without sticky sessions. An instance that refuses connections is retried on another
(``retry-on conn-failure``, ``option redispatch``) and taken out by the health check
(``GET /v2/`` every 200 ms: 200, or 401 when access control is on). A request cut
mid-way by a dying instance is not replayed: the client sees the failure and retries,
as it would in production.

Listening on a loopback port picked free at run time; its config and socket are in a
temporary folder; it dies with the pytest process.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from tests.e2e.needs import require
from tests.services.ceph import _dying_with_parent
from tests.services.ports import free_port

PACKAGE = "haproxy"


class Haproxy:
    """``haproxy`` balancing :attr:`url` over ``backends`` (``host:port`` each)."""

    def __init__(self, base: Path, backends: Sequence[str], binary: str = "haproxy") -> None:
        self.base = base
        self.backends = list(backends)
        self.binary = binary
        self.port = free_port()
        self.stats_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> str:
        servers = [
            f"  server i{index} {addr} check inter 200ms fall 2 rise 2"
            for index, addr in enumerate(self.backends)
        ]
        return "\n".join(
            (
                "global",
                "  maxconn 2000",
                "defaults",
                "  mode http",
                "  timeout connect 2s",
                "  timeout client 10m",
                "  timeout server 10m",
                "  timeout http-request 1m",
                "  retries 3",
                "  option redispatch 1",
                "  retry-on conn-failure empty-response",
                "frontend registry",
                f"  bind 127.0.0.1:{self.port}",
                "  default_backend instances",
                "frontend stats",
                f"  bind 127.0.0.1:{self.stats_port}",
                "  stats enable",
                "  stats uri /stats",
                "backend instances",
                "  balance roundrobin",
                "  option httpchk GET /v2/",
                "  http-check expect rstatus ^(200|401)$",
                *servers,
                "",
            )
        )

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.base / "haproxy.log").read_text(errors="replace")[-5000:]
        return ""

    def start(self) -> Haproxy:
        """Start, and wait until every instance is up in haproxy's eyes."""
        self.base.mkdir(parents=True, exist_ok=True)
        config = self.base / "haproxy.cfg"
        config.write_text(self._config())
        check = subprocess.run(
            [self.binary, "-c", "-q", "-f", str(config)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refuses its config: {check.stderr}")
        log = (self.base / "haproxy.log").open("ab")
        self.process = subprocess.Popen(
            _dying_with_parent((self.binary, "-db", "-f", str(config))),
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        self.wait_up(len(self.backends))
        return self

    def _servers(self) -> list[dict[str, str]]:
        """haproxy's statistics of each instance (a row of its CSV each)."""
        text = httpx.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5).text
        lines = text.splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]
        return [
            row for row in rows if row.get("pxname") == "instances" and row["svname"][1:].isdigit()
        ]

    def servers_up(self) -> int:
        """How many instances haproxy's health check counts as up."""
        return sum(1 for row in self._servers() if row["status"].startswith("UP"))

    def wait_up(self, count: int) -> None:
        """Until exactly ``count`` instances are up (a killed one counted down)."""
        deadline = time.monotonic() + 30
        up = -1
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.process.returncode}\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError, OSError):
                up = self.servers_up()
                if up == count:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"haproxy counts {up} instances up, not {count}\n{self.log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def require_haproxy() -> str:
    """The path of ``haproxy``; skip (or, with E2E_REQUIRED=1, fail) naming the package."""
    return require("haproxy", PACKAGE)


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[type[Haproxy] | object]:
    """Start a balancer over the given backends; stopped after the test."""
    binary = require_haproxy()
    started: list[Haproxy] = []

    def start(backends: Sequence[str]) -> Haproxy:
        proxy = Haproxy(tmp_path / f"haproxy-{len(started)}", backends, binary)
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()
