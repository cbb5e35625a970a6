"""``/v2/<name>/blobs/uploads/``: monolithic, streamed, chunked, resumable pushes, and mounts."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.pushing import digest_of, push_blob, start_upload, upload_id_of, with_query

from .support import assert_error

DATA = os.urandom(300_000)


def _stream(data: bytes, piece: int = 65_536) -> Iterator[bytes]:
    """A generator body: httpx sends it with ``Transfer-Encoding: chunked``."""
    for offset in range(0, len(data), piece):
        yield data[offset : offset + piece]


def _assert_blob(client: httpx.Client, repo: str, digest: str, data: bytes) -> None:
    response = client.get(f"/v2/{repo}/blobs/{digest}")
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["Docker-Content-Digest"] == digest


def _assert_session_headers(response: httpx.Response, repo: str, received: int) -> None:
    location = response.headers["Location"]
    upload_id = response.headers["Docker-Upload-UUID"]
    assert f"/v2/{repo}/blobs/uploads/{upload_id}" in location
    assert response.headers["Range"] == f"0-{max(received - 1, 0)}"


# --- starting -------------------------------------------------------------------------


def test_post_starts_a_session(client: httpx.Client, repo: str) -> None:
    response = client.post(f"/v2/{repo}/blobs/uploads/")
    assert response.status_code == 202, response.text
    _assert_session_headers(response, repo, 0)
    assert response.headers["Range"] == "0-0"
    assert response.headers["Content-Length"] == "0"
    status = client.get(response.headers["Location"])
    assert status.status_code == 204
    assert status.headers["Docker-Upload-UUID"] == response.headers["Docker-Upload-UUID"]


def test_post_without_trailing_slash(client: httpx.Client, repo: str) -> None:
    response = client.post(f"/v2/{repo}/blobs/uploads")
    assert response.status_code == 202
    _assert_session_headers(response, repo, 0)


def test_every_session_has_its_own_id(client: httpx.Client, repo: str) -> None:
    ids = {
        client.post(f"/v2/{repo}/blobs/uploads/").headers["Docker-Upload-UUID"] for _ in range(5)
    }
    assert len(ids) == 5


def test_monolithic_post_with_digest(client: httpx.Client, repo: str) -> None:
    digest = digest_of(DATA)
    response = client.post(
        f"/v2/{repo}/blobs/uploads/",
        params={"digest": digest},
        content=DATA,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.headers["Location"].endswith(f"/v2/{repo}/blobs/{digest}")
    _assert_blob(client, repo, digest, DATA)


def test_monolithic_post_with_wrong_digest(client: httpx.Client, repo: str) -> None:
    claimed = digest_of(b"something else")
    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": claimed}, content=DATA)
    assert_error(response, 400, "DIGEST_INVALID")
    for digest in (claimed, digest_of(DATA)):
        assert_error(client.get(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")


def test_monolithic_put(client: httpx.Client, repo: str) -> None:
    location = start_upload(client, repo)
    digest = digest_of(DATA)
    response = client.put(with_query(location, digest=digest), content=DATA)
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.headers["Location"].endswith(f"/v2/{repo}/blobs/{digest}")
    _assert_blob(client, repo, digest, DATA)
    # The session is gone once the blob is in.
    assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")


# --- streamed and chunked PATCH -------------------------------------------------------


def test_streamed_patch(client: httpx.Client, repo: str) -> None:
    location = start_upload(client, repo)
    response = client.patch(location, content=_stream(DATA))
    assert response.status_code == 202, response.text
    _assert_session_headers(response, repo, len(DATA))
    digest = digest_of(DATA)
    done = client.put(with_query(response.headers["Location"], digest=digest))
    assert done.status_code == 201, done.text
    _assert_blob(client, repo, digest, DATA)


def test_streamed_patches_then_streamed_put(client: httpx.Client, repo: str) -> None:
    location = start_upload(client, repo)
    parts = [DATA[:100_000], DATA[100_000:250_000], DATA[250_000:]]
    for received, part in ((100_000, parts[0]), (250_000, parts[1])):
        response = client.patch(location, content=_stream(part, 7_000))
        assert response.status_code == 202, response.text
        assert response.headers["Range"] == f"0-{received - 1}"
        location = response.headers["Location"]
    digest = digest_of(DATA)
    done = client.put(with_query(location, digest=digest), content=_stream(parts[2]))
    assert done.status_code == 201, done.text
    _assert_blob(client, repo, digest, DATA)


def test_chunked_patch_with_content_range(client: httpx.Client, repo: str) -> None:
    location = start_upload(client, repo)
    chunk = 100_000
    for start in range(0, len(DATA), chunk):
        part = DATA[start : start + chunk]
        end = start + len(part) - 1
        response = client.patch(
            location,
            content=part,
            headers={"Content-Range": f"{start}-{end}", "Content-Type": "application/octet-stream"},
        )
        assert response.status_code == 202, response.text
        assert response.headers["Range"] == f"0-{end}"
        location = response.headers["Location"]
    digest = digest_of(DATA)
    done = client.put(with_query(location, digest=digest))
    assert done.status_code == 201, done.text
    _assert_blob(client, repo, digest, DATA)


@pytest.mark.parametrize("start", [0, 5, 20, 11])
def test_out_of_order_chunk(client: httpx.Client, repo: str, start: int) -> None:
    location = start_upload(client, repo)
    first = client.patch(location, content=DATA[:10], headers={"Content-Range": "0-9"})
    assert first.status_code == 202
    bad = client.patch(
        location,
        content=DATA[start : start + 10],
        headers={"Content-Range": f"{start}-{start + 9}"},
    )
    assert_error(bad, 416, "RANGE_INVALID")
    # Nothing of the refused chunk went in; the session goes on from where it was.
    status = client.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-9"
    second = client.patch(location, content=DATA[10:30], headers={"Content-Range": "10-29"})
    assert second.status_code == 202, second.text
    assert second.headers["Range"] == "0-29"
    digest = digest_of(DATA[:30])
    done = client.put(with_query(location, digest=digest))
    assert done.status_code == 201, done.text
    _assert_blob(client, repo, digest, DATA[:30])


def test_first_chunk_must_start_at_zero(client: httpx.Client, repo: str) -> None:
    location = start_upload(client, repo)
    bad = client.patch(location, content=DATA[:10], headers={"Content-Range": "10-19"})
    assert_error(bad, 416, "RANGE_INVALID")
    assert client.get(location).headers["Range"] == "0-0"


def test_malformed_content_range(client: httpx.Client, repo: str) -> None:
    location = start_upload(client, repo)
    for header in ("nonsense", "9-0"):
        bad = client.patch(location, content=DATA[:10], headers={"Content-Range": header})
        assert_error(bad, 416, "RANGE_INVALID")
    assert client.get(location).headers["Range"] == "0-0"


def test_patch_content_length_must_match_content_range(client: httpx.Client, repo: str) -> None:
    location = start_upload(client, repo)
    bad = client.patch(location, content=DATA[:10], headers={"Content-Range": "0-4"})
    assert_error(bad, 400, "SIZE_INVALID")


def test_upload_status(client: httpx.Client, repo: str) -> None:
    location = start_upload(client, repo)
    client.patch(location, content=DATA[:1234])
    response = client.get(location)
    assert response.status_code == 204
    assert response.content == b""
    _assert_session_headers(response, repo, 1234)
    assert response.headers["Range"] == "0-1233"


# --- completing -----------------------------------------------------------------------


def test_put_with_last_chunk(client: httpx.Client, repo: str) -> None:
    location = start_upload(client, repo)
    client.patch(location, content=DATA[:1000], headers={"Content-Range": "0-999"})
    digest = digest_of(DATA)
    done = client.put(
        with_query(location, digest=digest),
        content=DATA[1000:],
        headers={"Content-Range": f"1000-{len(DATA) - 1}"},
    )
    assert done.status_code == 201, done.text
    _assert_blob(client, repo, digest, DATA)


def test_put_with_wrong_digest(client: httpx.Client, repo: str) -> None:
    location = start_upload(client, repo)
    claimed = digest_of(b"not this content")
    response = client.put(with_query(location, digest=claimed), content=DATA)
    assert_error(response, 400, "DIGEST_INVALID")
    for digest in (claimed, digest_of(DATA)):
        assert_error(client.get(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
        assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404


def test_put_with_wrong_digest_after_chunks(client: httpx.Client, repo: str) -> None:
    location = start_upload(client, repo)
    client.patch(location, content=DATA)
    claimed = digest_of(DATA[:-1])
    assert_error(client.put(with_query(location, digest=claimed)), 400, "DIGEST_INVALID")
    assert_error(client.get(f"/v2/{repo}/blobs/{claimed}"), 404, "BLOB_UNKNOWN")
    assert_error(client.get(f"/v2/{repo}/blobs/{digest_of(DATA)}"), 404, "BLOB_UNKNOWN")


def test_put_content_length_must_match_content_range(client: httpx.Client, repo: str) -> None:
    location = start_upload(client, repo)
    response = client.put(
        with_query(location, digest=digest_of(DATA[:10])),
        content=DATA[:10],
        headers={"Content-Range": "0-4"},
    )
    assert_error(response, 400, "SIZE_INVALID")
    assert_error(client.get(f"/v2/{repo}/blobs/{digest_of(DATA[:10])}"), 404, "BLOB_UNKNOWN")


def test_put_without_digest(client: httpx.Client, repo: str) -> None:
    location = start_upload(client, repo)
    client.patch(location, content=DATA[:10])
    assert_error(client.put(location), 400, "DIGEST_INVALID")
    assert_error(client.put(location, content=DATA[10:20]), 400, "DIGEST_INVALID")
    assert_error(client.put(with_query(location, digest="")), 400, "DIGEST_INVALID")
    assert_error(client.put(with_query(location, digest="sha256:zz")), 400, "DIGEST_INVALID")
    # Still usable afterwards.
    assert client.get(location).headers["Range"] == "0-9"
    done = client.put(with_query(location, digest=digest_of(DATA[:10])))
    assert done.status_code == 201, done.text


def test_sha512_digest(client: httpx.Client, repo: str) -> None:
    digest = "sha512:" + hashlib.sha512(DATA).hexdigest()
    location = start_upload(client, repo)
    client.patch(location, content=DATA[:5000])
    done = client.put(with_query(location, digest=digest), content=DATA[5000:])
    assert done.status_code == 201, done.text
    assert done.headers["Docker-Content-Digest"] == digest
    _assert_blob(client, repo, digest, DATA)
    head = client.head(f"/v2/{repo}/blobs/{digest}")
    assert head.headers["Content-Length"] == str(len(DATA))


def test_sha512_single_post(client: httpx.Client, repo: str) -> None:
    data = DATA[:777]
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    done = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
    assert done.status_code == 201, done.text
    _assert_blob(client, repo, digest, data)
    wrong = "sha512:" + hashlib.sha512(b"other").hexdigest()
    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": wrong}, content=data)
    assert_error(response, 400, "DIGEST_INVALID")


def test_same_blob_pushed_twice(client: httpx.Client, repo: str) -> None:
    first = push_blob(client, repo, DATA)
    second = push_blob(client, repo, DATA)
    assert first == second
    _assert_blob(client, repo, first, DATA)


# --- cancelling and unknown sessions --------------------------------------------------


def test_delete_cancels(client: httpx.Client, repo: str) -> None:
    location = start_upload(client, repo)
    client.patch(location, content=DATA[:100])
    response = client.delete(location)
    assert response.status_code == 204, response.text
    assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.patch(location, content=b"more"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(
        client.put(with_query(location, digest=digest_of(DATA[:100]))), 404, "BLOB_UPLOAD_UNKNOWN"
    )
    assert_error(client.delete(location), 404, "BLOB_UPLOAD_UNKNOWN")


UNKNOWN_IDS = [
    # Fresh ids each run, under fixed names: pytest-xdist workers must collect the same tests.
    pytest.param(str(uuid.uuid4()), id="uuid"),
    "not-a-uuid",
    "0",
    "%2e%2e",
    "%2e",
    pytest.param(str(uuid.uuid4()).upper(), id="uuid-upper"),
    "x" * 300,
]


@pytest.mark.parametrize("upload_id", UNKNOWN_IDS)
def test_unknown_upload_id(client: httpx.Client, repo: str, upload_id: str) -> None:
    start_upload(client, repo)
    url = f"/v2/{repo}/blobs/uploads/{upload_id}"
    assert_error(client.get(url), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.patch(url, content=b"data"), 404, "BLOB_UPLOAD_UNKNOWN")
    digest = digest_of(b"data")
    assert_error(
        client.put(url, params={"digest": digest}, content=b"data"), 404, "BLOB_UPLOAD_UNKNOWN"
    )
    assert_error(client.delete(url), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.get(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")


def test_upload_id_belongs_to_its_repository(client: httpx.Client, repo: str) -> None:
    location = start_upload(client, f"{repo}/a")
    client.patch(location, content=DATA[:10])
    upload_id = upload_id_of(location)
    start_upload(client, f"{repo}/b")
    other = f"/v2/{repo}/b/blobs/uploads/{upload_id}"
    digest = digest_of(DATA[:20])
    assert_error(client.get(other), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.patch(other, content=DATA[10:20]), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.put(other, params={"digest": digest}), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.delete(other), 404, "BLOB_UPLOAD_UNKNOWN")
    # Untouched in its own repository.
    assert client.get(location).headers["Range"] == "0-9"
    client.patch(location, content=DATA[10:20])
    assert client.put(with_query(location, digest=digest)).status_code == 201
    _assert_blob(client, f"{repo}/a", digest, DATA[:20])
    assert_error(client.get(f"/v2/{repo}/b/blobs/{digest}"), 404, "BLOB_UNKNOWN")


# --- cross-repository mount -----------------------------------------------------------


def test_mount_from_another_repository(client: httpx.Client, repo: str) -> None:
    digest = push_blob(client, f"{repo}/source", DATA)
    response = client.post(
        f"/v2/{repo}/target/blobs/uploads/", params={"mount": digest, "from": f"{repo}/source"}
    )
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.headers["Location"].endswith(f"/v2/{repo}/target/blobs/{digest}")
    _assert_blob(client, f"{repo}/target", digest, DATA)


def test_mount_when_source_lacks_the_blob(client: httpx.Client, repo: str) -> None:
    push_blob(client, f"{repo}/source", b"something else")
    digest = digest_of(DATA)
    response = client.post(
        f"/v2/{repo}/target/blobs/uploads/", params={"mount": digest, "from": f"{repo}/source"}
    )
    assert response.status_code == 202, response.text
    _assert_session_headers(response, f"{repo}/target", 0)
    assert_error(client.get(f"/v2/{repo}/target/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    done = client.put(with_query(response.headers["Location"], digest=digest), content=DATA)
    assert done.status_code == 201, done.text
    _assert_blob(client, f"{repo}/target", digest, DATA)


def test_mount_from_unknown_repository(client: httpx.Client, repo: str) -> None:
    digest = push_blob(client, f"{repo}/elsewhere", DATA)
    response = client.post(
        f"/v2/{repo}/target/blobs/uploads/", params={"mount": digest, "from": f"{repo}/nobody"}
    )
    assert response.status_code == 202, response.text
    _assert_session_headers(response, f"{repo}/target", 0)


def test_mount_without_from(client: httpx.Client, repo: str) -> None:
    digest = push_blob(client, f"{repo}/source", DATA)
    response = client.post(f"/v2/{repo}/target/blobs/uploads/", params={"mount": digest})
    assert response.status_code == 202, response.text
    _assert_session_headers(response, f"{repo}/target", 0)
    # No repository was named: the blob must not leak into the target.
    assert_error(client.get(f"/v2/{repo}/target/blobs/{digest}"), 404, "BLOB_UNKNOWN")


def test_mount_with_invalid_from(client: httpx.Client, repo: str) -> None:
    digest = push_blob(client, f"{repo}/source", DATA)
    response = client.post(
        f"/v2/{repo}/target/blobs/uploads/", params={"mount": digest, "from": "../source"}
    )
    assert_error(response, 400, "NAME_INVALID")


def test_mount_with_invalid_digest(client: httpx.Client, repo: str) -> None:
    response = client.post(
        f"/v2/{repo}/target/blobs/uploads/", params={"mount": "sha256:zz", "from": repo}
    )
    assert_error(response, 400, "DIGEST_INVALID")
