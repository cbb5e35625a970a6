"""An upstream that cuts a blob short or sends wrong bytes: the client's answer is cut
short of its length (never a complete wrong body), and nothing is stored.

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
from tests.proxy.conftest import client_of

BLOB = os.urandom(4 * 1024 * 1024)
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "cut"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _headers(self, status: int, length: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Docker-Content-Digest", DIGEST)
        self.end_headers()

    def do_HEAD(self) -> None:
        if self.path.endswith(f"/blobs/{DIGEST}"):
            self._headers(200, len(BLOB))
        else:
            self._headers(404, 0)

    def do_GET(self) -> None:
        if not self.path.endswith(f"/blobs/{DIGEST}"):
            self._headers(404, 0)
            return
        self._headers(200, len(BLOB))
        if self.server.mode == "cut":  # type: ignore[attr-defined]
            self.wfile.write(BLOB[: len(BLOB) // 2])
            self.close_connection = True
        else:  # Every byte, the last one wrong.
            self.wfile.write(BLOB[:-1] + bytes([BLOB[-1] ^ 0xFF]))


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


def _nothing_stored(root: Path, repo: str) -> None:
    hex_digest = DIGEST.split(":")[1]
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
    with client_of(registry) as client:
        for _ in range(2):  # A failed transfer is forgotten: the next one tries again.
            received: list[bytes] = []
            with (
                pytest.raises(httpx.RemoteProtocolError),
                client.stream("GET", f"/v2/stub/app/blobs/{DIGEST}") as response,
            ):
                assert response.status_code == 200
                assert response.headers["Content-Length"] == str(len(BLOB))
                for piece in response.iter_raw():
                    received.append(piece)
            assert 0 < sum(map(len, received)) < len(BLOB)
            _nothing_stored(registry.root, "stub/app")
        # A range on a miss waits for the transfer: its failure is a clean error body.
        ranged = client.get(f"/v2/stub/app/blobs/{DIGEST}", headers={"Range": "bytes=0-9"})
        assert ranged.status_code in (502, 503)
        assert ranged.json()["errors"][0]["code"] in ("UNKNOWN", "UNAVAILABLE")
    _nothing_stored(registry.root, "stub/app")
    assert "pulling through failed" in registry.log_with("pulling through failed")
