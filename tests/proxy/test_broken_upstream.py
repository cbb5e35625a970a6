"""An upstream that cuts a blob short or sends wrong bytes: the client's answer is cut
short of its length (never a complete wrong body), and nothing is stored. So too for a
client that reads slowly: what it has not read yet (in memory, then in a spool file)
is dropped, and its connection is cut.

The Go registry cannot be made to send a broken blob, so this upstream is a small
stdlib HTTP server, run here for this case only.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RegistryProcess
from tests.proxy.conftest import client_of, spool_files

SMALL = os.urandom(4 * 1024 * 1024)
#: Past what waits in memory for a client (4 MiB) and for the store (16 MiB).
LARGE = os.urandom(40 * 1024 * 1024)
BLOBS = {"sha256:" + hashlib.sha256(blob).hexdigest(): blob for blob in (SMALL, LARGE)}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "cut"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _headers(self, status: int, length: int, digest: str = "") -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        if digest:
            self.send_header("Docker-Content-Digest", digest)
        self.end_headers()

    def _blob(self) -> tuple[str, bytes] | None:
        digest = self.path.rsplit("/blobs/", 1)[-1]
        blob = BLOBS.get(digest)
        return None if blob is None else (digest, blob)

    def do_HEAD(self) -> None:
        found = self._blob()
        if found is None:
            self._headers(404, 0)
        else:
            self._headers(200, len(found[1]), found[0])

    def do_GET(self) -> None:
        found = self._blob()
        if found is None:
            self._headers(404, 0)
            return
        digest, blob = found
        self._headers(200, len(blob), digest)
        if self.server.mode == "cut":  # type: ignore[attr-defined]
            self.wfile.write(blob[: len(blob) // 2])
            self.close_connection = True
        else:  # Every byte, the last one wrong.
            self.wfile.write(blob[:-1] + bytes([blob[-1] ^ 0xFF]))


@pytest.fixture
def broken_upstream() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.mode = "cut"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _nothing_stored(root: Path, repo: str, digest: str) -> None:
    hex_digest = digest.split(":")[1]
    v2 = root / "docker/registry/v2"
    assert not (v2 / "blobs/sha256" / hex_digest[:2] / hex_digest).exists()
    repository = v2 / "repositories" / repo
    assert not (repository / "_layers/sha256" / hex_digest).exists()
    uploads = repository / "_uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


@pytest.mark.parametrize("mode", ["cut", "corrupt"])
def test_a_broken_transfer_reaches_no_client_whole_and_leaves_nothing(
    broken_upstream: http.server.ThreadingHTTPServer,
    registry_factory: Callable[..., RegistryProcess],
    mode: str,
) -> None:
    broken_upstream.mode = mode  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{broken_upstream.server_address[1]}"
    registry = registry_factory({"proxy": {"remoteurl": url}})
    digest = _digest(SMALL)
    with client_of(registry) as client:
        for _ in range(2):  # A failed transfer is forgotten: the next one tries again.
            received: list[bytes] = []
            with (
                pytest.raises(httpx.RemoteProtocolError),
                client.stream("GET", f"/v2/stub/app/blobs/{digest}") as response,
            ):
                assert response.status_code == 200
                assert response.headers["Content-Length"] == str(len(SMALL))
                for piece in response.iter_raw():
                    received.append(piece)
            # Never the whole body (what it got depends on how soon the failure showed).
            assert sum(map(len, received)) < len(SMALL)
            _nothing_stored(registry.root, "stub/app", digest)
        # A range on a miss waits for the transfer: its failure is a clean error body.
        ranged = client.get(f"/v2/stub/app/blobs/{digest}", headers={"Range": "bytes=0-9"})
        assert ranged.status_code in (502, 503)
        assert ranged.json()["errors"][0]["code"] in ("UNKNOWN", "UNAVAILABLE")
    _nothing_stored(registry.root, "stub/app", digest)
    assert "pulling through failed" in registry.log_with("pulling through failed")


@pytest.mark.parametrize("mode", ["cut", "corrupt"])
def test_a_slow_client_of_a_broken_transfer_is_cut_too(
    broken_upstream: http.server.ThreadingHTTPServer,
    registry_factory: Callable[..., RegistryProcess],
    mode: str,
) -> None:
    """The client reads one piece, then waits until the transfer failed: the rest it
    gets is short of the length, ending in a cut; nothing is stored, no file stays open."""
    broken_upstream.mode = mode  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{broken_upstream.server_address[1]}"
    registry = registry_factory({"proxy": {"remoteurl": url}})
    digest = _digest(LARGE)
    with client_of(registry) as client:
        received = bytearray()
        with (
            pytest.raises(httpx.RemoteProtocolError),
            client.stream("GET", f"/v2/stub/app/blobs/{digest}") as response,
        ):
            assert response.status_code == 200
            pieces = response.iter_raw()
            received += next(pieces)
            registry.log_with("pulling through failed")
            for piece in pieces:
                received += piece
        assert len(received) < len(LARGE)
    _nothing_stored(registry.root, "stub/app", digest)
    assert "pulling through failed" in registry.log()
    assert spool_files(registry) == []


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()
