"""Health checks (registry:2's ``health`` section) and the probes on the debug listener.

Every check kind is driven by a real fault: storage whose tree is a symlink
loop, a drain file created and removed, a small HTTP server that answers the
wrong status or is stopped, a TCP port that stops listening. ``/debug/health``
must answer registry:2's body (check name to error, 503), the public port a
503 UNAVAILABLE on every worker, and both recover when the fault goes.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import RegistryProcess
from tests.pushing import push_blob

from .support import assert_error
from .test_metrics import free_port

Factory = Callable[..., RegistryProcess]
Health = tuple[int, dict[str, str]]
DEADLINE = 60.0
UNHEALTHY_DETAIL = "health check failed: please see /debug/health"


class Debug:
    """A registry and its debug listener."""

    def __init__(self, registry: RegistryProcess, port: int) -> None:
        self.registry = registry
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> Health:
        response = httpx.get(f"{self.url}{path}", timeout=30)
        assert response.headers["content-type"].startswith("application/json"), response.headers
        body = json.loads(response.content)
        assert isinstance(body, dict), body
        assert response.status_code == (503 if body else 200), (response.status_code, body)
        return response.status_code, body

    def health(self) -> Health:
        return self.get("/debug/health")

    def wait(
        self,
        healthy: bool,
        path: str = "/debug/health",
        match: Callable[[dict[str, str]], bool] | None = None,
    ) -> dict[str, str]:
        """Poll until ``path`` says healthy (200) or not (503), and ``match``es; the body.

        Either worker may answer, each reading the results within a poll: the
        answer must hold several times in a row, so both have seen it.
        """
        deadline = time.monotonic() + DEADLINE
        streak = 0
        while streak < 4:
            status, body = self.get(path)
            if (status == 200) == healthy and (match is None or match(body)):
                streak += 1
                continue
            streak = 0
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{path} stayed {status} {body}:\n{self.registry.log()[-2000:]}"
                )
            time.sleep(0.05)
        return body

    def public_unavailable(self) -> None:
        """Every worker answers 503 UNAVAILABLE, as registry:2 does while a check fails.

        Each worker reads the results within a poll: wait for several 503s in a row.
        """
        deadline = time.monotonic() + DEADLINE
        paths = ("/v2/", "/v2/_catalog", "/v2/some/app/manifests/latest")
        with httpx.Client(
            base_url=self.registry.url, limits=httpx.Limits(max_keepalive_connections=0)
        ) as client:
            answered = 0
            while answered < 6:
                response = client.get(paths[answered % len(paths)])
                answered = answered + 1 if response.status_code == 503 else 0
                assert time.monotonic() < deadline, f"public port stays {response.status_code}"
            assert_error(response, 503, "UNAVAILABLE")
            assert response.json()["errors"][0]["detail"] == UNHEALTHY_DETAIL

    def public_available(self) -> None:
        deadline = time.monotonic() + DEADLINE
        with httpx.Client(
            base_url=self.registry.url, limits=httpx.Limits(max_keepalive_connections=0)
        ) as client:
            answered = 0
            while answered < 6:  # Several connections in a row: each worker has seen it.
                status = client.get("/v2/").status_code
                answered = answered + 1 if status == 200 else 0
                assert time.monotonic() < deadline, f"public port stays {status}"


def start(factory: Factory, health: dict[str, object], workers: int = 2) -> Debug:
    port = free_port()
    config = {"http": {"debug": {"addr": f"127.0.0.1:{port}"}}, "health": health}
    return Debug(factory(config, workers=workers), port)


def test_file_check_is_a_drain_switch(registry_factory: Factory, tmp_path: Path) -> None:
    drain = tmp_path / "drain"
    debug = start(registry_factory, {"file": [{"file": str(drain), "interval": "100ms"}]})
    debug.wait(healthy=True, path="/readyz")
    assert debug.health() == (200, {})
    assert httpx.get(f"{debug.url}/debug/health", timeout=30).content == b"{}"  # As registry:2
    assert debug.get("/livez") == (200, {})
    debug.public_available()

    drain.write_text("")
    assert debug.wait(healthy=False) == {str(drain): "file exists"}
    raw = httpx.get(f"{debug.url}/debug/health", timeout=30).content
    assert raw == json.dumps({str(drain): "file exists"}, separators=(",", ":")).encode()  # Go's
    debug.public_unavailable()
    status, reasons = debug.get("/readyz")
    assert status == 503 and reasons[str(drain)] == "file exists", reasons
    assert debug.get("/livez") == (200, {})  # Alive, only out of rotation.

    drain.unlink()
    assert debug.wait(healthy=True) == {}
    debug.wait(healthy=True, path="/readyz")
    debug.public_available()


def test_storagedriver_check_names_the_driver(registry_factory: Factory) -> None:
    debug = start(registry_factory, {"storagedriver": {"enabled": True, "interval": "100ms"}})
    with httpx.Client(base_url=debug.registry.url, timeout=30) as client:
        push_blob(client, "health/app", b"stored before the fault")
    debug.wait(healthy=True)
    tree = debug.registry.root / "docker"
    moved = debug.registry.root / "docker.moved"
    tree.rename(moved)
    os.symlink("docker", tree)  # A loop: every path below it fails with ELOOP.
    try:
        failures = debug.wait(healthy=False)
        assert list(failures) == ["storagedriver_filesystem"], failures
        assert failures["storagedriver_filesystem"], failures
        debug.public_unavailable()
    finally:
        tree.unlink()
        moved.rename(tree)
    assert debug.wait(healthy=True) == {}
    debug.public_available()


class Downstream:
    """A small HTTP server the ``health.http`` check probes: its answer is the test's to set."""

    def __init__(self) -> None:
        self.status = 204
        self.heads: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.port = free_port()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/ping"

    def probes(self) -> int:
        with self.lock:
            return len(self.heads)

    def answer(self, status: int) -> None:
        with self.lock:
            self.status = status

    def start(self) -> None:
        downstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                with downstream.lock:
                    downstream.heads.append({k.lower(): v for k, v in self.headers.items()})
                    status = downstream.status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join()
            self.server = None


