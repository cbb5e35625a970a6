"""Response builders that keep the headers the handler set (Quart would recompute some)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Mapping

from quart import Response


def respond(
    status: int,
    headers: Mapping[str, str],
    body: bytes | AsyncIterable[bytes] = b"",
) -> Response:
    """A response whose headers are exactly ``headers`` (a HEAD keeps its Content-Length)."""
    response = Response(body, status=status)
    if not body and "Content-Type" not in headers:
        del response.headers["Content-Type"]  # Nothing to describe.
    response.headers.update(headers)
    if isinstance(body, bytes) and "Content-Length" not in headers:
        response.headers["Content-Length"] = str(len(body))
    if not isinstance(body, bytes):
        response.timeout = None  # Streams take as long as they take.
    return response


def json_body(document: object) -> bytes:
    """Compact JSON with a final newline, byte for byte what registry:2 writes."""
    return json.dumps(document, separators=(",", ":")).encode() + b"\n"
