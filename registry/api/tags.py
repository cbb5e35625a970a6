"""``/v2/<name>/tags/list`` with ``n``/``last`` pagination and a ``Link`` to the next page."""

from __future__ import annotations

import re
from urllib.parse import urlencode

from quart import Response, request

from ..storage.catalog import page
from .context import services
from .repository import repository
from .responses import json_body, respond

#: ``n`` as Go's ``strconv.Atoi`` takes it: an optional sign and ASCII digits only.
_NUMBER_RE = re.compile(r"([+-]?)([0-9]+)")


def query_number(name: str) -> tuple[str, str] | None:
    """Query value ``name`` as (sign, digits without leading zeros); None if absent or no number.

    Never ``int()`` of the whole text: a client may send thousands of digits.
    """
    text = request.args.get(name)
    found = _NUMBER_RE.fullmatch(text) if text else None
    if found is None:
        return None
    sign, digits = found.groups()
    return sign, digits.lstrip("0")


def at_most(digits: str, limit: int) -> int:
    """The number ``digits`` spell, or ``limit`` if it is larger."""
    if len(digits) > len(str(limit)):
        return limit
    return min(int(digits or "0"), limit)


def tags_page_size(limit: int) -> int | None:
    """The page a client asked for with ``n``, clamped to ``tags.maxtags``; None for every tag.

    Larger is never an error: ``crane ls`` always asks for 1000, and a ``Link``
    leads to the rest. registry:2 2.8 ignores ``n`` here, so a negative or
    malformed one is ignored too, and lists every tag.
    """
    number = query_number("n")
    if number is None:
        return None
    sign, digits = number
    if sign == "-" and digits:
        return None
    return at_most(digits, limit)


def paged(
    path: str, key: str, extra: dict[str, object], names: list[str], n: int | None
) -> Response:
    """One page of ``names`` after ``last``, with registry:2's ``Link`` header when more follow."""
    last = request.args.get("last")
    chosen, more = page(names, last, n)
    headers = {"Content-Type": "application/json"}
    if more and chosen and n:
        query = urlencode({"last": chosen[-1], "n": n})
        headers["Link"] = f'<{services().config.http.prefix}{path}?{query}>; rel="next"'
    body = json_body({**extra, key: chosen})
    return respond(200, headers, body)


async def list_tags(name: str) -> Response:
    repo = repository(name)
    tags = await repo.manifests.tags()
    n = tags_page_size(services().config.tags_maxtags)
    return paged(f"/v2/{repo.name}/tags/list", "tags", {"name": repo.name}, tags, n)
