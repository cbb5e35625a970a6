"""Requests to one upstream registry, signed in as it asks; answers sorted into errors."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from ..config import ProxyUpstream
from ..manifests import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MAX_MANIFEST_SIZE,
    OCI_INDEX,
    OCI_MANIFEST,
)
from ..reference import Digest, InvalidReferenceError
from .credentials import UpstreamCredentials
from .errors import (
    UpstreamDeniedError,
    UpstreamError,
    UpstreamInvalidError,
    UpstreamNotFoundError,
    UpstreamUnavailableError,
)
from .reading import read_bounded

#: Every manifest type, so the upstream sends what it holds (never a schema 1
#: conversion) and clients' ``Accept`` is applied to the stored copy, here.
MANIFEST_ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST))
#: A tag list larger than this is not read (about 100,000 tags).
MAX_TAGS_REPLY = 8 * 1024 * 1024
#: Longest header value read from an upstream (digests, lengths, types).
MAX_HEADER_VALUE = 1024
#: After an upstream could not be connected to, it is not tried again for this long:
#: cached content is served at once, not after a connect timeout per request.
RETRY_UNREACHABLE = 5.0


def pull_scope(remote: str) -> str:
    return f"repository:{remote}:pull"


def _status_error(status: int, what: str) -> UpstreamError:
    if status == 404:
        return UpstreamNotFoundError(f"{what}: not found upstream")
    if status in (401, 403):
        return UpstreamDeniedError(f"{what}: the upstream refused access ({status})")
    if status == 429 or status >= 500:
        return UpstreamUnavailableError(f"{what}: the upstream answered {status}")
    return UpstreamInvalidError(f"{what}: the upstream answered {status}")


def _header(response: httpx.Response, name: str) -> str | None:
    value: str | None = response.headers.get(name)
    if value is None or len(value) > MAX_HEADER_VALUE:
        return None
    return value.strip()


def content_length(response: httpx.Response) -> int | None:
    value = _header(response, "content-length")
    return int(value) if value is not None and value.isdigit() and len(value) < 20 else None


def content_digest(response: httpx.Response) -> Digest | None:
    value = _header(response, "docker-content-digest")
    if value is None:
        return None
    try:
        return Digest.parse(value)
    except InvalidReferenceError:
        raise UpstreamInvalidError(
            f"the upstream sent a malformed digest {value[:100]!r}"
        ) from None


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    data: bytes
    media_type: str | None
    digest: Digest | None
    """What the upstream said the digest is (checked against the bytes by the caller)."""


class UpstreamClient:
    """One upstream: its URL, its credentials, and the worker's HTTP client."""

    def __init__(self, upstream: ProxyUpstream, http: httpx.AsyncClient) -> None:
        self.upstream = upstream
        self.http = http
        self.credentials = UpstreamCredentials(upstream, http)
        self.unreachable_until = 0.0

    @property
    def url(self) -> str:
        return self.upstream.remoteurl

    def _url(self, remote: str, rest: str) -> str:
        return f"{self.upstream.remoteurl}/v2/{remote}/{quote(rest, safe='/:')}"

    @contextlib.asynccontextmanager
    async def _request(
        self,
        method: str,
        remote: str,
        rest: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """A streamed answer of 200 (or 206), signed in; any other status is an error."""
        scope = pull_scope(remote)
        what = f"{remote}/{rest}"
        if time.monotonic() < self.unreachable_until:
            raise UpstreamUnavailableError(f"{what}: unreachable moments ago, not tried again yet")
        url = self._url(remote, rest)
        response: httpx.Response | None = None
        try:
            for attempt in range(2):
                request = self.http.build_request(method, url, headers=headers, params=params)
                authorization = await self.credentials.authorization(scope)
                if authorization is not None:
                    request.headers["Authorization"] = authorization
                response = await self.http.send(request, stream=True)
                if response.status_code != 401 or attempt == 1:
                    break
                challenge = response.headers.get("www-authenticate")
                await response.aclose()
                if not self.credentials.refused(challenge, scope):
                    break
            assert response is not None
            if response.status_code not in (200, 206):
                raise _status_error(response.status_code, what)
            yield response
        except httpx.TransportError as error:
            if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
                self.unreachable_until = time.monotonic() + RETRY_UNREACHABLE
            raise UpstreamUnavailableError(f"{what}: {type(error).__name__}: {error}") from None
        finally:
            if response is not None:
                await response.aclose()

    async def manifest_digest(self, remote: str, reference: str) -> Digest | None:
        """The digest a tag names upstream (HEAD); None when the upstream does not say."""
        async with self._request(
            "HEAD", remote, f"manifests/{reference}", {"Accept": MANIFEST_ACCEPT}
        ) as response:
            return content_digest(response)

    async def manifest(self, remote: str, reference: str) -> FetchedManifest:
        async with self._request(
            "GET", remote, f"manifests/{reference}", {"Accept": MANIFEST_ACCEPT}
        ) as response:
            data = await read_bounded(response, MAX_MANIFEST_SIZE, "manifest")
            media_type = _header(response, "content-type")
            return FetchedManifest(data, media_type, content_digest(response))

    async def blob_size(self, remote: str, digest: Digest) -> int:
        async with self._request("HEAD", remote, f"blobs/{digest}") as response:
            size = content_length(response)
            if size is None:
                raise UpstreamInvalidError(f"{remote}/blobs/{digest}: the upstream sent no length")
            return size

    @contextlib.asynccontextmanager
    async def blob(self, remote: str, digest: Digest) -> AsyncIterator[httpx.Response]:
        """The blob's streamed answer; read it with ``aiter_raw`` (sent unencoded)."""
        headers = {"Accept-Encoding": "identity"}
        async with self._request("GET", remote, f"blobs/{digest}", headers) as response:
            if response.status_code != 200:
                raise UpstreamInvalidError(
                    f"{remote}/blobs/{digest}: a partial answer to a whole GET"
                )
            yield response

    async def tags(self, remote: str, params: Mapping[str, str]) -> tuple[list[str], bool]:
        """One page of the upstream's tags, and whether more follow."""
        async with self._request("GET", remote, "tags/list", params=params) as response:
            body = await read_bounded(response, MAX_TAGS_REPLY, "tag list")
            more = "next" in (response.headers.get("link") or "")[:MAX_HEADER_VALUE]
        try:
            document = json.loads(body)
        except ValueError:
            raise UpstreamInvalidError(f"{remote}/tags/list: not JSON") from None
        tags = document.get("tags") if isinstance(document, dict) else None
        if tags is None:
            tags = []
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise UpstreamInvalidError(f"{remote}/tags/list: no list of tags")
        return tags, more