@pytest.fixture
def downstream() -> Iterator[Downstream]:
    server = Downstream()
    server.start()
    yield server
    server.stop()


def test_http_check(registry_factory: Factory, downstream: Downstream) -> None:
    check = {
        "uri": downstream.uri,
        "headers": {"Authorization": ["Bearer health-probe"]},
        "statuscode": 204,
        "timeout": "2s",
        "interval": "100ms",
    }
    debug = start(registry_factory, {"http": [check]})
    debug.wait(healthy=True, path="/readyz")
    assert debug.health() == (200, {})
    assert downstream.heads[0].get("authorization") == "Bearer health-probe", downstream.heads[0]

    downstream.answer(200)  # Not the configured status.
    failures = debug.wait(healthy=False)
    assert failures == {downstream.uri: "downstream service returned unexpected status: 200"}
    debug.public_unavailable()

    downstream.answer(204)
    debug.wait(healthy=True)
    downstream.stop()
    stopped = f"error while checking: {downstream.uri}"
    failures = debug.wait(healthy=False, match=lambda body: stopped in str(body))
    assert list(failures) == [downstream.uri], failures
    assert failures[downstream.uri].startswith(stopped), failures

    downstream.start()
    assert debug.wait(healthy=True) == {}
    debug.public_available()


def test_http_check_threshold(registry_factory: Factory, downstream: Downstream) -> None:
    """A failure counts only once it repeats ``threshold`` times in a row."""
    check = {"uri": downstream.uri, "statuscode": 204, "interval": "1s", "threshold": 3}
    debug = start(registry_factory, {"http": [check]})
    debug.wait(healthy=True, path="/readyz")
    failing_from = downstream.probes()
    downstream.answer(500)
    deadline = time.monotonic() + DEADLINE
    while True:
        status, failures = debug.health()
        failed = downstream.probes() - failing_from  # Counted after the answer above.
        if status == 503:
            break
        assert time.monotonic() < deadline, "never unhealthy"
        time.sleep(0.05)
    assert failed >= 3, f"unhealthy after {failed} failed probe(s), threshold 3"
    assert failures == {downstream.uri: "downstream service returned unexpected status: 500"}
    downstream.answer(204)  # One success resets the count.
    debug.wait(healthy=True)


def test_tcp_check(registry_factory: Factory) -> None:
    port = free_port()
    addr = f"127.0.0.1:{port}"
    listener = socket.create_server(("127.0.0.1", port))
    try:
        check = {"addr": addr, "timeout": "1s", "interval": "100ms"}
        debug = start(registry_factory, {"tcp": [check]})
        debug.wait(healthy=True, path="/readyz")
        assert debug.health() == (200, {})
    finally:
        listener.close()
    assert debug.wait(healthy=False) == {addr: f"connection to {addr} failed"}
    debug.public_unavailable()
    listener = socket.create_server(("127.0.0.1", port))
    try:
        assert debug.wait(healthy=True) == {}
        debug.public_available()
    finally:
        listener.close()


def test_checks_gate_the_public_port_without_a_debug_listener(
    registry_factory: Factory, tmp_path: Path
) -> None:
    drain = tmp_path / "drain"
    registry = registry_factory(
        {"health": {"file": [{"file": str(drain), "interval": "100ms"}]}}, workers=2
    )
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        assert client.get("/v2/").status_code == 200
        drain.write_text("")
        deadline = time.monotonic() + DEADLINE
        while (response := client.get("/v2/")).status_code == 200:
            assert time.monotonic() < deadline, "the drain file was never seen"
            time.sleep(0.05)
        assert_error(response, 503, "UNAVAILABLE")


def test_probes_without_checks(registry_factory: Factory) -> None:
    """No health section: nothing fails, the probes say so (and name nothing)."""
    debug = start(registry_factory, {}, workers=1)
    debug.wait(healthy=True, path="/readyz")
    assert debug.health() == (200, {})
    assert debug.get("/livez") == (200, {})
    for path in ("/debug/health", "/livez", "/readyz"):
        assert httpx.post(f"{debug.url}{path}", timeout=30).status_code == 405
