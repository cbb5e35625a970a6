"""``/v2/``, and the headers every response carries."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.conftest import RegistryProcess
from tests.pushing import digest_of, push_blob, push_image

from .support import API_VERSION

UNKNOWN_DIGEST = digest_of(b"never pushed anywhere")


def test_version_check(client: httpx.Client) -> None:
    response = client.get("/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == API_VERSION


def test_version_check_head(client: httpx.Client) -> None:
    response = client.head("/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == API_VERSION
    assert response.content == b""


# (method, path, expected status): successes, errors, 404s and 405s alike.
EVERY_KIND_OF_RESPONSE = [
    ("GET", "/v2/", 200),
    ("GET", "/v2/_catalog", 200),
    ("GET", "/v2/{repo}/tags/list", 200),
    ("GET", "/v2/{repo}/manifests/latest", 200),
    ("HEAD", "/v2/{repo}/manifests/latest", 200),
    ("GET", "/v2/{repo}/manifests/missing", 404),
    ("HEAD", "/v2/{repo}/manifests/missing", 404),
    ("GET", "/v2/{repo}/blobs/{blob}", 200),
    ("GET", f"/v2/{{repo}}/blobs/{UNKNOWN_DIGEST}", 404),
    ("HEAD", f"/v2/{{repo}}/blobs/{UNKNOWN_DIGEST}", 404),
    ("GET", "/v2/{repo}/blobs/sha256:nothex", 400),
    ("POST", "/v2/{repo}/blobs/uploads/", 202),
    ("GET", "/v2/{repo}/blobs/uploads/0b0b0b0b-0000-4000-8000-000000000000", 404),
    ("GET", f"/v2/{{repo}}/referrers/{UNKNOWN_DIGEST}", 200),
    ("GET", "/v2/no/such/repository/tags/list", 404),
    ("GET", "/v2/Upper/tags/list", 400),
    ("DELETE", "/v2/", 405),
    ("PATCH", "/v2/_catalog", 405),
    ("GET", "/v2/{repo}/nothing-here", 404),
    ("GET", "/", 302),  # To the web pages.
    ("GET", "/ui/", 200),
    ("GET", "/favicon.ico", 404),
]


@pytest.mark.parametrize(("method", "path", "status"), EVERY_KIND_OF_RESPONSE)
def test_every_response_carries_the_api_version(
    client: httpx.Client, repo: str, method: str, path: str, status: int
) -> None:
    push_image(client, repo, "latest")
    blob = push_blob(client, repo, b"a blob to read")
    response = client.request(method, path.format(repo=repo, blob=blob))
    assert response.status_code == status, response.text
    assert response.headers["Docker-Distribution-API-Version"] == API_VERSION


CUSTOM_HEADERS = {
    "http": {
        "headers": {
            "X-Content-Type-Options": ["nosniff"],
            "X-Registry-Test": ["first", "second"],
        }
    }
}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v2/", 200),
        ("GET", "/v2/_catalog", 200),
        ("GET", "/v2/nothing/tags/list", 404),
        ("GET", "/v2/Upper/tags/list", 400),
        ("DELETE", "/v2/", 405),
        ("GET", "/elsewhere", 404),
        ("POST", "/v2/some/repo/blobs/uploads/", 202),
    ],
)
def test_config_headers_on_every_response(
    registry_factory: Callable[..., RegistryProcess], method: str, path: str, status: int
) -> None:
    registry = registry_factory(CUSTOM_HEADERS)
    response = httpx.request(method, f"{registry.url}{path}")
    assert response.status_code == status, response.text
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers.get_list("X-Registry-Test") == ["first", "second"]
    assert response.headers["Docker-Distribution-API-Version"] == API_VERSION
