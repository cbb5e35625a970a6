"""Upload sessions live in storage: they survive restarts, span workers, and get purged."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import RegistryProcess
from tests.pushing import digest_of, start_upload, upload_id_of, with_query

from .support import assert_error

Factory = Callable[..., RegistryProcess]


def _fresh(registry: RegistryProcess) -> httpx.Client:
    """A client that opens a new connection for every request."""
    return httpx.Client(
        base_url=registry.url,
        timeout=30,
        headers={"Connection": "close"},
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def test_push_continues_after_a_restart(registry_factory: Factory) -> None:
    registry = registry_factory()
    data = os.urandom(3 * 1024 * 1024 + 17)
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        location = start_upload(client, "restarted")
        first = client.patch(location, content=data[:1_000_000])
        assert first.status_code == 202
        location = first.headers["Location"]
    registry.restart()
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        status = client.get(location)
        assert status.status_code == 204, status.text
        assert status.headers["Range"] == "0-999999"
        second = client.patch(
            location,
            content=data[1_000_000:2_000_000],
            headers={"Content-Range": "1000000-1999999"},
        )
        assert second.status_code == 202, second.text
        assert second.headers["Range"] == "0-1999999"
        registry.restart()
        digest = digest_of(data)
        done = client.put(
            with_query(second.headers["Location"], digest=digest), content=data[2_000_000:]
        )
        assert done.status_code == 201, done.text
        assert done.headers["Docker-Content-Digest"] == digest
        blob = client.get(f"/v2/restarted/blobs/{digest}")
        assert blob.content == data


def test_wrong_digest_detected_after_a_restart(registry_factory: Factory) -> None:
    registry = registry_factory()
    data = os.urandom(100_000)
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        location = start_upload(client, "restarted")
        client.patch(location, content=data)
    registry.restart()
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        wrong = digest_of(data + b"!")
        assert_error(client.put(with_query(location, digest=wrong)), 400, "DIGEST_INVALID")
        assert_error(client.get(f"/v2/restarted/blobs/{wrong}"), 404, "BLOB_UNKNOWN")
        done = client.put(with_query(location, digest=digest_of(data)))
        assert done.status_code == 201, done.text


@pytest.mark.parametrize("chunked", [False, True], ids=["streamed", "content-range"])
def test_push_across_workers(registry_factory: Factory, chunked: bool) -> None:
    """POST, PATCHes and PUT on new connections, so the workers take turns."""
    registry = registry_factory(workers=2)
    for round_number in range(4):
        data = os.urandom(200_000 + round_number)
        pieces = [data[i : i + 30_000] for i in range(0, len(data), 30_000)]
        with _fresh(registry) as client:
            location = start_upload(client, "workers")
        offset = 0
        for piece in pieces[:-1]:
            headers = {"Content-Range": f"{offset}-{offset + len(piece) - 1}"} if chunked else {}
            with _fresh(registry) as client:
                response = client.patch(location, content=piece, headers=headers)
                assert response.status_code == 202, response.text
            offset += len(piece)
            assert response.headers["Range"] == f"0-{offset - 1}"
            location = response.headers["Location"]
            with _fresh(registry) as client:
                assert client.get(location).headers["Range"] == f"0-{offset - 1}"
        digest = digest_of(data)
        with _fresh(registry) as client:
            done = client.put(with_query(location, digest=digest), content=pieces[-1])
            assert done.status_code == 201, done.text
            assert done.headers["Docker-Content-Digest"] == digest
        with _fresh(registry) as client:
            assert client.get(f"/v2/workers/blobs/{digest}").content == data


def test_wrong_digest_detected_across_workers(registry_factory: Factory) -> None:
    registry = registry_factory(workers=2)
    data = os.urandom(90_000)
    with _fresh(registry) as client:
        location = start_upload(client, "workers")
    for start in range(0, len(data), 30_000):
        with _fresh(registry) as client:
            response = client.patch(location, content=data[start : start + 30_000])
            assert response.status_code == 202
    wrong = digest_of(data[:-1])
    for _ in range(2):
        with _fresh(registry) as client:
            assert_error(client.put(with_query(location, digest=wrong)), 400, "DIGEST_INVALID")
    with _fresh(registry) as client:
        done = client.put(with_query(location, digest=digest_of(data)))
        assert done.status_code == 201, done.text


# --- purging abandoned sessions -------------------------------------------------------


def _purging_config(root: Path, dryrun: bool) -> dict[str, object]:
    return {
        "storage": {
            "filesystem": {"rootdirectory": str(root)},
            "maintenance": {
                "uploadpurging": {"enabled": True, "age": "1s", "interval": "1s", "dryrun": dryrun}
            },
        }
    }


def _wait_for(condition: Callable[[], bool], what: str, deadline_seconds: float = 60) -> None:
    deadline = time.monotonic() + deadline_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


@pytest.mark.parametrize("workers", [1, 2])
def test_abandoned_upload_is_purged(
    registry_factory: Factory, tmp_path: Path, workers: int
) -> None:
    registry = registry_factory(_purging_config(tmp_path / "purged", dryrun=False), workers=workers)
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        location = start_upload(client, "abandoned")
        client.patch(location, content=b"some bytes")
        upload_id = upload_id_of(location)
        _wait_for(lambda: client.get(location).status_code == 404, "the upload to be purged")
        assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_error(client.patch(location, content=b"more"), 404, "BLOB_UPLOAD_UNKNOWN")

    def purge_lines() -> list[str]:
        return [line for line in registry.log().splitlines() if "]: purged " in line]

    # The pass logs once it is over, a moment after the session is gone.
    _wait_for(lambda: any(upload_id in line for line in purge_lines()), "the purge's log line")
    # One worker purges, whatever the number of workers.
    purgers = {line.split("]: purged ")[0].rsplit("[", 1)[1] for line in purge_lines()}
    assert len(purgers) == 1, registry.log()


def test_dry_run_keeps_abandoned_uploads(registry_factory: Factory, tmp_path: Path) -> None:
    registry = registry_factory(_purging_config(tmp_path / "kept", dryrun=True))
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        location = start_upload(client, "abandoned")
        client.patch(location, content=b"some bytes")
        upload_id = upload_id_of(location)

        def reported() -> bool:
            return any(
                "would purge" in line and upload_id in line for line in registry.log().splitlines()
            )

        _wait_for(reported, "the purge to report the upload")
        status = client.get(location)
        assert status.status_code == 204, status.text
        assert status.headers["Range"] == "0-9"
        done = client.put(with_query(location, digest=digest_of(b"some bytes")))
        assert done.status_code == 201, done.text


def _purge_command(registry: RegistryProcess, *extra: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "registry", "purge-uploads", "--config",
         str(registry.workdir / "config.yml"), *extra],
        capture_output=True, text=True, check=True, timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")},
    )  # fmt: skip
    return result.stdout


def test_purge_uploads_command(registry_factory: Factory) -> None:
    registry = registry_factory()
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        location = start_upload(client, "abandoned/by/cli")
        upload_id = upload_id_of(location)
        output = _purge_command(registry, "--older-than", "0s", "--dry-run")
        assert f"would purge abandoned/by/cli/{upload_id}" in output
        assert client.get(location).status_code == 204
        output = _purge_command(registry, "--older-than", "1h")
        assert "purged 0 upload(s), kept 1" in output
        assert client.get(location).status_code == 204
        output = _purge_command(registry, "--older-than", "0s")
        assert f"purged abandoned/by/cli/{upload_id}" in output
        assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
