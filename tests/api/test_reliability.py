"""Races, early answers and hostile headers: nothing acknowledged is lost, nothing half seen.

Each test starts a registry of its own with two workers, so concurrent requests
really land in different processes.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import RegistryProcess
from tests.pushing import (
    OCI_MANIFEST,
    digest_of,
    image_manifest,
    push_blob,
    push_image,
    push_manifest,
    start_upload,
    with_query,
)

from .support import assert_error

Factory = Callable[..., RegistryProcess]
DELETES = {"storage": {"delete": {"enabled": True}}}


def _raw(registry: RegistryProcess, method: str, path: str, body: bytes, headers: dict[str, str]):
    """A client that sends its whole body before it reads the answer, as curl and
    Python's http.client do: an early answer must still reach it."""
    connection = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, httpx.Headers(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.fixture
def registry(registry_factory: Factory) -> RegistryProcess:
    return registry_factory(DELETES, workers=2)


def test_concurrent_patches_to_one_session_keep_every_acknowledged_byte(
    registry: RegistryProcess,
) -> None:
    with httpx.Client(base_url=registry.url, timeout=60) as client:
        location = start_upload(client, "race/patches")
    chunks = [bytes([n]) * (256 * 1024 + n) for n in range(20)]
    answers: dict[int, int] = {}

    def send(number: int) -> None:
        with httpx.Client(timeout=120) as client:
            answers[number] = client.patch(location, content=chunks[number]).status_code

    threads = [threading.Thread(target=send, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Serialised, not refused: each chunk waited for the one before.
    assert set(answers.values()) == {202}, answers
    with httpx.Client(timeout=60) as client:
        status = client.get(location)
    assert status.status_code == 204
    total = sum(len(chunk) for chunk in chunks)
    assert status.headers["Range"] == f"0-{total - 1}"
    # The bytes are the chunks whole, in the order the registry took them: the client
    # learns nothing of that order, but the digest of what is stored must be consistent.
    whole = _session_bytes(registry, location, total)
    offset, seen = 0, set()
    while offset < total:
        number = whole[offset]
        assert whole[offset : offset + len(chunks[number])] == chunks[number]
        seen.add(number)
        offset += len(chunks[number])
    assert seen == set(range(20))
    with httpx.Client(timeout=60) as client:
        done = client.put(with_query(location, digest=digest_of(whole)))
    assert done.status_code == 201, done.text


def _session_bytes(registry: RegistryProcess, location: str, size: int) -> bytes:
    upload_id = location.split("/blobs/uploads/", 1)[1].split("?", 1)[0]
    path = (
        registry.root / "docker/registry/v2/repositories/race/patches/_uploads" / upload_id / "data"
    )
    data = path.read_bytes()
    assert len(data) == size
    return data


def test_a_patch_answered_size_invalid_leaves_the_session_as_it_was(
    registry: RegistryProcess,
) -> None:
    with httpx.Client(base_url=registry.url, timeout=60) as client:
        location = start_upload(client, "race/size")
        assert client.patch(location, content=b"first").status_code == 202
        lying = client.patch(location, content=b"x" * 5000, headers={"Content-Range": "5-14"})
        assert_error(lying, 400, "SIZE_INVALID")
        status = client.get(location)
        assert status.headers["Range"] == "0-4"
        done = client.put(with_query(location, digest=digest_of(b"first")))
        assert done.status_code == 201, done.text


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "code"),
    [
        # A manifest over the 4 MiB limit, refused as soon as the limit is passed.
        (
            "PUT",
            "/v2/early/app/manifests/big",
            {"Content-Type": OCI_MANIFEST},
            413,
            "MANIFEST_INVALID",
        ),
        # A chunk for a session that does not exist (completed, cancelled).
        (
            "PATCH",
            "/v2/early/app/blobs/uploads/0b0b0b0b-0000-4000-8000-000000000000",
            {},
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        # A chunk that overlaps what the session holds.
        ("PATCH", "{session}", {"Content-Range": "0-6291455"}, 416, "RANGE_INVALID"),
    ],
    ids=["manifest-too-big", "unknown-session", "overlapping-chunk"],
)
def test_an_early_answer_reaches_a_client_still_sending(
    registry: RegistryProcess,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    """Refused before its 6 MiB body was read, the request still gets its answer
    (not a reset connection): the rest of the body is read and dropped."""
    if path == "{session}":
        with httpx.Client(base_url=registry.url, timeout=60) as client:
            location = start_upload(client, "early/app")
            assert client.patch(location, content=b"x" * 10).status_code == 202
        path = httpx.URL(location).raw_path.decode()
    got, response_headers, body = _raw(registry, method, path, os.urandom(6 * 1024 * 1024), headers)
    assert got == status, body
    assert json.loads(body)["errors"][0]["code"] == code
    assert response_headers.get("Connection", "").lower() == "close"


def test_huge_numbers_in_headers_are_client_errors(registry: RegistryProcess) -> None:
    digits = "9" * 5000  # Beyond what Python converts to an int at all.
    with httpx.Client(base_url=registry.url, timeout=60) as client:
        location = start_upload(client, "hostile/numbers")
        for value in ("0-99999999999999999999999999999999", f"0-{digits}", f"{digits}-{digits}"):
            response = client.patch(location, content=b"abc", headers={"Content-Range": value})
            assert_error(response, 416, "RANGE_INVALID")
        digest = push_blob(client, "hostile/numbers", b"some bytes")
        for value in (f"bytes=0-{digits}", f"bytes={digits}-", f"bytes=-{digits}"):
            whole = client.get(f"/v2/hostile/numbers/blobs/{digest}", headers={"Range": value})
            assert whole.status_code == 200  # Not a range we understand: the whole blob.
            assert whole.content == b"some bytes"


@pytest.mark.parametrize(
    "host",
    [
        "a" * 5000,
        "a" * 64 + ".example.com",
        "x." * 200 + "com",
        "exa mple.com",
        "[::1",
        "h:99999999",
    ],
    ids=["5000-bytes", "long-label", "too-long", "space", "bracket", "port"],
)
def test_a_malformed_host_header_is_a_client_error(registry: RegistryProcess, host: str) -> None:
    for method, path in (("POST", "/v2/hostile/host/blobs/uploads/"), ("GET", "/v2/")):
        status, _, body = _raw(registry, method, path, b"", {"Host": host})
        assert status == 400, body
        assert json.loads(body)["errors"][0]["message"] == "malformed Host header"


@pytest.mark.parametrize(
    "host", ["registry.example.com:5000", "10.0.0.5:5000", "[::1]:5000", "localhost"]
)
def test_ordinary_host_headers_are_served(registry: RegistryProcess, host: str) -> None:
    status, headers, _ = _raw(
        registry, "POST", "/v2/hostile/host/blobs/uploads/", b"", {"Host": host}
    )
    assert status == 202
    assert headers["Location"].startswith(f"http://{host}/v2/hostile/host/blobs/uploads/")


def test_fifty_pushes_to_one_tag_leave_it_on_one_complete_image(
    registry: RegistryProcess,
) -> None:
    pushed: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(50)

    def push(number: int) -> None:
        try:
            with httpx.Client(base_url=registry.url, timeout=120) as client:
                config = json.dumps({"os": "linux", "client": number}).encode()
                layer = os.urandom(1024) + bytes([number])
                push_blob(client, "race/tag", config)
                push_blob(client, "race/tag", layer)
                manifest = image_manifest(config, [layer])
                barrier.wait()
                response = push_manifest(client, "race/tag", "latest", manifest)
                assert response.status_code == 201, response.text
                pushed.append(digest_of(manifest))
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=push, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    with httpx.Client(base_url=registry.url, timeout=60) as client:
        got = client.get("/v2/race/tag/manifests/latest", headers={"Accept": OCI_MANIFEST})
        assert got.status_code == 200
        digest = got.headers["Docker-Content-Digest"]
        assert digest in pushed and digest == digest_of(got.content)
        for descriptor in [json.loads(got.content)["config"], *json.loads(got.content)["layers"]]:
            blob = client.get(f"/v2/race/tag/blobs/{descriptor['digest']}")
            assert blob.status_code == 200
            assert digest_of(blob.content) == descriptor["digest"]
        tags = client.get("/v2/race/tag/tags/list").json()["tags"]
    assert tags == ["latest"]


def test_deleting_while_a_client_pulls_never_gives_half_a_blob(
    registry: RegistryProcess,
) -> None:
    data = os.urandom(32 * 1024 * 1024)
    with httpx.Client(base_url=registry.url, timeout=120) as client:
        digest, _ = push_image(client, "race/delete", "v1", layers=[data])
        layer = digest_of(data)
        with client.stream("GET", f"/v2/race/delete/blobs/{layer}") as download:
            received = hashlib.sha256()
            chunks = download.iter_bytes(1024 * 1024)
            received.update(next(chunks))
            # Deleted (manifest, then the blob's link) while the download is under way.
            assert client.delete(f"/v2/race/delete/manifests/{digest}").status_code == 202
            assert client.delete(f"/v2/race/delete/blobs/{layer}").status_code == 202
            for chunk in chunks:
                received.update(chunk)
        # Either the whole blob or an error, never a truncated 200.
        assert "sha256:" + received.hexdigest() == layer
        assert client.get(f"/v2/race/delete/blobs/{layer}").status_code == 404


def test_manifests_pulled_while_deleted_are_whole_or_absent(registry: RegistryProcess) -> None:
    """Readers racing deletes see the whole manifest (its digest checks out) or a 404."""
    with httpx.Client(base_url=registry.url, timeout=60) as client:
        pushed = [push_image(client, "race/pulled", f"t{n}")[0] for n in range(20)]
    answers: list[tuple[int, str, str]] = []
    stop = threading.Event()

    def pull() -> None:
        with httpx.Client(base_url=registry.url, timeout=60) as client:
            while not stop.is_set():
                for digest in pushed:
                    got = client.get(
                        f"/v2/race/pulled/manifests/{digest}", headers={"Accept": OCI_MANIFEST}
                    )
                    body = digest_of(got.content) if got.status_code == 200 else ""
                    answers.append((got.status_code, digest, body))

    pullers = [threading.Thread(target=pull) for _ in range(4)]
    for thread in pullers:
        thread.start()
    with httpx.Client(base_url=registry.url, timeout=60) as client:
        for digest in pushed:
            assert client.delete(f"/v2/race/pulled/manifests/{digest}").status_code == 202
    stop.set()
    for thread in pullers:
        thread.join()
    assert answers
    for status, digest, body in answers:
        assert status in (200, 404)
        if status == 200:
            assert body == digest


def test_workers_end_with_a_supervisor_killed_outright(registry_factory: Factory) -> None:
    """kill -9 of the supervisor (or the OOM killer) takes its workers too: none goes on
    serving the port with nobody to restart or reload it, and a new start takes it."""
    import signal
    import socket
    import time

    from .raw_http import process_tree

    registry = registry_factory(workers=2)
    assert registry.process is not None
    deadline = time.monotonic() + 60  # The address is announced before the workers fork.
    workers = process_tree(registry.process.pid)[1:]
    while len(workers) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        workers = process_tree(registry.process.pid)[1:]
    assert len(workers) == 2, workers
    httpx.get(f"{registry.url}/v2/", timeout=30)  # Serving: past their start.
    registry.process.send_signal(signal.SIGKILL)
    registry.process.wait(timeout=30)
    deadline = time.monotonic() + 60
    alive = workers
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in workers if os.path.exists(f"/proc/{pid}") and not _zombie(pid)]
        time.sleep(0.1)
    assert alive == [], f"workers still running after their supervisor was killed: {alive}"
    host, port = registry.url.removeprefix("http://").rsplit(":", 1)
    with socket.socket() as probe:
        assert probe.connect_ex((host, int(port))) != 0, "something still listens on the port"


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
