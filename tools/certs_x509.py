"""The X.509 objects of the certificate toolkit: a CA that issues leaf certificates.

Shaped after trustme (``CA``, ``LeafCert``, ``KeyType``) and built on
``cryptography`` only. Nothing here touches the certificate folder; reading
PEM files is here because every error must name the file it came from.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tools.certs_hosts import general_names

CA_DAYS = 3650
# Apple platforms and browsers refuse TLS server certificates valid for more than 398 days.
MAX_LEAF_DAYS = 397
LEAF_DAYS = MAX_LEAF_DAYS
# Backdate not_before so that a client whose clock runs a little behind accepts a fresh certificate.
CLOCK_SKEW = timedelta(minutes=5)
# The subject's common name may hold at most 64 characters (RFC 5280 ub-common-name).
MAX_COMMON_NAME = 64
ORGANIZATION = "registry"

# Keys a leaf certificate may carry and sign a TLS handshake with.
LeafKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
IssuerKey = CertificateIssuerPrivateKeyTypes


class CertificateError(Exception):
    """A certificate or key cannot be read, used or made; the message names the file."""


class PassphraseError(CertificateError):
    """An encrypted key needs a passphrase that is missing or wrong."""


class KeyType(Enum):
    """Key algorithms the toolkit generates; the value is the command-line spelling."""

    ECDSA_P256 = "ecdsa-p256"
    ECDSA_P384 = "ecdsa-p384"
    RSA_2048 = "rsa2048"
    RSA_3072 = "rsa3072"
    RSA_4096 = "rsa4096"

    def generate(self) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
        """A new private key of this type."""
        if self is KeyType.ECDSA_P256:
            return ec.generate_private_key(ec.SECP256R1())
        if self is KeyType.ECDSA_P384:
            return ec.generate_private_key(ec.SECP384R1())
        return rsa.generate_private_key(public_exponent=65537, key_size=int(self.value[3:]))

    @classmethod
    def of(cls, key: PrivateKeyTypes | PublicKeyTypes) -> KeyType | None:
        """The type of an existing key, or None when the toolkit would not generate it."""
        public = key.public_key() if hasattr(key, "public_key") else key
        if isinstance(public, ec.EllipticCurvePublicKey):
            return {"secp256r1": cls.ECDSA_P256, "secp384r1": cls.ECDSA_P384}.get(public.curve.name)
        if isinstance(public, rsa.RSAPublicKey):
            return {2048: cls.RSA_2048, 3072: cls.RSA_3072, 4096: cls.RSA_4096}.get(public.key_size)
        return None


def describe_key(key: PrivateKeyTypes | PublicKeyTypes) -> str:
    """``ECDSA P-256``, ``RSA 3072``, ``Ed25519``: how a person names a key."""
    public = key.public_key() if hasattr(key, "public_key") else key
    if isinstance(public, ec.EllipticCurvePublicKey):
        curves = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"ECDSA {curves.get(public.curve.name, public.curve.name)}"
    if isinstance(public, rsa.RSAPublicKey):
        return f"RSA {public.key_size}"
    if isinstance(public, dsa.DSAPublicKey):
        return f"DSA {public.key_size}"
    if isinstance(public, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(public, ed448.Ed448PublicKey):
        return "Ed448"
    return type(public).__name__


class Purpose(Enum):
    """What a leaf certificate is for: its Extended Key Usage."""

    SERVER = "server"
    CLIENT = "client"

    @property
    def oid(self) -> x509.ObjectIdentifier:
        """The Extended Key Usage OID clients check."""
        if self is Purpose.SERVER:
            return ExtendedKeyUsageOID.SERVER_AUTH
        return ExtendedKeyUsageOID.CLIENT_AUTH


def public_key_bytes(key: PrivateKeyTypes | PublicKeyTypes) -> bytes:
    """The DER SubjectPublicKeyInfo of a key: equal bytes mean the same key pair."""
    public = key.public_key() if hasattr(key, "public_key") else key
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_matches(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    """Whether ``key`` is the private half of the key ``cert`` certifies."""
    return public_key_bytes(cert.public_key()) == public_key_bytes(key)


def private_key_pem(key: PrivateKeyTypes, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted when a passphrase is given; every engine and OpenSSL reads it."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def certificates_pem(certs: Sequence[x509.Certificate]) -> bytes:
    """Certificates as concatenated PEM blocks, leaf first."""
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def _signing_hash(key: IssuerKey) -> hashes.SHA256 | None:
    # Ed25519 and Ed448 sign the message itself; every other key signs its SHA-256 digest.
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else now.astimezone(UTC)


def is_ca_certificate(cert: x509.Certificate) -> bool:
    """Whether ``cert`` may sign other certificates (BasicConstraints ca=True)."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def is_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer`` signed ``cert`` (names and signature; not validity)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def subject_alternative_names(cert: x509.Certificate) -> list[x509.GeneralName]:
    """The SAN entries of ``cert``; empty when it has none."""
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def extended_key_usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    """The Extended Key Usage OIDs of ``cert``; empty when unrestricted."""
    try:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return []


