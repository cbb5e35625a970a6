"""The two ways registry:2 authenticates, turning a request and what it needs into a grant.

Each raises the spec's errors itself: 401 UNAUTHORIZED with a challenge when
the caller is anonymous or its credentials are wrong, 403 DENIED when a
signed-in caller lacks the right, 429 TOOMANYREQUESTS while locked out.
"""

from __future__ import annotations

import logging
import re
from typing import Protocol
from urllib.parse import urlsplit

from ..config import TokenAuth
from ..errors import ErrorCode, RegistryError
from .access import Access, Need, format_scope
from .grant import Grant
from .logins import Caller, Logins, parse_basic
from .policy import Policy
from .tokens import InvalidTokenError, TokenVerifier

log = logging.getLogger(__name__)

_HOST_RE = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?")


class AccessController(Protocol):
    async def authorize(self, caller: Caller, need: Need) -> Grant:
        """The caller's grant, if it has what ``need`` requires; else a RegistryError."""
        ...


def quoted(value: str) -> str:
    """An HTTP quoted-string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _detail(accesses: tuple[Access, ...] | list[Access]) -> list[dict[str, str]]:
    """registry:2's error detail: the access the request needed."""
    return [{"Type": a.type, "Name": a.name, "Action": a.action} for a in accesses]


def unauthorized(
    challenge: str, need: Need, message: str = "authentication required"
) -> RegistryError:
    return RegistryError(
        ErrorCode.UNAUTHORIZED,
        message,
        detail=_detail(need.required),
        headers={"WWW-Authenticate": challenge},
    )


class DeniedError(RegistryError):
    """403 DENIED for a signed-in caller, who the access log still names."""

    def __init__(self, user: str, missing: list[Access], challenge: str | None = None) -> None:
        super().__init__(
            ErrorCode.DENIED,
            detail=_detail(missing),
            headers={"WWW-Authenticate": challenge} if challenge else None,
        )
        self.user = user


#: An empty user name and password, what containers/image (podman, skopeo, buildah, CRI-O)
#: answers a Basic challenge with when it has no credentials: an anonymous caller.
NO_CREDENTIALS = "Og=="  # base64 of ":"


class BasicAccess:
    """``auth.htpasswd``: Basic credentials checked against the file, then the policy."""

    def __init__(self, realm: str, logins: Logins, policy: Policy) -> None:
        self.challenge = f"Basic realm={quoted(realm)}"
        self.logins = logins
        self.policy = policy

    async def authorize(self, caller: Caller, need: Need) -> Grant:
        user = None
        value = caller.credentials("Basic")
        if caller.authorization is not None and value != NO_CREDENTIALS:
            pair = parse_basic(value) if value is not None else None
            if pair is None:
                raise unauthorized(self.challenge, need, "expected Basic credentials")
            if not await self.logins.check(caller.address, *pair):
                raise unauthorized(self.challenge, need, "invalid username or password")
            user = pair[0]
        grant = Grant(user, self.policy)
        missing = [access for access in need.required if not grant.allows(access)]
        if missing or need.login:
            if user is None:
                raise unauthorized(self.challenge, need)
            if missing:
                raise DeniedError(user, missing)
        return grant


class TokenAccess:
    """``auth.token``: a bearer JWT from a trusted issuer, its ``access`` claim, then the policy."""

    def __init__(self, config: TokenAuth, verifier: TokenVerifier, policy: Policy | None) -> None:
        self.config = config
        self.verifier = verifier
        self.policy = policy

    def realm(self, caller: Caller) -> str:
        """The configured realm, or with ``autoredirect`` the one on the host the client used."""
        if not self.config.autoredirect or not caller.host or not _HOST_RE.fullmatch(caller.host):
            return self.config.realm
        scheme = caller.forwarded_proto or caller.scheme
        if scheme not in ("http", "https"):
            scheme = "https"
        return f"{scheme}://{caller.host}{self.config.autoredirectpath}"

    def challenge(self, caller: Caller, need: Need, error: str | None = None) -> str:
        parts = [f"realm={quoted(self.realm(caller))}", f"service={quoted(self.config.service)}"]
        if need.wanted:
            parts.append(f"scope={quoted(format_scope(need.wanted))}")
        if error:
            parts.append(f"error={quoted(error)}")
        return "Bearer " + ",".join(parts)

    @property
    def token_path(self) -> str:
        """Where the token service answers: the realm's path (or the autoredirect path)."""
        if self.config.autoredirect:
            return self.config.autoredirectpath
        return urlsplit(self.config.realm).path or "/"

    async def authorize(self, caller: Caller, need: Need) -> Grant:
        token = caller.credentials("Bearer")
        if token is None:
            raise unauthorized(self.challenge(caller, need), need)
        try:
            verified = self.verifier.verify(token)
        except InvalidTokenError as error:
            log.info("token refused from %s: %s", caller.address, error)
            raise unauthorized(
                self.challenge(caller, need, "invalid_token"), need, "invalid token"
            ) from None
        grant = Grant(verified.subject or None, self.policy, verified.claims)
        missing = [access for access in need.required if not grant.allows(access)]
        if missing:
            challenge = self.challenge(caller, need, "insufficient_scope")
            if grant.user is None:
                raise unauthorized(challenge, need)
            raise DeniedError(grant.user, missing, challenge)
        return grant
