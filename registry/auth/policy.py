"""Who may do what to which repository: the ``access`` section's rules, evaluated.

Permissions add up: a caller gets the union of the defaults and of every rule
that names them and matches the repository. There is no deny rule, so the
order of rules never matters, and signing in never takes a right away: what
anonymous callers may do, every signed-in user may do too (Docker sends its
credentials with every request once logged in). Without an ``access`` section the policy is
registry:2's: a signed-in user may do everything, an anonymous caller nothing.

Patterns: ``*`` matches within one path component, ``**`` across components
(``team/**`` also matches ``team`` itself), ``?`` one character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ..config import AccessRule, PolicyConfig
from .access import ACTIONS, CATALOG, REPOSITORY, Access

EVERYTHING = frozenset(ACTIONS)
NOTHING: frozenset[str] = frozenset()


def glob_regex(pattern: str) -> str:
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("/**", index) and index + 3 == len(pattern):
            parts.append("(?:/.*)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: re.Pattern[str]
    actions: frozenset[str]
    users: frozenset[str]
    groups: frozenset[str]
    anonymous: bool

    @classmethod
    def of(cls, rule: AccessRule) -> _Rule:
        pattern = "|".join(f"(?:{glob_regex(glob)})" for glob in rule.repositories)
        return cls(
            re.compile(pattern),
            rule.actions,
            frozenset(rule.users),
            frozenset(rule.groups),
            rule.anonymous,
        )

    def names(self, user: str | None, groups: frozenset[str]) -> bool:
        """Whether the rule applies; what anonymous callers may do, signed-in users may too."""
        if self.anonymous:
            return True
        if user is None:
            return False
        return user in self.users or "*" in self.users or not self.groups.isdisjoint(groups)


class Policy:
    """The rules, compiled once; answers are cached (names and users are few)."""

    def __init__(self, config: PolicyConfig | None) -> None:
        self.configured = config is not None
        config = config or PolicyConfig(authenticated=EVERYTHING)
        self._admins = frozenset(config.admins)
        self._anonymous = config.anonymous
        self._authenticated = config.authenticated
        self._rules = tuple(_Rule.of(rule) for rule in config.rules)
        membership: dict[str, set[str]] = {}
        for group, users in config.groups.items():
            for user in users:
                membership.setdefault(user, set()).add(group)
        self._groups = {user: frozenset(groups) for user, groups in membership.items()}
        self.actions = lru_cache(maxsize=4096)(self._actions)
        self.anonymous_pulls = "pull" in self._anonymous or any(
            rule.anonymous and "pull" in rule.actions for rule in self._rules
        )
        """Whether anonymous callers may pull something (then they may read the catalog)."""

    def _actions(self, user: str | None, repository: str) -> frozenset[str]:
        """The actions ``user`` (None: anonymous) may take on ``repository``."""
        if user is not None and user in self._admins:
            return EVERYTHING
        allowed = set(self._anonymous if user is None else self._anonymous | self._authenticated)
        groups = self._groups.get(user or "", NOTHING)
        for rule in self._rules:
            if rule.names(user, groups) and rule.pattern.fullmatch(repository):
                allowed |= rule.actions
        return frozenset(allowed)

    def allows(self, user: str | None, access: Access) -> bool:
        if access == CATALOG:
            return user is not None or self.anonymous_pulls
        if access.type != REPOSITORY:
            return False
        return access.action in self.actions(user, access.name)
