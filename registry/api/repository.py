"""The repository a request names, checked against the grammar before anything else."""

from __future__ import annotations

from ..errors import ErrorCode, RegistryError
from ..reference import Digest, InvalidReferenceError, validate_name
from ..storage import Repository, Store
from .context import services


def open_repository(store: Store, name: str) -> Repository:
    try:
        validate_name(name)
    except InvalidReferenceError:
        raise RegistryError(ErrorCode.NAME_INVALID, detail={"name": name}) from None
    return store.repository(name)


def repository(name: str) -> Repository:
    """The repository a Quart handler's request names."""
    return open_repository(services().store, name)


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
