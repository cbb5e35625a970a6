"""A throw-away Redis (Debian's ``redis-server``): real Redis for the stat cache's tests.

On a loopback port picked free at run time, with a random password, no persistence
(``save ""``, ``appendonly no``) and all state in a temporary folder; its settings
(the password among them) are in a file there, never on a command line. Started once
per pytest session by ``redis_server`` (well under a second), stopped and deleted at
its end; it also dies with the pytest process (a parent-death signal). A test that
stops or freezes Redis starts a :class:`RedisServer` of its own.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.needs import require
from tests.services.ceph import _dying_with_parent
from tests.services.ports import free_port

PACKAGE = "redis-server"


@dataclass(frozen=True)
class RedisTLSFiles:
    """A CA, Redis's certificate (for 127.0.0.1 and localhost) and a client's, all
    made by this project's own toolkit."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, directory: Path) -> RedisTLSFiles:
        from tools.certs import ensure_client_certificate, ensure_server_certificate

        server = ensure_server_certificate(
            directory, ("127.0.0.1", "localhost"), include_default_hosts=False
        )
        client = ensure_client_certificate(directory, "registry")
        return cls(
            server.ca_cert, server.server_cert, server.server_key, client.client_cert,
            client.client_key,
        )  # fmt: skip


class RedisServer:
    """One ``redis-server``; :meth:`start`, then Redis at :attr:`addr` with :attr:`password`."""

    def __init__(
        self, base: Path, binary: str = "redis-server", tls: RedisTLSFiles | None = None
    ) -> None:
        self.base = base
        self.binary = binary
        self.tls = tls
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.conf = base / "redis.conf"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_in = 0.0

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _config(self) -> str:
        listen = (f"port {self.port}",)
        if self.tls is not None:  # TLS only, client certificates required.
            listen = (
                "port 0",
                f"tls-port {self.port}",
                f"tls-cert-file {self.tls.server_cert}",
                f"tls-key-file {self.tls.server_key}",
                f"tls-ca-cert-file {self.tls.ca_cert}",
                "tls-auth-clients yes",
            )
        return "\n".join(
            (
                "bind 127.0.0.1",
                *listen,
                f"requirepass {self.password}",
                'save ""',
                "appendonly no",
                f"dir {self.base}",
                f"logfile {self.base / 'redis.log'}",
                "daemonize no",
                "protected-mode yes",
                "",
            )
        )

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.base / "redis.log").read_text(errors="replace")[-3000:]
        return ""

    def start(self) -> RedisServer:
        """Start (or start again, on the same port: its data is gone) and wait for PING."""
        started = time.monotonic()
        self.base.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self._config())
        self.conf.chmod(0o600)
        self.process = subprocess.Popen(
            _dying_with_parent((self.binary, str(self.conf))),
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}\n{self.log()}"
                )
            try:
                with contextlib.closing(self.client()) as client:
                    if client.ping():
                        break
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server does not answer\n{self.log()}") from None
                time.sleep(0.02)
        self.started_in = time.monotonic() - started
        return self

    def client(self) -> Any:
        """A plain (synchronous) redis-py client: the tests' view from outside the cache."""
        import redis

        tls: dict[str, Any] = {}
        if self.tls is not None:
            tls = {
                "ssl": True,
                "ssl_certfile": str(self.tls.client_cert),
                "ssl_keyfile": str(self.tls.client_key),
                "ssl_ca_certs": str(self.tls.ca_cert),
            }
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5, **tls
        )

    def kill(self) -> None:
        """Die at once, as a crash would (its data is lost)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def freeze(self) -> None:
        """Stop answering, connections kept: a Redis too slow to be of use."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # A frozen one could not stop.
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def require_redis() -> str:
    """The path of ``redis-server``; skip (or, with E2E_REQUIRED=1, fail) naming the package."""
    return require("redis-server", PACKAGE)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Redis, started once per session (on first use); each test keeps to key names of
    its own (a namespace per storage)."""
    binary = require_redis()
    server = RedisServer(Path(tempfile.mkdtemp(prefix="redis-")), binary)
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, which it may kill, freeze or restart."""
    server = RedisServer(tmp_path / "redis", require_redis()).start()
    try:
        yield server
    finally:
        server.remove()
