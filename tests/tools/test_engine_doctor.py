"""``registry engine doctor`` against small local servers: plain HTTP, TLS, broken TLS."""

from __future__ import annotations

import argparse
import datetime
import http.server
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.services.ports import free_port
from tools import engine, engine_doctor
from tools.engine_host import Registry

NOW = datetime.datetime.now(datetime.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(name: str = "engine test CA") -> tuple[bytes, bytes]:
    """A self-signed CA: (certificate PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def make_leaf(
    ca_pem: bytes,
    ca_key_pem: bytes,
    names: Sequence[str],
    *,
    expired: bool = False,
) -> tuple[bytes, bytes]:
    """A leaf certificate signed by the CA for ``names`` (DNS names or IP addresses)."""
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    start, end = (
        (NOW - datetime.timedelta(days=10), NOW - datetime.timedelta(days=1))
        if expired
        else (NOW - datetime.timedelta(days=1), NOW + datetime.timedelta(days=30))
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM), _pem_key(key)


class RegistryLike(http.server.BaseHTTPRequestHandler):
    """Answers /v2/ as a registry does (or, with status 404, as something else)."""

    status = 200
    api_header = True

    def do_GET(self) -> None:
        body = b"{}"
        self.send_response(self.status if self.path == "/v2/" else 404)
        if self.api_header:
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(
    tmp_path: Path, cert: tuple[bytes, bytes] | None, handler: type = RegistryLike
) -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if cert is not None:
        (tmp_path / "server.crt").write_bytes(cert[0])
        (tmp_path / "server.key").write_bytes(cert[1])
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def ca() -> tuple[bytes, bytes]:
    return make_ca()


def doctor(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, address: str, *extra: str
) -> tuple[int, str]:
    code = engine.main(
        [
            "doctor",
            address,
            "--root",
            str(tmp_path / "root"),
            "--docker",
            "/nonexistent/docker",
            "--timeout",
            "5",
            *extra,
        ]
    )
    return code, capsys.readouterr().out


def test_nothing_listening(capsys, tmp_path):
    port = free_port()  # Nothing listens there, and no other test process picks it.
    code, out = doctor(capsys, tmp_path, f"127.0.0.1:{port}")
    assert code == 1
    assert f"FAIL cannot connect to 127.0.0.1:{port}" in out
    assert "1 problem found" in out


def test_unknown_host(capsys, tmp_path):
    code, out = doctor(capsys, tmp_path, "no-such-host.invalid:5000")
    assert code == 1
    assert "cannot resolve no-such-host.invalid" in out


def test_plain_http_on_loopback_is_fine(capsys, tmp_path):
    for port in serve(tmp_path, None):
        code, out = doctor(capsys, tmp_path, f"127.0.0.1:{port}")
    assert code == 0, out
    assert "speaks plain HTTP" in out
    assert "answers 200 with Docker-Distribution-API-Version: registry/2.0" in out
    assert "Docker treats 127.0.0.1" in out
    assert "0 problems found" in out


def test_not_a_registry(capsys, tmp_path):
    class Other(RegistryLike):
        status = 404
        api_header = False

    for port in serve(tmp_path, None, Other):
        code, out = doctor(capsys, tmp_path, f"127.0.0.1:{port}")
    assert code == 1
    assert "answers 404: a registry answers 200 or 401" in out


def test_missing_api_version_header(capsys, tmp_path):
    class Proxy(RegistryLike):
        status = 401
        api_header = False

    for port in serve(tmp_path, None, Proxy):
        code, out = doctor(capsys, tmp_path, f"127.0.0.1:{port}")
    assert code == 1
    assert "without Docker-Distribution-API-Version" in out


def test_unknown_authority_then_trusted_through_certs_d(capsys, tmp_path, ca):
    leaf = make_leaf(*ca, ["localhost", "127.0.0.1"])
    (tmp_path / "ca.crt").write_bytes(ca[0])
    for port in serve(tmp_path, leaf):
        registry = f"127.0.0.1:{port}"
        code, out = doctor(capsys, tmp_path, registry, "--ca", str(tmp_path / "ca.crt"))
        assert code == 1
        assert 'Docker says: "x509: certificate signed by unknown authority"' in out
        assert f"fix: registry engine trust {registry} --ca {tmp_path / 'ca.crt'}" in out
        assert "verifies it, but the engine does not know that CA yet" in out

        certs = tmp_path / "root/etc/docker/certs.d" / registry
        certs.mkdir(parents=True)
        (certs / "ca.crt").write_bytes(ca[0])
        code, out = doctor(capsys, tmp_path, registry)
        assert code == 0, out
        assert f"the certificate verifies with {certs / 'ca.crt'}" in out
        assert "SANs ['localhost', '127.0.0.1']" in out


def test_wrong_name_in_the_certificate(capsys, tmp_path, ca):
    leaf = make_leaf(*ca, ["other.example"])
    for port in serve(tmp_path, leaf):
        registry = f"127.0.0.1:{port}"
        certs = tmp_path / "root/etc/docker/certs.d" / registry
        certs.mkdir(parents=True)
        (certs / "ca.crt").write_bytes(ca[0])
        code, out = doctor(capsys, tmp_path, registry)
    assert code == 1
    assert "x509: certificate is valid for other.example, not 127.0.0.1" in out
    assert out.count("FAIL") == 1


def test_expired_certificate(capsys, tmp_path, ca):
    leaf = make_leaf(*ca, ["127.0.0.1"], expired=True)
    for port in serve(tmp_path, leaf):
        registry = f"127.0.0.1:{port}"
        certs = tmp_path / "root/etc/docker/certs.d" / registry
        certs.mkdir(parents=True)
        (certs / "ca.crt").write_bytes(ca[0])
        code, out = doctor(capsys, tmp_path, registry)
    assert code == 1
    assert "x509: certificate has expired or is not yet valid" in out


def test_unverified_tls_accepted_by_an_insecure_entry(capsys, tmp_path, ca):
    leaf = make_leaf(*ca, ["127.0.0.1"])
    for port in serve(tmp_path, leaf):
        registry = f"127.0.0.1:{port}"
        daemon_json = tmp_path / "root/etc/docker/daemon.json"
        daemon_json.parent.mkdir(parents=True)
        daemon_json.write_text(json.dumps({"insecure-registries": [registry]}))
        code, out = doctor(capsys, tmp_path, registry)
    assert code == 0, out
    assert "Docker accepts this certificate unverified" in out


def plain_http_args(tmp_path: Path) -> tuple[argparse.Namespace, Registry, engine_doctor.Probe]:
    args = argparse.Namespace(docker="/nonexistent/docker", docker_host=None)
    probe = engine_doctor.Probe(addresses=["10.0.0.5"])
    return args, Registry("10.0.0.5", 5000), probe


def test_plain_http_elsewhere_needs_an_insecure_entry(tmp_path):
    from tools.engine_host import system_paths

    args, registry, probe = plain_http_args(tmp_path)
    paths = system_paths(tmp_path)
    findings = engine_doctor.plain_http_findings(args, registry, paths, probe)
    problem = findings[-1]
    assert not problem.ok
    assert problem.docker_says == "http: server gave HTTP response to HTTPS client"
    assert problem.fix == "registry engine insecure add 10.0.0.5:5000 --reload"

    (tmp_path / "etc/docker").mkdir(parents=True)
    (tmp_path / "etc/docker/daemon.json").write_text('{"insecure-registries": ["10.0.0.0/8"]}')
    findings = engine_doctor.plain_http_findings(args, registry, paths, probe)
    assert all(finding.ok for finding in findings)
    assert "declares 10.0.0.0/8 insecure, which holds 10.0.0.5" in findings[0].seen


def test_broken_daemon_json_is_a_problem(tmp_path):
    from tools.engine_host import system_paths

    args, registry, probe = plain_http_args(tmp_path)
    (tmp_path / "etc/docker").mkdir(parents=True)
    (tmp_path / "etc/docker/daemon.json").write_text("{,}")
    findings = engine_doctor.plain_http_findings(args, registry, system_paths(tmp_path), probe)
    assert not findings[0].ok
    assert "daemon.json:1:2: invalid JSON" in findings[0].seen


def test_usage_error(capsys):
    assert engine.main(["doctor", "http://x:5000"]) == 2
    assert "without a scheme" in capsys.readouterr().err


def test_mutual_tls_asks_for_a_client_certificate(capsys, tmp_path, ca, monkeypatch):
    leaf = make_leaf(*ca, ["127.0.0.1"])
    (tmp_path / "ca.crt").write_bytes(ca[0])
    real_wrap = ssl.SSLContext.wrap_socket

    def require_client_certificates(self, sock, *args, **kwargs):
        if kwargs.get("server_side"):
            self.verify_mode = ssl.CERT_REQUIRED
            self.load_verify_locations(tmp_path / "ca.crt")
        return real_wrap(self, sock, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "wrap_socket", require_client_certificates)
    for port in serve(tmp_path, leaf):
        registry = f"127.0.0.1:{port}"
        certs = tmp_path / "root/etc/docker/certs.d" / registry
        certs.mkdir(parents=True)
        (certs / "ca.crt").write_bytes(ca[0])
        code, out = doctor(capsys, tmp_path, registry)
    assert code == 1
    assert "(mutual TLS)" in out
    assert f"fix: registry engine trust {registry} --ca certs/ca.crt --client-cert" in out
