"""``WWW-Authenticate`` challenges, as registries send them (RFC 9110, 11.6.1)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

#: Longer challenges are not read: the upstream controls the header.
MAX_CHALLENGE = 4096
_SCHEME_RE = re.compile(r"\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)")
_PARAM_RE = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s"]*))\s*,?')


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str
    """Lower-case: ``bearer`` or ``basic`` are the ones followed."""
    params: Mapping[str, str] = field(default_factory=dict)


def parse_challenge(header: str | None) -> Challenge | None:
    """The first challenge of the header, or None when there is none that can be read."""
    if not header or len(header) > MAX_CHALLENGE:
        return None
    found = _SCHEME_RE.match(header)
    if found is None:
        return None
    params: dict[str, str] = {}
    position = found.end()
    while position < len(header):
        param = _PARAM_RE.match(header, position)
        if param is None or param.end() == position:
            break
        quoted, bare = param.group(2), param.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare or ""
        params.setdefault(param.group(1).lower(), value)
        position = param.end()
    return Challenge(found.group(1).lower(), params)
