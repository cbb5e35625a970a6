"""SIGHUP: the configuration is read again and applied, without dropping a request.

Each test starts its own registry (two workers) from a config file, edits the
file, sends SIGHUP to the supervisor and checks what changed, what did not, and
that requests in flight and requests sent meanwhile all got their answers.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.access import USERS, htpasswd_config
from tests.conftest import RegistryProcess
from tests.pushing import digest_of, push_blob, start_upload, with_query

from .support import assert_error

Factory = Callable[..., RegistryProcess]


def _rewrite(registry: RegistryProcess, change: Callable[[dict[str, object]], None]) -> None:
    path = registry.workdir / "config.yml"
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config))


def _reload(registry: RegistryProcess, expect: str) -> None:
    """SIGHUP, then wait until the log says ``expect`` (a reload takes a worker's start)."""
    assert registry.process is not None
    before = registry.log().count(expect)
    registry.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 120  # Generous: workers start slowly on a busy machine.
    while time.monotonic() < deadline:
        if registry.log().count(expect) > before:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {expect!r} in the log:\n{registry.log()[-3000:]}")


RELOADED = "configuration reloaded"
REFUSED = "reload refused"


@pytest.fixture
def registry(registry_factory: Factory) -> RegistryProcess:
    return registry_factory({"storage": {"delete": {"enabled": True}}}, workers=2)


def test_read_only_mode_and_log_level_follow_the_file(registry: RegistryProcess) -> None:
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        push_blob(client, "reload/app", b"before")

        def read_only(config: dict[str, object]) -> None:
            config["storage"]["maintenance"] = {"readonly": {"enabled": True}}  # type: ignore[index]
            config["log"] = {"level": "warn"}

        _rewrite(registry, read_only)
        assert registry.process is not None
        registry.process.send_signal(signal.SIGHUP)
        # At level warn the reload is not logged: its effect is what shows it.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            refused = client.post("/v2/reload/app/blobs/uploads/")
            if refused.status_code == 405:
                break
            time.sleep(0.05)
        assert_error(refused, 405, "UNSUPPORTED")
        time.sleep(0.5)  # The old workers' last access-log lines.
        quiet = len(registry.log())
        assert client.get("/v2/").status_code == 200
        time.sleep(0.5)  # Time for an access-log line to appear, were it written.
        assert '"GET /v2/ HTTP' not in registry.log()[quiet:]  # warn: no access log

        def writable(config: dict[str, object]) -> None:
            del config["storage"]["maintenance"]  # type: ignore[attr-defined]
            config["log"] = {"level": "info"}

        _rewrite(registry, writable)
        _reload(registry, RELOADED)
    # New connections are served by the new workers; a connection kept alive across
    # the reload is answered once more by its old worker, which then closes it.
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        push_blob(client, "reload/app", b"after")


def test_users_and_rules_change_without_a_restart(
    registry_factory: Factory, tmp_path: Path
) -> None:
    rules: dict[str, object] = {
        "admins": ["admin"],
        "rules": [{"repositories": ["team/**"], "users": ["alice"], "actions": ["pull"]}],
    }
    registry = registry_factory(htpasswd_config(tmp_path, rules), workers=2)
    alice = ("alice", USERS["alice"])
    with httpx.Client(base_url=registry.url, timeout=30, auth=alice) as client:
        assert_error(client.post("/v2/team/app/blobs/uploads/"), 403, "DENIED")

        def allow_push(config: dict[str, object]) -> None:
            config["access"]["rules"][0]["actions"] = ["pull", "push"]  # type: ignore[index]

        _rewrite(registry, allow_push)
        _reload(registry, RELOADED)
    with httpx.Client(base_url=registry.url, timeout=30, auth=alice) as client:
        assert client.post("/v2/team/app/blobs/uploads/").status_code == 202


def test_a_bad_configuration_is_refused_and_the_old_one_stays(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    def typo(config: dict[str, object]) -> None:
        config["storage"]["delete"] = {"enabled": "sometimes"}  # type: ignore[index]

    _rewrite(registry, typo)
    _reload(registry, REFUSED)
    assert "storage.delete.enabled: expected true or false" in registry.log()

    from tools.certs import ensure_server_certificate

    files = ensure_server_certificate(tmp_path / "certs", ("localhost",))

    def tls(config: dict[str, object]) -> None:
        config["storage"]["delete"] = {"enabled": True}  # type: ignore[index]
        config["http"] = {
            "tls": {"certificate": str(files.server_cert), "key": str(files.server_key)}
        }

    _rewrite(registry, tls)
    _reload(registry, "http.tls: changing it needs a restart")
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        digest = push_blob(client, "reload/kept", b"still here")
        assert client.delete(f"/v2/reload/kept/blobs/{digest}").status_code == 202


def test_no_request_is_dropped_by_a_reload(registry: RegistryProcess) -> None:
    """Requests in flight finish on the old workers; requests sent meanwhile are all
    answered; an upload in progress completes.

    A kept-alive connection left idle is closed by a stopping worker after a second
    of quiet, as at any keep-alive timeout: a client that sends on it just then
    sees it closed before any answer and sends again, as RFC 9112 (9.3.1) lets
    it for a GET and Go's HTTP client (docker, containerd, skopeo) does. httpx
    does not, so this client does; every request is answered.
    """
    failures: list[str] = []
    answered = 0
    resent = 0
    stop = threading.Event()

    def keep_asking() -> None:
        nonlocal answered, resent
        with httpx.Client(base_url=registry.url, timeout=30) as client:
            while not stop.is_set():
                for attempt in range(2):
                    try:
                        response = client.get("/v2/")
                    except (httpx.RemoteProtocolError, httpx.ReadError):
                        if attempt == 0:
                            resent += 1  # Closed before any answer: send again.
                            continue
                        raise
                    if response.status_code != 200:
                        failures.append(f"{response.status_code}")
                    answered += 1
                    break

    askers = [threading.Thread(target=keep_asking) for _ in range(4)]
    for thread in askers:
        thread.start()
    data = os.urandom(8 * 1024 * 1024)
    with httpx.Client(base_url=registry.url, timeout=60) as client:
        location = start_upload(client, "reload/slow")

        def slow_body() -> Iterator[bytes]:
            for offset in range(0, len(data), 256 * 1024):
                if offset == 2 * 1024 * 1024:
                    _reload(registry, RELOADED)  # Mid-upload.
                time.sleep(0.02)
                yield data[offset : offset + 256 * 1024]

        done = client.put(with_query(location, digest=digest_of(data)), content=slow_body())
        assert done.status_code == 201, done.text
        assert client.get(f"/v2/reload/slow/blobs/{digest_of(data)}").content == data
    for _ in range(2):
        _reload(registry, RELOADED)
    stop.set()
    for thread in askers:
        thread.join()
    assert answered > 100
    assert not failures, failures[:5]
    assert resent <= 4 * 3  # At most once per connection and reload.


def test_a_renewed_certificate_is_served_after_a_reload(
    registry_factory: Factory, tmp_path: Path
) -> None:
    from tools.certs import ensure_server_certificate

    certs = tmp_path / "certs"
    first = ensure_server_certificate(certs, ("localhost",))
    config = {
        "http": {"tls": {"certificate": str(first.server_cert), "key": str(first.server_key)}}
    }
    registry = registry_factory(config, workers=2)
    served = _serial(registry.port)
    renewed = ensure_server_certificate(certs, ("localhost", "renewed.example"), reissue=True)
    assert renewed.server_cert == first.server_cert  # Same files, new contents.
    _reload(registry, RELOADED)
    assert _serial(registry.port) != served


def _serial(port: int) -> int:
    """The serial number of the certificate a new TLS connection is served."""
    from cryptography import x509

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number
