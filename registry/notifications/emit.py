"""What the API handlers call where registry:2's listener emits an event.

registry:2 wraps its repository so that storage calls emit: a manifest or
blob read (GET and HEAD alike, and a blob's 304 or range) is a pull, a stored
manifest or committed blob a push, a cross-repository mount a mount, and each
deletion a delete (a manifest deleted by digest also deletes, and reports,
every tag pointing at it). The handlers call these functions at the same
points. Both ways into a handler (Quart and the native reads) pass through
:class:`NotifyingApp`, which makes the request's notifier and scope known here;
without it (notifications off) every function returns at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from ..reference import Digest
from ..storage.errors import RepositoryUnknownError
from ..storage.manifests import Manifests, StoredManifest
from .events import BLOB_MEDIA_TYPE, DELETE, MOUNT, PULL, PUSH
from .notifier import Notifier

_CURRENT: ContextVar[tuple[Notifier, Scope] | None] = ContextVar(
    "registry.notifications", default=None
)


@dataclass(slots=True)
class NotifyingApp:
    """The ASGI layer that lets handlers emit for the request they serve."""

    app: Any
    notifier: Notifier

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        token = _CURRENT.set((self.notifier, scope))
        try:
            await self.app(scope, receive, send)
        finally:
            _CURRENT.reset(token)


def manifest_pushed(
    repository: str, digest: Digest, data: bytes, media_type: str, tag: str | None
) -> None:
    current = _CURRENT.get()
    if current is not None:
        notifier, scope = current
        notifier.emit(
            scope,
            PUSH,
            repository,
            media_type=media_type,
            size=len(data),
            digest=str(digest),
            content="manifests",
            tag=tag or "",
            manifest=data,
        )


def manifest_pulled(repository: str, stored: StoredManifest, tag: str | None) -> None:
    current = _CURRENT.get()
    if current is not None:
        notifier, scope = current
        notifier.emit(
            scope,
            PULL,
            repository,
            media_type=stored.media_type,
            size=len(stored.data),
            digest=str(stored.digest),
            content="manifests",
            tag=tag or "",
            manifest=stored.data,
        )


async def tags_of(manifests: Manifests, digest: Digest) -> list[str]:
    """The tags a manifest delete will take with it (asked only when someone listens)."""
    if _CURRENT.get() is None:
        return []
    try:
        names = await manifests.tags()
    except RepositoryUnknownError:
        return []
    found = []
    for tag in names:
        try:
            if await manifests.resolve(tag) == digest:
                found.append(tag)
        except Exception:
            continue  # A tag that does not resolve points nowhere.
    return found


def manifest_deleted(repository: str, digest: Digest, tags: Iterable[str] = ()) -> None:
    current = _CURRENT.get()
    if current is not None:
        notifier, scope = current
        notifier.emit(scope, DELETE, repository, digest=str(digest))
        for tag in tags:
            notifier.emit(scope, DELETE, repository, tag=tag)


def tag_deleted(repository: str, tag: str) -> None:
    current = _CURRENT.get()
    if current is not None:
        notifier, scope = current
        notifier.emit(scope, DELETE, repository, tag=tag)


def _blob(action: str, repository: str, digest: Digest, size: int, source: str = "") -> None:
    current = _CURRENT.get()
    if current is not None:
        notifier, scope = current
        notifier.emit(
            scope,
            action,
            repository,
            media_type=BLOB_MEDIA_TYPE,
            size=size,
            digest=str(digest),
            content="blobs",
            from_repository=source,
        )


def blob_pushed(repository: str, digest: Digest, size: int) -> None:
    _blob(PUSH, repository, digest, size)


def blob_pulled(repository: str, digest: Digest, size: int) -> None:
    _blob(PULL, repository, digest, size)


def blob_mounted(repository: str, digest: Digest, size: int, source: str) -> None:
    _blob(MOUNT, repository, digest, size, source)


def blob_deleted(repository: str, digest: Digest) -> None:
    current = _CURRENT.get()
    if current is not None:
        notifier, scope = current
        notifier.emit(scope, DELETE, repository, digest=str(digest))
