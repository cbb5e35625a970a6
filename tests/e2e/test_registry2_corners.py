"""The corners of ``tests/api/test_spec_corners.py``, asked of registry:2 and ours side by side.

Debian's ``docker-registry`` (distribution 2.8.2) and ours hold the same
content; every request below gets the same status, error code, digest and body
from both, but for the differences this registry makes on purpose (each
asserted here, so a change on either side shows):

* no route: registry:2 answers a bare ``404 page not found``, ours a JSON
  ``MANIFEST_UNKNOWN``;
* a malformed digest: registry:2 answers 500 to GET, HEAD and PUT (it looks
  for a tag of that name), ours ``400 DIGEST_INVALID``;
* a Docker image asked for by tag by a client not naming schema 2: registry:2
  rewrites it as schema 1, ours has no schema 1 and serves it as pushed;
* tags/list: registry:2 2.8 ignores ``n`` and ``last`` (and does not sort).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import RegistryProcess
from tests.go_registry import GoRegistry
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

pytestmark = pytest.mark.e2e

MAXENTRIES = 3
REPOSITORIES = ["a", "b", "c", "d", "e"]
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"


@dataclass
class Pair:
    go: httpx.Client
    ours: httpx.Client
    digests: dict[str, str]


def _populate(client: httpx.Client) -> dict[str, str]:
    """The same content in either registry; returns the digests by name."""
    digests: dict[str, str] = {}
    for name in REPOSITORIES:
        push_image(client, name, "latest")
    digests["oci"], oci = push_image(client, "img", "oci", media_type=OCI_MANIFEST)
    digests["docker"], _ = push_image(client, "img", "docker", media_type=DOCKER_MANIFEST)
    children: dict[str, bytes] = {}
    for architecture in ("arm64", "amd64"):
        config = json.dumps({"architecture": architecture, "os": "linux"}).encode()
        layer = f"layer for {architecture}".encode()
        push_blob(client, "img", config)
        push_blob(client, "img", layer)
        child = image_manifest(config, [layer], media_type=DOCKER_MANIFEST)
        assert push_manifest(client, "img", digest_of(child), child).status_code == 201
        children[architecture] = child
    digests["amd64"] = digest_of(children["amd64"])

    def listed(media_type: str, entries: list[tuple[str, str, bytes]]) -> bytes:
        return json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": media_type,
                "manifests": [
                    descriptor(kind, body, platform={"architecture": arch, "os": "linux"})
                    for kind, arch, body in entries
                ],
            }
        ).encode()

    documents = {
        "list": listed(
            DOCKER_LIST,
            [(DOCKER_MANIFEST, arch, body) for arch, body in children.items()],
        ),
        "arm-list": listed(DOCKER_LIST, [(DOCKER_MANIFEST, "arm64", children["arm64"])]),
        "oci-child-list": listed(DOCKER_LIST, [(OCI_MANIFEST, "amd64", oci)]),
        "index": listed(OCI_INDEX, [(OCI_MANIFEST, "amd64", oci)]),
    }
    for tag, document in documents.items():
        assert push_manifest(client, "img", tag, document).status_code == 201
        digests[tag] = digest_of(document)
    return digests


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    workdir = tmp_path_factory.mktemp("registry2-corners")
    go = GoRegistry(workdir / "go-storage", workdir)
    go.config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {
                    "filesystem": {"rootdirectory": str(go.root)},
                    "delete": {"enabled": True},
                },
                "http": {"addr": f"127.0.0.1:{go.port}"},
                "catalog": {"maxentries": MAXENTRIES},
            }
        )
    )
    go.start()
    (workdir / "ours").mkdir()
    ours = RegistryProcess(
        workdir / "ours",
        {
            "storage": {
                "filesystem": {"rootdirectory": str(workdir / "ours" / "data")},
                "delete": {"enabled": True},
            },
            "catalog": {"maxentries": MAXENTRIES},
        },
    )
    ours.start()
    try:
        with (
            httpx.Client(base_url=go.url, timeout=30) as go_client,
            httpx.Client(base_url=ours.url, timeout=30) as our_client,
        ):
            digests = _populate(go_client)
            assert _populate(our_client) == digests
            for client in (go_client, our_client):
                del client.headers["Accept"]
            yield Pair(go_client, our_client, digests)
    finally:
        ours.stop()
        go.stop()


def _summary(response: httpx.Response) -> tuple[object, ...]:
    """What must agree: status, error code, type, digest, body (JSON compared as data)."""
    code = None
    if response.status_code >= 400 and response.content:
        code = response.json()["errors"][0]["code"]
    content_type = response.headers.get("Content-Type", "").split(";")[0]
    body: object = response.content
    if response.status_code < 400 and content_type == "application/json":
        body = response.json()
    return (
        response.status_code,
        code,
        content_type if response.status_code < 400 else None,
        response.headers.get("Docker-Content-Digest"),
        response.headers.get("Link"),
        body if response.status_code < 400 else None,
    )


def _both(
    pair: Pair, method: str, path: str, **options: Any
) -> tuple[httpx.Response, httpx.Response]:
    """The same request to registry:2, then to ours."""
    return pair.go.request(method, path, **options), pair.ours.request(method, path, **options)


def _rewritten_as_schema1(reference: str, by: str, accepted: set[str]) -> bool:
    """Where registry:2 serves a Docker image as schema 1, which this registry does not have."""
    if by != "tag" or DOCKER_MANIFEST in accepted:
        return False
    return reference == "docker" or (reference == "list" and DOCKER_LIST not in accepted)


ACCEPTS = [
    None,
    "*/*",
    DOCKER_MANIFEST,
    DOCKER_LIST,
    OCI_MANIFEST,
    OCI_INDEX,
    f"{OCI_MANIFEST}; q=0.5",
    f"{DOCKER_MANIFEST}, {DOCKER_LIST}",
    f"{DOCKER_MANIFEST}, {OCI_MANIFEST}",
    OCI_MANIFEST.upper(),
    "application/json",
]
REFERENCES = ["oci", "index", "list", "arm-list", "oci-child-list", "docker"]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("by", ["tag", "digest"])
@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("accept", ACCEPTS)
def test_accept_negotiation_as_registry2(
    pair: Pair, method: str, by: str, reference: str, accept: str | None
) -> None:
    path = f"/v2/img/manifests/{reference if by == 'tag' else pair.digests[reference]}"
    headers = {} if accept is None else {"Accept": accept}
    go, ours = _both(pair, method, path, headers=headers)
    accepted = {item.split(";")[0].strip() for item in (accept or "").split(",")}
    if _rewritten_as_schema1(reference, by, accepted):
        # Test images have no rootfs to rewrite, so registry:2 fails with 400 here.
        assert go.status_code == 400 or go.headers["Content-Type"] == DOCKER_SCHEMA1, go.text
        assert ours.status_code == 200
        assert ours.headers["Content-Type"] == DOCKER_MANIFEST
        served = pair.digests["docker" if reference == "docker" else "amd64"]
        assert ours.headers["Docker-Content-Digest"] == served
        return
    assert _summary(ours) == _summary(go), (go.text, ours.text)


def test_etag_is_compared_before_accept_as_registry2(pair: Pair) -> None:
    for method in ("GET", "HEAD"):
        for reference, etag in (("oci", "oci"), ("list", "list"), ("list", "amd64")):
            headers = {"If-None-Match": f'"{pair.digests[etag]}"', "Accept": DOCKER_MANIFEST}
            go, ours = _both(pair, method, f"/v2/img/manifests/{reference}", headers=headers)
            assert ours.status_code == go.status_code, (method, reference, etag)
        headers = {"If-None-Match": pair.digests["oci"]}  # Unquoted.
        go, ours = _both(pair, method, "/v2/img/manifests/oci", headers=headers)
        assert ours.status_code == go.status_code == 304


def test_repeated_accept_headers_as_registry2(pair: Pair) -> None:
    for order in ((DOCKER_MANIFEST, OCI_MANIFEST), (OCI_MANIFEST, DOCKER_MANIFEST)):
        headers = [("Accept", order[0]), ("Accept", order[1])]
        go, ours = _both(pair, "GET", "/v2/img/manifests/oci", headers=headers)
        assert _summary(ours) == _summary(go) and ours.status_code == 200


NOT_REFERENCES = [".INVALID_MANIFEST_NAME", "-dash", "a" * 129, "sha256:", "a:b:c"]
MALFORMED_DIGESTS = ["sha256:short", "sha512:abc", "md5:abc", "a:b"]


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
@pytest.mark.parametrize("reference", NOT_REFERENCES + MALFORMED_DIGESTS)
def test_references_as_registry2(pair: Pair, method: str, reference: str) -> None:
    headers = {"Content-Type": OCI_MANIFEST, "Accept": OCI_MANIFEST}
    # A manifest either would take (its blobs are there), so only the reference can be wrong.
    content = pair.go.get("/v2/a/manifests/latest", headers=headers).content
    path = f"/v2/a/manifests/{reference}"
    go, ours = _both(
        pair, method, path, headers=headers, content=content if method == "PUT" else None
    )
    if reference in NOT_REFERENCES:
        assert go.status_code == ours.status_code == 404
        assert go.headers["Content-Type"].startswith("text/plain")  # No route.
        if method != "HEAD":
            assert ours.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    elif method == "DELETE":
        assert _summary(ours) == _summary(go) == (400, "DIGEST_INVALID", None, None, None, None)
    else:
        assert go.status_code == 500  # It looks for a tag named like the digest.
        assert ours.status_code == 400
        if method != "HEAD":
            assert ours.json()["errors"][0]["code"] == "DIGEST_INVALID"


CATALOG_QUERIES = [
    "",
    "?n=2",
    "?n=3",
    "?n=4",
    "?n=1000",
    "?n=0",
    "?n=-1",
    "?n=abc",
    "?n=",
    "?n=1.5",
    "?n=%2B2",
    "?n=%202",
    "?n=00002",
    "?n=2&n=1",
    "?n=9223372036854775807",
    "?n=9223372036854775808",
    "?n=" + "9" * 5000,
    "?n=2&last=b",
    "?last=a",
    "?last=zzz",
    "?last=",
    "?n=2&last=",
    "?last=a&n=0",
]


@pytest.mark.parametrize("query", CATALOG_QUERIES)
def test_catalog_pagination_as_registry2(pair: Pair, query: str) -> None:
    go, ours = _both(pair, "GET", f"/v2/_catalog{query}")
    assert _summary(ours) == _summary(go), (go.text, ours.text)


@pytest.mark.parametrize("query", ["", "?n=abc", "?n=-1", "?n=", "?last="])
def test_tags_list_as_registry2(pair: Pair, query: str) -> None:
    """Where registry:2 2.8 answers the whole list (it ignores n), ours does too, sorted."""
    go, ours = _both(pair, "GET", f"/v2/img/tags/list{query}")
    assert ours.status_code == go.status_code == 200
    assert ours.json()["tags"] == sorted(go.json()["tags"])
    assert "Link" not in ours.headers and "Link" not in go.headers
