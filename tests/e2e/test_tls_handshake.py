"""Real TLS handshakes with ``registry serve``: the protocol floor, and HTTP/2 through ALPN.

Each client is a real one (Python's ``ssl`` on OpenSSL, httpx with h2) against
the registry process, served with certificates from our own toolkit. A TLS 1.1
client is first shown to complete a TLS 1.1 handshake with a server that
allows it, so its refusal by the registry is the registry's doing.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.pushing import push_blob
from tools.certs import ServerFiles, ensure_server_certificate

pytestmark = pytest.mark.e2e

# A safety net: a broken handshake fails the test instead of hanging it.
SOCKET_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> ServerFiles:
    """A CA and a server certificate for 127.0.0.1 and localhost, made by the toolkit."""
    folder = tmp_path_factory.mktemp("tls-handshake") / "certs"
    return ensure_server_certificate(folder, ["127.0.0.1", "localhost"])


def tls_config(site: ServerFiles, *, http2: bool = True, **tls: object) -> dict[str, object]:
    """A config serving HTTPS with the toolkit's certificate, plus any other ``http.tls`` keys."""
    http: dict[str, object] = {
        "tls": {"certificate": str(site.server_cert), "key": str(site.server_key), **tls}
    }
    if not http2:
        http["http2"] = {"disabled": True}
    return {"http": http}


def client_context(
    site: ServerFiles,
    *,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
    legacy: bool = False,
) -> ssl.SSLContext:
    """A verifying client context; ``legacy`` lets OpenSSL 3 really offer TLS 1.0 and 1.1."""
    context = ssl.create_default_context(cafile=str(site.ca_cert))
    with warnings.catch_warnings():
        # TLSv1 and TLSv1_1 are deprecated names: offering them is the point here.
        warnings.simplefilter("ignore", DeprecationWarning)
        if legacy:
            context.set_ciphers("DEFAULT@SECLEVEL=0")
        if minimum is not None:
            context.minimum_version = minimum
        if maximum is not None:
            context.maximum_version = maximum
    return context


@dataclass(frozen=True)
class Handshake:
    version: str
    status_line: str


def handshake(context: ssl.SSLContext, port: int, host: str = "127.0.0.1") -> Handshake:
    """Connect, shake hands, and send one HTTP/1.1 request over the result."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        version = tls.version() or ""
        tls.sendall(
            f"GET /v2/ HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n" not in answer:
            chunk = tls.recv(4096)
            if not chunk:
                break
            answer += chunk
    return Handshake(version, answer.split(b"\r\n", 1)[0].decode())


def refused(context: ssl.SSLContext, port: int) -> OSError:
    """The error of a handshake the registry refuses.

    The registry closes the connection without a TLS alert (Python's event
    loops do not send it): the client sees EOF, or a reset.
    """
    with (
        socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw,
        pytest.raises((ssl.SSLError, ConnectionResetError)) as failed,
    ):
        context.wrap_socket(raw, server_hostname="127.0.0.1")
    assert not isinstance(failed.value, ssl.SSLCertVerificationError), failed.value
    return failed.value


@dataclass
class LegacyServer:
    """A one-connection TLS server that still allows TLS 1.0 and 1.1: the client's control."""

    site: ServerFiles
    port: int = 0
    version: str | None = None

    def __enter__(self) -> LegacyServer:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.site.server_cert, self.site.server_key)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
        context.set_ciphers("DEFAULT@SECLEVEL=0")
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(SOCKET_TIMEOUT)
        self.port = self._listener.getsockname()[1]

        def serve() -> None:
            connection, _ = self._listener.accept()
            connection.settimeout(SOCKET_TIMEOUT)
            with context.wrap_socket(connection, server_side=True) as tls:
                self.version = tls.version()
                tls.recv(4096)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(SOCKET_TIMEOUT)
        self._listener.close()


