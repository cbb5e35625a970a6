"""Small files written whole or not at all: born with their final mode, renamed into place.

A password file or a private key must never exist, even for an instant, with a
mode that lets another user read it, and a reader (or a crash) must never see
half a file. So every file is written to a temporary file in the same folder,
created with its final mode, flushed, and renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def _fsync_directory(directory: Path) -> None:
    # The rename itself must reach the disk, or a crash can bring the old name back.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomically(
    path: Path,
    data: bytes,
    *,
    mode: int,
    replace: bool = True,
    owner: tuple[int, int] | None = None,
) -> None:
    """Write ``data`` to ``path`` atomically, born with ``mode`` whatever the umask.

    With ``replace=False`` an existing file is kept and FileExistsError raised.
    ``owner`` (uid, gid) is given to the new file before it takes the name: root
    editing a file a service user reads must not leave it unreadable, even briefly.
    Any other failure is the OSError that caused it; nothing is left behind.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags, mode)
    try:
        with os.fdopen(fd, "wb") as stream:  # Closes fd also when fchown or fchmod fails.
            if owner is not None:
                os.fchown(fd, *owner)  # Before fchmod: a change of owner may clear mode bits.
            # The umask may have taken bits away (a certificate must stay world-readable);
            # this runs before a byte is written, so a key is never readable by others.
            os.fchmod(fd, mode)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            _create_exclusively(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _create_exclusively(temporary: Path, path: Path) -> None:
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError:
        # A filesystem without hard links: check, then rename (callers lock the folder).
        if path.exists():
            raise FileExistsError(path) from None
        os.replace(temporary, path)
        return
    temporary.unlink()
