"""The spec's error codes: each reachable one over HTTP, and never HTML or a traceback."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import RegistryProcess
from tests.pushing import (
    ACCEPT_MANIFESTS,
    OCI_MANIFEST,
    digest_of,
    image_manifest,
    push_blob,
    push_image,
)

from .support import assert_error, raw_request

Trigger = Callable[[httpx.Client, str], httpx.Response]
UNKNOWN = digest_of(b"unknown content")


def _upload(client: httpx.Client, repo: str) -> str:
    response = client.post(f"/v2/{repo}/blobs/uploads/")
    assert response.status_code == 202
    return "/v2/" + response.headers["Location"].split("/v2/", 1)[1]


def _manifest_blob_unknown(client: httpx.Client, repo: str) -> httpx.Response:
    body = image_manifest(b"{}", [b"never pushed"])
    return client.put(
        f"/v2/{repo}/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST}
    )


def _size_invalid(client: httpx.Client, repo: str) -> httpx.Response:
    return client.patch(_upload(client, repo), content=b"12345", headers={"Content-Range": "0-1"})


def _range_invalid(client: httpx.Client, repo: str) -> httpx.Response:
    return client.patch(_upload(client, repo), content=b"12345", headers={"Content-Range": "5-9"})


def _digest_invalid(client: httpx.Client, repo: str) -> httpx.Response:
    location = _upload(client, repo)
    return client.put(location, params={"digest": UNKNOWN}, content=b"other content")


# (code, expected status, how to provoke it)
REACHABLE: list[tuple[str, int, Trigger]] = [
    ("BLOB_UNKNOWN", 404, lambda c, r: c.get(f"/v2/{r}/blobs/{UNKNOWN}")),
    ("BLOB_UPLOAD_UNKNOWN", 404, lambda c, r: c.get(f"/v2/{r}/blobs/uploads/{uuid.uuid4()}")),
    ("DIGEST_INVALID", 400, _digest_invalid),
    ("DIGEST_INVALID", 400, lambda c, r: c.get(f"/v2/{r}/blobs/sha256:nothex")),
    ("MANIFEST_BLOB_UNKNOWN", 400, _manifest_blob_unknown),
    (
        "MANIFEST_INVALID",
        400,
        lambda c, r: c.put(
            f"/v2/{r}/manifests/v1", content=b"{", headers={"Content-Type": OCI_MANIFEST}
        ),
    ),
    ("MANIFEST_UNKNOWN", 404, lambda c, r: c.get(f"/v2/{r}/manifests/nope")),
    ("NAME_INVALID", 400, lambda c, r: c.get("/v2/NOT-valid/tags/list")),
    ("NAME_UNKNOWN", 404, lambda c, r: c.get(f"/v2/{r}/never/tags/list")),
    ("SIZE_INVALID", 400, _size_invalid),
    ("UNSUPPORTED", 405, lambda c, r: c.delete("/v2/")),
    ("UNSUPPORTED", 404, lambda c, r: c.get(f"/v2/{r}/no-such-endpoint")),
    # Neither a tag nor a digest: no route in registry:2 (TAG_INVALID is unreachable there too).
    ("MANIFEST_UNKNOWN", 404, lambda c, r: c.get(f"/v2/{r}/manifests/-bad")),
    ("RANGE_INVALID", 416, _range_invalid),
    ("PAGINATION_NUMBER_INVALID", 400, lambda c, r: c.get("/v2/_catalog?n=1001")),
]


@pytest.mark.parametrize(
    ("code", "status", "trigger"),
    REACHABLE,
    ids=[f"{row[0]}-{i}" for i, row in enumerate(REACHABLE)],
)
def test_error_code(
    client: httpx.Client, repo: str, code: str, status: int, trigger: Trigger
) -> None:
    push_image(client, repo, "latest")
    response = trigger(client, repo)
    assert_error(response, status, code)
    entry = response.json()["errors"][0]
    assert entry["message"]
    assert isinstance(entry["detail"], dict | list | str)


# (method, path): requests that match no handler.
WRONG_METHODS = [
    ("DELETE", "/v2/"),
    ("POST", "/v2/"),
    ("PUT", "/v2/_catalog"),
    ("DELETE", "/v2/_catalog"),
    ("POST", "/v2/{repo}/tags/list"),
    ("DELETE", "/v2/{repo}/tags/list"),
    ("POST", "/v2/{repo}/manifests/latest"),
    ("PATCH", "/v2/{repo}/manifests/latest"),
    ("POST", f"/v2/{{repo}}/blobs/{UNKNOWN}"),
    ("PUT", f"/v2/{{repo}}/blobs/{UNKNOWN}"),
    ("PATCH", f"/v2/{{repo}}/blobs/{UNKNOWN}"),
    ("GET", "/v2/{repo}/blobs/uploads/"),
    ("DELETE", "/v2/{repo}/blobs/uploads/"),
    # A fresh id each run, under one name: pytest-xdist workers must collect the same tests.
    pytest.param(
        "POST",
        f"/v2/{{repo}}/blobs/uploads/{uuid.uuid4()}",
        id="POST-/v2/{repo}/blobs/uploads/UUID",
    ),
    ("POST", f"/v2/{{repo}}/referrers/{UNKNOWN}"),
    ("DELETE", f"/v2/{{repo}}/referrers/{UNKNOWN}"),
    ("OPTIONS", "/v2/"),
    ("TRACE", "/v2/"),
    ("BREW", "/v2/"),
]


@pytest.mark.parametrize(("method", "path"), WRONG_METHODS)
def test_wrong_method(client: httpx.Client, repo: str, method: str, path: str) -> None:
    response = client.request(method, path.format(repo=repo))
    assert_error(response, 405, "UNSUPPORTED")


UNKNOWN_ENDPOINTS = [
    "/nothing-here",  # (GET / leads to the web pages.)
    "/favicon.ico",
    "/v1/",
    "/v3/",
    "/v2/{repo}",
    "/v2/{repo}/",
    "/v2/{repo}/tags",
    "/v2/{repo}/tags/list/more",
    "/v2/{repo}/manifests/",
    "/v2/{repo}/manifests/latest/more",
    "/v2/{repo}/blobs/",
    "/v2/{repo}/referrers/",
    "/v2/_catalog/more",
]


@pytest.mark.parametrize("path", UNKNOWN_ENDPOINTS)
@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_unknown_endpoint(client: httpx.Client, repo: str, method: str, path: str) -> None:
    response = client.request(method, path.format(repo=repo))
    assert_error(response, 404, "UNSUPPORTED")


# Odd requests, sent byte for byte: whatever the answer, it is JSON, never HTML or a traceback.
ODD_REQUESTS = [
    ("GET", "/v2"),
    ("HEAD", "/v2"),
    ("GET", "//v2/"),
    ("GET", "/v2//"),
    ("GET", "/v2//_catalog"),
    ("GET", "/v2/a//b/tags/list"),
    ("GET", "/v2/a/b/tags/list/"),
    ("GET", "/v2/%zz/tags/list"),
    ("GET", "/v2/%ff%fe/tags/list"),
    ("GET", "/v2/_catalog?n=%ff"),
    ("GET", "/v2/_catalog?last=%ff%fe&n=1"),
    ("GET", "/v2/a/tags/list?n=99999999999999999999999"),
    ("GET", "/v2/a/blobs/sha256:%00"),
    ("GET", "/v2/a/manifests/%ff"),
    ("PUT", "/v2/a/manifests/%ff"),
    ("GET", "/v2/a/referrers/%ff?artifactType=%ff"),
    ("POST", "/v2/a/blobs/uploads/?digest=%ff"),
    ("POST", "/v2/a/blobs/uploads/?mount=%ff&from=%ff"),
    ("GET", "/v2/.."),
    ("GET", "/v2/../../etc/passwd"),
    ("GET", "/../../etc/passwd"),
    ("GET", "/static/x"),
    ("GET", "/v2/" + "a/" * 2000 + "tags/list"),
]


@pytest.mark.parametrize(("method", "path"), ODD_REQUESTS, ids=lambda v: str(v)[:40])
def test_never_html_or_traceback(shared_registry: RegistryProcess, method: str, path: str) -> None:
    response = raw_request(shared_registry.url, method, path)
    assert response.status_code < 500, (response.status_code, response.text)
    assert response.headers["Content-Type"].split(";")[0] == "application/json", response.text
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    if method != "HEAD":
        document = json.loads(response.content)
        assert isinstance(document, dict)
        if response.status_code >= 400:
            assert_error(response, response.status_code, document["errors"][0]["code"])
    assert b"Traceback" not in response.content
    assert b"<html" not in response.content.lower()


def test_bad_request_bodies_are_json_errors(client: httpx.Client, repo: str) -> None:
    push_blob(client, repo, b"x")
    bodies = [b"\x00" * 100, b"\xff" * 100, b'{"schemaVersion": 2, "config": null}', b"[" * 10000]
    for body in bodies:
        response = client.put(
            f"/v2/{repo}/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST}
        )
        assert_error(response, 400, "MANIFEST_INVALID")
        assert b"Traceback" not in response.content


def test_head_errors_have_no_body(client: httpx.Client, repo: str) -> None:
    response = client.head(f"/v2/{repo}/manifests/nope")
    assert response.status_code == 404
    assert response.content == b""
    assert response.headers["Content-Type"] == "application/json"


def test_deletes_disabled(registry_factory: Callable[..., RegistryProcess]) -> None:
    registry = registry_factory()
    with httpx.Client(base_url=registry.url, headers=ACCEPT_MANIFESTS) as client:
        digest, _ = push_image(client, "kept", "latest")
        for path in ("/v2/kept/manifests/latest", f"/v2/kept/manifests/{digest}"):
            assert_error(client.delete(path), 405, "UNSUPPORTED")
        assert client.get("/v2/kept/manifests/latest").status_code == 200
        assert client.get(f"/v2/kept/manifests/{digest}").status_code == 200


def _read_response(connection: socket.socket) -> tuple[bytes, bytes] | None:
    """(head, body) of one response; None when the server closed the connection instead."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = connection.recv(65536)
        if not piece:
            return None
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    expected = int(length.group(1)) if length else 0
    while len(body) < expected:
        piece = connection.recv(65536)
        if not piece:
            return None
        body += piece
    return head, body


