"""``/v2/<name>/blobs/<digest>``: download (with ``Range``), existence check, delete."""

from __future__ import annotations

from quart import Response, request

from .headers import parse_range
from .repository import digest_param, repository, require_delete
from .responses import respond


def _headers(digest: str, length: int) -> dict[str, str]:
    return {
        "Content-Type": "application/octet-stream",
        "Content-Length": str(length),
        "Docker-Content-Digest": digest,
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",
    }


async def head_blob(name: str, digest: str) -> Response:
    parsed = digest_param(digest)
    info = await repository(name).blobs.stat(parsed)
    return respond(200, _headers(str(parsed), info.size))


async def get_blob(name: str, digest: str) -> Response:
    parsed = digest_param(digest)
    repo = repository(name)
    info = await repo.blobs.stat(parsed)
    if request.headers.get("If-None-Match") == f'"{parsed}"':
        return respond(304, {"ETag": f'"{parsed}"', "Docker-Content-Digest": str(parsed)})
    wanted = parse_range(request.headers.get("Range"), info.size)
    store = repo.blobs.blobs
    if wanted is None:
        return respond(200, _headers(str(parsed), info.size), store.read(parsed))
    headers = _headers(str(parsed), wanted.length)
    headers["Content-Range"] = f"bytes {wanted.start}-{wanted.end}/{info.size}"
    return respond(206, headers, store.read(parsed, wanted.start, wanted.length))


async def delete_blob(name: str, digest: str) -> Response:
    require_delete()
    parsed = digest_param(digest)
    await repository(name).blobs.unlink(parsed)
    return respond(202, {"Docker-Content-Digest": str(parsed)})
