"""``registry users``: the users in the htpasswd file registry:2's ``auth.htpasswd.path`` names.

::

    registry users add NAME --file FILE     [--password-stdin | --generate]
    registry users passwd NAME --file FILE  [--password-stdin | --generate]
    registry users remove NAME --file FILE
    registry users list --file FILE

``--file`` defaults to ``$REGISTRY_USERS_FILE``, else ``$REGISTRY_AUTH_HTPASSWD_PATH``
(the variable the server itself reads for ``auth.htpasswd.path``).

A password never comes from the command line, where ``ps`` and shell history
would show it: on a terminal it is asked for twice; otherwise it is the first
line of standard input (as ``docker login --password-stdin``); ``--generate``
makes a random one and prints it once. Passwords are hashed with bcrypt.

Every change is one atomic write (mode 0600; when root edits it, the file keeps
its owner), made under a lock on ``.FILE.lock`` beside the file, so two
concurrent commands never lose each other's user. Comments and line order survive.

Exit codes: 0 done, 1 failure (a file that cannot be read, parsed or written, a
user that exists already or does not exist, no usable password), 2 usage error
(bad option or user name).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from registry.auth import htpasswd
from registry.auth.htpasswd import Htpasswd, HtpasswdError
from registry.files import write_atomically

if sys.platform != "win32":
    import fcntl

PROG = "registry users"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
FILE_ENV = ("REGISTRY_USERS_FILE", "REGISTRY_AUTH_HTPASSWD_PATH")
FOLDER_MODE = 0o700
LOCK_MODE = 0o600
# bcrypt reads only 72 bytes; bcrypt 5 and Go's bcrypt (registry:2) refuse longer passwords.
MAX_PASSWORD_BYTES = 72


class UsersError(Exception):
    """A change that cannot be made; the message says why (exit 1)."""


def _user_name(text: str) -> str:
    # A leading '#' would make the line a comment: the user would silently not exist.
    if not htpasswd.USER_RE.fullmatch(text) or text.startswith("#"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a user name: 1 to 255 characters without spaces, colons or "
            "control characters, not starting with '#'"
        )
    return text


def _parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    default = next((environ[name] for name in FILE_ENV if environ.get(name)), None)
    file = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    file.add_argument(
        "--file",
        type=Path,
        default=default,
        required=default is None,
        metavar="FILE",
        help="the htpasswd file (auth.htpasswd.path; default: "
        + (f"{default}, from the environment" if default else f"${FILE_ENV[0]}")
        + ")",
    )
    password = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    source = password.add_mutually_exclusive_group()
    source.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input, even on a terminal",
    )
    source.add_argument(
        "--generate", action="store_true", help="make a random password and print it once"
    )
    name = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    name.add_argument("name", type=_user_name, metavar="NAME", help="the user name")

    parser = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,
        description="Users of the registry's htpasswd file (bcrypt, as registry:2 reads it). "
        "Passwords are asked for on a terminal, else read from the first line of standard "
        "input; never given as arguments.",
        epilog="Exit codes: 0 done, 1 failure, 2 usage error.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "add",
        parents=[name, file, password],
        allow_abbrev=False,
        help="add a user (the file and its folder are made if missing)",
    )
    commands.add_parser(
        "passwd",
        parents=[name, file, password],
        allow_abbrev=False,
        help="change the password of a user",
    )
    commands.add_parser("remove", parents=[name, file], allow_abbrev=False, help="remove a user")
    commands.add_parser(
        "list", parents=[file], allow_abbrev=False, help="print the user names in file order"
    )
    return parser


def _target(file: Path) -> Path:
    # The link stays a link: the file it points to is the one edited.
    return Path(os.path.realpath(file)) if file.is_symlink() else file


def _line_user(line: str) -> str | None:
    text = line.strip()
    if not text or text.startswith("#") or ":" not in text:
        return None
    return text.split(":", 1)[0].strip()


def _read(path: Path, *, missing_ok: bool = False, fixing: str | None = None) -> Htpasswd:
    """The file; with ``fixing``, also when only that user's lines are wrong (e.g. an MD5 hash).

    The error message for such a line tells the user to run ``passwd NAME``, so
    passwd and remove must work on it; any other bad line is still refused.
    """
    if missing_ok and not path.exists():
        return Htpasswd((), {})
    try:
        return htpasswd.read(path)
    except HtpasswdError as error:
        if fixing is None:
            raise
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            raise error from None
        # Blank (not drop) the user's lines, so errors about the others keep their numbers.
        others = "\n".join("" if _line_user(line) == fixing else line for line in lines)
        kept = htpasswd.parse(others, str(path))
        return Htpasswd(tuple(lines), {**kept.users, fixing: ""})


def _check_password(password: str) -> str:
    if not password:
        raise UsersError("the password is empty; nothing changed")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise UsersError(
            f"the password is longer than {MAX_PASSWORD_BYTES} bytes, the most bcrypt "
            "uses; nothing changed"
        )
    return password


def _password(args: argparse.Namespace, name: str) -> str:
    """The new password: generated, asked for twice on a terminal, else stdin's first line."""
    if args.generate:
        return htpasswd.random_password()
    stdin = sys.stdin
    if stdin is None:
        raise UsersError("no standard input to read the password from (try --generate)")
    if args.password_stdin or not stdin.isatty():
        line = stdin.readline()
        if not line:
            raise UsersError(
                "no password on standard input (give it as one line, or use --generate)"
            )
        # Only the line ending goes, as with `docker login --password-stdin`.
        return _check_password(line.removesuffix("\n").removesuffix("\r"))
    try:
        first = getpass.getpass(f"Password for {name}: ")
        second = getpass.getpass("Again: ")
    except EOFError:
        raise UsersError("no password given; nothing changed") from None
    if first != second:
        raise UsersError("the passwords do not match; nothing changed")
    return _check_password(first)


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    except FileExistsError:
        raise UsersError(f"{folder}: exists and is not a folder") from None
    except OSError as error:
        raise UsersError(f"{folder}: cannot create folder: {error.strerror}") from None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise read-change-write of ``path`` between processes (the lock file stays)."""
    if sys.platform == "win32":
        yield
        return
    lock = path.with_name(f".{path.name}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, LOCK_MODE)
    except OSError as error:
        raise UsersError(f"{lock}: cannot open the lock file: {error.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _owner_to_keep(path: Path) -> tuple[int, int] | None:
    # Only root can give a file away; anyone else writes a file they own, as any editor does.
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    owner = (info.st_uid, info.st_gid)
    return None if owner == (os.geteuid(), os.getegid()) else owner


def _write(path: Path, content: Htpasswd) -> None:
    data = content.render()
    # Never write what the server would refuse (a user left twice after fixing one line).
    htpasswd.parse(data.decode(), str(path))
    try:
        write_atomically(path, data, mode=htpasswd.FILE_MODE, owner=_owner_to_keep(path))
    except OSError as error:
        raise UsersError(f"{path}: cannot write: {error.strerror}") from None


def _change(
    path: Path,
    change: Callable[[Htpasswd], Htpasswd],
    *,
    create: bool = False,
    fixing: str | None = None,
) -> None:
    """Read, change and write the file under its lock, so no concurrent change is lost."""
    if create:
        _make_folder(path.parent)
    with _locked(path):
        _write(path, change(_read(path, missing_ok=create, fixing=fixing)))


def _exists_already(path: Path, name: str) -> UsersError:
    return UsersError(
        f"{path}: user {name!r} exists already; change the password with "
        f"`{PROG} passwd {name} --file {path}`"
    )


def _no_such_user(path: Path, name: str) -> UsersError:
    return UsersError(f"{path}: no user {name!r} (`{PROG} list --file {path}` shows them)")


def _run_add(args: argparse.Namespace, out: TextIO) -> int:
    path, name = _target(args.file), args.name
    if name in _read(path, missing_ok=True).users:
        raise _exists_already(path, name)  # Before asking for a password that cannot be used.
    password = _password(args, name)
    hashed = htpasswd.hash_password(password)

    def add(current: Htpasswd) -> Htpasswd:
        if name in current.users:
            raise _exists_already(path, name)
        return current.with_user(name, hashed)

    _change(path, add, create=True)
    print(f"added user {name} to {path}", file=out)
    if args.generate:
        print(f"password for {name}: {password}", file=out)
    return EXIT_OK


def _run_passwd(args: argparse.Namespace, out: TextIO) -> int:
    path, name = _target(args.file), args.name
    if name not in _read(path, fixing=name).users:
        raise _no_such_user(path, name)
    password = _password(args, name)
    hashed = htpasswd.hash_password(password)

    def set_password(current: Htpasswd) -> Htpasswd:
        if name not in current.users:
            raise _no_such_user(path, name)  # Removed while the password was typed.
        return current.with_user(name, hashed)

    _change(path, set_password, fixing=name)
    print(f"changed the password of {name} in {path}", file=out)
    if args.generate:
        print(f"password for {name}: {password}", file=out)
    return EXIT_OK


def _run_remove(args: argparse.Namespace, out: TextIO) -> int:
    path, name = _target(args.file), args.name

    def remove(current: Htpasswd) -> Htpasswd:
        if name not in current.users:
            raise _no_such_user(path, name)
        return current.without_user(name)

    _read(path, fixing=name)  # A missing or broken file is reported before a lock file is made.
    _change(path, remove, fixing=name)
    print(f"removed user {name} from {path}", file=out)
    return EXIT_OK


def _run_list(args: argparse.Namespace, out: TextIO) -> int:
    for name in _read(_target(args.file)).users:
        print(name, file=out)
    return EXIT_OK


_COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {
    "add": _run_add,
    "passwd": _run_passwd,
    "remove": _run_remove,
    "list": _run_list,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``registry users`` with ``argv`` (the words after ``users``); return the exit code."""
    try:
        args = _parser(os.environ).parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        return _COMMANDS[args.command](args, sys.stdout)
    except (UsersError, HtpasswdError) as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print(f"{PROG} {args.command}: error: {where}{error.strerror or error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(file=sys.stderr)  # The prompt's line stays unfinished otherwise.
        return 130


if __name__ == "__main__":
    sys.exit(main())
