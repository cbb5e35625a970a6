"""The X.509 objects: extensions, validity and keys of the CA and the leaves it issues."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tools.certs_x509 import (
    CA,
    MAX_LEAF_DAYS,
    CertificateError,
    KeyType,
    PassphraseError,
    Purpose,
    check_key_pair,
    load_certificates,
    load_private_key,
)

E = TypeVar("E", bound=x509.ExtensionType)


def ext(cert: x509.Certificate, kind: type[E]) -> x509.Extension[E]:
    return cert.extensions.get_extension_for_class(kind)


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA.create("test CA")


def test_ca_extensions(ca: CA) -> None:
    cert = ca.cert
    basic = ext(cert, x509.BasicConstraints)
    assert basic.critical
    assert basic.value == x509.BasicConstraints(ca=True, path_length=0)
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature and not usage.value.key_encipherment
    ski = ext(cert, x509.SubjectKeyIdentifier)
    assert not ski.critical
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ski.value.digest
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "test CA"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    assert ca.key.curve.name == "secp256r1"
    cert.verify_directly_issued_by(cert)


def test_ca_validity_is_ten_years_backdated_for_clock_skew() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    cert = CA.create(now=now).cert
    assert cert.not_valid_before_utc == now - timedelta(minutes=5)
    assert cert.not_valid_after_utc == now + timedelta(days=3650)


def test_two_cas_have_distinct_names_and_random_serials() -> None:
    first, second = CA.create(), CA.create()
    assert first.cert.subject != second.cert.subject
    assert first.cert.serial_number != second.cert.serial_number
    assert first.cert.serial_number.bit_length() > 64


def test_server_leaf_extensions(ca: CA) -> None:
    leaf = ca.issue_cert(
        "registry.example.com", "10.0.0.1", "::1", common_name="registry.example.com"
    )
    cert = leaf.cert
    basic = ext(cert, x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_encipherment  # not for an ECDSA key
    assert not usage.value.key_cert_sign
    eku = ext(cert, x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = ext(cert, x509.SubjectAlternativeName)
    assert not san.critical  # the subject is not empty
    assert san.value.get_values_for_type(x509.DNSName) == ["registry.example.com"]
    assert san.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
        cert.public_key()
    )
    ca_ski = ext(ca.cert, x509.SubjectKeyIdentifier).value
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ca_ski.digest
    assert cert.issuer == ca.cert.subject
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    cert.verify_directly_issued_by(ca.cert)
    assert leaf.chain == ()


def test_server_leaf_validity_defaults_to_397_days(ca: CA) -> None:
    now = datetime.now(UTC)
    cert = ca.issue_cert("a.example", now=now).cert
    assert cert.not_valid_after_utc - now == timedelta(days=MAX_LEAF_DAYS) - timedelta(
        microseconds=now.microsecond
    )
    assert now - cert.not_valid_before_utc >= timedelta(minutes=4)


def test_leaf_validity_above_maximum_is_refused(ca: CA) -> None:
    with pytest.raises(CertificateError, match="1 to 397"):
        ca.issue_cert("a.example", days=MAX_LEAF_DAYS + 1)


def test_leaf_never_outlives_its_ca() -> None:
    now = datetime.now(UTC)
    short = CA.create(days=10, now=now)
    cert = short.issue_cert("a.example", now=now).cert
    assert cert.not_valid_after_utc <= short.cert.not_valid_after_utc


def test_expired_ca_refuses_to_issue() -> None:
    old = CA.create(days=1, now=datetime.now(UTC) - timedelta(days=3))
    with pytest.raises(CertificateError, match="CA certificate expired"):
        old.issue_cert("a.example")


def test_empty_subject_makes_san_critical(ca: CA) -> None:
    cert = ca.issue_cert("a.example").cert
    assert len(cert.subject) == 0
    assert ext(cert, x509.SubjectAlternativeName).critical


def test_client_leaf_extensions(ca: CA) -> None:
    cert = ca.issue_cert(purpose=Purpose.CLIENT, common_name="alice").cert
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert ext(cert, x509.BasicConstraints).value.ca is False
    with pytest.raises(x509.ExtensionNotFound):
        ext(cert, x509.SubjectAlternativeName)


def test_server_leaf_needs_a_host(ca: CA) -> None:
    with pytest.raises(CertificateError, match="at least one host"):
        ca.issue_cert()


@pytest.mark.parametrize(
    ("key_type", "size"),
    [(KeyType.RSA_2048, 2048), (KeyType.RSA_3072, 3072), (KeyType.RSA_4096, 4096)],
)
def test_rsa_leaf_has_key_encipherment(ca: CA, key_type: KeyType, size: int) -> None:
    leaf = ca.issue_cert("a.example", key_type=key_type)
    assert isinstance(leaf.key, rsa.RSAPrivateKey)
    assert leaf.key.key_size == size
    usage = ext(leaf.cert, x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment
    assert KeyType.of(leaf.key) is key_type


def test_rsa_ca_signs_with_sha256() -> None:
    rsa_ca = CA.create(key_type=KeyType.RSA_3072)
    assert isinstance(rsa_ca.key, rsa.RSAPrivateKey) and rsa_ca.key.key_size == 3072
    cert = rsa_ca.issue_cert("a.example").cert
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    cert.verify_directly_issued_by(rsa_ca.cert)


def test_ecdsa_p384_key_type(ca: CA) -> None:
    leaf = ca.issue_cert("a.example", key_type=KeyType.ECDSA_P384)
    assert isinstance(leaf.key, ec.EllipticCurvePrivateKey)
    assert leaf.key.curve.name == "secp384r1"


def test_issue_for_an_existing_key_keeps_it(ca: CA) -> None:
    first = ca.issue_cert("a.example")
    second = ca.issue_cert("b.example", key=first.key)
    assert second.key is first.key
    assert second.cert.public_key() == first.cert.public_key()


def test_dns_names_are_normalized(ca: CA) -> None:
    cert = ca.issue_cert("Registry.Example.COM.", "bücher.example", "*.apps.example").cert
    names = ext(cert, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == ["registry.example.com", "xn--bcher-kva.example", "*.apps.example"]


def test_bad_host_is_refused(ca: CA) -> None:
    with pytest.raises(ValueError, match="not a valid DNS label"):
        ca.issue_cert("bad name.example")


def test_ed25519_ca_from_elsewhere_signs(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "company CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=100))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, None)
    )
    (tmp_path / "c.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "c.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    company = CA.load(tmp_path / "c.crt", tmp_path / "c.key")
    leaf = company.issue_cert("a.example").cert
    leaf.verify_directly_issued_by(cert)
    # No SubjectKeyIdentifier on that CA: the AKI comes from its public key.
    aki = ext(leaf, x509.AuthorityKeyIdentifier).value
    assert aki == x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())


def test_intermediate_ca_goes_into_the_leaf_chain(ca: CA, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    intermediate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intermediate")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=100))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    sub = CA(cert=intermediate, key=key, chain=(ca.cert,))
    leaf = sub.issue_cert("a.example")
    assert leaf.chain == (intermediate,)  # the root is never sent
    pem = leaf.cert_chain_pem()
    (tmp_path / "chain.crt").write_bytes(pem)
    assert load_certificates(tmp_path / "chain.crt") == [leaf.cert, intermediate]


def test_encrypted_ca_key_round_trip(ca: CA, tmp_path: Path) -> None:
    (tmp_path / "ca.key").write_bytes(ca.private_key_pem(b"s3cret"))
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem())
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "ca.key").read_bytes()
    with pytest.raises(PassphraseError, match="encrypted and no passphrase"):
        CA.load(tmp_path / "ca.crt", tmp_path / "ca.key")
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        CA.load(tmp_path / "ca.crt", tmp_path / "ca.key", b"wrong")
    loaded = CA.load(tmp_path / "ca.crt", tmp_path / "ca.key", b"s3cret")
    assert loaded.cert == ca.cert


def test_ca_load_refuses_a_leaf_and_a_foreign_key(ca: CA, tmp_path: Path) -> None:
    leaf = ca.issue_cert("a.example")
    (tmp_path / "leaf.crt").write_bytes(leaf.cert_chain_pem())
    (tmp_path / "leaf.key").write_bytes(leaf.private_key_pem())
    with pytest.raises(CertificateError, match="not a CA certificate"):
        CA.load(tmp_path / "leaf.crt", tmp_path / "leaf.key")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem())
    with pytest.raises(CertificateError, match="does not match the CA certificate"):
        CA.load(tmp_path / "ca.crt", tmp_path / "leaf.key")


# --- check_key_pair: what the server calls before it starts ---------------------


@pytest.fixture
def pair(ca: CA, tmp_path: Path) -> tuple[Path, Path]:
    leaf = ca.issue_cert("localhost")
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    cert.write_bytes(leaf.cert_chain_pem())
    key.write_bytes(leaf.private_key_pem())
    return cert, key


def test_check_key_pair_accepts_a_good_pair(pair: tuple[Path, Path]) -> None:
    check_key_pair(*pair)


def test_check_key_pair_missing_files(pair: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = pair
    with pytest.raises(CertificateError, match=r"nope\.crt: certificate not found"):
        check_key_pair(tmp_path / "nope.crt", key)
    with pytest.raises(CertificateError, match=r"nope\.key: private key not found"):
        check_key_pair(cert, tmp_path / "nope.key")


def test_check_key_pair_not_pem(pair: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = pair
    junk = tmp_path / "junk"
    junk.write_text("hello\n")
    with pytest.raises(CertificateError, match="junk: not a PEM certificate"):
        check_key_pair(junk, key)
    with pytest.raises(CertificateError, match="junk: not a PEM private key"):
        check_key_pair(cert, junk)
    der = tmp_path / "der.crt"
    der.write_bytes(load_certificates(cert)[0].public_bytes(serialization.Encoding.DER))
    with pytest.raises(CertificateError, match=r"der\.crt: not a PEM certificate"):
        check_key_pair(der, key)


def test_check_key_pair_folder_instead_of_file(pair: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="is a folder"):
        check_key_pair(tmp_path, pair[1])


def test_check_key_pair_mismatch(ca: CA, pair: tuple[Path, Path], tmp_path: Path) -> None:
    cert, _ = pair
    other = tmp_path / "other.key"
    other.write_bytes(ca.issue_cert("localhost").private_key_pem())
    with pytest.raises(CertificateError, match=r"other\.key: private key does not match"):
        check_key_pair(cert, other)


def test_check_key_pair_expired(ca: CA, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    leaf = ca.issue_cert(
        "localhost", not_before=now - timedelta(days=10), not_after=now - timedelta(days=1)
    )
    cert, key = tmp_path / "old.crt", tmp_path / "old.key"
    cert.write_bytes(leaf.cert_chain_pem())
    key.write_bytes(leaf.private_key_pem())
    with pytest.raises(CertificateError, match=r"old\.crt: certificate expired on"):
        check_key_pair(cert, key)


def test_check_key_pair_not_yet_valid(pair: tuple[Path, Path]) -> None:
    with pytest.raises(CertificateError, match="not valid before"):
        check_key_pair(*pair, now=datetime.now(UTC) - timedelta(days=1))


def test_check_key_pair_encrypted_key(ca: CA, pair: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = pair
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        load_private_key(key).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(CertificateError, match=r"locked\.key: the key is encrypted"):
        check_key_pair(cert, locked)


def test_read_errors_name_permission_problems(
    pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = pair

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(CertificateError, match=r"server\.crt: certificate not readable"):
        check_key_pair(cert, key)
