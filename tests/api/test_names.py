"""Repository names and tags follow the spec's grammar; nothing else reaches storage."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import RegistryProcess
from tests.pushing import ACCEPT_MANIFESTS, OCI_MANIFEST, digest_of, image_manifest, push_image

from .support import assert_error, raw_request

Factory = Callable[..., RegistryProcess]

DIGEST = digest_of(b"some content")
UPLOAD = "/v2/{name}/blobs/uploads/0b0b0b0b-0000-4000-8000-000000000000"

# Names that are not in the grammar, as they appear in a URL path (sent byte for byte).
INVALID_NAMES = [
    "Upper",
    "upper/Case",
    "-leading",
    "_leading",
    ".leading",
    "trailing-",
    "trailing.",
    "a__-b",
    "a...b",
    "a/./b",
    "a/../b",
    "..",
    "../..",
    "../../../../../outside",
    "a/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/outside",
    "%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/outside",
    "..%2f..%2f..%2f..%2f..%2foutside",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2foutside",
    "%2fetc",
    "/etc",
    "a//b",
    "a%2f%2fb",
    "a/",
    "a%2f",
    "a%00b",
    "a%20b",
    "caf%C3%A9",
    "a" * 256,
    "/".join(["a" * 63] * 4) + "/a",
]

# (method, path template, body) for every endpoint that takes a name.
ENDPOINTS = [
    ("GET", "/v2/{name}/tags/list", b""),
    ("GET", "/v2/{name}/manifests/latest", b""),
    ("HEAD", "/v2/{name}/manifests/latest", b""),
    ("PUT", "/v2/{name}/manifests/latest", b"{}"),
    ("DELETE", "/v2/{name}/manifests/latest", b""),
    ("GET", f"/v2/{{name}}/blobs/{DIGEST}", b""),
    ("DELETE", f"/v2/{{name}}/blobs/{DIGEST}", b""),
    ("POST", "/v2/{name}/blobs/uploads/", b""),
    ("POST", f"/v2/{{name}}/blobs/uploads/?digest={DIGEST}", b"some content"),
    ("POST", f"/v2/{{name}}/blobs/uploads/?mount={DIGEST}&from=library/source", b""),
    ("GET", UPLOAD, b""),
    ("PATCH", UPLOAD, b"data"),
    ("PUT", f"{UPLOAD}?digest={DIGEST}", b""),
    ("DELETE", UPLOAD, b""),
    ("GET", f"/v2/{{name}}/referrers/{DIGEST}", b""),
]


@pytest.mark.parametrize("name", INVALID_NAMES, ids=lambda name: name[:40])
@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=lambda v: str(v)[:30])
def test_invalid_name(
    shared_registry: RegistryProcess, name: str, method: str, path: str, body: bytes
) -> None:
    response = raw_request(shared_registry.url, method, path.format(name=name), body)
    if method == "HEAD":
        assert response.status_code == 400
        return
    assert_error(response, 400, "NAME_INVALID")


VALID_NAMES = [
    "a",
    "0",
    "library/busybox",
    "a/b/c/d/e",
    "a-b",
    "a--b",
    "a_b",
    "a__b",
    "a.b",
    "a.b-c_d__e",
    "x" * 255,
    "/".join(["a" * 63] * 4),
]


@pytest.mark.parametrize("name", VALID_NAMES, ids=lambda name: name[:40])
def test_valid_name(client: httpx.Client, name: str) -> None:
    prefixed = f"valid/{name}" if len(name) < 240 else name
    response = client.get(f"/v2/{prefixed}/tags/list")
    assert_error(response, 404, "NAME_UNKNOWN")


def test_longest_name_round_trip(client: httpx.Client) -> None:
    name = "n" * 255
    digest, body = push_image(client, name, "latest")
    assert client.get(f"/v2/{name}/manifests/{digest}").content == body
    assert client.get(f"/v2/{name}/tags/list").json()["tags"] == ["latest"]


INVALID_TAGS = [".", "..", "%2e%2e", "-x", ".x", "x" * 129, "a%2fb", "..%2f..%2fx", "%20", "t%00"]


@pytest.mark.parametrize("tag", INVALID_TAGS)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_invalid_tag(shared_registry: RegistryProcess, method: str, tag: str) -> None:
    body = image_manifest(b"{}", []) if method == "PUT" else b""
    headers = {"Content-Type": OCI_MANIFEST} if method == "PUT" else {}
    response = raw_request(
        shared_registry.url, method, f"/v2/library/tags-test/manifests/{tag}", body, headers
    )
    if "%2f" in tag:
        # A slash ends the reference: no endpoint, or a name that is not in the grammar.
        assert response.status_code in (400, 404), response.text
        assert response.headers["Content-Type"] == "application/json"
        return
    # Neither a tag nor a digest: registry:2's route does not match it, a 404.
    assert_error(response, 404, "MANIFEST_UNKNOWN")


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def test_traversal_never_leaves_the_storage_root(registry_factory: Factory) -> None:
    registry = registry_factory({"storage": {"delete": {"enabled": True}}})
    # The config names no filesystem root: the default, ./data in the working folder.
    root = registry.root
    outside = registry.workdir / "outside"
    outside.mkdir()
    for name in INVALID_NAMES:
        for method, path, body in ENDPOINTS:
            raw_request(registry.url, method, path.format(name=name), body)
    for tag in INVALID_TAGS:
        manifest = image_manifest(b"{}", [])
        raw_request(registry.url, "PUT", f"/v2/library/ok/manifests/{tag}", manifest)
    for upload_id in ("..", "%2e%2e", "..%2f..%2f..%2f..%2f..%2f..%2foutside"):
        for method in ("GET", "PATCH", "PUT", "DELETE"):
            raw_request(
                registry.url, method, f"/v2/library/ok/blobs/uploads/{upload_id}?digest={DIGEST}"
            )
    for digest in ("..", "sha256:..%2f..%2f..", "..%2f..%2f..%2f..%2foutside"):
        raw_request(registry.url, "GET", f"/v2/library/ok/blobs/{digest}")
        raw_request(registry.url, "DELETE", f"/v2/library/ok/blobs/{digest}")
        raw_request(registry.url, "GET", f"/v2/library/ok/referrers/{digest}")
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in registry.workdir.iterdir()) == [
        "config.yml",
        "data",
        "outside",
        "registry.log",
    ]
    # Inside the root: at most the folders a valid request makes, nothing named by an attacker.
    for entry in _tree(root):
        assert ".." not in entry.split(os.sep), entry
        assert "outside" not in entry, entry
    repositories = root / "docker/registry/v2/repositories"
    if repositories.exists():
        assert _tree(repositories) == set(), _tree(repositories)
    # And the registry still works.
    with httpx.Client(base_url=registry.url, headers=ACCEPT_MANIFESTS) as client:
        digest, body = push_image(client, "library/ok", "latest")
        assert client.get(f"/v2/library/ok/manifests/{digest}").content == body
