"""Corners the OCI conformance suite and old clients find: references and ``Accept``.

Each rule is registry:2 2.8.2's (checked side by side in
``tests/e2e/test_registry2_corners.py``): a reference shaped like neither a
tag nor a digest is a 404; an OCI manifest or index goes only to a client
whose ``Accept`` names its type; a Docker manifest list asked for by tag by a
client that does not name lists gets the list's linux/amd64 image.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import RegistryProcess, admin_auth
from tests.pushing import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    image_manifest,
    push_blob,
    push_image,
    push_manifest,
)

from .support import API_VERSION, assert_error

Factory = Callable[..., RegistryProcess]

OCI_REFUSAL = "OCI manifest found, but accept header does not support OCI manifests"
INDEX_REFUSAL = "OCI index found, but accept header does not support OCI indexes"


@pytest.fixture
def bare(api_registry: RegistryProcess) -> Iterator[httpx.Client]:
    """The admin sending no ``Accept`` at all (httpx would send ``*/*``)."""
    with httpx.Client(base_url=api_registry.url, timeout=30, auth=admin_auth(api_registry)) as c:
        del c.headers["Accept"]
        yield c


def _read(client: httpx.Client, method: str, path: str, accept: str | None) -> httpx.Response:
    return client.request(method, path, headers={} if accept is None else {"Accept": accept})


def _assert_refused(response: httpx.Response, method: str, message: str | None = None) -> None:
    """404 ``MANIFEST_UNKNOWN``; a HEAD has the same status and headers, without the body."""
    if method == "GET":
        assert_error(response, 404, "MANIFEST_UNKNOWN")
        if message is not None:
            assert response.json()["errors"][0]["message"] == message
        return
    assert response.status_code == 404, response.text
    assert response.headers["Docker-Distribution-API-Version"] == API_VERSION
    assert response.headers["Content-Type"] == "application/json"
    assert response.content == b""


# --- references that are neither a tag nor a digest ----------------------------------------

NOT_REFERENCES = [".INVALID_MANIFEST_NAME", "-dash", "a" * 129, "sha256:", "a:b:c", "t~1"]
MALFORMED_DIGESTS = ["sha256:short", "sha256:" + "A" * 64, "md5:abc", "a:b"]


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
@pytest.mark.parametrize("reference", NOT_REFERENCES)
def test_neither_tag_nor_digest_is_manifest_unknown(
    client: httpx.Client, repo: str, method: str, reference: str
) -> None:
    """The OCI conformance suite's ``.INVALID_MANIFEST_NAME``: a 404, for every method."""
    _, body = push_image(client, repo, "kept")
    content = body if method == "PUT" else None
    response = client.request(method, f"/v2/{repo}/manifests/{reference}", content=content)
    if method == "HEAD":
        _assert_refused(response, "HEAD")
    else:
        assert_error(response, 404, "MANIFEST_UNKNOWN")
        assert response.json()["errors"][0]["detail"] == {"reference": reference}
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["kept"]
    assert client.get(f"/v2/{repo}/manifests/kept").content == body


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
@pytest.mark.parametrize("reference", MALFORMED_DIGESTS)
def test_malformed_digest_is_digest_invalid(
    client: httpx.Client, repo: str, method: str, reference: str
) -> None:
    """Shaped like a digest but not one: 400 ``DIGEST_INVALID`` (registry:2 answers 500 but
    to DELETE, and the conformance suite accepts 400 with a spec code)."""
    _, body = push_image(client, repo, "kept")
    content = body if method == "PUT" else None
    response = client.request(method, f"/v2/{repo}/manifests/{reference}", content=content)
    if method == "HEAD":
        assert response.status_code == 400
        assert response.content == b""
    else:
        assert_error(response, 400, "DIGEST_INVALID")
    assert client.get(f"/v2/{repo}/manifests/kept").content == body


def test_delete_checks_in_registry2_order(registry_factory: Factory) -> None:
    """Deletes off: no such reference is still a 404, a malformed digest the 405 of a delete."""
    registry = registry_factory()
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        digest, _ = push_image(client, "corners", "kept")
        assert_error(client.delete("/v2/corners/manifests/.INVALID"), 404, "MANIFEST_UNKNOWN")
        assert_error(client.delete("/v2/corners/manifests/sha256:short"), 405, "UNSUPPORTED")
        assert_error(client.delete(f"/v2/corners/manifests/{digest}"), 405, "UNSUPPORTED")


# --- Accept: OCI manifests and indexes -----------------------------------------------------

NOT_NAMING_OCI = [
    None,
    "*/*",
    "application/*",
    "application/json",
    DOCKER_MANIFEST,
    f"{DOCKER_MANIFEST}, {DOCKER_LIST}",
    OCI_MANIFEST.upper(),
    f"{OCI_MANIFEST}x",
]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("by", ["tag", "digest"])
@pytest.mark.parametrize("accept", NOT_NAMING_OCI)
def test_oci_manifest_needs_accept_naming_it(
    bare: httpx.Client, repo: str, method: str, by: str, accept: str | None
) -> None:
    digest, body = push_image(bare, repo, "oci", media_type=OCI_MANIFEST)
    reference = "oci" if by == "tag" else digest
    path = f"/v2/{repo}/manifests/{reference}"
    _assert_refused(_read(bare, method, path, accept), method, OCI_REFUSAL)
    served = _read(bare, method, path, f"{DOCKER_MANIFEST}, {OCI_MANIFEST}")
    assert served.status_code == 200
    assert served.headers["Content-Type"] == OCI_MANIFEST
    assert served.headers["Docker-Content-Digest"] == digest
    assert served.content == (body if method == "GET" else b"")


