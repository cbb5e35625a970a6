"""The htpasswd file of registry:2's ``auth.htpasswd``: ``user:bcrypt-hash`` lines.

registry:2 accepts bcrypt only; so do we, but a line with another kind of hash
(MD5, SHA-1, crypt, plain text) stops the start with a message naming the file
and line, where registry:2 would only fail that user's logins. The file is kept
as lines, so a tool that edits one user keeps comments and order.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from ..files import write_atomically

FILE_MODE = 0o600
#: registry:2 provisions a missing file with this user (and a random password).
DEFAULT_USER = "docker"
#: bcrypt's cost for new passwords: Go's bcrypt.DefaultCost, as registry:2 uses.
BCRYPT_COST = 10
_BCRYPT_RE = re.compile(r"\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}")
#: A user name the tools accept: printable, no colon, no spaces.
USER_RE = re.compile(r"[^\s:\x00-\x1f\x7f]{1,255}")


class HtpasswdError(ValueError):
    """A problem with the htpasswd file, worded with its path (and line)."""


def _hash_kind(value: str) -> str:
    if value.startswith("$apr1$") or value.startswith("$1$"):
        return "an MD5"
    if value.startswith("{SHA}"):
        return "a SHA-1"
    if value.startswith("$5$") or value.startswith("$6$"):
        return "a SHA-crypt"
    if value.startswith("$2"):
        return "a malformed bcrypt"
    if len(value) == 13:
        return "a DES crypt"
    return "a plain-text (or unknown)"


@dataclass(frozen=True, slots=True)
class Htpasswd:
    """The file's lines, and the users they define (user -> bcrypt hash)."""

    lines: tuple[str, ...]
    users: dict[str, str]

    def render(self) -> bytes:
        return "".join(line + "\n" for line in self.lines).encode()

    def with_user(self, user: str, hashed: str) -> Htpasswd:
        """This file with ``user`` set to ``hashed``: replaced in place, or added at the end."""
        entry = f"{user}:{hashed}"
        lines = list(self.lines)
        for index, line in enumerate(lines):
            if _user_of(line) == user:
                lines[index] = entry
                break
        else:
            lines.append(entry)
        return Htpasswd(tuple(lines), {**self.users, user: hashed})

    def without_user(self, user: str) -> Htpasswd:
        lines = tuple(line for line in self.lines if _user_of(line) != user)
        return Htpasswd(lines, {name: h for name, h in self.users.items() if name != user})


def _user_of(line: str) -> str | None:
    text = line.strip()
    if not text or text.startswith("#") or ":" not in text:
        return None
    return text.split(":", 1)[0].strip()


def parse(text: str, path: str) -> Htpasswd:
    """The file's users; any line that is not ``user:bcrypt`` is an error naming the line."""
    users: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    lines = text.splitlines()
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, separator, hashed = line.partition(":")
        user, hashed = user.strip(), hashed.strip()
        if not separator or not user:
            raise HtpasswdError(f"{path}:{number}: expected USER:BCRYPT-HASH")
        if user in first_seen:
            raise HtpasswdError(
                f"{path}:{number}: user {user!r} appears again (first on line {first_seen[user]})"
            )
        if not _BCRYPT_RE.fullmatch(hashed):
            raise HtpasswdError(
                f"{path}:{number}: user {user!r} has {_hash_kind(hashed)} password; only bcrypt "
                f"is accepted, as in registry:2 (set it again with "
                f"`registry users passwd {user} --file {path}`, or `htpasswd -B`)"
            )
        users[user] = hashed
        first_seen[user] = number
    return Htpasswd(tuple(lines), users)


def read(path: str | Path) -> Htpasswd:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HtpasswdError(f"{path}: no such file") from None
    except IsADirectoryError:
        inside = Path(path) / "htpasswd"
        raise HtpasswdError(
            f"{path} is a folder, not an htpasswd file; name a file, such as {inside} "
            f"(`registry users add NAME --file {inside}` makes it)"
        ) from None
    except PermissionError:
        raise HtpasswdError(f"{path}: permission denied") from None
    except UnicodeDecodeError:
        raise HtpasswdError(f"{path}: not UTF-8 text") from None
    return parse(text, str(path))


def write(path: str | Path, htpasswd: Htpasswd) -> None:
    """Replace the file atomically, readable by its owner only."""
    write_atomically(Path(path), htpasswd.render(), mode=FILE_MODE)


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST)).decode()


def check_password(password: str, hashed: str) -> bool:
    """bcrypt's own comparison (constant-time); slow on purpose: call it in a thread."""
    try:
        return bcrypt.checkpw(password.encode(), hashed.encode())
    except ValueError:
        return False


def random_password() -> str:
    """32 random bytes, base64url: what registry:2 provisions."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def provision(path: str | Path) -> str | None:
    """registry:2's behaviour for a missing file: make it with one user and a random password.

    Returns the password (to be shown once), or None when the file exists.
    """
    target = Path(path)
    if target.exists():
        return None
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    password = random_password()
    entry = Htpasswd((f"{DEFAULT_USER}:{hash_password(password)}",), {})
    try:
        write_atomically(target, entry.render(), mode=FILE_MODE, replace=False)
    except FileExistsError:
        return None  # Another process made it first: its password is the one shown.
    return password


def stat_key(path: str | Path) -> tuple[int, int, int, int] | None:
    """What changes when the file is edited or replaced; None when it is missing."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_dev, info.st_size, info.st_mtime_ns)
