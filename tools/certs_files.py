"""Files of the certificate folder: born with their final mode, replaced atomically.

A private key must never exist, even for an instant, with a mode that lets
another user read it, and a reader (or a crash) must never see half a file. So
every file is written to a temporary file in the same folder, created with its
final mode, flushed, and renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

from tools.certs_x509 import CertificateError

if sys.platform != "win32":
    import fcntl

CERT_MODE = 0o644
KEY_MODE = 0o600
LOCK_NAME = ".certs.lock"


def _fsync_directory(directory: Path) -> None:
    # The rename itself must reach the disk, or a crash can bring the old name back.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_file(path: Path, data: bytes, *, mode: int, replace: bool) -> None:
    """Write ``data`` to ``path`` atomically, born with ``mode`` whatever the umask.

    With ``replace=False`` an existing file is kept and a CertificateError raised.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(temporary, flags, mode)
    except OSError as error:
        raise CertificateError(f"{path}: cannot write: {error.strerror}") from None
    try:
        # The umask may have taken bits away (a certificate must stay world-readable);
        # this runs before a byte is written, so a key is never readable by others.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            _create_exclusively(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise CertificateError(f"{path}: cannot write: {error.strerror}") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _create_exclusively(temporary: Path, path: Path) -> None:
    exists = CertificateError(f"{path}: exists already; not overwriting it (--force replaces it)")
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise exists from None
    except OSError:
        # A filesystem without hard links: check, then rename (the folder lock guards the gap).
        if path.exists():
            raise exists from None
        os.replace(temporary, path)
        return
    temporary.unlink()


def make_folder(directory: Path) -> None:
    """Create ``directory`` (and parents), or say clearly why it cannot be."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CertificateError(f"{directory}: exists and is not a folder") from None
    except OSError as error:
        raise CertificateError(f"{directory}: cannot create folder: {error.strerror}") from None


@contextlib.contextmanager
def folder_lock(directory: Path) -> Iterator[None]:
    """Serialise changes to one folder, e.g. several server workers starting at once."""
    make_folder(directory)
    if sys.platform == "win32":
        yield
        return
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise CertificateError(f"{directory}: cannot write in folder: {error.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