def test_a_tls_1_1_client_is_refused_and_tls_1_2_is_served(registry_factory, site) -> None:
    tls11 = client_context(
        site, minimum=ssl.TLSVersion.TLSv1, maximum=ssl.TLSVersion.TLSv1_1, legacy=True
    )
    with LegacyServer(site) as control:
        assert handshake(tls11, control.port).version == "TLSv1.1"
    assert control.version == "TLSv1.1", "the client really offers TLS 1.1"

    registry = registry_factory(tls_config(site))
    assert registry.url.startswith("https://")
    refused(tls11, registry.port)

    served = handshake(client_context(site, maximum=ssl.TLSVersion.TLSv1_2), registry.port)
    assert served.version == "TLSv1.2"
    assert served.status_line.startswith("HTTP/1.1 200")
    newest = handshake(client_context(site), registry.port)
    assert newest.version == "TLSv1.3"
    assert newest.status_line.startswith("HTTP/1.1 200")


def test_minimumtls_tls1_3_refuses_a_tls_1_2_client(registry_factory, site) -> None:
    registry = registry_factory(tls_config(site, minimumtls="tls1.3"))
    refused(client_context(site, maximum=ssl.TLSVersion.TLSv1_2), registry.port)

    served = handshake(client_context(site, minimum=ssl.TLSVersion.TLSv1_3), registry.port)
    assert served.version == "TLSv1.3"
    assert served.status_line.startswith("HTTP/1.1 200")


def test_ciphersuites_limit_what_tls_1_2_clients_may_use(registry_factory, site) -> None:
    tls12 = client_context(site, maximum=ssl.TLSVersion.TLSv1_2)
    tls12.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    by_default = registry_factory(tls_config(site))
    assert handshake(tls12, by_default.port).status_line.startswith("HTTP/1.1 200")

    registry = registry_factory(tls_config(site, ciphersuites=["ECDHE-ECDSA-AES256-GCM-SHA384"]))
    refused(tls12, registry.port)

    allowed = client_context(site, maximum=ssl.TLSVersion.TLSv1_2)
    allowed.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384")
    assert handshake(allowed, registry.port).status_line.startswith("HTTP/1.1 200")


@pytest.fixture
def h2_client(site: ServerFiles) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(site.ca_cert))
    with httpx.Client(http2=True, verify=context, timeout=120) as client:
        yield client


def test_http2_through_alpn_pushes_and_pulls_a_blob(registry_factory, site, h2_client) -> None:
    registry = registry_factory(tls_config(site))
    # By name: the certificate names localhost, and the client checks it.
    h2_client.base_url = httpx.URL(f"https://localhost:{registry.port}")
    base = h2_client.get("/v2/")
    assert base.status_code == 200
    assert base.http_version == "HTTP/2"

    # A body larger than HTTP/2's flow-control windows, both ways.
    data = os.urandom(5 * 1024 * 1024 + 17)
    digest = push_blob(h2_client, "tls/h2", data)
    pulled = h2_client.get(f"/v2/tls/h2/blobs/{digest}")
    assert pulled.status_code == 200
    assert pulled.http_version == "HTTP/2"
    assert hashlib.sha256(pulled.content).hexdigest() == digest.removeprefix("sha256:")
    assert "ERROR" not in registry.log(), registry.log()


def test_http2_disabled_answers_http_1_1(registry_factory, site, h2_client) -> None:
    registry = registry_factory(tls_config(site, http2=False))
    answer = h2_client.get(f"https://127.0.0.1:{registry.port}/v2/")
    assert answer.status_code == 200
    assert answer.http_version == "HTTP/1.1"


def test_the_certificate_is_checked_by_name(site: ServerFiles, registry_factory) -> None:
    registry = registry_factory(tls_config(site))
    context = ssl.create_default_context(cafile=str(site.ca_cert))
    assert handshake(context, registry.port, host="localhost").status_line.startswith(
        "HTTP/1.1 200"
    )
    with pytest.raises(ssl.SSLCertVerificationError) as wrong:
        handshake(context, registry.port, host="registry.invalid")
    assert "registry.invalid" in str(wrong.value)
    other = Path(site.ca_cert).parent.parent / "other"
    stranger = ensure_server_certificate(other, ["127.0.0.1"], include_default_hosts=False)
    with pytest.raises(ssl.SSLCertVerificationError) as unknown:
        handshake(ssl.create_default_context(cafile=str(stranger.ca_cert)), registry.port)
    assert "unable to get local issuer certificate" in str(unknown.value), unknown.value
