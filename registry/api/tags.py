"""``/v2/<name>/tags/list`` with ``n``/``last`` pagination and a ``Link`` to the next page."""

from __future__ import annotations

from urllib.parse import urlencode

from quart import Response, request

from ..errors import ErrorCode, RegistryError
from ..storage.catalog import page
from .context import services
from .repository import repository
from .responses import json_body, respond


def page_size(default: int | None) -> int | None:
    """The ``n`` a client asked for, bounded by ``catalog.maxentries`` as registry:2 does."""
    limit = services().config.catalog_maxentries
    text = request.args.get("n")
    if text is None or text == "":
        return default
    if not text.isdigit():
        raise RegistryError(ErrorCode.PAGINATION_NUMBER_INVALID, detail={"n": text})
    n = int(text)
    if n > limit:
        raise RegistryError(
            ErrorCode.PAGINATION_NUMBER_INVALID,
            f"n may be at most {limit} (catalog.maxentries)",
            detail={"n": n, "max": limit},
        )
    return n


def paged(
    path: str, key: str, extra: dict[str, object], names: list[str], default: int | None
) -> Response:
    """One page of ``names`` as JSON, with registry:2's ``Link`` header when more follow."""
    n = page_size(default)
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
    return paged(f"/v2/{repo.name}/tags/list", "tags", {"name": repo.name}, tags, None)