@pytest.mark.parametrize(
    "accept",
    [
        OCI_MANIFEST,
        f"{OCI_MANIFEST}; q=0.5",
        f"{DOCKER_MANIFEST},{OCI_MANIFEST}",
        f"*/* ,  {OCI_MANIFEST} ; charset=utf-8",
    ],
)
def test_oci_manifest_served_when_accept_names_it(
    bare: httpx.Client, repo: str, accept: str
) -> None:
    """Parameters (``q`` too) are ignored, entries split on commas, spaces trimmed."""
    _, body = push_image(bare, repo, "oci", media_type=OCI_MANIFEST)
    response = _read(bare, "GET", f"/v2/{repo}/manifests/oci", accept)
    assert response.status_code == 200, response.text
    assert response.content == body


@pytest.mark.parametrize(
    "order", [(DOCKER_MANIFEST, OCI_MANIFEST), (OCI_MANIFEST, DOCKER_MANIFEST)]
)
def test_accept_repeated_as_docker_sends_it(
    bare: httpx.Client, repo: str, order: tuple[str, str]
) -> None:
    """Docker's client sends one Accept header per type: every one counts, not the last."""
    digest, _ = push_image(bare, repo, "oci", media_type=OCI_MANIFEST)
    for method in ("GET", "HEAD"):
        headers = [("Accept", order[0]), ("Accept", order[1])]
        response = bare.request(method, f"/v2/{repo}/manifests/oci", headers=headers)
        assert response.request.headers.get_list("Accept") == list(order)
        assert response.status_code == 200, response.text
        assert response.headers["Docker-Content-Digest"] == digest


def _push_oci_index(client: httpx.Client, repo: str, tag: str) -> tuple[str, bytes]:
    _, child = push_image(client, repo, f"{tag}-child", media_type=OCI_MANIFEST)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                descriptor(OCI_MANIFEST, child, platform={"architecture": "amd64", "os": "linux"})
            ],
        }
    ).encode()
    assert push_manifest(client, repo, tag, index).status_code == 201
    return digest_of(index), index


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("by", ["tag", "digest"])
@pytest.mark.parametrize("accept", [None, "*/*", OCI_MANIFEST, DOCKER_LIST])
def test_oci_index_needs_accept_naming_it(
    bare: httpx.Client, repo: str, method: str, by: str, accept: str | None
) -> None:
    """Not even its linux/amd64 image: that fallback is for Docker manifest lists only."""
    digest, body = _push_oci_index(bare, repo, "index")
    path = f"/v2/{repo}/manifests/{'index' if by == 'tag' else digest}"
    _assert_refused(_read(bare, method, path, accept), method, INDEX_REFUSAL)
    served = _read(bare, method, path, OCI_INDEX)
    assert served.status_code == 200
    assert served.headers["Content-Type"] == OCI_INDEX
    assert served.headers["Docker-Content-Digest"] == digest
    assert served.content == (body if method == "GET" else b"")


def test_if_none_match_is_compared_before_accept(bare: httpx.Client, repo: str) -> None:
    """registry:2 answers 304 to a matching ETag whatever Accept says, quoted or not, HEAD too."""
    digest, _ = push_image(bare, repo, "oci", media_type=OCI_MANIFEST)
    for method in ("GET", "HEAD"):
        for etag in (f'"{digest}"', digest):
            response = bare.request(
                method, f"/v2/{repo}/manifests/oci", headers={"If-None-Match": etag}
            )
            assert response.status_code == 304, (method, etag, response.text)
            assert response.headers["Docker-Content-Digest"] == digest
            assert response.content == b""
    other = bare.get(f"/v2/{repo}/manifests/oci", headers={"If-None-Match": '"sha256:other"'})
    _assert_refused(other, "GET", OCI_REFUSAL)


# --- Accept: Docker manifests and manifest lists -----------------------------------------


