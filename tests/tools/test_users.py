"""``registry users``: the file it writes, what it refuses, and that it never loses a user."""

from __future__ import annotations

import fcntl
import getpass
import io
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from registry import cli
from registry.auth import htpasswd
from tools import users

MD5_LINE = "carol:$apr1$Vh0bVu8Z$Q8XDO9nlaUtyhR1oBmX/8."

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """``registry users ARGV`` in-process, with ``stdin`` as its standard input (not a tty)."""
    for name in users.FILE_ENV:
        monkeypatch.delenv(name, raising=False)

    def call(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = users.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture
def file(tmp_path: Path) -> Path:
    return tmp_path / "auth" / "htpasswd"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def hashes(path: Path) -> dict[str, str]:
    return htpasswd.read(path).users


def subprocess_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}


def test_add_makes_folder_and_file_owner_only(run: Run, file: Path) -> None:
    code, out, err = run("add", "alice", "--file", str(file), stdin="s3cret\n")
    assert (code, err) == (0, "")
    assert out == f"added user alice to {file}\n"
    assert mode(file.parent) == 0o700
    assert mode(file) == 0o600
    assert mode(file.parent / ".htpasswd.lock") == 0o600
    hashed = hashes(file)["alice"]
    assert hashed.startswith("$2b$10$")
    assert htpasswd.check_password("s3cret", hashed)
    assert not htpasswd.check_password("s3cret\n", hashed)


def test_stdin_gives_its_first_line_without_the_line_ending_only(run: Run, file: Path) -> None:
    assert run("add", "alice", "--file", str(file), stdin=" two words \r\nnext line\n")[0] == 0
    assert htpasswd.check_password(" two words ", hashes(file)["alice"])
    assert run("add", "bob", "--file", str(file), stdin="no newline at the end")[0] == 0
    assert htpasswd.check_password("no newline at the end", hashes(file)["bob"])


def test_add_refuses_an_existing_user(run: Run, file: Path) -> None:
    run("add", "alice", "--file", str(file), stdin="first\n")
    before = file.read_bytes()
    code, out, err = run("add", "alice", "--file", str(file), stdin="second\n")
    assert code == 1 and out == ""
    assert "user 'alice' exists already" in err
    assert f"registry users passwd alice --file {file}" in err
    assert file.read_bytes() == before


def test_comments_blank_lines_and_order_are_kept(run: Run, file: Path) -> None:
    file.parent.mkdir()
    bob = htpasswd.hash_password("bob-pw")
    zed = htpasswd.hash_password("zed-pw")
    file.write_text(f"# team A\nzed:{zed}\n\n# team B\nbob:{bob}\n")
    assert run("add", "alice", "--file", str(file), stdin="alice-pw\n")[0] == 0
    lines = file.read_text().splitlines()
    assert lines[:5] == ["# team A", f"zed:{zed}", "", "# team B", f"bob:{bob}"]
    assert lines[5].startswith("alice:$2b$") and len(lines) == 6
    assert run("list", "--file", str(file)) == (0, "zed\nbob\nalice\n", "")

    assert run("passwd", "zed", "--file", str(file), stdin="new-zed\n")[0] == 0
    lines = file.read_text().splitlines()
    assert lines[0] == "# team A" and lines[1].startswith("zed:") and lines[1] != f"zed:{zed}"
    assert lines[2:5] == ["", "# team B", f"bob:{bob}"]

    assert run("remove", "bob", "--file", str(file)) == (0, f"removed user bob from {file}\n", "")
    assert file.read_text().splitlines()[:4] == ["# team A", lines[1], "", "# team B"]
    assert run("list", "--file", str(file)) == (0, "zed\nalice\n", "")


def test_passwd_changes_only_that_password(run: Run, file: Path) -> None:
    run("add", "alice", "--file", str(file), stdin="old\n")
    run("add", "bob", "--file", str(file), stdin="bob-pw\n")
    bob = hashes(file)["bob"]
    code, out, _ = run("passwd", "alice", "--file", str(file), stdin="new\n")
    assert code == 0 and out == f"changed the password of alice in {file}\n"
    assert htpasswd.check_password("new", hashes(file)["alice"])
    assert not htpasswd.check_password("old", hashes(file)["alice"])
    assert hashes(file)["bob"] == bob
    assert mode(file) == 0o600


