"""Token signing keys: the trusted ones from ``rootcertbundle`` and ``jwks``, and their IDs.

A token names its key with ``kid``. Issuers spell that ID two ways: docker_auth,
Harbor and registry:2 2.x use the libtrust fingerprint of the public key;
distribution 3 uses the RFC 7638 thumbprint. A key from the bundle is found by
either; a key from a JWKS file by the ``kid`` the file gives it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt import PyJWK, PyJWTError

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

#: The JWS algorithms each kind of key can verify (never "none").
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = {"P-256": ("ES256",), "P-384": ("ES384",), "P-521": ("ES512",)}
_EC_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ALL_ALGORITHMS = (*RSA_ALGORITHMS, "ES256", "ES384", "ES512", "EdDSA", *HMAC_ALGORITHMS)


class KeyFileError(ValueError):
    """A key file that cannot be used, worded with its path."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(number: int) -> str:
    return _b64url(number.to_bytes((number.bit_length() + 7) // 8 or 1, "big"))


def libtrust_key_id(key: Any) -> str:
    """SHA-256 of the DER public key, 240 bits, base32 in 12 groups of 4 (libtrust's ``KeyID``)."""
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[index : index + 4] for index in range(0, len(encoded), 4))


def jwk_members(key: Any) -> dict[str, str]:
    """The required public members of the key's JWK, the ones RFC 7638 hashes."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {"e": _uint(numbers.e), "kty": "RSA", "n": _uint(numbers.n)}
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = _EC_CURVES.get(key.curve.name)
        if curve is None:
            raise TypeError(f"not a curve tokens use: {key.curve.name}")
        size = (key.curve.key_size + 7) // 8
        point = key.public_numbers()
        return {
            "crv": curve,
            "kty": "EC",
            "x": _b64url(point.x.to_bytes(size, "big")),
            "y": _b64url(point.y.to_bytes(size, "big")),
        }
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        curve = "Ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "Ed448"
        raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"crv": curve, "kty": "OKP", "x": _b64url(raw)}
    raise TypeError(f"not a signing key type tokens use: {type(key).__name__}")


def thumbprint(key: Any) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url)."""
    canonical = json.dumps(jwk_members(key), separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def algorithms_for(key: Any) -> tuple[str, ...]:
    """The JWS algorithms a key may verify: an RSA key never verifies HS256, and so on."""
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        return EC_ALGORITHMS.get(_EC_CURVES.get(key.curve.name, ""), ())
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return ("EdDSA",)
    if isinstance(key, bytes):
        return HMAC_ALGORITHMS
    return ()


@dataclass(frozen=True, slots=True)
class TrustedKeys:
    """Keys a token may be signed with, by ID, and the certificates chains must end in."""

    by_id: Mapping[str, Any] = field(default_factory=dict)
    roots: tuple[x509.Certificate, ...] = ()

    def __len__(self) -> int:
        return len(self.by_id)


def load_certificates(path: str) -> list[x509.Certificate]:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise KeyFileError(f"{path}: cannot read: {error.strerror}") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise KeyFileError(f"{path}: no PEM certificate in it") from None
    return certificates


def load_jwks(path: str) -> dict[str, Any]:
    """The keys of a JWKS file by ``kid``; an entry without one is found by its thumbprint."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise KeyFileError(f"{path}: cannot read: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise KeyFileError(f"{path}:{error.lineno}:{error.colno}: {error.msg}") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not UTF-8 text") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise KeyFileError(f'{path}: expected a JWKS document, {{"keys": [...]}}')
    keys: dict[str, Any] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise KeyFileError(f"{path}: keys[{index}] is not an object")
        if "d" in entry:
            raise KeyFileError(
                f"{path}: keys[{index}]: a private key; publish the public part only"
            )
        if entry.get("kty") == "oct" and not entry.get("kid"):
            raise KeyFileError(f"{path}: keys[{index}]: a secret (oct) key needs a kid")
        try:
            key = PyJWK.from_dict(entry).key
        except (PyJWTError, ValueError, TypeError) as error:
            raise KeyFileError(f"{path}: keys[{index}]: {error}") from None
        if not algorithms_for(key):
            continue  # A kind of key tokens are not signed with here (secp256k1): as the bundle.
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            kid = thumbprint(key)
        keys[kid] = key
    return keys


def trusted_keys(rootcertbundle: str | None, jwks: str | None) -> TrustedKeys:
    """What ``auth.token`` trusts: every bundle certificate's key (by both IDs), every JWKS key."""
    by_id: dict[str, Any] = {}
    roots: list[x509.Certificate] = []
    if rootcertbundle:
        for certificate in load_certificates(rootcertbundle):
            key = certificate.public_key()
            if not algorithms_for(key):
                continue
            roots.append(certificate)
            by_id[libtrust_key_id(key)] = key
            by_id[thumbprint(key)] = key
    if jwks:
        by_id.update(load_jwks(jwks))
    return TrustedKeys(by_id, tuple(roots))
