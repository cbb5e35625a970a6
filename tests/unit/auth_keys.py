"""Real keys, certificates and tokens for the access-control tests, made with cryptography."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

ISSUER = "test-issuer"
SERVICE = "test-registry"


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ed25519_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def certificate(
    key: PrivateKey,
    name: str,
    *,
    issuer: x509.Certificate | None = None,
    issuer_key: PrivateKey | None = None,
    ca: bool | None = True,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> x509.Certificate:
    """A certificate for ``key``: self-signed, or signed by ``issuer_key`` as ``issuer``.

    ``ca=None`` leaves the basicConstraints extension out altogether.
    """
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(minutes=5))
        .not_valid_after(not_after or now + timedelta(days=30))
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    signer = issuer_key if issuer_key is not None else key
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(signer, algorithm)


def write_bundle(path: Path, certificates: Iterable[x509.Certificate]) -> str:
    path.write_bytes(b"".join(cert.public_bytes(Encoding.PEM) for cert in certificates))
    return str(path)


def x5c(*certificates: x509.Certificate) -> list[str]:
    """The ``x5c`` header: standard base64 of each certificate's DER, leaf first."""
    return [base64.b64encode(cert.public_bytes(Encoding.DER)).decode() for cert in certificates]


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid token's claims for ISSUER and SERVICE; a value of None drops the claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": SERVICE,
        "sub": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "access": [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}],
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def token(key: Any, algorithm: str, headers: dict[str, Any], **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), key, algorithm=algorithm, headers=headers)