def test_passwd_and_remove_refuse_a_missing_user_or_file(run: Run, file: Path) -> None:
    code, _, err = run("passwd", "alice", "--file", str(file), stdin="pw\n")
    assert code == 1 and f"{file}: no such file" in err
    code, _, err = run("remove", "alice", "--file", str(file))
    assert code == 1 and f"{file}: no such file" in err
    assert not file.parent.exists()

    run("add", "alice", "--file", str(file), stdin="pw\n")
    before = file.read_bytes()
    code, _, err = run("passwd", "bob", "--file", str(file), stdin="pw\n")
    assert code == 1 and "no user 'bob'" in err
    code, _, err = run("remove", "bob", "--file", str(file))
    assert code == 1 and "no user 'bob'" in err
    assert file.read_bytes() == before


def test_list_of_a_file_without_users_prints_nothing(run: Run, file: Path) -> None:
    file.parent.mkdir()
    file.write_text("# nobody yet\n")
    assert run("list", "--file", str(file)) == (0, "", "")
    code, _, err = run("list", "--file", str(file.parent / "missing"))
    assert code == 1 and "missing: no such file" in err


def test_generate_prints_the_password_once(run: Run, file: Path) -> None:
    code, out, _ = run("add", "ci", "--generate", "--file", str(file), stdin="ignored\n")
    assert code == 0
    first, second = out.splitlines()
    assert first == f"added user ci to {file}"
    assert second.startswith("password for ci: ")
    password = second.removeprefix("password for ci: ")
    assert len(password) == 43
    assert htpasswd.check_password(password, hashes(file)["ci"])

    code, out, _ = run("passwd", "ci", "--generate", "--file", str(file))
    new = out.splitlines()[1].removeprefix("password for ci: ")
    assert code == 0 and new != password
    assert htpasswd.check_password(new, hashes(file)["ci"])

    code, _, err = run("add", "x", "--generate", "--password-stdin", "--file", str(file))
    assert code == 2 and "not allowed with argument" in err


@pytest.mark.parametrize("name", ["a b", "a:b", "#admin", "", "tab\there", "x" * 256])
def test_bad_user_names_are_usage_errors(run: Run, file: Path, name: str) -> None:
    code, out, err = run("add", name, "--file", str(file), stdin="pw\n")
    assert code == 2 and out == ""
    assert "is not a user name" in err
    assert not file.parent.exists()


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("\n", "the password is empty"),
        ("", "no password on standard input"),
        ("x" * 73 + "\n", "longer than 72 bytes"),
    ],
)
def test_unusable_passwords_change_nothing(run: Run, file: Path, stdin: str, message: str) -> None:
    code, out, err = run("add", "alice", "--file", str(file), stdin=stdin)
    assert code == 1 and out == "" and message in err
    assert not file.exists()


def test_a_password_is_never_an_argument(run: Run, file: Path) -> None:
    for argv in (
        ["add", "alice", "--password", "s3cret"],
        ["add", "alice", "--password=s3cret"],
        ["add", "alice", "s3cret"],
        ["add", "alice", "--pass"],  # no abbreviations of --password-stdin either
    ):
        code, _, _ = run(*argv, "--file", str(file), stdin="pw\n")
        assert code == 2, argv
    assert not file.exists()


def test_a_bad_line_is_named_and_nothing_changes(run: Run, file: Path) -> None:
    file.parent.mkdir()
    alice = htpasswd.hash_password("alice-pw")
    file.write_text(f"alice:{alice}\n{MD5_LINE}\n")
    before = file.read_bytes()
    for argv in (["add", "bob"], ["list"], ["passwd", "alice"], ["remove", "alice"]):
        code, out, err = run(*argv, "--file", str(file), stdin="pw\n")
        assert code == 1 and out == "", argv
        assert f"{file}:2: user 'carol' has an MD5 password" in err
        assert "Traceback" not in err
    assert file.read_bytes() == before


