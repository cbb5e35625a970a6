"""``/v2/<name>/blobs/<digest>``: download (with ``Range``), existence check, delete."""

from __future__ import annotations

from quart import Response

from ..notifications import emit
from ..storage import Store
from .headers import parse_range
from .native import Read, Reply
from .repository import digest_param, open_repository, repository, require_delete
from .responses import respond

#: How long a redirect's URL stays valid: registry:2's 20 minutes, time enough for a
#: client to start a large layer, short enough that a leaked URL soon stops working.
REDIRECT_EXPIRES = 20 * 60


def _headers(digest: str, length: int) -> dict[str, str]:
    return {
        "Content-Type": "application/octet-stream",
        "Content-Length": str(length),
        "Docker-Content-Digest": digest,
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",
    }


async def read_blob(store: Store, read: Read, name: str, digest: str) -> Reply:
    """GET and HEAD: the blob, a byte range of it, or just its headers."""
    parsed = digest_param(digest)
    repo = open_repository(store, name)
    info = await repo.blobs.stat(parsed)
    emit.blob_pulled(repo.name, parsed, info.size)  # HEAD, 304 and ranges too, as registry:2
    if read.method == "HEAD":
        return Reply(200, _headers(str(parsed), info.size))
    if read.header(b"if-none-match") == f'"{parsed}"':
        return Reply(304, {"ETag": f'"{parsed}"', "Docker-Content-Digest": str(parsed)})
    if read.config.storage.redirect:
        # As registry:2: a GET goes to the store's own URL (a Range goes along with the
        # client). A HEAD is answered here: the headers are known, a hop saved.
        url = await store.blobs.url(parsed, REDIRECT_EXPIRES)
        if url is not None:
            headers = {"Location": url, "Docker-Content-Digest": str(parsed)}
            return Reply(307, {**headers, "Content-Length": "0"})
    wanted = parse_range(read.header(b"range"), info.size)
    if wanted is None:
        return Reply(200, _headers(str(parsed), info.size), store.blobs.read(parsed))
    headers = _headers(str(parsed), wanted.length)
    headers["Content-Range"] = f"bytes {wanted.start}-{wanted.end}/{info.size}"
    return Reply(206, headers, store.blobs.read(parsed, wanted.start, wanted.length))


async def delete_blob(name: str, digest: str) -> Response:
    require_delete()
    parsed = digest_param(digest)
    await repository(name).blobs.unlink(parsed)
    emit.blob_deleted(name, parsed)
    return respond(202, {"Docker-Content-Digest": str(parsed)})