def _docker_image(client: httpx.Client, repo: str, architecture: str) -> tuple[str, bytes]:
    config = json.dumps({"architecture": architecture, "os": "linux"}).encode()
    layer = f"layer for {architecture}".encode()
    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    manifest = image_manifest(config, [layer], media_type=DOCKER_MANIFEST)
    assert push_manifest(client, repo, digest_of(manifest), manifest).status_code == 201
    return digest_of(manifest), manifest


def _push_docker_list(
    client: httpx.Client, repo: str, tag: str, architectures: list[str]
) -> tuple[str, bytes, dict[str, tuple[str, bytes]]]:
    images = {arch: _docker_image(client, repo, arch) for arch in architectures}
    document = {
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [
            descriptor(DOCKER_MANIFEST, body, platform={"architecture": arch, "os": "linux"})
            for arch, (_, body) in images.items()
        ],
    }
    listed = json.dumps(document).encode()
    assert push_manifest(client, repo, tag, listed).status_code == 201
    return digest_of(listed), listed, images


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("accept", [DOCKER_MANIFEST, f"{DOCKER_MANIFEST}, {OCI_MANIFEST}", None])
def test_docker_list_by_tag_gives_old_clients_the_amd64_image(
    bare: httpx.Client, repo: str, method: str, accept: str | None
) -> None:
    """``docker manifest inspect`` of Docker 20.10 and older engines: as registry:2 does.

    With no Accept at all registry:2 would then rewrite that image as schema 1;
    this registry has no schema 1 and serves the image as pushed.
    """
    _, _, images = _push_docker_list(bare, repo, "multi", ["arm64", "amd64", "s390x"])
    amd64_digest, amd64 = images["amd64"]
    response = _read(bare, method, f"/v2/{repo}/manifests/multi", accept)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == DOCKER_MANIFEST
    assert response.headers["Docker-Content-Digest"] == amd64_digest
    assert response.headers["ETag"] == f'"{amd64_digest}"'
    assert response.headers["Content-Length"] == str(len(amd64))
    assert response.content == (amd64 if method == "GET" else b"")


@pytest.mark.parametrize("accept", [DOCKER_LIST, f"{DOCKER_MANIFEST}, {DOCKER_LIST}"])
def test_docker_list_served_to_clients_naming_lists(
    bare: httpx.Client, repo: str, accept: str
) -> None:
    digest, listed, _ = _push_docker_list(bare, repo, "multi", ["arm64", "amd64"])
    response = _read(bare, "GET", f"/v2/{repo}/manifests/multi", accept)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == DOCKER_LIST
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.content == listed


@pytest.mark.parametrize("accept", [None, DOCKER_MANIFEST, OCI_INDEX])
def test_docker_list_by_digest_is_the_list(
    bare: httpx.Client, repo: str, accept: str | None
) -> None:
    """By digest nothing else can be served: the digest names the list's bytes."""
    digest, listed, _ = _push_docker_list(bare, repo, "multi", ["arm64", "amd64"])
    response = _read(bare, "GET", f"/v2/{repo}/manifests/{digest}", accept)
    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.content == listed


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_docker_list_without_amd64_is_unknown_to_old_clients(
    bare: httpx.Client, repo: str, method: str
) -> None:
    _push_docker_list(bare, repo, "arm-only", ["arm64", "ppc64le"])
    response = _read(bare, method, f"/v2/{repo}/manifests/arm-only", DOCKER_MANIFEST)
    _assert_refused(response, method)
    assert _read(bare, "GET", f"/v2/{repo}/manifests/arm-only", DOCKER_LIST).status_code == 200


def test_docker_list_etag_is_the_lists(bare: httpx.Client, repo: str) -> None:
    """The ETag is compared with the list's digest, before the fallback (as registry:2)."""
    digest, _, images = _push_docker_list(bare, repo, "multi", ["amd64"])
    path = f"/v2/{repo}/manifests/multi"
    headers = {"Accept": DOCKER_MANIFEST, "If-None-Match": f'"{digest}"'}
    assert bare.get(path, headers=headers).status_code == 304
    child_digest = images["amd64"][0]
    headers["If-None-Match"] = f'"{child_digest}"'
    assert bare.get(path, headers=headers).headers["Docker-Content-Digest"] == child_digest


@pytest.mark.parametrize("by", ["tag", "digest"])
@pytest.mark.parametrize("accept", [None, "*/*", OCI_MANIFEST, DOCKER_LIST])
def test_docker_manifest_served_whatever_accept_says(
    bare: httpx.Client, repo: str, by: str, accept: str | None
) -> None:
    """Never refused; registry:2 rewrites it as schema 1 by tag, which this registry does not."""
    digest, body = push_image(bare, repo, "docker", media_type=DOCKER_MANIFEST)
    reference = "docker" if by == "tag" else digest
    response = _read(bare, "GET", f"/v2/{repo}/manifests/{reference}", accept)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == DOCKER_MANIFEST
    assert response.content == body