def test_passwd_fixes_the_line_the_error_names(run: Run, file: Path) -> None:
    """The MD5 error says to run ``passwd NAME``: that must then work."""
    file.parent.mkdir()
    alice = htpasswd.hash_password("alice-pw")
    file.write_text(f"# users\n{MD5_LINE}\nalice:{alice}\n")
    code, _, err = run("list", "--file", str(file))
    assert code == 1 and "registry users passwd carol" in err
    assert run("passwd", "carol", "--file", str(file), stdin="carol-pw\n")[0] == 0
    lines = file.read_text().splitlines()
    assert (
        lines[0] == "# users" and lines[1].startswith("carol:$2b$") and lines[2] == f"alice:{alice}"
    )
    assert htpasswd.check_password("carol-pw", hashes(file)["carol"])

    file.write_text(f"{MD5_LINE}\nalice:{alice}\n")
    assert run("remove", "carol", "--file", str(file))[0] == 0
    assert file.read_text() == f"alice:{alice}\n"


def test_a_user_written_twice_is_removed_not_half_fixed(run: Run, file: Path) -> None:
    file.parent.mkdir()
    first, second = htpasswd.hash_password("one"), htpasswd.hash_password("two")
    file.write_text(f"alice:{first}\nalice:{second}\n")
    before = file.read_bytes()
    code, _, err = run("passwd", "alice", "--file", str(file), stdin="three\n")
    assert code == 1 and "user 'alice' appears again (first on line 1)" in err
    assert file.read_bytes() == before
    assert run("remove", "alice", "--file", str(file))[0] == 0
    assert file.read_text() == ""


