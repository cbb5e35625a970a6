"""``registry engine ... --ssh``: what is sent, and how each host's result is reported.

A stand-in for ssh runs the remote command with ``sh -c`` here, the way sshd hands it
to the remote user's shell; the test with a real sshd is in test_engine_sshd.py.
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from tests.tools.test_engine_doctor import make_ca
from tools import engine, engine_host, engine_remote

ENTRY = "10.0.0.5:5000"

# Runs "ssh [-o OPT]... [-p PORT] -- DESTINATION COMMAND" locally in the folder $SSH_HOME,
# records the destination and port, and fails like ssh for a host named "down".
FAKE_SSH = """#!/bin/sh
port=22
while [ $# -gt 0 ]; do
  case "$1" in
    -p) port=$2; shift 2 ;;
    -o) shift 2 ;;
    -o*) shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done
destination=$1; shift
echo "$destination $port" >> "$SSH_LOG"
case "$destination" in *down) echo "ssh: connect to host down: No route" >&2; exit 255 ;; esac
cd "$SSH_HOME" && exec sh -c "$*"
"""


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    script = tmp_path / "fake-ssh"
    script.write_text(FAKE_SSH)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    home = tmp_path / "remote-home"
    home.mkdir()
    log = tmp_path / "ssh.log"
    monkeypatch.setenv("SSH_HOME", str(home))
    monkeypatch.setenv("SSH_LOG", str(log))
    return script, log


def test_remote_arguments_drop_the_local_options():
    argv = [
        "insecure",
        "add",
        ENTRY,
        "--ssh",
        "a",
        "--ssh=b",
        "--ssh-option",
        "-oX=1",
        "--ssh-option=-v",
        "--ssh-command",
        "ssh -F x",
        "--sudo",
        "--no-sudo",
        "--remote-python",
        "python3.11",
        "--daemon-json",
        "/etc/d.json",
        "--reload",
    ]
    assert engine_remote.remote_arguments(argv) == [
        "insecure",
        "add",
        ENTRY,
        "--daemon-json",
        "/etc/d.json",
        "--reload",
    ]


@pytest.mark.parametrize(
    ("text", "user", "host", "port"),
    [
        ("host", None, "host", None),
        ("root@host", "root", "host", None),
        ("admin@host.example:2222", "admin", "host.example", 2222),
        ("[::1]:2222", None, "::1", 2222),
        ("u@[fd00::5]", "u", "fd00::5", None),
        ("fd00::5", None, "fd00::5", None),
    ],
)
def test_ssh_targets(text, user, host, port):
    target = engine_remote.parse_target(text)
    assert (target.user, target.host, target.port) == (user, host, port)


@pytest.mark.parametrize("text", ["", "@host", "host:0", "host:ssh", "[::1]x"])
def test_bad_ssh_targets(text):
    with pytest.raises(engine_host.UsageError):
        engine_remote.parse_target(text)


def test_remote_command_and_sudo():
    args = ["insecure", "add", "h:1", "--daemon-json", "/a b/d.json"]
    assert engine_remote.remote_command("python3", args, "never") == (
        "python3 - insecure add h:1 --daemon-json '/a b/d.json'"
    )
    assert engine_remote.remote_command("python3", args, "always").startswith("sudo -n python3 -")
    auto = engine_remote.remote_command("python3", args, "auto")
    assert auto.startswith("sh -c ")
    assert "exec sudo -n" in auto


def test_each_host_runs_the_tool_and_reports(capsys, tmp_path, fake_ssh):
    script, log = fake_ssh
    daemon_json = tmp_path / "daemon.json"
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
            "root@one",
            "--ssh",
            "two:2222",
            "--ssh-command",
            str(script),
            "--ssh-option=-oBatchMode=yes",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"[root@one] created {daemon_json}: added {ENTRY}" in out
    assert f"[two:2222] unchanged {daemon_json}" in out
    assert out.endswith("root@one: ok\ntwo:2222: ok\n")
    assert log.read_text() == "root@one 22\ntwo 2222\n"
    assert json.loads(daemon_json.read_text()) == {"insecure-registries": [ENTRY]}


def test_one_host_failing_does_not_stop_the_others(capsys, tmp_path, fake_ssh):
    script, _ = fake_ssh
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    good = tmp_path / "good.json"
    code = engine.main(
        [
            "insecure",
            "add",
            ENTRY,
            "--daemon-json",
            str(good),
            "--image-store",
            "classic",
            "--ssh",
            "down",
            "--ssh",
            "up",
            "--ssh-command",
            str(script),
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "[down] ssh: connect to host down: No route" in captured.err
    assert "down: failed: ssh could not connect or run the command (exit 255)" in captured.out
    assert "up: ok" in captured.out
    assert good.is_file()
    code = engine.main(
        [
            "insecure",
            "add",
            ENTRY,
            "--daemon-json",
            str(bad),
            "--image-store",
            "classic",
            "--ssh",
            "up",
            "--ssh-command",
            str(script),
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert f"[up] registry engine: error: {bad}:1:2: invalid JSON" in captured.err
    assert "up: failed (exit 1)" in captured.out


def test_trust_sends_the_certificate_files_along(capsys, tmp_path, fake_ssh, monkeypatch):
    script, _ = fake_ssh
    monkeypatch.chdir(tmp_path)
    ca = tmp_path / "local-only" / "ca.crt"
    ca.parent.mkdir()
    ca.write_bytes(make_ca()[0])
    root = tmp_path / "remote-root"
    code = engine.main(
        [
            "trust",
            ENTRY,
            "--ca",
            "local-only/ca.crt",
            "--root",
            str(root),
            "--image-store",
            "classic",
            "--ssh",
            "root@h",
            "--ssh-command",
            str(script),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert (root / "etc/docker/certs.d" / ENTRY / "ca.crt").read_bytes() == ca.read_bytes()
    assert not (tmp_path / "remote-home" / "local-only").exists()


def test_the_bootstrap_carries_the_source_and_inputs(tmp_path):
    program = engine_remote.bootstrap(
        Path(engine_host.__file__).read_text(), {"ca.crt": b"not a certificate"}
    )
    result = subprocess.run(
        ["python3", "-I", "-", "trust", ENTRY, "--ca", "ca.crt", "--root", str(tmp_path)],
        input=program,
        capture_output=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert b"registry engine: error: the CA file holds no PEM certificate" in result.stderr


def test_a_missing_local_file_is_a_usage_error(capsys, tmp_path, fake_ssh):
    script, log = fake_ssh
    code = engine.main(
        [
            "trust",
            ENTRY,
            "--ca",
            str(tmp_path / "none.crt"),
            "--ssh",
            "h",
            "--ssh-command",
            str(script),
        ]
    )
    assert code == 2
    assert "none.crt" in capsys.readouterr().err
    assert not log.exists()