def common_name(cert: x509.Certificate) -> str | None:
    """The subject's CN, when it has one."""
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


@dataclass(frozen=True, slots=True)
class LeafCert:
    """A server or client certificate with its private key (and the CA chain above it)."""

    cert: x509.Certificate
    key: LeafKey
    chain: tuple[x509.Certificate, ...] = field(default=())

    def cert_chain_pem(self) -> bytes:
        """What a TLS peer sends: the certificate, then any intermediate CA certificates."""
        return certificates_pem([self.cert, *self.chain])

    def private_key_pem(self) -> bytes:
        """The unencrypted key: servers and engines load it unattended."""
        return private_key_pem(self.key)


@dataclass(frozen=True, slots=True)
class CA:
    """A certificate authority: the CA certificate, its key, and any chain above it."""

    cert: x509.Certificate
    key: IssuerKey
    chain: tuple[x509.Certificate, ...] = field(default=())

    @classmethod
    def create(
        cls,
        common_name: str = "registry CA",
        *,
        key_type: KeyType = KeyType.ECDSA_P256,
        days: int = CA_DAYS,
        now: datetime | None = None,
    ) -> CA:
        """A new self-signed CA that may sign leaf certificates only (path length 0)."""
        if not 0 < len(common_name) <= MAX_COMMON_NAME:
            raise CertificateError(
                f"CA common name must be 1 to {MAX_COMMON_NAME} characters: {common_name!r}"
            )
        if days < 1:
            raise CertificateError(f"validity must be at least one day, not {days}")
        key = key_type.generate()
        start = _now(now)
        # A random unit keeps two CAs made on the same machine apart in trust stores.
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, secrets.token_hex(8)),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - CLOCK_SKEW)
            .not_valid_after(start + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert=cert, key=key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path, passphrase: bytes | None = None) -> CA:
        """The CA in two PEM files; the certificate file may carry the chain above it."""
        certs = load_certificates(cert_path)
        cert = certs[0]
        if not is_ca_certificate(cert):
            raise CertificateError(
                f"{cert_path}: not a CA certificate (BasicConstraints ca=TRUE missing)"
            )
        key = load_private_key(key_path, passphrase)
        if not isinstance(
            key,
            rsa.RSAPrivateKey
            | ec.EllipticCurvePrivateKey
            | ed25519.Ed25519PrivateKey
            | ed448.Ed448PrivateKey
            | dsa.DSAPrivateKey,
        ):
            raise CertificateError(
                f"{key_path}: a {describe_key(key)} key cannot sign certificates"
            )
        if not key_matches(cert, key):
            raise CertificateError(f"{key_path}: key does not match the CA certificate {cert_path}")
        return cls(cert=cert, key=key, chain=tuple(certs[1:]))

    def cert_pem(self) -> bytes:
        """The CA certificate that clients trust (without the chain above it)."""
        return certificates_pem([self.cert])

    def private_key_pem(self, passphrase: bytes | None = None) -> bytes:
        """The CA key, encrypted when a passphrase is given."""
        return private_key_pem(self.key, passphrase)

    def issue_cert(
        self,
        *hosts: str,
        purpose: Purpose = Purpose.SERVER,
        common_name: str | None = None,
        key: LeafKey | None = None,
        key_type: KeyType = KeyType.ECDSA_P256,
        days: int = LEAF_DAYS,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        now: datetime | None = None,
    ) -> LeafCert:
        """A certificate for ``hosts`` (DNS names or IP addresses) signed by this CA.

        ``key`` re-certifies an existing key; otherwise a new ``key_type`` key is
        made. The validity ends no later than the CA's own. With no common name
        the subject is empty and the SAN extension becomes critical (RFC 5280).
        """
        if purpose is Purpose.SERVER and not hosts:
            raise CertificateError("a server certificate needs at least one host name or address")
        if common_name is not None and not 0 < len(common_name) <= MAX_COMMON_NAME:
            raise CertificateError(
                f"common name must be 1 to {MAX_COMMON_NAME} characters: {common_name!r}"
            )
        start = _now(now)
        ca_end = self.cert.not_valid_after_utc
        if ca_end <= start:
            raise CertificateError(
                f"the CA certificate expired on {ca_end:%Y-%m-%d}: replace it before issuing"
            )
        begin = not_before if not_before is not None else start - CLOCK_SKEW
        if not_after is None:
            if not 0 < days <= MAX_LEAF_DAYS:
                raise CertificateError(f"validity must be 1 to {MAX_LEAF_DAYS} days, not {days}")
            not_after = min(start + timedelta(days=days), ca_end)
        leaf_key = key if key is not None else key_type.generate()
        names = general_names(hosts)
        subject = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(_certified_public_key(leaf_key))
            .serial_number(x509.random_serial_number())
            .not_valid_before(begin)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    # RSA key exchange (TLS 1.2 without ECDHE) encrypts with the certified key.
                    key_encipherment=isinstance(leaf_key, rsa.RSAPrivateKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([purpose.oid]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(_certified_public_key(leaf_key)),
                critical=False,
            )
            .add_extension(self._authority_key_identifier(), critical=False)
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(names), critical=not common_name
            )
        cert = builder.sign(self.key, _signing_hash(self.key))
        chain = () if _is_self_signed(self.cert) else (self.cert, *self._intermediates())
        return LeafCert(cert=cert, key=leaf_key, chain=chain)

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        try:
            ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.cert.public_key()  # type: ignore[arg-type]
            )
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def _intermediates(self) -> tuple[x509.Certificate, ...]:
        # A root in the chain is never sent: clients must already trust it.
        return tuple(cert for cert in self.chain if not _is_self_signed(cert))


