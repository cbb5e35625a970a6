"""The built-in token service: Docker's token protocol, answered by the registry itself.

``GET <realm>?service=&scope=`` with Basic credentials (or none, for an
anonymous token), and the OAuth2 ``POST`` form (``grant_type=password`` or
``refresh_token``). A token grants what was asked, cut down to what the
``access`` rules allow the user; asking for more is never an error, the token
simply carries less. Users are those of an htpasswd file.

Refresh tokens (``offline_token=true`` on GET, ``access_type=offline`` on POST;
Docker asks for one at ``docker login`` and keeps it instead of the password)
are signed with the same key for another audience, so the registry never takes
one as an access token, and carry a fingerprint of the user's password hash,
so changing the password or removing the user ends them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from quart import Response, request

from ..config import TokenAuth, TokenService
from ..errors import ErrorCode, RegistryError
from .access import ACTIONS, CATALOG, REGISTRY, REPOSITORY, Access, parse_scopes
from .controllers import quoted
from .grant import name
from .keys import KeyFileError, libtrust_key_id
from .logins import Caller, Logins, parse_basic
from .policy import Policy
from .users import UserFile

log = logging.getLogger(__name__)

#: Largest POST form read.
MAX_FORM = 64 * 1024
_REFRESH = "refresh"


def _algorithm(key: Any) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {256: "ES256", 384: "ES384", 521: "ES512"}[key.curve.key_size]
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise KeyFileError(f"a {type(key).__name__} cannot sign tokens")


def load_signing_key(path: str) -> Any:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise KeyFileError(f"{path}: cannot read: {error.strerror}") from None
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key ({error})") from None
    try:
        _algorithm(key)
    except (KeyFileError, KeyError):
        raise KeyFileError(
            f"{path}: an {type(key).__name__}; tokens are signed with EC, RSA or Ed25519 keys"
        ) from None
    return key


def _fingerprint(hashed: str) -> str:
    return hashlib.sha256(hashed.encode()).hexdigest()[:32]


class _RefusedError(Exception):
    """A token request refused: the registry's error body and OAuth2's, with one status."""

    def __init__(self, status: int, code: ErrorCode, message: str, oauth_error: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.oauth_error = oauth_error


class TokenIssuer:
    def __init__(
        self,
        service: TokenService,
        token: TokenAuth,
        users: UserFile,
        logins: Logins,
        policy: Policy,
    ) -> None:
        self.config = service
        self.token = token
        self.users = users
        self.logins = logins
        self.policy = policy
        self.key = load_signing_key(service.key)
        self.algorithm = _algorithm(self.key)
        self.kid = libtrust_key_id(self.key.public_key())

    # --- what a token grants ---

    def granted(self, user: str | None, scopes: Iterable[str]) -> list[dict[str, Any]]:
        """The ``access`` claim: what was asked, as far as the rules allow ``user``."""
        claim: list[dict[str, Any]] = []
        for scope in parse_scopes(scopes):
            if scope.type == REPOSITORY:
                asked = ACTIONS if "*" in scope.actions else scope.actions
                actions = [
                    action
                    for action in asked
                    if action in ACTIONS
                    and self.policy.allows(user, Access(REPOSITORY, scope.name, action))
                ]
            elif (scope.type, scope.name) == (REGISTRY, "catalog") and "*" in scope.actions:
                actions = ["*"] if self.policy.allows(user, CATALOG) else []
            else:
                actions = []
            claim.append({"type": scope.type, "name": scope.name, "actions": actions})
        return claim

    def _sign(self, claims: Mapping[str, Any]) -> str:
        headers = {"kid": self.kid, "typ": "JWT"}
        return jwt.encode(dict(claims), self.key, algorithm=self.algorithm, headers=headers)

    def access_token(self, user: str | None, scopes: Iterable[str]) -> dict[str, Any]:
        now = int(time.time())
        expires = int(self.config.expiration)
        access = self.granted(user, scopes)
        claims = {
            "iss": self.token.issuer,
            "sub": user or "",
            "aud": self.token.service,
            "exp": now + expires,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "access": access,
        }
        token = self._sign(claims)
        issued = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        granted = [f"{a['type']}:{a['name']}:{','.join(a['actions']) or '-'}" for a in access]
        log.info("token for %s: %s", user or "anonymous", " ".join(granted) or "no scope")
        return {
            "token": token,
            "access_token": token,
            "expires_in": expires,
            "issued_at": issued,
        }

    def refresh_token(self, user: str) -> str:
        now = int(time.time())
        return self._sign(
            {
                "iss": self.token.issuer,
                "sub": user,
                "aud": f"{self.token.service} {_REFRESH}",
                "exp": now + int(self.config.refreshexpiration),
                "iat": now,
                "jti": secrets.token_urlsafe(16),
                "pwd": _fingerprint(self.users.entry(user) or ""),
            }
        )

    def refreshed_user(self, refresh_token: str) -> str:
        """The user a refresh token stands for, while their password is unchanged."""
        try:
            claims = jwt.decode(
                refresh_token,
                self.key.public_key(),
                algorithms=[self.algorithm],
                audience=f"{self.token.service} {_REFRESH}",
                issuer=self.token.issuer,
                options={"require": ["exp", "sub", "pwd"]},
            )
        except jwt.PyJWTError as error:
            raise _RefusedError(
                401, ErrorCode.UNAUTHORIZED, "invalid refresh token", "invalid_grant"
            ) from error
        user = claims["sub"]
        hashed = self.users.entry(user) if isinstance(user, str) else None
        if hashed is None or not secrets.compare_digest(str(claims["pwd"]), _fingerprint(hashed)):
            raise _RefusedError(
                401, ErrorCode.UNAUTHORIZED, "refresh token no longer valid", "invalid_grant"
            )
        return str(user)

    # --- HTTP ---

    def _check_service(self, service: str | None) -> None:
        if service is not None and service != self.token.service:
            raise _RefusedError(
                400, ErrorCode.UNSUPPORTED, f"unknown service {service!r}", "invalid_request"
            )

    async def _login(self, caller: Caller, user: str, password: str) -> str:
        if not await self.logins.check(caller.address, user, password):
            raise _RefusedError(
                401, ErrorCode.UNAUTHORIZED, "incorrect username or password", "invalid_grant"
            )
        return user

    async def handle(self) -> Response:
        caller = Caller.of(request.scope)
        user: str | None
        try:
            if request.method == "POST":
                user, document = await self._post(caller)
            else:
                user, document = await self._get(caller)
        except _RefusedError as refused:
            return self._refusal(refused)
        name(request.scope, user)  # The access log names who got the token.
        body = json.dumps(document).encode()
        return Response(body, 200, self._headers())

    async def _get(self, caller: Caller) -> tuple[str | None, dict[str, Any]]:
        args = request.args
        self._check_service(args.get("service"))
        user = None
        if caller.authorization is not None:
            value = caller.credentials("Basic")
            pair = parse_basic(value) if value is not None else None
            if pair is None:
                raise _RefusedError(
                    401, ErrorCode.UNAUTHORIZED, "expected Basic credentials", "invalid_request"
                )
            user = await self._login(caller, *pair)
        document = self.access_token(user, args.getlist("scope"))
        if user is not None and args.get("offline_token") == "true":
            document["refresh_token"] = self.refresh_token(user)
        return user, document

    async def _post(self, caller: Caller) -> tuple[str, dict[str, Any]]:
        raw = bytearray()
        async for chunk in request.body:
            raw += chunk
            if len(raw) > MAX_FORM:
                raise _RefusedError(413, ErrorCode.UNSUPPORTED, "form too large", "invalid_request")
        form = parse_qs(raw.decode("utf-8", "replace"))

        def field(name: str) -> str | None:
            values = form.get(name)
            return values[0] if values else None

        self._check_service(field("service"))
        grant_type = field("grant_type")
        if grant_type == "password":
            user = await self._login(caller, field("username") or "", field("password") or "")
        elif grant_type == "refresh_token":
            user = self.refreshed_user(field("refresh_token") or "")
        else:
            raise _RefusedError(
                400,
                ErrorCode.UNSUPPORTED,
                "grant_type must be password or refresh_token",
                "unsupported_grant_type",
            )
        scopes = form.get("scope", [])
        document = self.access_token(user, scopes)
        document.pop("token")
        document["scope"] = " ".join(scopes)
        if field("access_type") == "offline":
            document["refresh_token"] = self.refresh_token(user)
        return user, document

    def _headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "Cache-Control": "no-store"}

    def _refusal(self, refused: _RefusedError) -> Response:
        error = RegistryError(refused.code, refused.message)
        document = {
            "errors": [error.to_json()],
            "error": refused.oauth_error,
            "error_description": refused.message,
        }
        headers = self._headers()
        if refused.status == 401:
            headers["WWW-Authenticate"] = f"Basic realm={quoted(self.token.service)}"
        return Response(json.dumps(document).encode(), refused.status, headers)
