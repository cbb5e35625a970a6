"""``/v2/<name>/blobs/<digest>``: GET/HEAD with ``Range``, DELETE, per-repository access."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.conftest import RegistryProcess
from tests.pushing import digest_of, push_blob

from .support import assert_error

DATA = bytes(range(256)) * 4  # 1024 bytes, every offset distinguishable.
SIZE = len(DATA)


def test_get_blob(client: httpx.Client, repo: str) -> None:
    digest = push_blob(client, repo, DATA)
    response = client.get(f"/v2/{repo}/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.headers["Content-Length"] == str(SIZE)


def test_head_blob(client: httpx.Client, repo: str) -> None:
    digest = push_blob(client, repo, DATA)
    response = client.head(f"/v2/{repo}/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.headers["Content-Length"] == str(SIZE)


def test_empty_blob(client: httpx.Client, repo: str) -> None:
    digest = push_blob(client, repo, b"")
    response = client.get(f"/v2/{repo}/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Content-Length"] == "0"


# (Range header, expected bytes as a slice of DATA)
SATISFIABLE_RANGES = [
    ("bytes=0-9", slice(0, 10)),
    ("bytes=0-0", slice(0, 1)),
    ("bytes=100-199", slice(100, 200)),
    ("bytes=1000-", slice(1000, SIZE)),
    ("bytes=0-", slice(0, SIZE)),
    ("bytes=-24", slice(SIZE - 24, SIZE)),
    ("bytes=-1", slice(SIZE - 1, SIZE)),
    ("bytes=-5000", slice(0, SIZE)),
    ("bytes=1000-5000", slice(1000, SIZE)),
    ("bytes=1023-1023", slice(1023, SIZE)),
]


@pytest.mark.parametrize(("header", "part"), SATISFIABLE_RANGES)
def test_get_range(client: httpx.Client, repo: str, header: str, part: slice) -> None:
    digest = push_blob(client, repo, DATA)
    response = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": header})
    assert response.status_code == 206, response.text
    expected = DATA[part]
    assert response.content == expected
    first = part.start
    last = first + len(expected) - 1
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{SIZE}"
    assert response.headers["Content-Length"] == str(len(expected))
    assert response.headers["Docker-Content-Digest"] == digest


@pytest.mark.parametrize(
    "header", ["bytes=1024-", "bytes=5000-6000", "bytes=1024-2000", "bytes=-0"]
)
def test_range_beyond_the_end(client: httpx.Client, repo: str, header: str) -> None:
    digest = push_blob(client, repo, DATA)
    response = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{SIZE}"
    assert response.headers["Content-Type"].startswith("application/json")


def test_unknown_blob(client: httpx.Client, repo: str) -> None:
    push_blob(client, repo, DATA)
    unknown = digest_of(b"never pushed")
    assert_error(client.get(f"/v2/{repo}/blobs/{unknown}"), 404, "BLOB_UNKNOWN")
    head = client.head(f"/v2/{repo}/blobs/{unknown}")
    assert head.status_code == 404
    assert head.content == b""
    assert_error(client.get(f"/v2/nobody/here/blobs/{unknown}"), 404, "BLOB_UNKNOWN")


def test_blob_is_visible_only_where_it_was_pushed(client: httpx.Client, repo: str) -> None:
    digest = push_blob(client, f"{repo}/a", DATA)
    push_blob(client, f"{repo}/b", b"something else in b")
    assert client.get(f"/v2/{repo}/a/blobs/{digest}").content == DATA
    assert_error(client.get(f"/v2/{repo}/b/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert client.head(f"/v2/{repo}/b/blobs/{digest}").status_code == 404
    ranged = client.get(f"/v2/{repo}/b/blobs/{digest}", headers={"Range": "bytes=0-1"})
    assert_error(ranged, 404, "BLOB_UNKNOWN")


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:xyz",
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "notadigest",
        ":" + "a" * 64,
        "sha256:",
    ],
)
def test_malformed_digest(client: httpx.Client, repo: str, digest: str) -> None:
    push_blob(client, repo, DATA)
    assert_error(client.get(f"/v2/{repo}/blobs/{digest}"), 400, "DIGEST_INVALID")
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 400
    assert_error(client.delete(f"/v2/{repo}/blobs/{digest}"), 400, "DIGEST_INVALID")


def test_delete_blob(client: httpx.Client, repo: str) -> None:
    digest = push_blob(client, repo, DATA)
    other = push_blob(client, f"{repo}/other", DATA)
    response = client.delete(f"/v2/{repo}/blobs/{digest}")
    assert response.status_code == 202, response.text
    assert_error(client.get(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
    assert_error(client.delete(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    # The content is shared: the other repository still has it.
    assert client.get(f"/v2/{repo}/other/blobs/{other}").content == DATA


def test_delete_blob_disabled(registry_factory: Callable[..., RegistryProcess]) -> None:
    registry = registry_factory()  # storage.delete.enabled defaults to false
    with httpx.Client(base_url=registry.url) as client:
        digest = push_blob(client, "kept", DATA)
        assert_error(client.delete(f"/v2/kept/blobs/{digest}"), 405, "UNSUPPORTED")
        assert client.get(f"/v2/kept/blobs/{digest}").content == DATA


def test_blob_if_none_match(client: httpx.Client, repo: str) -> None:
    digest = push_blob(client, repo, DATA)
    response = client.get(f"/v2/{repo}/blobs/{digest}", headers={"If-None-Match": f'"{digest}"'})
    assert response.status_code == 304
    assert response.content == b""
