"""The htpasswd file, the users read from it as it changes, and the failed-login throttle."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from registry.auth import htpasswd
from registry.auth.htpasswd import Htpasswd, HtpasswdError
from registry.auth.throttle import MAX_CLIENTS, LoginThrottle
from registry.auth.users import UserFile
from registry.config import LoginLimits
from registry.errors import ErrorCode, RegistryError

_HASHES: dict[str, str] = {}


def hashed(password: str) -> str:
    """A real bcrypt hash at the lowest cost, so the tests stay quick; one per password."""
    if password not in _HASHES:
        _HASHES[password] = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    return _HASHES[password]


def write_users(path: Path, users: dict[str, str], header: str = "") -> None:
    """The file as an editor leaves it: replaced whole, with a new inode."""
    lines = "".join(f"{user}:{hashed(password)}\n" for user, password in users.items())
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(header + lines)
    os.replace(temporary, path)


def write_text(path: Path, text: str) -> None:
    """The file written in place, as a careless edit does."""
    path.write_text(text)


def edit_in_place(path: Path, old: str, new: str) -> None:
    """Rewritten in place: same inode, same size; only the mtime tells of the change."""
    text = path.read_text()
    assert len(old) == len(new) and old in text
    before = path.stat().st_mtime_ns
    with path.open("r+") as file:
        file.write(text.replace(old, new))
    os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


# --- parsing ---

OTHER_HASHES = [
    ("$apr1$r31.VU6W$0qN9G7j7OAtkbnJ0Lw3/x0", "an MD5"),
    ("$1$saltsalt$qjXMvbEw8oaL.CzflDugX/", "an MD5"),
    ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "a SHA-1"),
    ("$5$rounds=5000$salt$3Fw6Yh0fZ6gJ2v0Cwz7xD9U7q0yQKk1Wb3Qe4M5nHdC", "a SHA-crypt"),
    (
        "$6$salt$IxDD3jeSOb5eB1CX5LBsqZFVkJdido3OUILO5Ifz5iwMuTS4XMS130MTSuDDl3aCI6WouIL9",
        "a SHA-crypt",
    ),
    ("$2y$10$tooshort", "a malformed bcrypt"),
    ("abJnggxhB/yWI", "a DES crypt"),
    ("hunter2", "a plain-text (or unknown)"),
]


@pytest.mark.parametrize(("value", "kind"), OTHER_HASHES)
def test_other_hash_kinds_refused_with_file_and_line(value: str, kind: str) -> None:
    text = f"# users\nalice:{hashed('a')}\n\nbob:{value}\n"
    with pytest.raises(HtpasswdError) as caught:
        htpasswd.parse(text, "/etc/registry/htpasswd")
    message = str(caught.value)
    assert message.startswith(f"/etc/registry/htpasswd:4: user 'bob' has {kind} password")
    assert "only bcrypt" in message
    assert "registry users passwd bob --file /etc/registry/htpasswd" in message


@pytest.mark.parametrize("line", ["no-colon-here", ":" + "$2b$04$" + "a" * 53])
def test_lines_that_are_not_user_and_hash_refused(line: str) -> None:
    with pytest.raises(HtpasswdError, match=r"^f:2: expected USER:BCRYPT-HASH$"):
        htpasswd.parse(f"alice:{hashed('a')}\n{line}\n", "f")


def test_comments_and_blank_lines_are_kept_but_define_nobody() -> None:
    text = f"# team registry\n\n   \nalice:{hashed('a')}\n  # bob left\nbob :  {hashed('b')}  \n"
    parsed = htpasswd.parse(text, "f")
    assert parsed.users == {"alice": hashed("a"), "bob": hashed("b")}
    assert parsed.lines == tuple(text.splitlines())
    assert parsed.render().decode() == text


def test_every_bcrypt_prefix_accepted() -> None:
    base = hashed("a")[4:]  # "04$..." after "$2b$"
    for prefix in ("$2a$", "$2b$", "$2y$", "$2$"):
        assert htpasswd.parse(f"alice:{prefix}{base}\n", "f").users["alice"] == prefix + base


def test_duplicate_user_refused_naming_both_lines() -> None:
    text = f"alice:{hashed('a')}\nbob:{hashed('b')}\n# again\nalice:{hashed('c')}\n"
    with pytest.raises(HtpasswdError) as caught:
        htpasswd.parse(text, "f")
    assert str(caught.value) == "f:4: user 'alice' appears again (first on line 1)"


def test_with_user_and_without_user_keep_comments_and_order() -> None:
    text = f"# head\nalice:{hashed('a')}\n# middle\nbob:{hashed('b')}\n"
    parsed = htpasswd.parse(text, "f")
    changed = parsed.with_user("alice", hashed("new")).with_user("carol", hashed("c"))
    assert changed.lines == (
        "# head",
        f"alice:{hashed('new')}",
        "# middle",
        f"bob:{hashed('b')}",
        f"carol:{hashed('c')}",
    )
    assert htpasswd.parse(changed.render().decode(), "f") == changed
    removed = changed.without_user("bob")
    assert removed.lines == ("# head", f"alice:{hashed('new')}", "# middle", f"carol:{hashed('c')}")
    assert removed.users == {"alice": hashed("new"), "carol": hashed("c")}
    assert parsed.users == {"alice": hashed("a"), "bob": hashed("b")}  # Unchanged: a new value.


# --- files ---


def test_read_a_folder_names_a_file_to_use(tmp_path: Path) -> None:
    with pytest.raises(HtpasswdError) as caught:
        htpasswd.read(tmp_path)
    message = str(caught.value)
    assert f"{tmp_path} is a folder" in message
    assert str(tmp_path / "htpasswd") in message


def test_read_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(HtpasswdError, match="no such file"):
        htpasswd.read(tmp_path / "missing")
    binary = tmp_path / "binary"
    binary.write_bytes(b"alice:\xff\xfe\n")
    with pytest.raises(HtpasswdError, match="not UTF-8"):
        htpasswd.read(binary)


def test_read_reports_the_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{hashed('a')}\nbob:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    with pytest.raises(HtpasswdError, match=rf"^{path}:2: user 'bob' has a SHA-1 password"):
        htpasswd.read(path)


@pytest.fixture
def umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077, 0o777])
def test_write_is_0600_whatever_the_umask(tmp_path: Path, umask: None, mask: int) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("old\n")
    path.chmod(0o644)
    os.umask(mask)
    content = Htpasswd((f"alice:{hashed('a')}",), {"alice": hashed("a")})
    htpasswd.write(path, content)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert htpasswd.read(path).users == {"alice": hashed("a")}
    assert [p.name for p in tmp_path.iterdir()] == ["htpasswd"]  # No temporary file left.


def test_provision_makes_user_docker_with_a_password_that_checks(
    tmp_path: Path, umask: None
) -> None:
    os.umask(0o000)
    path = tmp_path / "auth" / "sub" / "htpasswd"
    password = htpasswd.provision(path)
    assert password is not None and len(password) >= 40
    users = htpasswd.read(path).users
    assert list(users) == ["docker"]
    assert htpasswd.check_password(password, users["docker"])
    assert not htpasswd.check_password(password + "x", users["docker"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_provision_leaves_an_existing_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    write_users(path, {"alice": "a"})
    before = path.read_bytes()
    assert htpasswd.provision(path) is None
    assert path.read_bytes() == before


def test_provisioned_passwords_differ(tmp_path: Path) -> None:
    one = htpasswd.provision(tmp_path / "one")
    two = htpasswd.provision(tmp_path / "two")
    assert one is not None and two is not None and one != two


def test_hash_password_is_registry2s_cost_and_checks() -> None:
    value = htpasswd.hash_password("s3cret")
    assert value.startswith("$2b$10$")
    assert htpasswd.check_password("s3cret", value)
    assert not htpasswd.check_password("S3cret", value)
    assert not htpasswd.check_password("s3cret", "not a hash")


# --- UserFile ---


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    write_users(path, {"alice": "alice-pw", "bob": "bob-pw"}, header="# users\n")
    return path


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts bcrypt comparisons (the real one still runs)."""
    calls: list[str] = []
    real = htpasswd.check_password

    def counted(password: str, value: str) -> bool:
        calls.append(password)
        return real(password, value)

    monkeypatch.setattr(htpasswd, "check_password", counted)
    return calls


