"""What a request needs, in the token spec's words: a resource type, a name, an action.

``repository:team/app:pull,push`` is how scopes travel in challenges and token
requests; :class:`Access` is one action of one resource.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

PULL, PUSH, DELETE = "pull", "push", "delete"
ACTIONS = (PULL, PUSH, DELETE)
REPOSITORY = "repository"
REGISTRY = "registry"
#: Longest scope string a token request may carry, and most scopes in one request.
MAX_SCOPE_LENGTH = 1024
MAX_SCOPES = 32


@dataclass(frozen=True, slots=True)
class Access:
    type: str
    name: str
    action: str


CATALOG = Access(REGISTRY, "catalog", "*")


@dataclass(frozen=True, slots=True)
class Need:
    """What a route needs of the caller before its handler runs."""

    required: tuple[Access, ...] = ()
    optional: tuple[Access, ...] = ()
    """Asked for in the challenge, not required: the source of a mount (without it, no mount)."""
    login: bool = False
    """A signed-in caller (or, with tokens, any valid token): ``GET /v2/``."""
    wanted: tuple[Access, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "wanted", self.required + self.optional)


def format_scope(accesses: Iterable[Access]) -> str:
    """``repository:a:pull,push repository:b:pull``: one entry per resource, in order,
    its actions in the usual order (pull, push, delete)."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for access in accesses:
        actions = grouped.setdefault((access.type, access.name), [])
        if access.action not in actions:
            actions.append(access.action)
    for actions in grouped.values():
        actions.sort(key=lambda action: ACTIONS.index(action) if action in ACTIONS else 3)
    return " ".join(
        f"{kind}:{name}:{','.join(actions)}" for (kind, name), actions in grouped.items()
    )


@dataclass(frozen=True, slots=True)
class Scope:
    """One requested scope: a resource and the actions asked for on it."""

    type: str
    name: str
    actions: tuple[str, ...]


def parse_scopes(texts: Iterable[str]) -> list[Scope]:
    """Scopes from token requests; each text may hold several, separated by spaces.

    The name may itself hold colons (``repository:host:5000/app:pull``): the
    type is before the first colon, the actions after the last. A class in
    parentheses (``repository(plugin)``) is dropped. Malformed entries are skipped,
    as the token spec has a service grant what it can.
    """
    scopes: list[Scope] = []
    for text in texts:
        for item in text[:MAX_SCOPE_LENGTH].split():
            kind, _, rest = item.partition(":")
            name, _, actions = rest.rpartition(":")
            kind = kind.split("(", 1)[0]
            if not kind or not name or not actions:
                continue
            wanted = tuple(dict.fromkeys(action for action in actions.split(",") if action))
            scopes.append(Scope(kind, name, wanted))
            if len(scopes) >= MAX_SCOPES:
                return scopes
    return scopes