@pytest.mark.parametrize(
    "request_line",
    [
        # Fresh ids each run, under fixed names: pytest-xdist workers must collect the same tests.
        pytest.param(
            f"PUT /v2/early/blobs/uploads/{uuid.uuid4()}?digest={UNKNOWN} HTTP/1.1",
            id=f"PUT /v2/early/blobs/uploads/UUID?digest={UNKNOWN} HTTP/1.1",
        ),
        pytest.param(
            f"PATCH /v2/early/blobs/uploads/{uuid.uuid4()} HTTP/1.1",
            id="PATCH /v2/early/blobs/uploads/UUID HTTP/1.1",
        ),
        "PUT /v2/Early/manifests/latest HTTP/1.1",
        "POST /v2/early/tags/list HTTP/1.1",
        "POST /v2/early/blobs/uploads/ HTTP/1.1",
    ],
)
def test_answer_before_the_body_keeps_the_client_safe(
    shared_registry: RegistryProcess, request_line: str
) -> None:
    """Answered before its body arrived, a request either drains the body and serves the
    next request on that connection, or says ``Connection: close``: never a silent close."""
    with socket.create_connection(("127.0.0.1", shared_registry.port), timeout=30) as connection:
        connection.sendall(f"{request_line}\r\nHost: x\r\nContent-Length: 5\r\n\r\n".encode())
        first = _read_response(connection)
        assert first is not None
        head, _ = first
        if re.search(rb"(?im)^connection:\s*close", head):
            return
        # Give a server that is about to drop the connection the time to do it.
        connection.settimeout(2)
        with contextlib.suppress(TimeoutError):
            assert connection.recv(1) != b"", "connection closed without Connection: close"
        connection.settimeout(30)
        connection.sendall(b"abcdeGET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        second = _read_response(connection)
        assert second is not None, "connection closed without Connection: close"
        assert second[0].startswith(b"HTTP/1.1 200")
