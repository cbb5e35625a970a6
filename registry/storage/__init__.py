"""The registry's store: registry semantics (blobs, links, tags, uploads) over a driver.

The store never sees a request; the API never sees a path.
"""

from __future__ import annotations

import sys
from dataclasses import InitVar, dataclass, field
from typing import TYPE_CHECKING

from ..reference import validate_name
from .blobs import BlobStore, LinkedBlobs
from .catalog_index import Catalog, catalog_for
from .driver import StorageDriver
from .manifests import ManifestCache, Manifests
from .uploads import HasherCache, Uploads

if TYPE_CHECKING:
    from ..config import Config


@dataclass(frozen=True, slots=True)
class Repository:
    """One repository's view of the store."""

    name: str
    blobs: LinkedBlobs
    manifests: Manifests
    uploads: Uploads


@dataclass(slots=True)
class Store:
    """Everything one process keeps about storage: the driver and its caches.

    ``config`` chooses the catalog (:func:`~.catalog_index.catalog_for`): in Redis where
    Redis is the cache; without it, by the driver alone."""

    driver: StorageDriver
    config: InitVar[Config | None] = None
    blobs: BlobStore = field(init=False)
    manifest_cache: ManifestCache = field(default_factory=ManifestCache)
    hashers: HasherCache = field(default_factory=HasherCache)
    catalog: Catalog = field(init=False)

    def __post_init__(self, config: Config | None) -> None:
        self.blobs = BlobStore(self.driver)
        self.catalog = catalog_for(self.driver, config)

    def repository(self, name: str) -> Repository:
        """The repository named ``name``, which must already match the name grammar."""
        validate_name(name)
        linked = LinkedBlobs(self.blobs, name)
        return Repository(
            name=name,
            blobs=linked,
            manifests=Manifests(self.blobs, linked, name, self.manifest_cache, self.catalog),
            uploads=Uploads(self.blobs, linked, name, self.hashers),
        )

    async def repositories(self) -> list[str]:
        """Every repository name, sorted (the catalog without paging)."""
        names, _ = await self.catalog.page(None, sys.maxsize, lambda _: True)
        return names

    async def close(self) -> None:
        try:
            await self.catalog.close()
        finally:
            await self.driver.close()
