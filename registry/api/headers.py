"""Parsing of the headers and query values the API reads, and the URLs it writes."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ErrorCode, RegistryError

# Numbers of at most 19 digits (every offset a file can have): longer ones are not
# byte positions, and Python refuses to convert those beyond 4300 digits at all.
_RANGE_RE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")
_CONTENT_RANGE_RE = re.compile(r"(?:bytes[ =])?(\d{1,19})-(\d{1,19})(?:/(?:\d{1,19}|\*))?")


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int
    """Inclusive."""

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """A request ``Range`` against a blob of ``size`` bytes; None means the whole blob.

    One range only (clients never ask for more); an unsatisfiable one is a 416.
    """
    if header is None:
        return None
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None or match.group(0) == "bytes=-":
        return None  # Not a byte range we understand: serve the whole blob (RFC 9110).
    first, last = match.groups()
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            return None
    else:
        suffix = int(last)
        if suffix == 0:
            raise range_not_satisfiable(size)
        start, end = max(0, size - suffix), size - 1
    if start >= size:
        raise range_not_satisfiable(size)
    return ByteRange(start, end)


def range_not_satisfiable(size: int) -> RegistryError:
    return RegistryError(
        ErrorCode.RANGE_INVALID,
        "requested range not satisfiable",
        detail={"size": size},
        headers={"Content-Range": f"bytes */{size}"},
    )


def parse_content_range(header: str | None) -> ByteRange | None:
    """An upload chunk's ``Content-Range: <start>-<end>`` (inclusive both ends)."""
    if header is None or not header.strip():
        return None
    match = _CONTENT_RANGE_RE.fullmatch(header.strip())
    if match is None:
        raise RegistryError(
            ErrorCode.RANGE_INVALID,
            "Content-Range must be <start>-<end>",
            detail={"Content-Range": header},
        )
    start, end = int(match.group(1)), int(match.group(2))
    if end < start:
        raise RegistryError(
            ErrorCode.RANGE_INVALID,
            "Content-Range ends before it starts",
            detail={"Content-Range": header},
        )
    return ByteRange(start, end)


def parse_content_length(header: str | None) -> int | None:
    if header is None:
        return None
    if not header.strip().isdigit() or len(header.strip()) > 19:
        raise RegistryError(
            ErrorCode.SIZE_INVALID,
            "Content-Length is not a number",
            detail={"Content-Length": header},
        )
    return int(header)


def upload_range(size: int) -> str:
    """registry:2's ``Range`` of an upload: the bytes received, ``0-0`` when none."""
    return f"0-{max(size - 1, 0)}"
