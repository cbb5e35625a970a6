"""Files of the certificate folder: written atomically (``registry.files``), under a lock."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from registry.files import write_atomically
from tools.certs_x509 import CertificateError

if sys.platform != "win32":
    import fcntl

CERT_MODE = 0o644
KEY_MODE = 0o600
LOCK_NAME = ".certs.lock"


def write_file(path: Path, data: bytes, *, mode: int, replace: bool) -> None:
    """Write ``data`` to ``path`` atomically, born with ``mode`` whatever the umask.

    With ``replace=False`` an existing file is kept and a CertificateError raised.
    """
    try:
        write_atomically(path, data, mode=mode, replace=replace)
    except FileExistsError:
        raise CertificateError(
            f"{path}: exists already; not overwriting it (--force replaces it)"
        ) from None
    except OSError as error:
        raise CertificateError(f"{path}: cannot write: {error.strerror}") from None


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
