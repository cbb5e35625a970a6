"""Shared fixtures: a real registry process on a free port, driven over HTTP."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from tests.services.ceph import (  # noqa: F401 - one S3 gateway per session, for all
    ceph_s3,
    s3_bucket,
)
from tests.services.haproxy import balancer  # noqa: F401 - haproxy before instances
from tests.services.redis import (  # noqa: F401 - one Redis per session, for all
    private_redis,
    redis_server,
)

LISTENING_RE = re.compile(r"listening on (\S+?)[,\s]")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class RegistryProcess:
    """``registry serve`` in a subprocess, with its own storage folder and log file."""

    workdir: Path
    config: dict[str, object] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    use_config: bool = True
    """False: no config file at all, as a new user runs it (storage in ./data)."""
    wrap: list[str] = field(default_factory=list)
    """Command prefix, e.g. ``ip netns exec NAME`` to serve from a network namespace."""
    process: subprocess.Popen[bytes] | None = None
    url: str = ""

    @property
    def root(self) -> Path:
        storage = self.config.get("storage")
        if isinstance(storage, dict) and "filesystem" in storage:
            return Path(storage["filesystem"]["rootdirectory"])
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "registry.log"

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def log_with(self, text: str) -> str:
        """The log once it holds ``text``: a request's access-log line follows its response."""
        for _ in range(200):
            log = self.log()
            if text in log:
                return log
            time.sleep(0.05)
        return self.log()

    def start(self, addr: str = "127.0.0.1:0") -> RegistryProcess:
        command = [sys.executable, "-m", "registry", "serve"]
        if self.use_config:
            config = {"version": 0.1, **self.config}
            config.setdefault(
                "storage", {"filesystem": {"rootdirectory": str(self.workdir / "data")}}
            )
            config_path = self.workdir / "config.yml"
            config_path.write_text(yaml.safe_dump(config))
            command += ["--config", str(config_path)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        env.update(self.env)
        offset = len(self.log())
        log_file = self.log_path.open("ab")
        command += ["--addr", addr, "--workers", str(self.workers), *self.args]
        self.process = subprocess.Popen(
            [*self.wrap, *command], stdout=log_file, stderr=log_file, env=env, cwd=self.workdir
        )
        log_file.close()
        deadline = time.monotonic() + 30
        while True:
            found = LISTENING_RE.search(self.log()[offset:])
            if found:
                self.url = found.group(1)
                break
            if self.process.poll() is not None:
                raise RuntimeError(f"registry exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"registry did not start:\n{self.log()}")
            time.sleep(0.05)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        """Ready once a worker accepts TCP connections (mutual TLS then needs no client cert)."""
        host, port = self.url.split("://", 1)[1].rsplit(":", 1)
        for _ in range(400):
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"registry does not answer:\n{self.log()}")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port, same storage."""
        host_port = self.url.split("://", 1)[1]
        self.stop()
        self.start(addr=host_port)


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[type[RegistryProcess] | object]:
    """Start registries with a config of the test's choosing; all stopped afterwards."""
    started: list[RegistryProcess] = []

    def start(
        config: dict[str, object] | None = None,
        *,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        workers: int = 1,
        addr: str = "127.0.0.1:0",
        use_config: bool = True,
        wrap: list[str] | None = None,
    ) -> RegistryProcess:
        workdir = tmp_path / f"registry-{len(started)}"
        workdir.mkdir()
        process = RegistryProcess(
            workdir,
            dict(config or {}),
            list(args or []),
            dict(env or {}),
            workers,
            use_config,
            list(wrap or []),
        )
        started.append(process)
        return process.start(addr)

    yield start
    for process in started:
        process.stop()


def plain_registry(workdir: Path, workers: int = 1) -> RegistryProcess:
    """A started registry with deletes enabled and nothing else special (stop it after)."""
    storage = {"filesystem": {"rootdirectory": str(workdir / "data")}, "delete": {"enabled": True}}
    return RegistryProcess(workdir, {"storage": storage}, workers=workers).start()


@pytest.fixture(scope="session")
def shared_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """One registry (deletes enabled) for the tests that need nothing special."""
    process = plain_registry(tmp_path_factory.mktemp("shared-registry"))
    yield process
    process.stop()


#: The API suite runs against each: no access control, Basic users, tokens from the
#: built-in service; the client is the admin, who may do everything.
API_ACCESS = ("open", "htpasswd", "token")


@pytest.fixture(scope="session", params=API_ACCESS)
def api_registry(
    request: pytest.FixtureRequest,
    shared_registry: RegistryProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RegistryProcess]:
    """The shared registry, and the same with access control on (each started once)."""
    if request.param == "open":
        yield shared_registry
        return
    from tests.access import htpasswd_config, token_config

    workdir = tmp_path_factory.mktemp(f"{request.param}-registry")
    make = htpasswd_config if request.param == "htpasswd" else token_config
    config: dict[str, object] = {
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "data")},
            "delete": {"enabled": True},
        },
        **make(workdir),
    }
    process = RegistryProcess(workdir, config)
    process.start()
    yield process
    process.stop()


def admin_auth(registry: RegistryProcess) -> httpx.Auth | None:
    """How the admin signs in to ``registry`` (None when it has no access control)."""
    from tests.access import USERS, BearerAuth

    auth = registry.config.get("auth")
    if not isinstance(auth, dict):
        return None
    if "htpasswd" in auth:
        return httpx.BasicAuth("admin", USERS["admin"])
    return BearerAuth("admin", USERS["admin"])


@pytest.fixture
def client(api_registry: RegistryProcess) -> Iterator[httpx.Client]:
    """The admin, accepting every manifest type as real clients do."""
    from tests.pushing import ACCEPT_MANIFESTS

    with httpx.Client(
        base_url=api_registry.url,
        timeout=30,
        auth=admin_auth(api_registry),
        headers=ACCEPT_MANIFESTS,
    ) as c:
        yield c


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name of the test's own, so tests sharing a registry never collide."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return f"test/{name[:180]}"
