"""What an authenticated request may do, handed from the access guard to the handlers.

The guard checks what a route requires before any handler runs; a handler asks
the grant only for what it decides itself: whether a mount's source may be
read, which repositories the catalog shows. The grant travels in the ASGI
scope, which Quart's request and the native reads share.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, cast

from .access import PULL, REPOSITORY, Access
from .policy import Policy

_SCOPE_KEY = "registry.grant"
_USER_KEY = "registry.user"

#: A token's ``access`` claim: (type, name) -> actions, ``*`` meaning all.
Claims = Mapping[tuple[str, str], frozenset[str]]


@dataclass(frozen=True, slots=True)
class Grant:
    user: str | None
    """The signed-in user (a token's ``sub``); None for an anonymous caller."""
    policy: Policy | None
    """The ``access`` rules; None only for tokens from a service we take at its word."""
    claims: Claims | None = None
    """A token's ``access`` claim; None for Basic authentication, where the policy decides."""

    def allows(self, access: Access) -> bool:
        if self.claims is not None:
            actions = self.claims.get((access.type, access.name), frozenset())
            if access.action not in actions and "*" not in actions:
                return False
        return self.policy is None or self.policy.allows(self.user, access)

    def lists(self, repository: str) -> bool:
        """Whether the catalog shows ``repository`` (the caller may pull it, by the rules)."""
        return self.policy is None or self.policy.allows(
            self.user, Access(REPOSITORY, repository, PULL)
        )


def attach(scope: Mapping[str, Any], grant: Grant) -> None:
    cast(MutableMapping[str, Any], scope)[_SCOPE_KEY] = grant
    name(scope, grant.user)


def name(scope: Mapping[str, Any], user: str | None) -> None:
    """Who the caller is, for the access log (also when the request is refused)."""
    cast(MutableMapping[str, Any], scope)[_USER_KEY] = user


def user_of(scope: Mapping[str, Any]) -> str | None:
    user = scope.get(_USER_KEY)
    return user if isinstance(user, str) else None


def grant_of(scope: Mapping[str, Any]) -> Grant | None:
    """The request's grant; None when access control is off (or the guard did not run)."""
    grant = scope.get(_SCOPE_KEY)
    return grant if isinstance(grant, Grant) else None
