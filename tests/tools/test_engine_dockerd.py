"""``--reload`` against a real, private dockerd: SIGHUP, no restart, ``docker info`` agrees."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.needs import require
from tools import engine, engine_host

DOCKERD = "/usr/sbin/dockerd"
DOCKER_CLIENT = "/usr/bin/docker"  # Debian's client, of the same age as Debian's dockerd.
STARTUP_ATTEMPTS = 600  # of 0.2 s: a bound for a dockerd that hangs, not a speed test

pytestmark = pytest.mark.e2e


@dataclass
class Dockerd:
    root: Path
    process: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return f"unix://{self.root / 'd.sock'}"

    @property
    def pidfile(self) -> Path:
        return self.root / "d.pid"

    @property
    def config_file(self) -> Path:
        return self.root / "daemon.json"

    def registry_config(self) -> dict[str, object]:
        result = subprocess.run(
            [DOCKER_CLIENT, "-H", self.host, "info", "--format", "{{json .RegistryConfig}}"],
            capture_output=True,
            text=True,
            check=True,
        )
        config = json.loads(result.stdout)
        assert isinstance(config, dict)
        return config

    def log(self) -> str:
        return (self.root / "dockerd.log").read_text(errors="replace")


@pytest.fixture
def dockerd() -> Iterator[Dockerd]:
    require(DOCKERD, "docker.io")
    require(DOCKER_CLIENT, "docker.io")
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root")
    root = Path(tempfile.mkdtemp(prefix="engine-", dir="/tmp"))  # socket path < 108 bytes
    (root / "daemon.json").write_text('{\n  "debug": false\n}\n')
    with (root / "dockerd.log").open("wb") as log:
        process = subprocess.Popen(
            [
                DOCKERD,
                "--storage-driver=vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                f"--data-root={root / 'data'}",
                f"--exec-root={root / 'exec'}",
                f"-H=unix://{root / 'd.sock'}",
                f"--pidfile={root / 'd.pid'}",
                f"--config-file={root / 'daemon.json'}",
            ],
            stdout=log,
            stderr=log,
        )
    daemon = Dockerd(root, process)
    try:
        for _ in range(STARTUP_ATTEMPTS):
            if process.poll() is not None:
                pytest.fail(f"dockerd exited:\n{daemon.log()}")
            probe = subprocess.run(
                [DOCKER_CLIENT, "-H", daemon.host, "version"], capture_output=True, check=False
            )
            if probe.returncode == 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"dockerd did not answer:\n{daemon.log()}")
        yield daemon
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        subprocess.run(["umount", "-R", str(root / "exec")], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def configure(capsys: pytest.CaptureFixture[str], daemon: Dockerd, *argv: str) -> str:
    code = engine.main(
        [
            *argv,
            "--daemon-json",
            str(daemon.config_file),
            "--reload",
            "--pidfile",
            str(daemon.pidfile),
            "--docker-host",
            daemon.host,
            "--docker",
            DOCKER_CLIENT,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out + daemon.log()[-3000:]
    return out


def test_reload_applies_insecure_registries_and_mirrors_live(capsys, dockerd):
    pid = int(dockerd.pidfile.read_text())
    before = dockerd.registry_config()
    assert not engine_host.insecure_listed(before, "10.99.0.1:5000")

    out = configure(capsys, dockerd, "insecure", "add", "10.99.0.1:5000")
    assert f"sent SIGHUP to dockerd (pid {pid}" in out
    assert "docker info lists 10.99.0.1:5000 as insecure" in out
    config = dockerd.registry_config()
    assert config["IndexConfigs"]["10.99.0.1:5000"]["Secure"] is False  # type: ignore[index]

    out = configure(capsys, dockerd, "insecure", "add", "10.98.0.0/16")
    assert "10.98.0.0/16" in dockerd.registry_config()["InsecureRegistryCIDRs"]  # type: ignore[operator]

    out = configure(capsys, dockerd, "mirror", "add", "https://mirror.example")
    assert "docker info lists https://mirror.example as a mirror" in out
    assert dockerd.registry_config()["Mirrors"] == ["https://mirror.example/"]

    out = configure(capsys, dockerd, "insecure", "remove", "10.99.0.1:5000")
    assert "docker info no longer lists 10.99.0.1:5000 as insecure" in out
    assert not engine_host.insecure_listed(dockerd.registry_config(), "10.99.0.1:5000")

    assert int(dockerd.pidfile.read_text()) == pid
    assert dockerd.process.poll() is None
    assert json.loads(dockerd.config_file.read_text()) == {
        "debug": False,
        "insecure-registries": ["10.98.0.0/16"],
        "registry-mirrors": ["https://mirror.example"],
    }


def test_the_real_engine_reports_the_classic_image_store(dockerd):
    result = subprocess.run(
        [DOCKER_CLIENT, "-H", dockerd.host, "info", "--format", "{{json .}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(result.stdout)
    assert info["Driver"] == "vfs"
    assert not engine_host.uses_containerd_image_store(info)


def test_a_reload_the_engine_refuses_is_reported(capsys, dockerd):
    # dockerd refuses a file that repeats a command-line flag; the tool must not say "done".
    dockerd.config_file.write_text('{"data-root": "/elsewhere"}\n')
    code = engine.main(
        [
            "insecure",
            "add",
            "10.97.0.1:5000",
            "--daemon-json",
            str(dockerd.config_file),
            "--reload",
            "--pidfile",
            str(dockerd.pidfile),
            "--docker-host",
            dockerd.host,
            "--docker",
            DOCKER_CLIENT,
            "--image-store",
            "classic",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "docker info still does not list 10.97.0.1:5000 as insecure" in out
    assert dockerd.process.poll() is None
