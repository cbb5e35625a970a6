"""A request's credentials, and the one place a user name and password are checked.

Both Basic authentication at the registry and the token service's logins come
here, so both share the delay after a failure and the per-client lockout.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .throttle import LoginThrottle
from .users import UserFile

log = logging.getLogger(__name__)

#: Longest Authorization header read; a token or credentials beyond it are refused.
MAX_AUTHORIZATION = 16 * 1024


@dataclass(frozen=True, slots=True)
class Caller:
    """What access control reads of a request, from the ASGI scope."""

    authorization: str | None
    address: str
    host: str | None
    scheme: str
    forwarded_proto: str | None = None

    @classmethod
    def of(cls, scope: Mapping[str, Any]) -> Caller:
        authorization = host = forwarded = None
        headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", ())
        for name, value in headers:
            if name == b"authorization":
                authorization = value[: MAX_AUTHORIZATION + 1].decode("latin-1")
            elif name == b"host":
                host = value.decode("latin-1")
            elif name == b"x-forwarded-proto":
                forwarded = value.decode("latin-1").split(",")[0].strip()
        client = scope.get("client")
        return cls(
            authorization=authorization,
            address=client[0] if client else "-",
            host=host,
            scheme=scope.get("scheme", "http"),
            forwarded_proto=forwarded,
        )

    def credentials(self, scheme: str) -> str | None:
        """The value after ``scheme`` (``Basic``, ``Bearer``); None if absent or another scheme."""
        if self.authorization is None or len(self.authorization) > MAX_AUTHORIZATION:
            return None
        given, _, value = self.authorization.strip().partition(" ")
        return value.strip() if given.lower() == scheme.lower() and value.strip() else None


def parse_basic(value: str) -> tuple[str, str] | None:
    """``user:password`` from a Basic credential; None when it is not one."""
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, separator, password = decoded.partition(":")
    if not separator or not user:
        return None
    return user, password


class Logins:
    def __init__(self, users: UserFile, throttle: LoginThrottle) -> None:
        self.users = users
        self.throttle = throttle

    async def check(self, address: str, user: str, password: str) -> bool:
        """Whether the password is right; a locked-out client gets TOOMANYREQUESTS instead.

        A failure is answered only after the configured delay, and counted.
        """
        self.throttle.check(address)
        if await self.users.verify(user, password):
            self.throttle.succeeded(address)
            return True
        self.throttle.failed(address)
        log.warning("failed login as %r from %s", user, address)
        await asyncio.sleep(self.throttle.limits.delay)
        return False
