"""``/v2/_catalog``: every repository the caller may pull, paged like registry:2's."""

from __future__ import annotations

from ..errors import ErrorCode, RegistryError
from ..storage import Store
from .native import Read, Reply
from .tags import page_reply, query_number

#: registry:2's page without ``n`` (at most ``catalog.maxentries``).
DEFAULT_ENTRIES = 100

#: The largest ``n`` Go's ``strconv.Atoi`` reads; beyond it registry:2 ignores ``n``.
_INT64_MAX = 2**63 - 1


def catalog_page_size(text: str | None, maxentries: int) -> int:
    """The page size registry:2 2.8 gives ``n``.

    More than ``catalog.maxentries`` is a 400; no number, a negative one or one
    too big for 64 bits is ignored (the default page).
    """
    default = min(DEFAULT_ENTRIES, maxentries)
    number = query_number(text)
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


async def read_catalog(store: Store, read: Read) -> Reply:
    """Served natively from the index (``storage/catalog_index.py``): what the caller may
    pull, after ``last``."""
    n = catalog_page_size(read.arg("n"), read.config.catalog_maxentries)
    keep = read.grant.lists if read.grant is not None else _everything
    names, more = await store.catalog.page(read.arg("last"), n, keep)
    return page_reply(read, "/v2/_catalog", "repositories", {}, names, more, n)


def _everything(name: str) -> bool:
    return True
