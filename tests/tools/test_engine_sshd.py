"""``--ssh`` against a real sshd on 127.0.0.1 with keys made for the test."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.needs import require
from tests.services.ports import free_port
from tests.tools.test_engine_doctor import make_ca, make_leaf
from tools import engine

SSHD = "/usr/sbin/sshd"
STARTUP_ATTEMPTS = 500  # of 0.1 s: a bound for an sshd that never listens
ENTRY = "10.0.0.5:5000"

pytestmark = pytest.mark.e2e


@dataclass
class Sshd:
    root: Path
    port: int

    def options(self) -> list[str]:
        return [
            "--ssh-command",
            "ssh -F /dev/null",
            f"--ssh-option=-oIdentityFile={self.root / 'client'}",
            "--ssh-option=-oIdentitiesOnly=yes",
            f"--ssh-option=-oUserKnownHostsFile={self.root / 'known_hosts'}",
            "--ssh-option=-oStrictHostKeyChecking=yes",
            "--ssh-option=-oBatchMode=yes",
        ]

    @property
    def target(self) -> str:
        return f"root@127.0.0.1:{self.port}"


def keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def sshd() -> Iterator[Sshd]:
    require(SSHD, "openssh-server")
    require("ssh", "openssh-client")
    if os.geteuid() != 0:
        pytest.skip("sshd logging in as root needs root")
    root = Path(tempfile.mkdtemp(prefix="engine-sshd-"))
    keygen(root / "host_key")
    keygen(root / "client")
    shutil.copyfile(root / "client.pub", root / "authorized_keys")
    port = free_port()
    host_key = (root / "host_key.pub").read_text().split()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
        f"PidFile {root / 'sshd.pid'}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
        "StrictModes no\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    with (root / "sshd.log").open("wb") as log:
        process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(root / "sshd_config")], stdout=log, stderr=log
        )
    try:
        for _ in range(STARTUP_ATTEMPTS):
            if process.poll() is not None:
                pytest.fail(f"sshd exited:\n{(root / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield Sshd(root, port)
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(root, ignore_errors=True)


def test_insecure_add_over_real_ssh(capsys, tmp_path, sshd):
    daemon_json = tmp_path / "etc" / "daemon.json"
    argv = [
        "insecure",
        "add",
        ENTRY,
        "--daemon-json",
        str(daemon_json),
        "--image-store",
        "classic",
        "--ssh",
        sshd.target,
        *sshd.options(),
    ]
    code = engine.main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"[{sshd.target}] created {daemon_json}: added {ENTRY} to insecure-registries" in out
    assert out.endswith(f"{sshd.target}: ok\n")
    assert json.loads(daemon_json.read_text()) == {"insecure-registries": [ENTRY]}

    assert engine.main(argv) == 0
    assert f"[{sshd.target}] unchanged {daemon_json}" in capsys.readouterr().out


def test_trust_with_a_client_key_over_real_ssh(capsys, tmp_path, sshd):
    ca, ca_key = make_ca()
    client, client_key = make_leaf(ca, ca_key, ["client"])
    local = tmp_path / "local"
    local.mkdir()
    for name, data in (("ca.crt", ca), ("client.cert", client), ("client.key", client_key)):
        (local / name).write_bytes(data)
    root = tmp_path / "remote"
    code = engine.main(
        [
            "trust",
            ENTRY,
            "--ca",
            str(local / "ca.crt"),
            "--client-cert",
            str(local / "client.cert"),
            "--client-key",
            str(local / "client.key"),
            "--engine",
            "all",
            "--root",
            str(root),
            "--image-store",
            "classic",
            "--ssh",
            sshd.target,
            *sshd.options(),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    for folder in ("etc/docker/certs.d", "etc/containerd/certs.d", "etc/containers/certs.d"):
        key = root / folder / ENTRY / "client.key"
        assert key.read_bytes() == client_key
        assert key.stat().st_mode & 0o777 == 0o600


def test_a_host_that_cannot_be_reached_does_not_stop_the_others(capsys, tmp_path, sshd):
    daemon_json = tmp_path / "daemon.json"
    closed = f"root@127.0.0.1:{free_port()}"
    code = engine.main(
        [
            "insecure",
            "add",
            ENTRY,
            "--daemon-json",
            str(daemon_json),
            "--image-store",
            "classic",
            "--ssh",
            closed,
            "--ssh",
            sshd.target,
            *sshd.options(),
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert f"{closed}: failed: ssh could not connect or run the command (exit 255)" in (
        captured.out
    )
    assert f"{sshd.target}: ok" in captured.out
    assert daemon_json.is_file()
