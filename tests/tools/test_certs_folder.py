"""The certificate folder: what ensure_* make, keep, reissue and replace; how files are written."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tools.certs import (
    CA,
    Action,
    CAFiles,
    CertificateError,
    ClientNameError,
    HostNameError,
    KeyType,
    PassphraseError,
    ServerFiles,
    check_key_pair,
    client_paths,
    ensure_ca,
    ensure_client_certificate,
    ensure_server_certificate,
    read_passphrase,
    trust_instructions,
    write_bundle,
)
from tools.certs_files import write_file
from tools.certs_x509 import as_leaf_key, load_certificates, load_private_key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def san_hosts(path: Path) -> list[str]:
    cert = load_certificates(path)[0]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in sans]


def server(directory: Path, *hosts: str, **kwargs: Any) -> ServerFiles:
    kwargs.setdefault("include_default_hosts", False)
    return ensure_server_certificate(directory, hosts, **kwargs)


# --- the server certificate --------------------------------------------------------


def test_first_call_makes_ca_and_server_certificate(tmp_path: Path) -> None:
    d = tmp_path / "certs"
    files = server(d, "registry.example.com", "10.0.0.5")
    assert files.ca_cert == d / "ca.crt"
    assert files.server_cert == d / "server.crt"
    assert files.server_key == d / "server.key"
    assert files.action is Action.CREATED and files.ca_created
    assert files.names == ("registry.example.com", "10.0.0.5")
    assert sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) == [
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
    ]
    assert mode(d / "ca.key") == 0o600 and mode(d / "server.key") == 0o600
    assert mode(d / "ca.crt") == 0o644 and mode(d / "server.crt") == 0o644
    assert san_hosts(files.server_cert) == ["registry.example.com", "10.0.0.5"]
    check_key_pair(files.server_cert, files.server_key)
    ca = load_certificates(files.ca_cert)[0]
    load_certificates(files.server_cert)[0].verify_directly_issued_by(ca)


def test_default_hosts_are_always_included(tmp_path: Path) -> None:
    files = ensure_server_certificate(tmp_path, ["registry.example.com"])
    hosts = san_hosts(files.server_cert)
    assert hosts[0] == "registry.example.com"
    for expected in ("localhost", "127.0.0.1", "::1"):
        assert expected in hosts


def test_listen_everywhere_addresses_are_left_out(tmp_path: Path) -> None:
    files = server(tmp_path, "0.0.0.0", "::", "localhost")
    assert files.names == ("localhost",)


def test_no_host_at_all_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HostNameError, match="at least one host"):
        server(tmp_path)
    assert not (tmp_path / "ca.key").exists()


def test_bad_host_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(HostNameError):
        server(tmp_path / "certs", "not a host")
    assert not (tmp_path / "certs").exists()


def test_second_call_changes_nothing(tmp_path: Path) -> None:
    first = server(tmp_path, "a.example")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    again = server(tmp_path, "a.example")
    assert again.action is Action.UNCHANGED and not again.ca_created
    assert again.reasons == ()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert again.not_after == first.not_after


def test_a_subset_of_names_changes_nothing(tmp_path: Path) -> None:
    server(tmp_path, "a.example", "b.example")
    assert server(tmp_path, "B.example").action is Action.UNCHANGED


def test_new_host_reissues_for_the_same_key_and_keeps_old_names(tmp_path: Path) -> None:
    server(tmp_path, "a.example")
    key_before = (tmp_path / "server.key").read_bytes()
    files = server(tmp_path, "b.example")
    assert files.action is Action.REISSUED
    assert files.reasons == ("server.crt does not name b.example",)
    assert (tmp_path / "server.key").read_bytes() == key_before
    assert san_hosts(files.server_cert) == ["b.example", "a.example"]
    check_key_pair(files.server_cert, files.server_key)


def test_reissue_drops_earlier_names_it_would_not_write(tmp_path: Path) -> None:
    server(tmp_path, "a.example")
    ca = CA.load(tmp_path / "ca.crt", tmp_path / "ca.key")
    key = load_private_key(tmp_path / "server.key")
    now = datetime.now(UTC)
    odd = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=100))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("a.example"), x509.DNSName("bad name")]),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    (tmp_path / "server.crt").write_bytes(odd.public_bytes(serialization.Encoding.PEM))
    files = server(tmp_path, "b.example")
    assert files.action is Action.REISSUED
    assert san_hosts(files.server_cert) == ["b.example", "a.example"]


def test_reissue_names_exactly_this_run(tmp_path: Path) -> None:
    server(tmp_path, "a.example", "b.example")
    key_before = (tmp_path / "server.key").read_bytes()
    files = server(tmp_path, "b.example", reissue=True)
    assert files.action is Action.REISSUED
    assert san_hosts(files.server_cert) == ["b.example"]
    assert (tmp_path / "server.key").read_bytes() == key_before


def test_force_replaces_the_key(tmp_path: Path) -> None:
    server(tmp_path, "a.example")
    key_before = (tmp_path / "server.key").read_bytes()
    ca_before = (tmp_path / "ca.key").read_bytes()
    files = server(tmp_path, "a.example", force=True)
    assert files.action is Action.REPLACED
    assert (tmp_path / "server.key").read_bytes() != key_before
    assert (tmp_path / "ca.key").read_bytes() == ca_before
    assert mode(tmp_path / "server.key") == 0o600
    check_key_pair(files.server_cert, files.server_key)


def test_other_key_type_needs_force(tmp_path: Path) -> None:
    server(tmp_path, "a.example")
    with pytest.raises(CertificateError, match=r"ECDSA P-256 key, not rsa3072.*--force"):
        server(tmp_path, "a.example", key_type=KeyType.RSA_3072)
    files = server(tmp_path, "a.example", key_type=KeyType.RSA_3072, force=True)
    key = load_private_key(files.server_key)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072
    # Asking again for the type it has is no change.
    assert server(tmp_path, "a.example", key_type=KeyType.RSA_3072).action is Action.UNCHANGED


def test_rsa_ca_and_server(tmp_path: Path) -> None:
    files = server(tmp_path, "a.example", ca_key_type=KeyType.RSA_4096, key_type=KeyType.RSA_2048)
    ca_key = load_private_key(tmp_path / "ca.key")
    assert isinstance(ca_key, rsa.RSAPrivateKey) and ca_key.key_size == 4096
    server_key = load_private_key(files.server_key)
    assert isinstance(server_key, rsa.RSAPrivateKey) and server_key.key_size == 2048
    usage = load_certificates(files.server_cert)[0].extensions.get_extension_for_class(
        x509.KeyUsage
    )
    assert usage.value.key_encipherment


def test_expiring_certificate_is_renewed(tmp_path: Path) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=380)
    server(tmp_path, "a.example", now=long_ago)
    files = server(tmp_path, "a.example")
    assert files.action is Action.REISSUED
    assert files.reasons[0].startswith("server.crt expires on")
    assert files.not_after is not None and files.not_after > datetime.now(UTC) + timedelta(days=300)


def test_expired_certificate_is_renewed(tmp_path: Path) -> None:
    server(tmp_path, "a.example", now=datetime.now(UTC) - timedelta(days=400))
    files = server(tmp_path, "a.example")
    assert files.action is Action.REISSUED
    assert files.reasons[0].startswith("server.crt expired on")
    check_key_pair(files.server_cert, files.server_key)


def test_short_lived_certificate_is_not_renewed_every_run(tmp_path: Path) -> None:
    server(tmp_path, "a.example", days=7)
    assert server(tmp_path, "a.example", days=7).action is Action.UNCHANGED


def test_certificate_of_another_ca_is_reissued(tmp_path: Path) -> None:
    server(tmp_path, "a.example")
    other = CA.create("other")
    key = as_leaf_key(load_private_key(tmp_path / "server.key"), tmp_path / "server.key")
    leaf = other.issue_cert("a.example", key=key)
    (tmp_path / "server.crt").write_bytes(leaf.cert_chain_pem())
    files = server(tmp_path, "a.example")
    assert files.action is Action.REISSUED
    assert files.reasons == ("server.crt is not signed by the CA",)


def test_missing_or_damaged_certificate_is_reissued_for_the_key(tmp_path: Path) -> None:
    server(tmp_path, "a.example")
    key_before = (tmp_path / "server.key").read_bytes()
    (tmp_path / "server.crt").unlink()
    files = server(tmp_path, "a.example")
    assert files.action is Action.REISSUED and files.reasons == ("server.crt is missing",)
    (tmp_path / "server.crt").write_text("garbage")
    assert server(tmp_path, "a.example").action is Action.REISSUED
    assert (tmp_path / "server.key").read_bytes() == key_before


def test_damaged_key_is_never_overwritten_without_force(tmp_path: Path) -> None:
    server(tmp_path, "a.example")
    (tmp_path / "server.key").write_text("garbage")
    with pytest.raises(CertificateError, match=r"server\.key: not a PEM private key.*--force"):
        server(tmp_path, "a.example")
    assert (tmp_path / "server.key").read_text() == "garbage"
    assert server(tmp_path, "a.example", force=True).action is Action.REPLACED


def test_deleted_ca_gives_a_new_ca_and_a_reissued_certificate(tmp_path: Path) -> None:
    server(tmp_path, "a.example")
    (tmp_path / "ca.crt").unlink()
    (tmp_path / "ca.key").unlink()
    files = server(tmp_path, "a.example")
    assert files.ca_created and files.action is Action.REISSUED
    assert files.reasons == ("the CA is new",)


def test_concurrent_starts_agree_on_one_ca_and_key(tmp_path: Path) -> None:
    results: list[ServerFiles] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            results.append(server(tmp_path, "a.example"))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(r.action.value for r in results) == ["created"] + ["unchanged"] * 5
    assert sum(r.ca_created for r in results) == 1
    check_key_pair(tmp_path / "server.crt", tmp_path / "server.key")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# --- the CA ------------------------------------------------------------------------


def test_ensure_ca_is_idempotent_and_force_replaces(tmp_path: Path) -> None:
    first = ensure_ca(tmp_path)
    assert first.action is Action.CREATED
    again = ensure_ca(tmp_path, key_type=KeyType.RSA_3072)
    assert again.action is Action.UNCHANGED and again.certificate == first.certificate
    replaced = ensure_ca(tmp_path, force=True, key_type=KeyType.RSA_3072)
    assert replaced.action is Action.REPLACED
    assert replaced.certificate != first.certificate
    key = load_private_key(tmp_path / "ca.key")
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072
    assert mode(tmp_path / "ca.key") == 0o600


def test_ensure_ca_reports_half_a_ca(tmp_path: Path) -> None:
    ensure_ca(tmp_path)
    (tmp_path / "ca.crt").unlink()
    with pytest.raises(CertificateError, match=r"ca\.crt: not found beside .*ca\.key"):
        ensure_ca(tmp_path)
    with pytest.raises(CertificateError, match=r"ca\.crt: not found beside"):
        server(tmp_path, "a.example")
    assert ensure_ca(tmp_path, force=True).action is Action.REPLACED


def test_ensure_ca_refuses_a_key_of_another_ca(tmp_path: Path) -> None:
    ensure_ca(tmp_path)
    (tmp_path / "ca.key").write_bytes(CA.create().private_key_pem())
    with pytest.raises(CertificateError, match="does not match the CA certificate"):
        ensure_ca(tmp_path)


def test_passphrase_protects_the_ca_key(tmp_path: Path) -> None:
    ensure_ca(tmp_path, passphrase=b"correct horse")
    pem = (tmp_path / "ca.key").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(PassphraseError, match=r"ca\.key: the key is encrypted"):
        server(tmp_path, "a.example")
    with pytest.raises(PassphraseError, match=r"ca\.key: wrong passphrase"):
        server(tmp_path, "a.example", passphrase=b"wrong")
    assert not (tmp_path / "server.crt").exists()
    files = server(tmp_path, "a.example", passphrase=b"correct horse")
    assert files.action is Action.CREATED
    # A certificate that still fits needs no CA key, so no passphrase.
    assert server(tmp_path, "a.example").action is Action.UNCHANGED
    # An unchanged encrypted CA is reported as it is.
    assert ensure_ca(tmp_path).action is Action.UNCHANGED


def test_encrypted_ca_key_opens_with_openssl(tmp_path: Path) -> None:
    ensure_ca(tmp_path, passphrase=b"pw")
    done = subprocess.run(
        ["openssl", "pkey", "-in", str(tmp_path / "ca.key"), "-passin", "pass:pw", "-noout"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_server_makes_an_encrypted_ca_when_given_a_passphrase(tmp_path: Path) -> None:
    server(tmp_path, "a.example", passphrase=b"pw")
    assert b"ENCRYPTED" in (tmp_path / "ca.key").read_bytes()
    assert b"ENCRYPTED" not in (tmp_path / "server.key").read_bytes()


def test_read_passphrase(tmp_path: Path) -> None:
    file = tmp_path / "pass"
    file.write_text("first line\nsecond\n")
    assert read_passphrase(file, {"REGISTRY_CA_PASSPHRASE": "env"}) == b"first line"
    assert read_passphrase(None, {"REGISTRY_CA_PASSPHRASE": "env"}) == b"env"
    assert read_passphrase(None, {}) is None
    assert read_passphrase(None, {"REGISTRY_CA_PASSPHRASE": ""}) is None
    file.write_text("\n")
    with pytest.raises(CertificateError, match="passphrase file is empty"):
        read_passphrase(file, {})
    with pytest.raises(CertificateError, match="cannot read passphrase file"):
        read_passphrase(tmp_path / "missing", {})


# --- a CA from elsewhere -------------------------------------------------------------


@pytest.fixture
def company(tmp_path: Path) -> CAFiles:
    ca = CA.create("Company Root")
    folder = tmp_path / "company"
    folder.mkdir()
    (folder / "root.crt").write_bytes(ca.cert_pem())
    (folder / "root.key").write_bytes(ca.private_key_pem(b"company"))
    return CAFiles(cert=folder / "root.crt", key=folder / "root.key")


def test_ca_from_elsewhere_signs_and_its_certificate_is_copied(
    tmp_path: Path, company: CAFiles
) -> None:
    d = tmp_path / "certs"
    files = server(d, "a.example", ca_files=company, passphrase=b"company")
    assert not files.ca_created and files.action is Action.CREATED
    assert (d / "ca.crt").read_bytes() == company.cert.read_bytes()
    assert not (d / "ca.key").exists()
    root = load_certificates(company.cert)[0]
    load_certificates(files.server_cert)[0].verify_directly_issued_by(root)
    # Later starts without the CA key reuse the certificate ...
    assert server(d, "a.example").action is Action.UNCHANGED
    # ... and say what to do when a new one is needed.
    with pytest.raises(CertificateError, match=r"ca\.key: not found.*--ca-cert FILE --ca-key FILE"):
        server(d, "b.example")
    assert server(d, "b.example", ca_files=company, passphrase=b"company").action is Action.REISSUED


def test_ca_from_elsewhere_never_mixes_with_the_folder_ca(tmp_path: Path, company: CAFiles) -> None:
    server(tmp_path / "certs", "a.example")
    with pytest.raises(CertificateError, match="holds another CA"):
        server(tmp_path / "certs", "a.example", ca_files=company, passphrase=b"company")


def test_ca_from_elsewhere_must_be_a_ca(tmp_path: Path) -> None:
    leaf = CA.create().issue_cert("a.example")
    (tmp_path / "leaf.crt").write_bytes(leaf.cert_chain_pem())
    (tmp_path / "leaf.key").write_bytes(leaf.private_key_pem())
    with pytest.raises(CertificateError, match="not a CA certificate"):
        server(
            tmp_path / "certs",
            "a.example",
            ca_files=CAFiles(tmp_path / "leaf.crt", tmp_path / "leaf.key"),
        )
    assert not (tmp_path / "certs" / "ca.crt").exists()


def test_ca_from_elsewhere_is_copied_even_when_nothing_is_issued(
    tmp_path: Path, company: CAFiles
) -> None:
    d = tmp_path / "certs"
    server(d, "a.example", ca_files=company, passphrase=b"company")
    (d / "ca.crt").unlink()
    files = server(d, "a.example", ca_files=company)  # no passphrase: nothing to sign
    assert files.action is Action.UNCHANGED
    assert files.ca_cert.read_bytes() == company.cert.read_bytes()


def test_ca_from_elsewhere_never_pairs_with_a_stray_folder_key(
    tmp_path: Path, company: CAFiles
) -> None:
    d = tmp_path / "certs"
    ensure_ca(d)
    (d / "ca.crt").unlink()
    with pytest.raises(CertificateError, match=r"ca\.key: a CA key without its certificate"):
        server(d, "a.example", ca_files=company, passphrase=b"company")
    assert not (d / "ca.crt").exists()


# --- client certificates -------------------------------------------------------------


def test_client_certificate(tmp_path: Path) -> None:
    files = ensure_client_certificate(tmp_path, "alice")
    assert files.client_cert == tmp_path / "client-alice.crt"
    assert files.client_key == tmp_path / "client-alice.key"
    assert files.action is Action.CREATED and files.ca_created
    assert mode(files.client_key) == 0o600
    cert = load_certificates(files.client_cert)[0]
    assert cert.subject.rfc4514_string() == "CN=alice"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ensure_client_certificate(tmp_path, "alice").action is Action.UNCHANGED
    assert ensure_client_certificate(tmp_path, "alice", force=True).action is Action.REPLACED
    bob = ensure_client_certificate(tmp_path, "bob", key_type=KeyType.RSA_2048)
    assert isinstance(load_private_key(bob.client_key), rsa.RSAPrivateKey)


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden", "x" * 65, "sp ace"])
def test_client_names_are_checked(tmp_path: Path, name: str) -> None:
    with pytest.raises(ClientNameError):
        ensure_client_certificate(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_client_paths() -> None:
    assert client_paths(Path("d"), "ci-runner@build.1") == (
        Path("d/client-ci-runner@build.1.crt"),
        Path("d/client-ci-runner@build.1.key"),
    )


# --- bundles -----------------------------------------------------------------------------


def test_bundle_layout(tmp_path: Path) -> None:
    server(tmp_path, "registry.example.com")
    ensure_client_certificate(tmp_path, "alice")
    bundle = write_bundle(tmp_path, "registry.example.com:5000", client="alice")
    folder = tmp_path / "certs.d" / "registry.example.com:5000"
    assert bundle.folder == folder
    assert sorted(p.name for p in folder.iterdir()) == ["ca.crt", "client.cert", "client.key"]
    assert (folder / "ca.crt").read_bytes() == (tmp_path / "ca.crt").read_bytes()
    assert (folder / "client.cert").read_bytes() == (tmp_path / "client-alice.crt").read_bytes()
    assert (folder / "client.key").read_bytes() == (tmp_path / "client-alice.key").read_bytes()
    assert mode(folder / "client.key") == 0o600
    assert mode(folder / "client.cert") == 0o644 and mode(folder / "ca.crt") == 0o644
    assert bundle.warnings == ()
    check_key_pair(folder / "client.cert", folder / "client.key")


def test_bundle_without_client_has_only_the_ca(tmp_path: Path) -> None:
    server(tmp_path, "::1")
    bundle = write_bundle(tmp_path, "[::1]:5000")
    assert bundle.folder == tmp_path / "certs.d" / "[::1]:5000"
    assert [p.name for p in bundle.folder.iterdir()] == ["ca.crt"]
    assert bundle.client_cert is None and bundle.warnings == ()


def test_bundle_for_a_bare_host_means_port_443(tmp_path: Path) -> None:
    server(tmp_path, "registry.example.com")
    bundle = write_bundle(tmp_path, "registry.example.com")
    assert bundle.folder == tmp_path / "certs.d" / "registry.example.com"
    assert (bundle.folder / "ca.crt").exists() and bundle.warnings == ()


def test_bundle_warns_when_the_server_does_not_name_the_host(tmp_path: Path) -> None:
    server(tmp_path, "a.example")
    bundle = write_bundle(tmp_path, "b.example:5000")
    assert len(bundle.warnings) == 1
    assert "does not name b.example" in bundle.warnings[0]


def test_bundle_never_overwrites_another_key_without_force(tmp_path: Path) -> None:
    server(tmp_path, "a.example")
    ensure_client_certificate(tmp_path, "alice")
    ensure_client_certificate(tmp_path, "bob")
    write_bundle(tmp_path, "a.example:5000", client="alice")
    write_bundle(tmp_path, "a.example:5000", client="alice")  # the same key: fine
    with pytest.raises(CertificateError, match=r"client\.key: holds another key.*--force"):
        write_bundle(tmp_path, "a.example:5000", client="bob")
    bundle = write_bundle(tmp_path, "a.example:5000", client="bob", force=True)
    assert bundle.client_key is not None
    assert bundle.client_key.read_bytes() == (tmp_path / "client-bob.key").read_bytes()


def test_bundle_needs_a_ca_and_a_valid_host_port(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match=r"ca\.crt: certificate not found"):
        write_bundle(tmp_path, "a.example:5000")
    ensure_ca(tmp_path)
    with pytest.raises(HostNameError):
        write_bundle(tmp_path, "::1:5000")
    with pytest.raises(CertificateError, match=r"client-nobody\.crt: certificate not found"):
        write_bundle(tmp_path, "a.example:5000", client="nobody")


# --- trust instructions ------------------------------------------------------------------


def test_trust_instructions_name_every_engine_folder() -> None:
    text = trust_instructions(Path("/srv/certs/ca.crt"), "registry.example.com:5000")
    assert "/etc/docker/certs.d/registry.example.com:5000/ca.crt" in text
    assert "/etc/containers/certs.d/registry.example.com:5000/ca.crt" in text
    assert "/etc/containerd/certs.d/registry.example.com:5000/hosts.toml" in text
    assert 'ca = "/etc/containerd/certs.d/registry.example.com:5000/ca.crt"' in text


@pytest.mark.parametrize("host_port", ["registry.example.com:5000", "[::1]:5000", "10.0.0.1:443"])
def test_trust_instructions_run_as_written(tmp_path: Path, host_port: str) -> None:
    ca = tmp_path / "my certs" / "ca.crt"
    ca.parent.mkdir()
    ca.write_bytes(CA.create().cert_pem())
    root = tmp_path / "root"
    script = trust_instructions(ca, host_port).replace("/etc/", f"{root}/etc/")
    done = subprocess.run(["sh", "-e", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for engine in ("docker", "containers", "containerd"):
        assert (root / "etc" / engine / "certs.d" / host_port / "ca.crt").read_bytes() == (
            ca.read_bytes()
        )
    hosts = tomllib.loads((root / "etc/containerd/certs.d" / host_port / "hosts.toml").read_text())
    assert hosts["server"] == f"https://{host_port}"
    assert hosts["host"][f"https://{host_port}"]["ca"] == (
        f"{root}/etc/containerd/certs.d/{host_port}/ca.crt"
    )


def test_trust_instructions_refuse_bad_host_port() -> None:
    with pytest.raises(HostNameError):
        trust_instructions(Path("ca.crt"), "a b:5000")


# --- files ---------------------------------------------------------------------------------


def test_keys_are_born_0600_whatever_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        opened.append((str(path), flags, mode))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    old_umask = os.umask(0)
    try:
        server(tmp_path, "a.example")
    finally:
        os.umask(old_umask)
    key_opens = [o for o in opened if ".key." in o[0]]
    assert len(key_opens) == 2  # ca.key and server.key, each through its temporary file
    for _, flags, file_mode in key_opens:
        assert file_mode == 0o600 and flags & os.O_EXCL and flags & os.O_CREAT
    assert mode(tmp_path / "server.key") == 0o600


def test_certificates_stay_readable_under_a_strict_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0o077)
    try:
        server(tmp_path, "a.example")
    finally:
        os.umask(old_umask)
    assert mode(tmp_path / "server.crt") == 0o644 and mode(tmp_path / "ca.crt") == 0o644
    assert mode(tmp_path / "server.key") == 0o600


def test_write_file_is_atomic_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "server.crt"
    target.write_bytes(b"old")

    def broken(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(CertificateError, match=r"server\.crt: cannot write: No space left"):
        write_file(target, b"new", mode=0o644, replace=True)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["server.crt"]


def test_write_file_without_replace_keeps_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "x.key"
    write_file(target, b"first", mode=0o600, replace=False)
    with pytest.raises(CertificateError, match=r"x\.key: exists already"):
        write_file(target, b"second", mode=0o600, replace=False)
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["x.key"]


def test_folder_that_is_a_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "certs").write_text("not a folder")
    with pytest.raises(CertificateError, match="exists and is not a folder"):
        server(tmp_path / "certs", "a.example")


def test_generated_keys_are_pkcs8_pem(tmp_path: Path) -> None:
    files = server(tmp_path, "a.example")
    pem = files.server_key.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
