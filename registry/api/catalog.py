"""``/v2/_catalog``: every repository the caller may pull, paged like registry:2's."""

from __future__ import annotations

from quart import Response, request

from ..auth.grant import grant_of
from ..errors import ErrorCode, RegistryError
from .context import services
from .tags import paged, query_number

#: registry:2's page without ``n`` (at most ``catalog.maxentries``).
DEFAULT_ENTRIES = 100

#: The largest ``n`` Go's ``strconv.Atoi`` reads; beyond it registry:2 ignores ``n``.
_INT64_MAX = 2**63 - 1


def catalog_page_size(maxentries: int) -> int:
    """The page size registry:2 2.8 gives ``n``.

    More than ``catalog.maxentries`` is a 400; no number, a negative one or one
    too big for 64 bits is ignored (the default page).
    """
    default = min(DEFAULT_ENTRIES, maxentries)
    number = query_number("n")
    if number is None:
        return default
    sign, digits = number
    if len(digits) > len(str(_INT64_MAX)) or int(digits or "0") > _INT64_MAX:
        return default
    n = int(digits or "0")
    if sign == "-" and n:
        return default
    if n > maxentries:
        raise RegistryError(
            ErrorCode.PAGINATION_NUMBER_INVALID,
            f"n may be at most {maxentries} (catalog.maxentries)",
            detail={"n": n},
        )
    return n


async def list_repositories() -> Response:
    registry = services()
    n = catalog_page_size(registry.config.catalog_maxentries)
    names = await registry.store.repositories()
    grant = grant_of(request.scope)
    if grant is not None:
        names = [name for name in names if grant.lists(name)]
    return paged("/v2/_catalog", "repositories", {}, names, n)
