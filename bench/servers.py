"""Start our registry and Debian's Go registry (distribution 2.8.2) side by side for benchmarks."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    command: list[str]
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        log = (self.workdir / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen(
            self.command, stdout=log, stderr=log, cwd=self.workdir, env={**os.environ, **self.env}
        )
        log.close()
        for _ in range(400):
            try:
                # 401: up, and asking for credentials (access control on).
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError((self.workdir / f"{self.name}.log").read_text())

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def rss_bytes(self) -> int:
        """Resident memory of the server and all its worker processes."""
        assert self.process is not None
        return sum(_rss(pid) for pid in _tree(self.process.pid))

    def cpu_seconds(self) -> float:
        """User and system CPU the server's processes have used so far."""
        assert self.process is not None
        return sum(_cpu(pid) for pid in _tree(self.process.pid))

    def pss_bytes(self) -> int:
        """Proportional memory (shared pages split between the processes sharing them),
        summed over the server's processes: what the machine is charged."""
        assert self.process is not None
        return sum(_pss(pid) for pid in _tree(self.process.pid))


class Sampler(threading.Thread):
    """Peak RSS and PSS sums of some servers, sampled every 20 ms while it runs."""

    def __init__(self, *servers: Server) -> None:
        super().__init__(daemon=True)
        self.servers = servers
        self.peak_rss: dict[str, int] = {server.name: 0 for server in servers}
        self.peak_pss: dict[str, int] = {server.name: 0 for server in servers}
        self.running = True

    def run(self) -> None:
        while self.running:
            for server in self.servers:
                if server.process is None:
                    continue
                name = server.name
                self.peak_rss[name] = max(self.peak_rss[name], server.rss_bytes())
                self.peak_pss[name] = max(self.peak_pss[name], server.pss_bytes())
            time.sleep(0.02)

    def reset(self, name: str) -> tuple[int, int]:
        peaks = self.peak_rss[name], self.peak_pss[name]
        self.peak_rss[name] = self.peak_pss[name] = 0
        return peaks


def cpu_seconds_of(*pids: int) -> float:
    """User and system CPU that these processes and all their descendants have used so
    far (any process: a gateway, a balancer, not only a :class:`Server`)."""
    return sum(_cpu(pid) for root in pids for pid in _tree(root))


def machine() -> str:
    """The CPU model and core count, for a benchmark's header."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    parent = int(file.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children.get(current, []))
    return found


def _cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as file:
            for line in file:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def ours(
    workdir: Path,
    workers: int = 0,
    access_log: bool = False,
    extra: dict[str, object] | None = None,
    port: int = 0,
) -> Server:
    """Our registry; ``extra`` adds config sections (``auth``, ``access``)."""
    port = port or free_port()
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": not access_log}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "ours-data")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}", "workers": workers},
        **(extra or {}),
    }
    path = workdir / "ours.yml"
    path.write_text(yaml.safe_dump(config))
    return Server(
        "ours", [sys.executable, "-m", "registry", "serve", "--config", str(path)], port, workdir
    )


def go(workdir: Path, access_log: bool = False, extra: dict[str, object] | None = None) -> Server:
    binary = shutil.which("docker-registry")
    if binary is None:
        raise SystemExit("docker-registry not found: apt-get install docker-registry")
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": not access_log}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "go-data")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}"},
        **(extra or {}),
    }
    path = workdir / "go.yml"
    path.write_text(yaml.safe_dump(config))
    return Server("go", [binary, "serve", str(path)], port, workdir)


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="registry-bench-"))
