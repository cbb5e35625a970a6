"""Repository names, tags and digests: the grammar every path is built from.

Everything that reaches storage has matched one of these patterns first, so no
client-chosen string can name a file outside the storage root.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

# Built from named parts, as the reference grammar is:
#   path-component := alpha-numeric (separator alpha-numeric)*
#   separator      := /[_.]|__|[-]+/
ALPHA_NUMERIC = r"[a-z0-9]+"
SEPARATOR = r"(?:[._]|__|-+)"
PATH_COMPONENT = rf"{ALPHA_NUMERIC}(?:{SEPARATOR}{ALPHA_NUMERIC})*"
NAME_PATTERN = rf"{PATH_COMPONENT}(?:/{PATH_COMPONENT})*"
TAG_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"

NAME_RE = re.compile(NAME_PATTERN)
TAG_RE = re.compile(TAG_PATTERN)
DIGEST_RE = re.compile(r"([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")

#: registry:2 refuses repository names of 256 characters or more.
NAME_MAX_LENGTH = 255

#: Algorithms we can verify, with the length of their hex encoding.
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX_RE = re.compile(r"[a-f0-9]+")


class InvalidReferenceError(ValueError):
    """A name, tag or digest that does not match the spec's grammar."""


@dataclass(frozen=True, slots=True)
class Digest:
    """A content digest such as ``sha256:<64 hex>``, checked on construction."""

    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, value: str) -> Digest:
        match = DIGEST_RE.fullmatch(value)
        if match is None:
            raise InvalidReferenceError(f"invalid digest {value!r}")
        algorithm, hex_part = match.groups()
        length = ALGORITHMS.get(algorithm)
        if length is None:
            raise InvalidReferenceError(f"unsupported digest algorithm {algorithm!r}")
        if len(hex_part) != length or _HEX_RE.fullmatch(hex_part) is None:
            raise InvalidReferenceError(f"invalid {algorithm} digest {value!r}")
        return cls(algorithm, hex_part)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())


def is_digest(reference: str) -> bool:
    """Tell a digest reference from a tag (tags cannot contain ``:``)."""
    return ":" in reference


def validate_name(name: str) -> str:
    if len(name) > NAME_MAX_LENGTH or NAME_RE.fullmatch(name) is None:
        raise InvalidReferenceError(f"invalid repository name {name!r}")
    return name


def validate_tag(tag: str) -> str:
    if TAG_RE.fullmatch(tag) is None:
        raise InvalidReferenceError(f"invalid tag {tag!r}")
    return tag
