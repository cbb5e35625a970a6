"""Real clients for end-to-end tests: a private Docker engine, images built from busybox.

Nothing is pulled from a hub: images are built here from Debian's
``busybox-static``. Where a client is missing, the test skips with the package
to install, except when ``E2E_REQUIRED=1`` (CI), where it fails.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from .needs import require
from .netns import NetworkNamespace, network_namespace

DOCKER_CLIENT = "/usr/bin/docker"  # Debian's client for Debian's dockerd.
BUSYBOX = "/bin/busybox"
CONTAINERD_SLOW = "timeout waiting for containerd to start"


def busybox_tar(extra_files: dict[str, bytes] | None = None) -> bytes:
    """A root filesystem with a static busybox and its applets, as an uncompressed tar."""
    busybox = Path(require(BUSYBOX, "busybox-static"))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder in ("bin", "tmp"):
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in ("sh", "echo", "cat", "ls", "sha256sum"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        for name, data in (extra_files or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class DockerEngine:
    """A private dockerd (vfs storage, no iptables), never the system's engine."""

    root: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def config_file(self) -> Path:
        return self.root / "daemon.json"

    @property
    def pidfile(self) -> Path:
        return self.root / "docker.pid"

    def start(
        self,
        daemon_json: dict[str, object] | None = None,
        *,
        netns: str | None = None,
        wrap: Sequence[str] = (),
    ) -> None:
        """Start dockerd (in ``netns`` if given; ``wrap`` goes between that and dockerd)."""
        dockerd = require("/usr/sbin/dockerd", "docker.io")
        self.config_file.write_text(json.dumps(daemon_json or {}))
        command = [
            *wrap,
            dockerd,
            "--storage-driver=vfs",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"-H={self.host}",
            f"--pidfile={self.pidfile}",
            f"--config-file={self.config_file}",
        ]
        if netns is not None:
            # nsenter, not `ip netns exec`: that remounts /sys and hides the
            # cgroup mounts dockerd needs ("Devices cgroup isn't mounted").
            command = ["nsenter", f"--net=/run/netns/{netns}", *command]
        # On a machine just booted, loading containerd from a cold disk can
        # outlast dockerd's own wait for it ("timeout waiting for containerd
        # to start"); the second start finds the binaries in the page cache.
        started = self._launch(command)
        if not started and CONTAINERD_SLOW in self.log():
            # A containerd that came up after dockerd gave up would hold its socket.
            subprocess.run(["pkill", "-f", str(self.root / "exec")], check=False)
            started = self._launch(command)
        if not started:
            raise RuntimeError(f"dockerd exited:\n{self.log()}")

    def _launch(self, command: list[str]) -> bool:
        """Whether dockerd answers within a minute; False when it exited first."""
        log = (self.root / "dockerd.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if self.socket.exists() and self.docker("version", check=False).returncode == 0:
                return True
            time.sleep(0.2)
        raise RuntimeError(f"dockerd did not start:\n{self.log()}")

    def log(self) -> str:
        path = self.root / "dockerd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def docker(
        self, *args: str, check: bool = True, input: bytes | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [DOCKER_CLIENT, "-H", self.host, *args],
            input=input.decode("latin-1") if input is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "DOCKER_CONFIG": str(self.root / "client")},
        )
        if check and result.returncode != 0:
            command = " ".join(args)
            raise AssertionError(
                f"docker {command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """``docker ARGS`` started in the background; output and errors in one text."""
        return subprocess.Popen(
            [DOCKER_CLIENT, "-H", self.host, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "DOCKER_CONFIG": str(self.root / "client")},
        )

    def import_image(self, reference: str, rootfs_tar: bytes) -> None:
        """``docker import`` a root filesystem (the way to make an image with no hub)."""
        result = subprocess.run(
            [DOCKER_CLIENT, "-H", self.host, "import", "-", reference],
            input=rootfs_tar,
            capture_output=True,
            timeout=300,
            env={**os.environ, "DOCKER_CONFIG": str(self.root / "client")},
        )
        assert result.returncode == 0, result.stderr.decode()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        subprocess.run(["umount", "-R", str(self.root / "exec")], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """One private engine for the session (it takes seconds to start)."""
    require("/usr/sbin/dockerd", "docker.io")
    require(DOCKER_CLIENT, "docker.io")
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root")
    # A short path: the socket path must stay under the 108-byte limit.
    engine = DockerEngine(Path(tempfile.mkdtemp(prefix="reg-e2e-", dir="/tmp")))
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def busybox_image(docker_engine: DockerEngine) -> str:
    """A local image built from busybox-static, name ``e2e/busybox:latest``."""
    reference = "e2e/busybox:latest"
    docker_engine.import_image(reference, busybox_tar())
    return reference


@pytest.fixture
def netns() -> Iterator[NetworkNamespace]:
    """A network namespace on its own address: a registry there is not on localhost."""
    with network_namespace() as namespace:
        yield namespace
