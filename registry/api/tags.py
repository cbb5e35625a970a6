"""``/v2/<name>/tags/list`` with ``n``/``last`` pagination and a ``Link`` to the next page.

Served natively (``native.py``), like manifest reads: listing tags is a small
GET that clients make on every pull of a tag and every ``crane ls``.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from ..storage import Store
from ..storage.catalog import page
from .native import Read, Reply
from .repository import open_repository
from .responses import json_body

#: ``n`` as Go's ``strconv.Atoi`` takes it: an optional sign and ASCII digits only.
_NUMBER_RE = re.compile(r"([+-]?)([0-9]+)")


def query_number(text: str | None) -> tuple[str, str] | None:
    """A query value as (sign, digits without leading zeros); None if absent or no number.

    Never ``int()`` of the whole text: a client may send thousands of digits.
    """
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


def tags_page_size(text: str | None, limit: int) -> int | None:
    """The page a client asked for with ``n``, clamped to ``tags.maxtags``; None for every tag.

    Larger is never an error: ``crane ls`` always asks for 1000, and a ``Link``
    leads to the rest. registry:2 2.8 ignores ``n`` here, so a negative or
    malformed one is ignored too, and lists every tag.
    """
    number = query_number(text)
    if number is None:
        return None
    sign, digits = number
    if sign == "-" and digits:
        return None
    return at_most(digits, limit)


def page_reply(
    read: Read, path: str, key: str, extra: dict[str, object], chosen: list[str], more: bool,
    n: int | None,
) -> Reply:  # fmt: skip
    """A page of names, with registry:2's ``Link`` header when more follow."""
    body = json_body({**extra, key: chosen})
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    if more and chosen and n:
        query = urlencode({"last": chosen[-1], "n": n})
        headers["Link"] = f'<{read.config.http.prefix}{path}?{query}>; rel="next"'
    return Reply(200, headers, body)


async def read_tags(store: Store, read: Read, name: str) -> Reply:
    repo = open_repository(store, name)
    tags = await repo.manifests.tags()
    n = tags_page_size(read.arg("n"), read.config.tags_maxtags)
    chosen, more = page(tags, read.arg("last"), n)
    return page_reply(
        read, f"/v2/{repo.name}/tags/list", "tags", {"name": repo.name}, chosen, more, n
    )
