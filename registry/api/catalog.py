"""``/v2/_catalog``: every repository the caller may pull, paged like registry:2's."""

from __future__ import annotations

from quart import Response, request

from ..auth.grant import grant_of
from .context import services
from .tags import paged


async def list_repositories() -> Response:
    registry = services()
    names = await registry.store.repositories()
    grant = grant_of(request.scope)
    if grant is not None:
        names = [name for name in names if grant.lists(name)]
    return paged("/v2/_catalog", "repositories", {}, names, registry.config.catalog_maxentries)