def test_unreadable_files_fail_with_a_message(run: Run, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    code, _, err = run("list", "--file", str(folder))
    assert code == 1 and f"{folder} is a folder" in err
    code, _, err = run("add", "alice", "--file", str(folder), stdin="pw\n")
    assert code == 1 and f"{folder} is a folder" in err

    binary = tmp_path / "binary"
    binary.write_bytes(b"alice:\xff\xfe\n")
    code, _, err = run("add", "bob", "--file", str(binary), stdin="pw\n")
    assert code == 1 and f"{binary}: not UTF-8 text" in err
    assert binary.read_bytes() == b"alice:\xff\xfe\n"

    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    code, _, err = run("add", "bob", "--file", str(blocker / "htpasswd"), stdin="pw\n")
    assert code == 1 and str(blocker) in err and "Traceback" not in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_password_is_asked_twice(
    run: Run, file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts: list[str] = []
    answers: list[str] = []

    def fake_getpass(prompt: str = "Password: ", stream: object = None) -> str:
        prompts.append(prompt)
        return answers.pop(0)

    monkeypatch.setattr(getpass, "getpass", fake_getpass)

    def on_terminal(*argv: str, typed: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", _Terminal(typed))
        code = users.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    answers[:] = ["right", "wrong"]
    code, _, err = on_terminal("add", "alice", "--file", str(file))
    assert code == 1 and "the passwords do not match" in err
    assert prompts == ["Password for alice: ", "Again: "]
    assert not file.exists()

    answers[:] = ["", ""]
    code, _, err = on_terminal("add", "alice", "--file", str(file))
    assert code == 1 and "the password is empty" in err and not file.exists()

    prompts.clear()
    answers[:] = ["typed twice", "typed twice"]
    assert on_terminal("add", "alice", "--file", str(file))[0] == 0
    assert prompts == ["Password for alice: ", "Again: "]
    assert htpasswd.check_password("typed twice", hashes(file)["alice"])

    # --password-stdin reads the terminal's line instead of prompting.
    prompts.clear()
    code, _, _ = on_terminal(
        "passwd", "alice", "--password-stdin", "--file", str(file), typed="x\n"
    )
    assert code == 0
    assert prompts == []
    assert htpasswd.check_password("x", hashes(file)["alice"])

    # A user that exists is refused before anyone types a password.
    assert on_terminal("add", "alice", "--file", str(file))[0] == 1
    assert prompts == []


def test_file_from_the_environment(run: Run, file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run("list")
    assert code == 2 and "--file" in err
    monkeypatch.setenv("REGISTRY_AUTH_HTPASSWD_PATH", str(file.parent / "server.htpasswd"))
    monkeypatch.setenv("REGISTRY_USERS_FILE", str(file))
    assert run("add", "alice", stdin="pw\n")[0] == 0
    assert run("list") == (0, "alice\n", "")
    assert not (file.parent / "server.htpasswd").exists()
    monkeypatch.delenv("REGISTRY_USERS_FILE")
    assert run("add", "bob", stdin="pw\n")[0] == 0
    assert hashes(file.parent / "server.htpasswd").keys() == {"bob"}


def test_a_symlinked_file_stays_a_link(run: Run, tmp_path: Path) -> None:
    target = tmp_path / "real" / "htpasswd"
    target.parent.mkdir()
    target.write_text("")
    link = tmp_path / "htpasswd"
    link.symlink_to(target)
    assert run("add", "alice", "--file", str(link), stdin="pw\n")[0] == 0
    assert link.is_symlink()
    assert hashes(target).keys() == {"alice"}


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_root_keeps_the_files_owner(run: Run, file: Path) -> None:
    file.parent.mkdir()
    file.write_text("")
    os.chown(file, 4321, 4322)
    assert run("add", "alice", "--file", str(file), stdin="pw\n")[0] == 0
    info = file.stat()
    assert (info.st_uid, info.st_gid) == (4321, 4322)
    assert mode(file) == 0o600


def test_the_registry_command_dispatches_to_users(
    file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw\n"))
    assert cli.main(["users", "add", "alice", "--file", str(file)]) == 0
    assert cli.main(["users", "list", "--file", str(file)]) == 0
    assert capsys.readouterr().out.endswith("alice\n")
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "users" in capsys.readouterr().out


def test_through_a_real_process_the_password_stays_off_the_command_line(tmp_path: Path) -> None:
    file = tmp_path / "htpasswd"
    password = "pipe-only-Secret-42"
    command = [sys.executable, "-m", "registry", "users", "add", "alice", "--file", str(file)]
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env(),
        cwd=tmp_path,
    )
    # The process waits for its password now; everyone on the machine can read its argv
    # (empty for a moment, until the new program has replaced the forked one).
    deadline = time.monotonic() + 30
    while not (cmdline := Path(f"/proc/{process.pid}/cmdline").read_bytes()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    out, err = process.communicate(f"{password}\n".encode(), timeout=60)
    assert process.returncode == 0, err
    assert out.decode() == f"added user alice to {file}\n"
    assert cmdline.split(b"\0")[-6:-1] == [
        b"users",
        b"add",
        b"alice",
        b"--file",
        str(file).encode(),
    ]
    assert password.encode() not in cmdline
    assert htpasswd.check_password(password, hashes(file)["alice"])
    assert password not in file.read_text()


def start_add(file: Path, name: str) -> subprocess.Popen[bytes]:
    """``registry users add NAME`` in its own process, waiting for its password on stdin."""
    return subprocess.Popen(
        [sys.executable, "-m", "registry", "users", "add", name, "--file", str(file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env(),
    )


def send(process: subprocess.Popen[bytes], password: str) -> None:
    assert process.stdin is not None
    process.stdin.write(f"{password}\n".encode())
    process.stdin.close()


def finish(process: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    assert process.stdout is not None and process.stderr is not None
    code = process.wait(timeout=60)
    with process.stdout, process.stderr:
        return code, process.stdout.read().decode(), process.stderr.read().decode()


def test_concurrent_adds_lose_no_user(tmp_path: Path) -> None:
    file = tmp_path / "htpasswd"
    processes = [start_add(file, f"user{n}") for n in range(8)]
    time.sleep(1.5)  # All of them started, waiting on stdin: the writes then overlap.
    for n, process in enumerate(processes):
        send(process, f"password-{n}")
    for process in processes:
        code, _, err = finish(process)
        assert code == 0, err
    found = hashes(file)
    assert sorted(found) == sorted(f"user{n}" for n in range(8))
    for n in range(8):
        assert htpasswd.check_password(f"password-{n}", found[f"user{n}"])


def test_a_change_waits_for_the_lock_and_rereads_the_file(tmp_path: Path) -> None:
    file = tmp_path / "htpasswd"
    file.write_text("")
    lock = os.open(tmp_path / ".htpasswd.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        process = start_add(file, "alice")
        send(process, "pw")
        time.sleep(1.5)
        assert process.poll() is None, "the command did not wait for the lock"
        # Someone else's change, made while the lock is held: it must survive.
        htpasswd.write(file, htpasswd.parse(f"bob:{htpasswd.hash_password('b')}\n", str(file)))
    finally:
        os.close(lock)
    code, _, err = finish(process)
    assert code == 0, err
    assert list(hashes(file)) == ["bob", "alice"]
