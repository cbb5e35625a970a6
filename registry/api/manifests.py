"""``/v2/<name>/manifests/<reference>``: by tag or digest, GET/HEAD/PUT/DELETE."""

from __future__ import annotations

from quart import Response, request

from ..errors import ErrorCode, RegistryError
from ..manifests import MAX_MANIFEST_SIZE
from ..reference import InvalidReferenceError, is_digest, validate_tag
from ..storage import Store
from ..storage.manifests import StoredManifest
from .context import url
from .native import Read, Reply
from .repository import digest_param, open_repository, repository, require_delete
from .responses import respond


def _check_reference(reference: str) -> None:
    if is_digest(reference):
        digest_param(reference)
        return
    try:
        validate_tag(reference)
    except InvalidReferenceError:
        raise RegistryError(
            ErrorCode.TAG_INVALID, "invalid tag", detail={"tag": reference}
        ) from None


def _headers(stored: StoredManifest) -> dict[str, str]:
    digest = str(stored.digest)
    return {
        "Content-Type": stored.media_type,
        "Content-Length": str(len(stored.data)),
        "Docker-Content-Digest": digest,
        "ETag": f'"{digest}"',
    }


async def read_manifest(store: Store, read: Read, name: str, reference: str) -> Reply:
    """GET and HEAD by tag or digest; ``If-None-Match`` with the digest gets a 304."""
    repo = open_repository(store, name)
    _check_reference(reference)
    stored = await repo.manifests.get(reference)
    headers = _headers(stored)
    if read.method == "HEAD":
        return Reply(200, headers)
    if read.header(b"if-none-match") == headers["ETag"]:
        del headers["Content-Length"]
        return Reply(304, headers)
    return Reply(200, headers, stored.data)


async def _read_manifest_body() -> bytes:
    body = bytearray()
    async for chunk in request.body:
        body += chunk
        if len(body) > MAX_MANIFEST_SIZE:
            raise RegistryError(
                ErrorCode.MANIFEST_INVALID,
                f"manifest is larger than the {MAX_MANIFEST_SIZE} bytes allowed",
                status=413,
            )
    return bytes(body)


async def put_manifest(name: str, reference: str) -> Response:
    repo = repository(name)
    _check_reference(reference)
    data = await _read_manifest_body()
    digest, manifest = await repo.manifests.put(
        reference, data, request.headers.get("Content-Type")
    )
    headers = {
        "Location": url(f"/v2/{repo.name}/manifests/{digest}"),
        "Docker-Content-Digest": str(digest),
    }
    if manifest.subject is not None:
        headers["OCI-Subject"] = str(manifest.subject.digest)
    return respond(201, headers)


async def delete_manifest(name: str, reference: str) -> Response:
    require_delete()
    _check_reference(reference)
    manifests = repository(name).manifests
    if is_digest(reference):
        await manifests.delete(digest_param(reference))
    else:
        await manifests.delete_tag(reference)
    return respond(202, {})
