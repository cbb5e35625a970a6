"""Reading an upstream's answers within bounds: the upstream controls their size."""

from __future__ import annotations

import httpx

from .errors import UpstreamInvalidError


async def read_bounded(response: httpx.Response, limit: int, what: str) -> bytes:
    """The whole (decoded) body, refused past ``limit`` bytes before it is all read."""
    length = response.headers.get("content-length", "")
    if length.isdigit() and len(length) < 20 and int(length) > limit:
        raise UpstreamInvalidError(f"the upstream's {what} is larger than {limit} bytes")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise UpstreamInvalidError(f"the upstream's {what} is larger than {limit} bytes")
    return bytes(body)