async def test_verify_right_wrong_and_unknown(path: Path) -> None:
    users = UserFile(str(path))
    assert await users.verify("alice", "alice-pw")
    assert not await users.verify("alice", "bob-pw")
    assert not await users.verify("alice", "")
    assert not await users.verify("carol", "alice-pw")
    assert not await users.verify("", "")
    assert users.entry("bob") == hashed("bob-pw")
    assert users.entry("carol") is None


async def test_unknown_user_costs_a_bcrypt_check_too(path: Path, checks: list[str]) -> None:
    users = UserFile(str(path))
    assert not await users.verify("carol", "guess")
    assert checks == ["guess"]


def test_a_broken_file_at_start_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("alice:plain\n")
    with pytest.raises(HtpasswdError, match=":1: user 'alice'"):
        UserFile(str(path))
    with pytest.raises(HtpasswdError, match="no such file"):
        UserFile(str(tmp_path / "missing"))


async def test_remembered_password_skips_bcrypt(path: Path, checks: list[str]) -> None:
    users = UserFile(str(path))
    assert await users.verify("alice", "alice-pw")
    assert await users.verify("alice", "alice-pw")
    assert await users.verify("alice", "alice-pw")
    assert checks == ["alice-pw"]
    # A wrong password is never remembered, and never becomes right.
    assert not await users.verify("alice", "wrong")
    assert not await users.verify("alice", "wrong")
    assert checks == ["alice-pw", "wrong", "wrong"]


