"""``registry certs token``: the token service's signing key, and tokens it signs that verify."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from registry.auth.keys import libtrust_key_id, trusted_keys
from tools import certs, certs_cli
from tools.certs_x509 import key_matches, load_certificates, load_private_key

KID_RE = re.compile(r"key ID \(kid in tokens\): (\S+)")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = certs_cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def printed_kid(out: str) -> str:
    found = KID_RE.search(out)
    assert found, out
    return found.group(1)


def claims() -> dict[str, object]:
    now = int(time.time())
    return {
        "iss": "registry-token-service",
        "sub": "alice",
        "aud": "registry",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "access": [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}],
    }


@pytest.fixture
def d(tmp_path: Path) -> Path:
    return tmp_path / "certs"


def test_token_writes_key_and_certificate(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "token", "--dir", str(d))
    assert (code, err) == (0, "")
    key_path, cert_path = d / "token.key", d / "token.crt"
    assert mode(key_path) == 0o600 and mode(cert_path) == 0o644
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8
    key = load_private_key(key_path)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    cert = load_certificates(cert_path)[0]
    assert key_matches(cert, key)
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)  # self-signed
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    common_name = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert str(common_name).startswith("registry token signer ")
    lifetime = cert.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=3649) < lifetime <= timedelta(days=3650)

    assert out.startswith(f"created token signing key {key_path} and certificate {cert_path}")
    assert f"auth.token.rootcertbundle: {cert_path}\n" in out
    assert f"access.tokenservice.key: {key_path}\n" in out
    assert printed_kid(out) == libtrust_key_id(key.public_key())
    assert not (d / "ca.key").exists()  # no CA is needed or made


def test_a_token_signed_with_the_key_verifies_with_the_certificate(
    d: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(capsys, "token", "--dir", str(d))
    kid = printed_kid(out)
    key = load_private_key(d / "token.key")
    token = jwt.encode(claims(), key, algorithm="ES256", headers={"kid": kid})  # type: ignore[arg-type]

    public = load_certificates(d / "token.crt")[0].public_key()
    decoded = jwt.decode(token, public, algorithms=["ES256"], audience="registry")  # type: ignore[arg-type]
    assert decoded["sub"] == "alice"
    # The way the registry finds the key: by the token's kid, in auth.token.rootcertbundle.
    trusted = trusted_keys(str(d / "token.crt"), None)
    assert jwt.get_unverified_header(token)["kid"] == kid
    jwt.decode(token, trusted.by_id[kid], algorithms=["ES256"], audience="registry")

    other = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(claims(), other, algorithm="ES256", headers={"kid": kid})
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, trusted.by_id[kid], algorithms=["ES256"], audience="registry")


@pytest.mark.parametrize(
    ("key_type", "algorithm", "check"),
    [
        (
            "ecdsa-p384",
            "ES384",
            lambda k: isinstance(k, ec.EllipticCurvePrivateKey) and k.curve.name == "secp384r1",
        ),
        ("rsa2048", "RS256", lambda k: isinstance(k, rsa.RSAPrivateKey) and k.key_size == 2048),
        ("rsa3072", "RS256", lambda k: isinstance(k, rsa.RSAPrivateKey) and k.key_size == 3072),
    ],
)
def test_key_types(
    d: Path, capsys: pytest.CaptureFixture[str], key_type: str, algorithm: str, check: object
) -> None:
    code, out, _ = run(capsys, "token", "--dir", str(d), "--key-type", key_type)
    assert code == 0
    key = load_private_key(d / "token.key")
    assert check(key)  # type: ignore[operator]
    kid = printed_kid(out)
    assert kid == libtrust_key_id(key.public_key())
    token = jwt.encode(claims(), key, algorithm=algorithm, headers={"kid": kid})  # type: ignore[arg-type]
    trusted = trusted_keys(str(d / "token.crt"), None)
    assert jwt.decode(token, trusted.by_id[kid], algorithms=[algorithm], audience="registry")


def test_rerun_keeps_and_force_replaces(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "token", "--dir", str(d))
    kid = printed_kid(out)
    key_before, cert_before = (d / "token.key").read_bytes(), (d / "token.crt").read_bytes()

    code, out, _ = run(capsys, "token", "--dir", str(d), "--name", "another name")
    assert code == 0
    assert out.startswith(f"token signing key {d / 'token.key'} and certificate")
    assert "exist already" in out and "kept (--force replaces both)" in out
    assert printed_kid(out) == kid
    assert f"auth.token.rootcertbundle: {d / 'token.crt'}" in out
    assert (d / "token.key").read_bytes() == key_before
    assert (d / "token.crt").read_bytes() == cert_before

    code, out, _ = run(capsys, "token", "--dir", str(d), "--force", "--name", "signer two")
    assert code == 0 and out.startswith("replaced token signing key")
    assert printed_kid(out) != kid
    assert (d / "token.key").read_bytes() != key_before
    cert = load_certificates(d / "token.crt")[0]
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "signer two"
    assert key_matches(cert, load_private_key(d / "token.key"))
    assert mode(d / "token.key") == 0o600 and mode(d / "token.crt") == 0o644


def test_a_missing_or_expired_certificate_is_reissued_for_the_same_key(
    d: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(capsys, "token", "--dir", str(d))
    kid = printed_kid(out)
    key_before = (d / "token.key").read_bytes()
    (d / "token.crt").unlink()
    code, out, _ = run(capsys, "token", "--dir", str(d))
    assert code == 0 and out.startswith(f"reissued {d / 'token.crt'}") and "is missing" in out
    assert printed_kid(out) == kid and (d / "token.key").read_bytes() == key_before

    certs.ensure_token_key(d, days=1, force=True, now=datetime.now(UTC) - timedelta(days=3))
    kid = libtrust_key_id(load_private_key(d / "token.key").public_key())
    code, out, _ = run(capsys, "token", "--dir", str(d))
    assert code == 0 and "expired on" in out and printed_kid(out) == kid
    assert load_certificates(d / "token.crt")[0].not_valid_after_utc > datetime.now(UTC)


def test_a_key_of_another_type_needs_force(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "token", "--dir", str(d), "--key-type", "rsa2048")
    code, _, err = run(capsys, "token", "--dir", str(d), "--key-type", "ecdsa-p256")
    assert code == 1 and "holds a RSA 2048 key, not ecdsa-p256" in err and "--force" in err
    assert run(capsys, "token", "--dir", str(d), "--key-type", "ecdsa-p256", "--force")[0] == 0
    assert isinstance(load_private_key(d / "token.key"), ec.EllipticCurvePrivateKey)


def test_a_certificate_without_its_key_is_refused(
    d: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "token", "--dir", str(d))
    (d / "token.key").unlink()
    code, _, err = run(capsys, "token", "--dir", str(d))
    assert code == 1 and "exists without its key" in err and "Traceback" not in err
    assert run(capsys, "token", "--dir", str(d), "--force")[0] == 0


def test_the_key_is_never_encrypted(
    d: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REGISTRY_CA_PASSPHRASE", "for-the-ca-only")
    code, out, _ = run(capsys, "token", "--dir", str(d))
    assert code == 0 and "not encrypted" in out
    assert b"ENCRYPTED" not in (d / "token.key").read_bytes()
    load_private_key(d / "token.key")  # loads without a passphrase


def test_an_encrypted_key_is_refused(
    tmp_path: Path, d: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("pass phrase\n")
    run(capsys, "init", "--dir", str(tmp_path / "ca"), "--passphrase-file", str(secret))
    d.mkdir()
    (d / "token.key").write_bytes((tmp_path / "ca" / "ca.key").read_bytes())
    code, _, err = run(capsys, "token", "--dir", str(d))
    assert code == 1 and "encrypted; the registry reads it unattended" in err


def test_usage_errors(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "token", "--dir", str(d), "--key-type", "dsa")
    assert code == 2 and "choose one of" in err
    code, _, err = run(capsys, "token", "--dir", str(d), "--days", "0")
    assert code == 2 and "days must be" in err
    code, _, err = run(capsys, "token", "--dir", str(d), "--name", "x" * 65)
    assert code == 1 and "common name must be 1 to 64 characters" in err
    assert not (d / "token.key").exists()
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "token" in out


def test_openssl_reads_the_pair(d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert shutil.which("openssl"), "this test checks the files with the openssl command"
    run(capsys, "token", "--dir", str(d), "--days", "30")
    text = subprocess.run(
        ["openssl", "x509", "-in", str(d / "token.crt"), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "CA:FALSE" in text and "Digital Signature" in text
    from_cert = subprocess.run(
        ["openssl", "x509", "-in", str(d / "token.crt"), "-noout", "-pubkey"],
        capture_output=True,
        check=True,
    ).stdout
    from_key = subprocess.run(
        ["openssl", "pkey", "-in", str(d / "token.key"), "-pubout"], capture_output=True, check=True
    ).stdout
    assert from_cert == from_key


def test_show_takes_the_token_certificate_as_its_own_anchor(
    d: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Beside a CA, the self-signed token.crt is no problem for ``certs show`` (exit 0)."""
    assert run(capsys, "init", "--dir", str(d))[0] == 0
    assert run(capsys, "token", "--dir", str(d))[0] == 0
    code, out, _ = run(capsys, "show", str(d), "--host", "registry.example.com")
    assert code == 0, out
    assert "self-signed, its own trust anchor" in out
    assert "NOT signed" not in out
