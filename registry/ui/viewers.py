"""Who is looking at the pages, and what they may see and do.

The pages ask the same policy as the API (``auth/policy.py``): a repository a
viewer may not pull is not listed, a delete button appears only with the delete
right. Sign-in checks passwords where the API does (htpasswd, or the built-in
token service's users), with the same throttle; a browser session is a signed
cookie, so any worker (or instance, with a shared ``http.secret``) reads it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..auth import AccessControl
from ..auth.access import ACTIONS, PULL
from ..auth.logins import Logins
from ..auth.policy import Policy

#: The session cookie's name, and how long a sign-in lasts.
COOKIE = "registry_session"
SESSION_SECONDS = 12 * 3600
#: Longest user name or password a sign-in form may carry.
MAX_CREDENTIAL = 1024

EVERYTHING = frozenset(ACTIONS)
NOTHING: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Session:
    user: str | None
    csrf: str

    @classmethod
    def new(cls, user: str | None = None) -> Session:
        return cls(user, secrets.token_urlsafe(24))


class Sessions:
    """Session cookies signed (not encrypted: they hold a user name and a CSRF token)."""

    def __init__(self, secret: bytes) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="registry.ui.session")

    def dumps(self, session: Session) -> str:
        return str(self._serializer.dumps({"u": session.user, "c": session.csrf}))

    def loads(self, value: str | None) -> Session | None:
        if not value or len(value) > 4096:
            return None
        try:
            data = self._serializer.loads(value, max_age=SESSION_SECONDS)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        user, csrf = data.get("u"), data.get("c")
        if not isinstance(csrf, str) or not (user is None or isinstance(user, str)):
            return None
        return Session(user, csrf)


class Viewers:
    """Access control as the pages see it."""

    def __init__(self, access: AccessControl | None) -> None:
        self.enabled = access is not None
        self.logins: Logins | None = None
        self.policy: Policy | None = None
        if access is not None:
            issuer = access.issuer
            holder = issuer if issuer is not None else access.controller
            self.logins = getattr(holder, "logins", None)
            self.policy = getattr(holder, "policy", None) or getattr(
                access.controller, "policy", None
            )

    @property
    def can_sign_in(self) -> bool:
        """Whether the registry checks passwords itself (not with an outside token service)."""
        return self.logins is not None

    async def sign_in(self, address: str, user: str, password: str) -> bool:
        """Whether the password is right; raises the throttle's 429 while locked out."""
        if self.logins is None or not user or len(user) > MAX_CREDENTIAL:
            return False
        if len(password) > MAX_CREDENTIAL:
            return False
        return await self.logins.check(address, user, password)

    def known(self, user: str | None) -> bool:
        """Whether a session's user still exists (a removed user's cookie stops working)."""
        if user is None:
            return True
        return self.logins is not None and self.logins.users.entry(user) is not None

    def actions(self, user: str | None, name: str) -> frozenset[str]:
        """What the policy lets ``user`` do to ``name`` (whether the registry deletes at
        all is the pages' question)."""
        if not self.enabled:
            return EVERYTHING
        if self.policy is None:
            return NOTHING
        return self.policy.actions(user, name)

    def may_pull(self, user: str | None, name: str) -> bool:
        return PULL in self.actions(user, name)