async def test_added_user_accepted_without_a_new_userfile(path: Path) -> None:
    users = UserFile(str(path))
    assert not await users.verify("carol", "carol-pw")
    write_users(path, {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"})
    assert await users.verify("carol", "carol-pw")


async def test_removed_user_refused_at_once_though_remembered(
    path: Path, checks: list[str]
) -> None:
    users = UserFile(str(path))
    assert await users.verify("alice", "alice-pw")
    assert await users.verify("alice", "alice-pw")
    assert len(checks) == 1  # Remembered.
    write_users(path, {"bob": "bob-pw"})
    assert not await users.verify("alice", "alice-pw")
    assert await users.verify("bob", "bob-pw")


async def test_password_change_takes_effect(path: Path) -> None:
    users = UserFile(str(path))
    assert await users.verify("alice", "alice-pw")
    write_users(path, {"alice": "changed", "bob": "bob-pw"})
    assert not await users.verify("alice", "alice-pw")
    assert await users.verify("alice", "changed")
    # And back: the old password is checked again, not taken from memory of the first line.
    write_users(path, {"alice": "alice-pw", "bob": "bob-pw"})
    assert not await users.verify("alice", "changed")
    assert await users.verify("alice", "alice-pw")


async def test_edit_in_place_of_the_same_size_is_seen(path: Path) -> None:
    users = UserFile(str(path))
    assert await users.verify("alice", "alice-pw")
    edit_in_place(path, hashed("alice-pw"), hashed("alice-p2"))
    assert not await users.verify("alice", "alice-pw")
    assert await users.verify("alice", "alice-p2")


async def test_broken_edit_keeps_the_last_good_users(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    users = UserFile(str(path))
    assert await users.verify("alice", "alice-pw")
    with caplog.at_level(logging.ERROR, logger="registry.auth.users"):
        write_text(path, f"alice:{hashed('alice-pw')}\nmallory:$apr1$x$y\n")
        assert await users.verify("alice", "alice-pw")
        assert await users.verify("bob", "bob-pw")  # Still there: the last good file.
        assert not await users.verify("mallory", "y")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # Once per change, not once per request.
    assert f"{path}:2: user 'mallory' has an MD5 password" in errors[0].getMessage()
    assert "keeping the users read before" in errors[0].getMessage()
    # Fixed: the new file counts again.
    write_users(path, {"alice": "alice-pw"})
    assert not await users.verify("bob", "bob-pw")


async def test_file_removed_then_written_broken_keeps_the_last_good_users(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An editor that deletes and recreates: a request may see the file missing, then broken."""
    users = UserFile(str(path))
    with caplog.at_level(logging.ERROR, logger="registry.auth.users"):
        os.unlink(path)
        assert await users.verify("alice", "alice-pw")
        write_text(path, "alice:half-writ")
        assert await users.verify("alice", "alice-pw")
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(messages) == 2
    assert "no such file" in messages[0]
    assert f"{path}:1: user 'alice'" in messages[1]
    write_users(path, {"carol": "carol-pw"})
    assert await users.verify("carol", "carol-pw")
    assert not await users.verify("alice", "alice-pw")


async def test_concurrent_checks_of_the_same_credentials_run_bcrypt_once(
    path: Path, checks: list[str]
) -> None:
    users = UserFile(str(path))
    results = await asyncio.gather(*(users.verify("alice", "alice-pw") for _ in range(8)))
    assert results == [True] * 8
    assert checks == ["alice-pw"]
    wrong = await asyncio.gather(*(users.verify("alice", "guess") for _ in range(8)))
    assert wrong == [False] * 8
    assert checks == ["alice-pw", "guess"]
    # Different credentials are checked each on their own.
    mixed = await asyncio.gather(users.verify("alice", "x1"), users.verify("bob", "bob-pw"))
    assert mixed == [False, True]
    assert sorted(checks[2:]) == ["bob-pw", "x1"]


async def test_a_failing_check_fails_every_waiter_and_is_not_remembered(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = UserFile(str(path))
    real = htpasswd.check_password

    def broken(password: str, value: str) -> bool:
        raise OSError("no threads left")

    monkeypatch.setattr(htpasswd, "check_password", broken)
    results = await asyncio.gather(
        *(users.verify("alice", "alice-pw") for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, OSError) for result in results)
    monkeypatch.setattr(htpasswd, "check_password", real)
    assert await users.verify("alice", "alice-pw")


# --- LoginThrottle ---


def throttle(failures: int = 3, window: float = 60.0) -> LoginThrottle:
    return LoginThrottle(LoginLimits(failures=failures, window=window, delay=0.0))


def locked(limiter: LoginThrottle, client: str) -> bool:
    try:
        limiter.check(client)
    except RegistryError:
        return True
    return False


def test_lockout_after_n_failures_with_retry_after() -> None:
    limiter = throttle(failures=3, window=60.0)
    limiter.failed("10.0.0.1")
    limiter.failed("10.0.0.1")
    assert not locked(limiter, "10.0.0.1")
    limiter.failed("10.0.0.1")
    with pytest.raises(RegistryError) as caught:
        limiter.check("10.0.0.1")
    error = caught.value
    assert error.code is ErrorCode.TOOMANYREQUESTS
    assert error.status == 429
    assert error.headers["Retry-After"] == "60"
    assert not locked(limiter, "10.0.0.2")  # Per client.


def test_success_resets_the_count() -> None:
    limiter = throttle(failures=3)
    limiter.failed("c")
    limiter.failed("c")
    limiter.succeeded("c")
    limiter.failed("c")
    limiter.failed("c")
    assert not locked(limiter, "c")
    limiter.failed("c")
    assert locked(limiter, "c")


def test_success_does_not_lift_a_lockout() -> None:
    limiter = throttle(failures=1)
    limiter.failed("c")
    limiter.succeeded("c")
    assert locked(limiter, "c")


def test_unlocked_after_the_window() -> None:
    limiter = throttle(failures=2, window=0.2)
    limiter.failed("c")
    limiter.failed("c")
    with pytest.raises(RegistryError) as caught:
        limiter.check("c")
    assert caught.value.headers["Retry-After"] == "1"  # Rounded up, never 0.
    time.sleep(0.3)
    assert not locked(limiter, "c")
    limiter.failed("c")  # The count started again with the lockout.
    assert not locked(limiter, "c")
    limiter.failed("c")
    assert locked(limiter, "c")


def test_failures_older_than_the_window_are_forgotten() -> None:
    limiter = throttle(failures=2, window=0.2)
    limiter.failed("c")
    time.sleep(0.3)
    limiter.failed("c")
    assert not locked(limiter, "c")


def test_tracked_clients_are_bounded_longest_quiet_forgotten_first() -> None:
    limiter = throttle(failures=2)
    limiter.failed("quiet")
    for index in range(MAX_CLIENTS - 1):
        limiter.failed(f"10.{index // 65536}.{index // 256 % 256}.{index % 256}")
    limiter.failed("recent")  # One more than the bound: "quiet" goes.
    assert len(limiter._failures) == MAX_CLIENTS
    limiter.failed("quiet")
    assert not locked(limiter, "quiet")  # Its first failure was forgotten.
    limiter.failed("recent")
    assert locked(limiter, "recent")


def test_expired_lockouts_are_dropped_when_the_table_is_full() -> None:
    limiter = throttle(failures=1, window=0.2)
    for index in range(MAX_CLIENTS):
        limiter.failed(f"client-{index}")
    assert len(limiter._locked) == MAX_CLIENTS
    time.sleep(0.3)
    limiter.failed("late")  # Past the bound: the expired lockouts go, the new one stays.
    assert len(limiter._locked) == 1
    assert locked(limiter, "late")
