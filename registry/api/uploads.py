"""``/v2/<name>/blobs/uploads/``: monolithic, chunked and resumable pushes, and mounts."""

from __future__ import annotations

from quart import Response, request

from ..auth.access import PULL, REPOSITORY, Access
from ..auth.grant import grant_of
from ..errors import ErrorCode, RegistryError
from ..notifications import emit
from ..reference import InvalidReferenceError, validate_name
from ..storage import Repository
from ..storage.uploads import UploadSession
from .context import services, url
from .headers import parse_content_length, parse_content_range, upload_range
from .repository import digest_param, repository
from .responses import respond


def _session_headers(session: UploadSession) -> dict[str, str]:
    return {
        "Location": url(f"/v2/{session.name}/blobs/uploads/{session.id}"),
        "Docker-Upload-UUID": session.id,
        "Range": upload_range(session.size),
    }


def _blob_created(repo: Repository, digest: str) -> Response:
    return respond(
        201,
        {"Location": url(f"/v2/{repo.name}/blobs/{digest}"), "Docker-Content-Digest": digest},
    )


def _chunk_length() -> tuple[int | None, int | None]:
    """(start, length) of the chunk in this request, from Content-Range and Content-Length."""
    content_range = parse_content_range(request.headers.get("Content-Range"))
    content_length = parse_content_length(request.headers.get("Content-Length"))
    if content_range is None:
        return None, content_length
    if content_length is not None and content_length != content_range.length:
        raise RegistryError(
            ErrorCode.SIZE_INVALID,
            f"Content-Length {content_length} does not match Content-Range "
            f"{content_range.start}-{content_range.end}",
        )
    return content_range.start, content_range.length


def _may_read(source: str) -> bool:
    """A mount copies nothing but reveals the blob: only from a repository the caller may pull."""
    grant = grant_of(request.scope)
    return grant is None or grant.allows(Access(REPOSITORY, source, PULL))


async def start_upload(name: str) -> Response:
    repo = repository(name)
    args = request.args
    mount = args.get("mount")
    if mount is not None:
        digest = digest_param(mount)
        source = args.get("from")
        if source:
            try:
                validate_name(source)
            except InvalidReferenceError:
                raise RegistryError(ErrorCode.NAME_INVALID, detail={"from": source}) from None
            if _may_read(source):
                source_blobs = services().store.repository(source).blobs
                mounted = await repo.blobs.mount(digest, source_blobs)
                if mounted is not None:
                    emit.blob_mounted(repo.name, digest, mounted.size, source)
                    return _blob_created(repo, str(digest))
        # Not mountable (or the caller may not pull the source): an ordinary session (202).
    elif "digest" in args:
        digest = digest_param(args.get("digest"))
        _, length = _chunk_length()
        info = await repo.uploads.single(digest, request.body, length)
        emit.blob_pushed(repo.name, info.digest, info.size)
        return _blob_created(repo, str(info.digest))
    session = await repo.uploads.start()
    return respond(202, _session_headers(session))


async def get_upload_status(name: str, upload_id: str) -> Response:
    session = await repository(name).uploads.status(upload_id)
    return respond(204, _session_headers(session))


async def patch_upload(name: str, upload_id: str) -> Response:
    start, length = _chunk_length()
    session = await repository(name).uploads.append(
        upload_id, request.body, start=start, length=length
    )
    return respond(202, _session_headers(session))


async def complete_upload(name: str, upload_id: str) -> Response:
    repo = repository(name)
    digest = digest_param(request.args.get("digest"))
    # The body, if any, is the last chunk. Its headers cannot tell: an HTTP/2
    # request may carry data with neither Content-Length nor chunked encoding.
    start, length = _chunk_length()
    info = await repo.uploads.complete(upload_id, digest, request.body, start=start, length=length)
    emit.blob_pushed(repo.name, info.digest, info.size)
    return _blob_created(repo, str(info.digest))


async def cancel_upload(name: str, upload_id: str) -> Response:
    await repository(name).uploads.cancel(upload_id)
    return respond(204, {})
