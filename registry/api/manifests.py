"""``/v2/<name>/manifests/<reference>``: by tag or digest, GET/HEAD/PUT/DELETE."""

from __future__ import annotations

from quart import Response, request

from ..errors import ErrorCode, RegistryError
from ..manifests import (
    DOCKER_MANIFEST_LIST,
    MAX_MANIFEST_SIZE,
    OCI_INDEX,
    OCI_MANIFEST,
    platform_child,
)
from ..notifications import emit
from ..reference import DIGEST_RE, TAG_RE, Digest, is_digest
from ..storage import Repository, Store
from ..storage.manifests import StoredManifest
from .context import url
from .native import Read, Reply
from .repository import digest_param, open_repository, repository, require_delete
from .responses import respond

#: What registry:2 answers a client whose ``Accept`` does not name these types.
NOT_ACCEPTED = {
    OCI_MANIFEST: "OCI manifest found, but accept header does not support OCI manifests",
    OCI_INDEX: "OCI index found, but accept header does not support OCI indexes",
}

#: The image registry:2 serves, from a Docker manifest list, to a client that cannot read lists.
DEFAULT_OS = "linux"
DEFAULT_ARCHITECTURE = "amd64"


def _check_shape(reference: str) -> None:
    """A reference shaped like neither a tag nor a digest is a 404, as registry:2's route makes it.

    The OCI conformance suite asks for ``.INVALID_MANIFEST_NAME`` and expects a 404.
    """
    if TAG_RE.fullmatch(reference) is None and DIGEST_RE.fullmatch(reference) is None:
        raise RegistryError(
            ErrorCode.MANIFEST_UNKNOWN,
            "manifest unknown: the reference is neither a tag nor a digest",
            detail={"reference": reference},
        )


def _tag(reference: str) -> str | None:
    return None if is_digest(reference) else reference


def _digest(reference: str) -> Digest | None:
    """The digest a digest reference names (400 ``DIGEST_INVALID`` if malformed); None: a tag."""
    return digest_param(reference) if is_digest(reference) else None


def accepted(read: Read) -> frozenset[str]:
    """The media types ``Accept`` names, parameters dropped.

    Matched exactly, as registry:2 does: no wildcards, no case folding, ``q`` ignored.
    """
    value = read.header(b"accept") or ""
    return frozenset(item.split(";", 1)[0].strip() for item in value.split(","))


def _headers(stored: StoredManifest) -> dict[str, str]:
    digest = str(stored.digest)
    return {
        "Content-Type": stored.media_type,
        "Content-Length": str(len(stored.data)),
        "Docker-Content-Digest": digest,
        "ETag": f'"{digest}"',
    }


def _not_modified(read: Read, digest: Digest) -> bool:
    """``If-None-Match`` names the digest, quoted or not (registry:2 takes both)."""
    value = read.header(b"if-none-match")
    return value is not None and value.strip() in (str(digest), f'"{digest}"')


async def _negotiate(
    repo: Repository, stored: StoredManifest, read: Read, by_tag: bool
) -> StoredManifest:
    """What registry:2 serves a client with this ``Accept``, or the 404 it answers.

    An OCI manifest or index goes only to a client that names its type. A
    Docker manifest list asked for by tag, by a client that does not name
    lists, is answered with its linux/amd64 image (registry:2 would then turn
    a Docker image into schema 1 for a client not naming schema 2 either; this
    registry has no schema 1 and serves it as it is).
    """
    accepts = accepted(read)
    refusal = NOT_ACCEPTED.get(stored.media_type)
    if refusal is not None and stored.media_type not in accepts:
        raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, refusal)
    if by_tag and stored.media_type == DOCKER_MANIFEST_LIST and DOCKER_MANIFEST_LIST not in accepts:
        child = platform_child(stored.data, DEFAULT_OS, DEFAULT_ARCHITECTURE)
        if child is None:
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN,
                f"the manifest list has no {DEFAULT_OS}/{DEFAULT_ARCHITECTURE} image, "
                "and the Accept header does not take manifest lists",
                detail={"digest": str(stored.digest)},
            )
        return await repo.manifests.get(str(child))
    return stored


async def read_manifest(store: Store, read: Read, name: str, reference: str) -> Reply:
    """GET and HEAD by tag or digest, negotiated as registry:2 does; ``If-None-Match``: 304."""
    repo = open_repository(store, name)
    _check_shape(reference)
    digest = _digest(reference)
    stored = await repo.manifests.get(reference)
    # registry:2 compares the ETag before it looks at Accept.
    if _not_modified(read, stored.digest):
        headers = _headers(stored)
        del headers["Content-Length"]
        return Reply(304, headers)
    emit.manifest_pulled(repo.name, stored, _tag(reference))  # HEAD too, as registry:2
    served = await _negotiate(repo, stored, read, by_tag=digest is None)
    if served is not stored:
        emit.manifest_pulled(repo.name, served, None)  # The list's image, read as registry:2 does.
    stored = served
    headers = _headers(stored)
    if read.method == "HEAD":
        return Reply(200, headers)
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
    _check_shape(reference)
    _digest(reference)
    data = await _read_manifest_body()
    digest, manifest = await repo.manifests.put(
        reference, data, request.headers.get("Content-Type")
    )
    emit.manifest_pushed(repo.name, digest, data, manifest.media_type, _tag(reference))
    headers = {
        "Location": url(f"/v2/{repo.name}/manifests/{digest}"),
        "Docker-Content-Digest": str(digest),
    }
    if manifest.subject is not None:
        headers["OCI-Subject"] = str(manifest.subject.digest)
    return respond(201, headers)


async def delete_manifest(name: str, reference: str) -> Response:
    # registry:2's order: no route for the reference (404), deletes off (405), bad digest (400).
    manifests = repository(name).manifests
    _check_shape(reference)
    require_delete()
    digest = _digest(reference)
    if digest is not None:
        tags = await emit.tags_of(manifests, digest)
        await manifests.delete(digest)
        emit.manifest_deleted(manifests.name, digest, tags)
    else:
        await manifests.delete_tag(reference)
        emit.tag_deleted(manifests.name, reference)
    return respond(202, {})