def signer_certificate(
    key: LeafKey, common_name: str, *, days: int, now: datetime | None = None
) -> x509.Certificate:
    """A self-signed certificate that only publishes ``key`` (not a CA, signatures only).

    The registry's token service signs tokens with the key; registries trust
    them through this certificate (registry:2's ``auth.token.rootcertbundle``).
    """
    if not 0 < len(common_name) <= MAX_COMMON_NAME:
        raise CertificateError(
            f"common name must be 1 to {MAX_COMMON_NAME} characters: {common_name!r}"
        )
    if days < 1:
        raise CertificateError(f"validity must be at least one day, not {days}")
    start = _now(now)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_certified_public_key(key))
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - CLOCK_SKEW)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(_certified_public_key(key)), critical=False
        )
        .sign(key, _signing_hash(key))
    )


def _is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and is_issued_by(cert, cert)


def _certified_public_key(key: LeafKey) -> CertificatePublicKeyTypes:
    return key.public_key()


def read_bytes(path: Path, what: str) -> bytes:
    """The content of ``path``, or a CertificateError that says why it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CertificateError(f"{path}: {what} not found") from None
    except PermissionError:
        raise CertificateError(f"{path}: {what} not readable (permission denied)") from None
    except IsADirectoryError:
        raise CertificateError(f"{path}: is a folder, expected a {what} file") from None
    except OSError as error:
        raise CertificateError(f"{path}: cannot read {what}: {error.strerror}") from None


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file, in file order (at least one)."""
    data = read_bytes(path, "certificate")
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise CertificateError(f"{path}: not a PEM certificate (no BEGIN CERTIFICATE block)")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as error:
        raise CertificateError(f"{path}: damaged PEM certificate: {error}") from None


def load_private_key(path: Path, passphrase: bytes | None = None) -> PrivateKeyTypes:
    """The private key in a PEM file, decrypted with ``passphrase`` when it is encrypted."""
    data = read_bytes(path, "private key")
    if b"-----BEGIN" not in data or b"PRIVATE KEY-----" not in data:
        raise CertificateError(f"{path}: not a PEM private key (no BEGIN ... PRIVATE KEY block)")
    encrypted = b"ENCRYPTED" in data
    if encrypted and not passphrase:
        raise PassphraseError(f"{path}: the key is encrypted and no passphrase was given")
    try:
        return serialization.load_pem_private_key(data, password=passphrase if encrypted else None)
    except ValueError:
        if encrypted:
            raise PassphraseError(f"{path}: wrong passphrase for the encrypted key") from None
        raise CertificateError(f"{path}: damaged or unsupported PEM private key") from None
    except (TypeError, UnsupportedAlgorithm) as error:
        raise CertificateError(f"{path}: cannot load private key: {error}") from None


def is_encrypted_key_file(path: Path) -> bool:
    """Whether the PEM key at ``path`` needs a passphrase (False when unreadable)."""
    try:
        return b"ENCRYPTED" in path.read_bytes()
    except OSError:
        return False


def as_leaf_key(key: PrivateKeyTypes, path: Path) -> LeafKey:
    """``key`` when it can carry a TLS certificate, else a CertificateError naming ``path``."""
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        return key
    raise CertificateError(f"{path}: a {describe_key(key)} key cannot carry a TLS certificate")


def check_key_pair(cert_path: Path, key_path: Path, *, now: datetime | None = None) -> None:
    """Refuse a TLS certificate and key a server cannot start with, naming the file and problem.

    Checks that both files exist, are readable and PEM, that the key is not
    encrypted, that it matches the (first) certificate and that the
    certificate is valid now.
    """
    cert = load_certificates(cert_path)[0]
    key = load_private_key(key_path)
    if not key_matches(cert, key):
        raise CertificateError(
            f"{key_path}: private key does not match the certificate in {cert_path}"
        )
    moment = _now(now)
    if cert.not_valid_after_utc <= moment:
        raise CertificateError(
            f"{cert_path}: certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if cert.not_valid_before_utc > moment:
        raise CertificateError(
            f"{cert_path}: certificate not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (check the clock)"
        )
