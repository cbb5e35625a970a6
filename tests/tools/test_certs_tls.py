"""Real TLS handshakes with the toolkit's certificates: Python's ssl on both ends, in-process."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509

from tools.certs import ClientFiles, KeyType, ServerFiles, ensure_client_certificate
from tools.certs import ensure_server_certificate as ensure_server
from tools.certs_x509 import common_name

# A safety net so that a broken handshake fails the test instead of hanging it.
SOCKET_TIMEOUT = 30.0
GREETING = b"hello over tls\n"


@dataclass
class OneShotServer:
    """Accepts one TLS connection, sends a greeting, and records what happened."""

    context: ssl.SSLContext
    family: socket.AddressFamily = socket.AF_INET
    host: str = "127.0.0.1"
    port: int = 0
    peer_cn: str | None = None
    error: BaseException | None = None
    _listener: socket.socket | None = None
    _thread: threading.Thread | None = None
    _done: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> OneShotServer:
        listener = socket.create_server((self.host, 0), family=self.family)
        listener.settimeout(SOCKET_TIMEOUT)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
            conn.settimeout(SOCKET_TIMEOUT)
            with self.context.wrap_socket(conn, server_side=True) as tls:
                peer = tls.getpeercert(binary_form=True)
                if peer:
                    self.peer_cn = common_name(x509.load_der_x509_certificate(peer))
                tls.sendall(GREETING)
        except (OSError, ssl.SSLError) as error:
            self.error = error
        finally:
            self._done.set()

    def __exit__(self, *exc: object) -> None:
        assert self._thread is not None and self._listener is not None
        self._thread.join()
        self._listener.close()


def server_context(files: ServerFiles, *, client_ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.server_cert, files.server_key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


def client_context(ca: Path, client: ClientFiles | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(client.client_cert, client.client_key)
    return context


def connect(server: OneShotServer, context: ssl.SSLContext, server_hostname: str) -> bytes:
    with (
        socket.create_connection((server.host, server.port), timeout=SOCKET_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        data = b""
        while not data.endswith(b"\n"):
            chunk = tls.recv(1024)
            if not chunk:
                break
            data += chunk
        return data


@pytest.fixture
def files(tmp_path: Path) -> ServerFiles:
    return ensure_server(
        tmp_path, ["registry.example.com", "127.0.0.1", "::1"], include_default_hosts=False
    )


@pytest.mark.parametrize("name", ["registry.example.com", "127.0.0.1"])
def test_handshake_succeeds_for_a_name_in_the_certificate(files: ServerFiles, name: str) -> None:
    with OneShotServer(server_context(files)) as server:
        assert connect(server, client_context(files.ca_cert), name) == GREETING
    assert server.error is None


@pytest.mark.parametrize("name", ["other.example.com", "127.0.0.2"])
def test_handshake_fails_for_a_name_not_in_the_certificate(files: ServerFiles, name: str) -> None:
    with (
        OneShotServer(server_context(files)) as server,
        pytest.raises(ssl.SSLCertVerificationError) as caught,
    ):
        connect(server, client_context(files.ca_cert), name)
    assert "match" in caught.value.verify_message or "mismatch" in caught.value.verify_message
    assert server.error is not None


def test_handshake_fails_with_another_ca(files: ServerFiles, tmp_path: Path) -> None:
    other = ensure_server(tmp_path / "other", ["localhost"], include_default_hosts=False)
    with (
        OneShotServer(server_context(files)) as server,
        pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"),
    ):
        connect(server, client_context(other.ca_cert), "registry.example.com")


def test_handshake_with_rsa_keys(tmp_path: Path) -> None:
    files = ensure_server(
        tmp_path,
        ["localhost"],
        include_default_hosts=False,
        key_type=KeyType.RSA_2048,
        ca_key_type=KeyType.RSA_3072,
    )
    context = server_context(files)
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # RSA signatures in the TLS 1.2 handshake
    with OneShotServer(context) as server:
        assert connect(server, client_context(files.ca_cert), "localhost") == GREETING


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_handshake_over_ipv6(files: ServerFiles) -> None:
    with OneShotServer(server_context(files), family=socket.AF_INET6, host="::1") as server:
        assert connect(server, client_context(files.ca_cert), "::1") == GREETING


@pytest.fixture
def alice(files: ServerFiles, tmp_path: Path) -> ClientFiles:
    return ensure_client_certificate(tmp_path, "alice")


def test_mutual_tls_with_a_client_certificate(files: ServerFiles, alice: ClientFiles) -> None:
    context = server_context(files, client_ca=files.ca_cert)
    with OneShotServer(context) as server:
        got = connect(server, client_context(files.ca_cert, alice), "registry.example.com")
    assert got == GREETING
    assert server.error is None
    assert server.peer_cn == "alice"


def test_mutual_tls_refuses_a_client_without_certificate(files: ServerFiles) -> None:
    context = server_context(files, client_ca=files.ca_cert)
    with OneShotServer(context) as server:
        try:
            got = connect(server, client_context(files.ca_cert), "registry.example.com")
        except (ssl.SSLError, OSError):
            got = b""
    assert got == b""
    assert isinstance(server.error, ssl.SSLError)
    assert "certificate" in str(server.error).lower()


def test_mutual_tls_refuses_a_server_certificate_as_client_certificate(
    files: ServerFiles,
) -> None:
    # server.crt is for serverAuth only: OpenSSL will not accept it from a client.
    context = server_context(files, client_ca=files.ca_cert)
    impostor = ssl.create_default_context(cafile=str(files.ca_cert))
    impostor.load_cert_chain(files.server_cert, files.server_key)
    with OneShotServer(context) as server:
        try:
            got = connect(server, impostor, "registry.example.com")
        except (ssl.SSLError, OSError):
            got = b""
    assert got == b""
    assert isinstance(server.error, ssl.SSLError)
    assert "certificate purpose" in str(server.error)


def test_mutual_tls_refuses_a_client_of_another_ca(files: ServerFiles, tmp_path: Path) -> None:
    stranger = ensure_client_certificate(tmp_path / "elsewhere", "mallory")
    context = server_context(files, client_ca=files.ca_cert)
    with OneShotServer(context) as server:
        try:
            got = connect(server, client_context(files.ca_cert, stranger), "registry.example.com")
        except (ssl.SSLError, OSError):
            got = b""
    assert got == b""
    assert isinstance(server.error, ssl.SSLError)


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    assert set(threading.enumerate()) <= before
