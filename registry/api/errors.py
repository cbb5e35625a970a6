"""Storage and grammar errors become spec errors here, in one table."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

from ..errors import ErrorCode, RegistryError
from ..reference import InvalidReferenceError
from ..storage.driver import InvalidPathError, StorageDriverError
from ..storage.errors import (
    BlobUnknownError,
    DigestMismatchError,
    ManifestBlobUnknownError,
    ManifestInvalidError,
    ManifestUnknownError,
    RepositoryUnknownError,
    SizeMismatchError,
    UploadBusyError,
    UploadRangeError,
    UploadUnknownError,
)

log = logging.getLogger(__name__)


def _detail(error: Exception) -> dict[str, object]:
    return {"reason": str(error)}


#: Each storage error and the code it is reported as; the first match wins.
ERROR_CODES: tuple[tuple[type[Exception], ErrorCode, Callable[[Exception], object]], ...] = (
    (BlobUnknownError, ErrorCode.BLOB_UNKNOWN, lambda e: {"digest": getattr(e, "digest", "")}),
    (
        ManifestUnknownError,
        ErrorCode.MANIFEST_UNKNOWN,
        lambda e: {"reference": getattr(e, "reference", "")},
    ),
    (RepositoryUnknownError, ErrorCode.NAME_UNKNOWN, lambda e: {"name": getattr(e, "name", "")}),
    (
        UploadUnknownError,
        ErrorCode.BLOB_UPLOAD_UNKNOWN,
        lambda e: {"upload": getattr(e, "upload_id", "")},
    ),
    (UploadRangeError, ErrorCode.RANGE_INVALID, _detail),
    # As for a chunk out of order: the client asks the session's status and resumes.
    (UploadBusyError, ErrorCode.RANGE_INVALID, _detail),
    (DigestMismatchError, ErrorCode.DIGEST_INVALID, _detail),
    (SizeMismatchError, ErrorCode.SIZE_INVALID, _detail),
    (ManifestInvalidError, ErrorCode.MANIFEST_INVALID, _detail),
    (
        ManifestBlobUnknownError,
        ErrorCode.MANIFEST_BLOB_UNKNOWN,
        lambda e: {"digest": getattr(e, "digest", "")},
    ),
    (InvalidReferenceError, ErrorCode.NAME_INVALID, _detail),
    (InvalidPathError, ErrorCode.NAME_INVALID, _detail),
)


#: The storage has no room (or the quota is spent): the client is told so, with
#: 507 Insufficient Storage, and what it sent is not kept.
_FULL = (errno.ENOSPC, errno.EDQUOT)


def to_registry_error(error: Exception) -> RegistryError:
    """The spec error for an exception; anything unexpected is logged and becomes UNKNOWN."""
    if isinstance(error, RegistryError):
        return error
    if isinstance(error, OSError) and error.errno in _FULL:
        log.error("storage full: %s", error.strerror)
        return RegistryError(ErrorCode.UNAVAILABLE, "the registry's storage is full", status=507)
    for kind, code, detail in ERROR_CODES:
        if isinstance(error, kind):
            return RegistryError(code, str(error), detail=detail(error))
    if isinstance(error, StorageDriverError):
        # The store failed (an S3 gateway down, refusing, timing out): the client may
        # retry, maybe on another instance. The driver's words name the operation and
        # the path, never a credential; the client gets none of them.
        log.error("storage: %s", error)
        return RegistryError(
            ErrorCode.UNAVAILABLE, "the registry's storage failed; try again", status=503
        )
    log.exception("unexpected error", exc_info=error)
    return RegistryError(ErrorCode.UNKNOWN)
