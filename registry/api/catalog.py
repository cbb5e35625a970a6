"""``/v2/_catalog``: every repository, paged by ``catalog.maxentries`` like registry:2."""

from __future__ import annotations

from quart import Response

from .context import services
from .tags import paged


async def list_repositories() -> Response:
    registry = services()
    names = await registry.store.repositories()
    return paged("/v2/_catalog", "repositories", {}, names, registry.config.catalog_maxentries)
