"""``/v2/``: the version check every client makes first."""

from __future__ import annotations

from quart import Response

from .responses import respond


async def check() -> Response:
    return respond(200, {"Content-Type": "application/json"}, b"{}")
