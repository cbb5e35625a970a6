"""Bearer tokens: only keys from rootcertbundle or jwks sign them, and every claim is checked.

Every token here is a real JWT made with PyJWT and real keys; the forgeries are
the ones attackers use (a key in the ``jwk`` header, CVE-2025-24976; ``alg:
none``; HS256 keyed with the public key; an ``x5c`` chain of their own).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, RSAAlgorithm

from registry.auth.keys import (
    KeyFileError,
    TrustedKeys,
    libtrust_key_id,
    load_jwks,
    thumbprint,
    trusted_keys,
)
from registry.auth.tokens import (
    LEEWAY,
    MAX_TOKEN_LENGTH,
    InvalidTokenError,
    TokenVerifier,
)

from .auth_keys import (
    ISSUER,
    SERVICE,
    certificate,
    claims,
    ec_key,
    ed25519_key,
    rsa_key,
    token,
    write_bundle,
    x5c,
)


@dataclass(frozen=True)
class Trust:
    """What the registry trusts: three signing certificates and a CA root, in one bundle."""

    ec: ec.EllipticCurvePrivateKey
    rsa: rsa.RSAPrivateKey
    ed: ed25519.Ed25519PrivateKey
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    keys: TrustedKeys


@pytest.fixture(scope="module")
def trust(tmp_path_factory: pytest.TempPathFactory) -> Trust:
    signing_ec, signing_rsa, signing_ed, root_key = ec_key(), rsa_key(), ed25519_key(), ec_key()
    root = certificate(root_key, "Test Token Root CA", ca=True)
    bundle = write_bundle(
        tmp_path_factory.mktemp("bundle") / "bundle.pem",
        [
            certificate(signing_ec, "token signer (EC)", ca=None),
            certificate(signing_rsa, "token signer (RSA)", ca=None),
            certificate(signing_ed, "token signer (Ed25519)", ca=None),
            root,
        ],
    )
    return Trust(signing_ec, signing_rsa, signing_ed, root_key, root, trusted_keys(bundle, None))


def verifier(keys: TrustedKeys, algorithms: tuple[str, ...] = ()) -> TokenVerifier:
    return TokenVerifier(keys, issuer=ISSUER, service=SERVICE, algorithms=algorithms)


def kid(key: Any) -> dict[str, Any]:
    return {"kid": libtrust_key_id(key.public_key())}


def refused(keys: TrustedKeys, text: str, reason: str = "") -> str:
    with pytest.raises(InvalidTokenError) as caught:
        verifier(keys).verify(text)
    assert reason.lower() in str(caught.value).lower()
    return str(caught.value)


# --- accepted tokens ---


def test_es256_token_by_libtrust_key_id(trust: Trust) -> None:
    verified = verifier(trust.keys).verify(token(trust.ec, "ES256", kid(trust.ec)))
    assert verified.subject == "alice"
    assert verified.claims == {("repository", "team/app"): frozenset({"pull", "push"})}


def test_es256_token_by_rfc7638_thumbprint(trust: Trust) -> None:
    headers = {"kid": thumbprint(trust.ec.public_key())}
    assert verifier(trust.keys).verify(token(trust.ec, "ES256", headers)).subject == "alice"


def test_libtrust_key_id_has_its_documented_shape(trust: Trust) -> None:
    key_id = libtrust_key_id(trust.ec.public_key())
    groups = key_id.split(":")
    assert len(groups) == 12
    # Base32's alphabet: a group may be all digits, so isupper() would be wrong.
    assert all(re.fullmatch("[A-Z2-7]{4}", group) for group in groups)


def test_rs256_token(trust: Trust) -> None:
    text = token(trust.rsa, "RS256", kid(trust.rsa), sub="bob")
    assert verifier(trust.keys).verify(text).subject == "bob"


def test_eddsa_token(trust: Trust) -> None:
    text = token(trust.ed, "EdDSA", kid(trust.ed), sub="carol")
    assert verifier(trust.keys).verify(text).subject == "carol"


def test_token_without_sub_has_an_empty_subject(trust: Trust) -> None:
    verified = verifier(trust.keys).verify(token(trust.ec, "ES256", kid(trust.ec), sub=None))
    assert verified.subject == ""


def test_expires_is_the_exp_claim(trust: Trust) -> None:
    exp = int(time.time()) + 123
    verified = verifier(trust.keys).verify(token(trust.ec, "ES256", kid(trust.ec), exp=exp))
    assert verified.expires == exp


# --- JWKS ---

SECRET = b"a shared secret of at least thirty-two bytes for HS256"


@pytest.fixture(scope="module")
def jwks(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrustedKeys, Any, Any]:
    """A JWKS file: an EC key with a kid, an RSA key without one, an HS256 secret."""
    signing_ec, signing_rsa = ec_key(), rsa_key()
    document = {
        "keys": [
            {**ECAlgorithm.to_jwk(signing_ec.public_key(), as_dict=True), "kid": "ec-1"},
            RSAAlgorithm.to_jwk(signing_rsa.public_key(), as_dict=True),
            {**HMACAlgorithm.to_jwk(SECRET, as_dict=True), "kid": "shared"},
        ]
    }
    path = tmp_path_factory.mktemp("jwks") / "keys.jwks"
    path.write_text(json.dumps(document))
    return trusted_keys(None, str(path)), signing_ec, signing_rsa


def test_jwks_key_found_by_the_kid_the_file_gives(jwks: tuple[TrustedKeys, Any, Any]) -> None:
    keys, signing_ec, _ = jwks
    text = token(signing_ec, "ES256", {"kid": "ec-1"})
    assert verifier(keys).verify(text).subject == "alice"
    # The file's kid is the only name: the libtrust ID of the same key is not one.
    refused(keys, token(signing_ec, "ES256", kid(signing_ec)), "untrusted key")


def test_jwks_key_without_kid_found_by_thumbprint(jwks: tuple[TrustedKeys, Any, Any]) -> None:
    keys, _, signing_rsa = jwks
    text = token(signing_rsa, "RS256", {"kid": thumbprint(signing_rsa.public_key())})
    assert verifier(keys).verify(text).subject == "alice"


def test_jwks_oct_key_verifies_hs256(jwks: tuple[TrustedKeys, Any, Any]) -> None:
    keys = jwks[0]
    assert verifier(keys).verify(token(SECRET, "HS256", {"kid": "shared"})).subject == "alice"
    wrong = b"another secret, also at least thirty-two bytes long"
    refused(keys, token(wrong, "HS256", {"kid": "shared"}), "Signature verification failed")


def test_jwks_key_refuses_an_algorithm_of_another_kind(
    jwks: tuple[TrustedKeys, Any, Any],
) -> None:
    keys, signing_ec, _ = jwks
    # Signed with a trusted EC key, but naming the HMAC secret's kid.
    refused(keys, token(signing_ec, "ES256", {"kid": "shared"}), "does not go with")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}, "needs a kid"),
        ({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA"}, "a private key"),
        ({"kty": "nonsense"}, "keys[0]: Unsupported kty"),
        ({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}, "keys[0]: "),
        ({"kty": "OKP", "crv": "X25519x", "x": "AA"}, "keys[0]: "),
        ("not an object", "keys[0] is not an object"),
    ],
)
def test_jwks_file_errors_name_the_file_and_entry(
    tmp_path: Path, entry: object, message: str
) -> None:
    path = tmp_path / "keys.jwks"
    path.write_text(json.dumps({"keys": [entry]}))
    with pytest.raises(KeyFileError) as caught:
        load_jwks(str(path))
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)


def test_keys_of_a_curve_tokens_do_not_use_are_left_out(tmp_path: Path) -> None:
    """secp256k1 in the bundle or the JWKS: skipped, never a crash at start or per request."""
    odd = ec.generate_private_key(ec.SECP256K1())
    usable = ec_key()
    bundle = write_bundle(
        tmp_path / "bundle.pem",
        [certificate(odd, "secp256k1 signer", ca=None), certificate(usable, "P-256", ca=None)],
    )
    path = tmp_path / "keys.jwks"
    odd_jwk = {**ECAlgorithm.to_jwk(odd.public_key(), as_dict=True), "kid": "k1"}
    unnamed = dict(ECAlgorithm.to_jwk(odd.public_key(), as_dict=True))
    path.write_text(json.dumps({"keys": [odd_jwk, unnamed]}))
    keys = trusted_keys(bundle, str(path))
    assert set(keys.by_id) == {
        libtrust_key_id(usable.public_key()),
        thumbprint(usable.public_key()),
    }
    assert [root.subject for root in keys.roots] == [certificate(usable, "P-256", ca=None).subject]
    refused(keys, token(odd, "ES256K", {"kid": "k1"}), "untrusted key")
    assert verifier(keys).verify(token(usable, "ES256", kid(usable))).subject == "alice"


# --- claims refused ---


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"iss": "someone-else"}, "issuer"),
        ({"aud": "another-registry"}, "audience"),
        # Times relative to when the test runs (see below), not to collection.
        ({"exp": -LEEWAY - 60}, "expired"),
        ({"nbf": LEEWAY + 240}, "not yet valid"),
        ({"exp": None}, "exp"),
        ({"iss": None}, "iss"),
        ({"aud": None}, "aud"),
        ({"sub": 42}, "sub"),
    ],
    ids=["wrong-iss", "wrong-aud", "expired", "nbf-future", "no-exp", "no-iss", "no-aud", "sub"],
)
def test_claims_refused(trust: Trust, overrides: dict[str, Any], reason: str) -> None:
    now = int(time.time())
    claims = {
        k: now + v if isinstance(v, int) and k in ("exp", "nbf") else v
        for k, v in overrides.items()
    }
    refused(trust.keys, token(trust.ec, "ES256", kid(trust.ec), **claims), reason)


def test_clock_skew_within_the_leeway_is_accepted(trust: Trust) -> None:
    now = int(time.time())
    expired_a_little = token(trust.ec, "ES256", kid(trust.ec), exp=now - LEEWAY // 2)
    assert verifier(trust.keys).verify(expired_a_little).subject == "alice"
    early = token(trust.ec, "ES256", kid(trust.ec), nbf=now + LEEWAY // 2, iat=None)
    assert verifier(trust.keys).verify(early).subject == "alice"


def test_audience_list_containing_the_service_is_accepted(trust: Trust) -> None:
    text = token(trust.ec, "ES256", kid(trust.ec), aud=["other", SERVICE])
    assert verifier(trust.keys).verify(text).subject == "alice"


# --- keys refused ---


def test_unknown_kid_refused(trust: Trust) -> None:
    stranger = ec_key()
    refused(trust.keys, token(stranger, "ES256", kid(stranger)), "untrusted key")


def test_no_kid_and_no_x5c_refused(trust: Trust) -> None:
    refused(trust.keys, token(trust.ec, "ES256", {}), "no kid, no x5c")


def attacker_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    return dict(ECAlgorithm.to_jwk(key.public_key(), as_dict=True))


def test_key_in_jwk_header_is_never_used(trust: Trust) -> None:
    """CVE-2025-24976: the attacker signs with their own key and sends it along."""
    attacker = ec_key()
    forged = token(attacker, "ES256", {"jwk": attacker_jwk(attacker)}, sub="admin")
    assert (
        jwt.decode(  # The forgery is sound if the header's key were trusted.
            forged,
            ECAlgorithm.from_jwk(json.dumps(attacker_jwk(attacker))),
            algorithms=["ES256"],
            audience=SERVICE,
        )["sub"]
        == "admin"
    )
    refused(trust.keys, forged, "no kid, no x5c")


def test_jwk_header_with_a_trusted_kid_but_the_attackers_signature_refused(
    trust: Trust,
) -> None:
    attacker = ec_key()
    headers = {"kid": libtrust_key_id(trust.ec.public_key()), "jwk": attacker_jwk(attacker)}
    refused(trust.keys, token(attacker, "ES256", headers, sub="admin"), "Signature")


def test_jwk_header_with_its_own_thumbprint_as_kid_refused(trust: Trust) -> None:
    attacker = ec_key()
    headers = {"kid": thumbprint(attacker.public_key()), "jwk": attacker_jwk(attacker)}
    refused(trust.keys, token(attacker, "ES256", headers), "untrusted key")


def test_alg_none_refused(trust: Trust) -> None:
    unsigned = jwt.encode(claims(), None, algorithm="none", headers=kid(trust.ec))
    assert unsigned.endswith(".")
    refused(trust.keys, unsigned, "does not go with")
    # And with the algorithm spelled otherwise.
    header = base64.urlsafe_b64encode(
        json.dumps({"alg": "None", "typ": "JWT", **kid(trust.ec)}).encode()
    ).rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
    refused(trust.keys, f"{header.decode()}.{payload.decode()}.", "does not go with")
    # Or restricted to none by the issuer's own list: still no key verifies it.
    with pytest.raises(InvalidTokenError):
        verifier(trust.keys, algorithms=("none",)).verify(unsigned)


def hs256_with_public_key(public_pem: bytes, headers: dict[str, Any]) -> str:
    """An HS256 token keyed with the RSA public key's PEM, made by hand (PyJWT refuses to)."""

    def part(data: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=")

    signing_input = part({"alg": "HS256", "typ": "JWT", **headers}) + b"." + part(claims())
    signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


def test_algorithm_confusion_hs256_keyed_with_the_public_key_refused(trust: Trust) -> None:
    public_pem = trust.rsa.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    forged = hs256_with_public_key(public_pem, kid(trust.rsa))
    # The forgery is sound if the PEM were taken as an HMAC secret.
    signing_input, _, signature = forged.rpartition(".")
    expected = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == expected
    refused(trust.keys, forged, "does not go with")


def test_signingalgorithms_restrict_what_is_accepted(trust: Trust) -> None:
    only_rs256 = verifier(trust.keys, algorithms=("RS256",))
    with pytest.raises(InvalidTokenError, match="not accepted"):
        only_rs256.verify(token(trust.ec, "ES256", kid(trust.ec)))
    assert only_rs256.verify(token(trust.rsa, "RS256", kid(trust.rsa))).subject == "alice"
    with pytest.raises(InvalidTokenError, match="not accepted"):
        only_rs256.verify(token(trust.rsa, "PS256", kid(trust.rsa)))


def test_rsa_key_signing_with_an_ec_algorithm_name_refused(trust: Trust) -> None:
    # A token naming ES256 must be checked with an EC key, never the RSA key its kid names.
    text = token(trust.ec, "ES256", kid(trust.rsa))
    refused(trust.keys, text, "does not go with")


@pytest.mark.parametrize(
    "access",
    [
        {"type": "repository", "name": "a", "actions": ["pull"]},
        ["not an object"],
        [{"type": "repository", "actions": ["pull"]}],
        [{"name": "a", "actions": ["pull"]}],
        [{"type": "repository", "name": "a", "actions": "pull"}],
        [{"type": "repository", "name": "a", "actions": ["pull", 7]}],
        [{"type": "repository", "name": 5, "actions": ["pull"]}],
    ],
    ids=["not-a-list", "entry", "no-name", "no-type", "actions-str", "actions-int", "name-int"],
)
def test_malformed_access_claim_refused(trust: Trust, access: object) -> None:
    refused(trust.keys, token(trust.ec, "ES256", kid(trust.ec), access=access), "access")


def test_access_claim_becomes_the_claims_mapping(trust: Trust) -> None:
    access = [
        {"type": "repository", "name": "team/app", "actions": ["pull"]},
        {"type": "repository", "name": "localhost:5000/x", "actions": []},
        {"type": "repository", "name": "team/app", "actions": ["push", "pull"]},
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]
    verified = verifier(trust.keys).verify(token(trust.ec, "ES256", kid(trust.ec), access=access))
    assert verified.claims == {
        ("repository", "team/app"): frozenset({"pull", "push"}),
        ("repository", "localhost:5000/x"): frozenset(),
        ("registry", "catalog"): frozenset({"*"}),
    }
    no_access = token(trust.ec, "ES256", kid(trust.ec), access=None)
    assert verifier(trust.keys).verify(no_access).claims == {}


def test_token_longer_than_the_limit_refused(trust: Trust) -> None:
    fits = token(trust.ec, "ES256", kid(trust.ec), pad="x" * (MAX_TOKEN_LENGTH // 2))
    assert len(fits) < MAX_TOKEN_LENGTH
    assert verifier(trust.keys).verify(fits).subject == "alice"
    too_long = token(trust.ec, "ES256", kid(trust.ec), pad="x" * MAX_TOKEN_LENGTH)
    assert len(too_long) > MAX_TOKEN_LENGTH
    refused(trust.keys, too_long, "too long")


@pytest.mark.parametrize("text", ["", "not-a-token", "a.b.c", "...."])
def test_garbage_refused(trust: Trust, text: str) -> None:
    refused(trust.keys, text)


def test_verified_token_is_remembered(trust: Trust) -> None:
    checker = verifier(trust.keys)
    text = token(trust.ec, "ES256", kid(trust.ec))
    first = checker.verify(text)
    assert checker.verify(text) is first
    other = token(trust.ec, "ES256", kid(trust.ec), sub="bob")
    assert checker.verify(other) is not first


# --- x5c chains ---


@dataclass(frozen=True)
class Chain:
    leaf_key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate
    intermediate: x509.Certificate


def chain(
    trust: Trust,
    *,
    intermediate_ca: bool | None = True,
    leaf_expired: bool = False,
    intermediate_expired: bool = False,
) -> Chain:
    """leaf -> intermediate -> the bundle's root."""
    now = datetime.now(UTC)
    past = {"not_before": now - timedelta(days=30), "not_after": now - timedelta(days=1)}
    middle_key, leaf_key = ec_key(), ec_key()
    middle = certificate(
        middle_key,
        "Test Intermediate",
        issuer=trust.root,
        issuer_key=trust.root_key,
        ca=intermediate_ca,
        **(past if intermediate_expired else {}),
    )
    leaf = certificate(
        leaf_key,
        "token signer (leaf)",
        issuer=middle,
        issuer_key=middle_key,
        ca=False,
        **(past if leaf_expired else {}),
    )
    return Chain(leaf_key, leaf, middle)


def test_x5c_chain_ending_under_a_bundle_root_accepted(trust: Trust) -> None:
    good = chain(trust)
    text = token(good.leaf_key, "ES256", {"x5c": x5c(good.leaf, good.intermediate)})
    assert verifier(trust.keys).verify(text).subject == "alice"


def test_x5c_chain_including_the_bundle_root_accepted(trust: Trust) -> None:
    good = chain(trust)
    headers = {"x5c": x5c(good.leaf, good.intermediate, trust.root)}
    assert verifier(trust.keys).verify(token(good.leaf_key, "ES256", headers)).subject == "alice"


def test_x5c_token_must_be_signed_by_the_leaf(trust: Trust) -> None:
    good = chain(trust)
    headers = {"x5c": x5c(good.leaf, good.intermediate)}
    refused(trust.keys, token(ec_key(), "ES256", headers), "Signature")


def test_x5c_self_signed_outside_the_bundle_refused(trust: Trust) -> None:
    attacker = ec_key()
    own = certificate(attacker, "Test Token Root CA", ca=True)  # Even under the root's name.
    refused(trust.keys, token(attacker, "ES256", {"x5c": x5c(own)}), "rootcertbundle")


def test_x5c_takes_precedence_over_a_trusted_kid(trust: Trust) -> None:
    attacker = ec_key()
    own = certificate(attacker, "attacker", ca=True)
    headers = {"x5c": x5c(own), **kid(trust.ec)}
    refused(trust.keys, token(attacker, "ES256", headers), "rootcertbundle")


def test_x5c_under_a_fake_root_of_the_same_name_refused(trust: Trust) -> None:
    fake_root_key = ec_key()
    fake_root = certificate(fake_root_key, "Test Token Root CA", ca=True)
    leaf_key = ec_key()
    leaf = certificate(leaf_key, "leaf", issuer=fake_root, issuer_key=fake_root_key, ca=False)
    refused(trust.keys, token(leaf_key, "ES256", {"x5c": x5c(leaf)}), "rootcertbundle")
    refused(trust.keys, token(leaf_key, "ES256", {"x5c": x5c(leaf, fake_root)}), "rootcertbundle")


@pytest.mark.parametrize("intermediate_ca", [False, None], ids=["ca-false", "no-constraints"])
def test_x5c_intermediate_that_is_not_a_ca_refused(
    trust: Trust, intermediate_ca: bool | None
) -> None:
    bad = chain(trust, intermediate_ca=intermediate_ca)
    text = token(bad.leaf_key, "ES256", {"x5c": x5c(bad.leaf, bad.intermediate)})
    refused(trust.keys, text, "not a CA")


def test_x5c_leaf_alone_issued_by_a_non_ca_intermediate_refused(trust: Trust) -> None:
    bad = chain(trust, intermediate_ca=False)
    # Without the intermediate, the leaf does not end in the bundle either.
    refused(trust.keys, token(bad.leaf_key, "ES256", {"x5c": x5c(bad.leaf)}), "rootcertbundle")


@pytest.mark.parametrize("which", ["leaf", "intermediate"])
def test_x5c_expired_certificate_refused(trust: Trust, which: str) -> None:
    old = chain(trust, leaf_expired=which == "leaf", intermediate_expired=which == "intermediate")
    text = token(old.leaf_key, "ES256", {"x5c": x5c(old.leaf, old.intermediate)})
    refused(trust.keys, text, "expired")


def test_x5c_broken_chain_refused(trust: Trust) -> None:
    one, two = chain(trust), chain(trust)
    text = token(one.leaf_key, "ES256", {"x5c": x5c(one.leaf, two.intermediate)})
    refused(trust.keys, text, "broken")


@pytest.mark.parametrize(
    "value", [[], "not a list", ["!!!not base64!!!"], [base64.b64encode(b"junk").decode()]]
)
def test_x5c_malformed_refused(trust: Trust, value: object) -> None:
    refused(trust.keys, token(trust.ec, "ES256", {"x5c": value}), "x5c")


def test_x5c_chain_longer_than_the_limit_refused(trust: Trust) -> None:
    good = chain(trust)
    headers = {"x5c": x5c(good.leaf, *[good.intermediate] * 8)}
    refused(trust.keys, token(good.leaf_key, "ES256", headers), "1 to 8")
