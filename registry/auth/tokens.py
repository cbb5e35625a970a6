"""Bearer tokens as registry:2's ``auth.token`` checks them: signature, issuer, audience, time.

Only keys this registry was given are trusted: a ``kid`` from ``rootcertbundle``
or ``jwks``, or an ``x5c`` chain that ends in a certificate of the bundle. A
key the token carries in its own header (``jwk``) is never used: that is the
mistake of CVE-2025-24976, where anyone could sign a token with a key of their
own and have it accepted.
"""

from __future__ import annotations

import base64
import itertools
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from .grant import Claims
from .keys import TrustedKeys, algorithms_for

log = logging.getLogger(__name__)

#: registry:2's allowance for clock skew on ``exp`` and ``nbf``.
LEEWAY = 60
#: Longest token accepted, and most certificates in an ``x5c`` chain.
MAX_TOKEN_LENGTH = 16 * 1024
MAX_CHAIN = 8
#: Verified tokens remembered per process (a push reuses one token many times).
MAX_REMEMBERED = 2048


class InvalidTokenError(ValueError):
    """Why a token is refused; logged at debug, never sent (the client gets invalid_token)."""


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    subject: str
    claims: Claims
    expires: float


def _access_claim(value: object) -> Claims:
    if value is None:
        return {}
    if not isinstance(value, list):
        raise InvalidTokenError("the access claim is not a list")
    claims: dict[tuple[str, str], frozenset[str]] = {}
    for entry in value:
        if not isinstance(entry, dict):
            raise InvalidTokenError("an access entry is not an object")
        kind, name, actions = entry.get("type"), entry.get("name"), entry.get("actions")
        if not isinstance(kind, str) or not isinstance(name, str):
            raise InvalidTokenError("an access entry has no type or name")
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            raise InvalidTokenError("an access entry's actions are not a list of strings")
        claims[(kind, name)] = claims.get((kind, name), frozenset()) | frozenset(actions)
    return claims


class TokenVerifier:
    def __init__(
        self,
        keys: TrustedKeys,
        *,
        issuer: str,
        service: str,
        algorithms: tuple[str, ...] = (),
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.service = service
        self.algorithms = frozenset(algorithms) if algorithms else None
        self._verified: OrderedDict[str, VerifiedToken] = OrderedDict()

    def verify(self, token: str) -> VerifiedToken:
        remembered = self._verified.get(token)
        now = time.time()
        if remembered is not None and now <= remembered.expires + LEEWAY:
            self._verified.move_to_end(token)
            return remembered
        verified = self._verify(token)
        self._verified[token] = verified
        while len(self._verified) > MAX_REMEMBERED:
            self._verified.popitem(last=False)
        return verified

    def _verify(self, token: str) -> VerifiedToken:
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidTokenError("token too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise InvalidTokenError(f"malformed token: {error}") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or (
            self.algorithms is not None and algorithm not in self.algorithms
        ):
            raise InvalidTokenError(f"signing algorithm {algorithm!r} is not accepted")
        key = self._signing_key(header)
        if algorithm not in algorithms_for(key):
            raise InvalidTokenError(f"algorithm {algorithm} does not go with the signing key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.service,
                issuer=self.issuer,
                leeway=LEEWAY,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as error:
            raise InvalidTokenError(str(error)) from None
        subject = claims.get("sub", "")
        if not isinstance(subject, str):
            raise InvalidTokenError("the sub claim is not a string")
        return VerifiedToken(subject, _access_claim(claims.get("access")), float(claims["exp"]))

    def _signing_key(self, header: dict[str, Any]) -> Any:
        """The trusted key that must have signed this token; ``jwk`` is ignored on purpose."""
        chain = header.get("x5c")
        if chain is not None:
            return self._chain_key(chain)
        kid = header.get("kid")
        if isinstance(kid, str) and kid:
            key = self.keys.by_id.get(kid)
            if key is None:
                raise InvalidTokenError(f"token signed by an untrusted key (kid {kid!r})")
            return key
        raise InvalidTokenError("token names no trusted key (no kid, no x5c)")

    def _chain_key(self, chain: object) -> Any:
        """The leaf's key, once the chain is shown to end in a certificate of the bundle."""
        if not isinstance(chain, list) or not 0 < len(chain) <= MAX_CHAIN:
            raise InvalidTokenError("x5c is not a list of 1 to 8 certificates")
        try:
            certificates = [
                x509.load_der_x509_certificate(base64.b64decode(item, validate=True))
                for item in chain
            ]
        except (ValueError, TypeError):
            raise InvalidTokenError("x5c holds something that is not a certificate") from None
        now = datetime.now(UTC)
        for certificate in certificates:
            if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
                raise InvalidTokenError(
                    "a certificate of the x5c chain is expired or not yet valid"
                )
        for child, parent in itertools.pairwise(certificates):
            _check_issued(child, parent)
        last = certificates[-1]
        for root in self.keys.roots:
            if root == last:
                return certificates[0].public_key()
            try:
                _check_issued(last, root)
            except InvalidTokenError:
                continue
            if root.not_valid_before_utc <= now <= root.not_valid_after_utc:
                return certificates[0].public_key()
        raise InvalidTokenError("the x5c chain does not end in a certificate of rootcertbundle")


def _check_issued(child: x509.Certificate, parent: x509.Certificate) -> None:
    try:
        constraints = parent.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise InvalidTokenError("an x5c certificate is signed by a certificate that is not a CA")
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        raise InvalidTokenError(
            "the x5c chain is broken: a certificate is not signed by the next"
        ) from None
