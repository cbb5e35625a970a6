"""The repository a request names, checked against the grammar before anything else."""

from __future__ import annotations

from ..errors import ErrorCode, RegistryError
from ..reference import Digest, InvalidReferenceError, validate_name
from ..storage import Repository
from .context import services


def repository(name: str) -> Repository:
    try:
        validate_name(name)
    except InvalidReferenceError:
        raise RegistryError(ErrorCode.NAME_INVALID, detail={"name": name}) from None
    return services().store.repository(name)


def digest_param(value: str | None, *, code: ErrorCode = ErrorCode.DIGEST_INVALID) -> Digest:
    if not value:
        raise RegistryError(code, "digest missing", detail={"digest": value or ""})
    try:
        return Digest.parse(value)
    except InvalidReferenceError as error:
        raise RegistryError(code, str(error), detail={"digest": value}) from None


def require_delete() -> None:
    """registry:2 refuses every deletion unless ``storage.delete.enabled``."""
    if not services().config.storage.delete_enabled:
        raise RegistryError(
            ErrorCode.UNSUPPORTED,
            "deletion is disabled (storage.delete.enabled: false)",
        )
