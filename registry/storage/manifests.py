"""Manifests, tags and referrers of one repository.

A manifest is stored as a blob (by its digest) and linked into the repository
under ``_manifests/revisions``; a tag is a link to a revision. Content by
digest never changes, so a process may cache it; tags are re-read on every
request (one small file), so every worker sees a tag move at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..manifests import (
    INDEXES,
    MAX_MANIFEST_SIZE,
    OCI_INDEX,
    Manifest,
    ManifestError,
    parse_manifest,
    sniff_media_type,
)
from ..reference import Digest, is_digest
from . import paths
from .blobs import BlobStore, LinkedBlobs, exists, link_content, read_link
from .driver import PathNotFoundError
from .gc import RECHECK as COLLECTOR_RECHECK

if TYPE_CHECKING:
    from .catalog_index import Catalog
from .errors import (
    BlobUnknownError,
    DigestMismatchError,
    ManifestBlobUnknownError,
    ManifestInvalidError,
    ManifestUnknownError,
    RepositoryUnknownError,
)


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: Digest
    data: bytes
    media_type: str


class ManifestCache:
    """Manifest bytes by digest, bounded by total size (LRU); safe because content is immutable."""

    def __init__(self, capacity: int = 64 * 1024 * 1024) -> None:
        self._entries: OrderedDict[Digest, StoredManifest] = OrderedDict()
        self._capacity = capacity
        self._size = 0

    def get(self, digest: Digest) -> StoredManifest | None:
        entry = self._entries.get(digest)
        if entry is not None:
            self._entries.move_to_end(digest)
        return entry

    def put(self, entry: StoredManifest) -> None:
        if entry.digest in self._entries or len(entry.data) > self._capacity:
            return
        self._entries[entry.digest] = entry
        self._size += len(entry.data)
        while self._size > self._capacity:
            _, evicted = self._entries.popitem(last=False)
            self._size -= len(evicted.data)


class Manifests:
    def __init__(
        self,
        blobs: BlobStore,
        linked: LinkedBlobs,
        name: str,
        cache: ManifestCache,
        catalog: Catalog | None = None,
    ) -> None:
        self.driver = blobs.driver
        self.blobs = blobs
        self.linked = linked
        self.name = name
        self.cache = cache
        self.catalog = catalog

    # Reading

    async def resolve(self, reference: str) -> Digest:
        """The digest a tag or digest reference names in this repository."""
        if is_digest(reference):
            digest = Digest.parse(reference)
            if not await exists(self.driver, paths.revision_link(self.name, digest)):
                raise ManifestUnknownError(reference)
            return digest
        tagged = await read_link(self.driver, paths.tag_current_link(self.name, reference))
        # As registry:2: a tag serves only a manifest this repository holds.
        if tagged is None or not await self.exists(tagged):
            raise ManifestUnknownError(reference)
        return tagged

    async def get(self, reference: str) -> StoredManifest:
        digest = await self.resolve(reference)
        return await self.load(digest, reference)

    async def load(self, digest: Digest, reference: str | None = None) -> StoredManifest:
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        try:
            data = await self.blobs.get(digest)
        except BlobUnknownError:
            raise ManifestUnknownError(reference or str(digest)) from None
        entry = StoredManifest(digest, data, sniff_media_type(data))
        self.cache.put(entry)
        return entry

    async def exists(self, digest: Digest) -> bool:
        return await exists(self.driver, paths.revision_link(self.name, digest))

    # Writing

    async def put(
        self,
        reference: str,
        data: bytes,
        content_type: str | None,
        *,
        verify_references: bool = True,
    ) -> tuple[Digest, Manifest]:
        """Validate and store a manifest; tag it when the reference is a tag.

        ``verify_references=False`` stores a manifest whose blobs are not here yet: a
        pull-through cache fetches them when a client asks (registry:2's
        ``SkipLayerVerification``)."""
        if len(data) > MAX_MANIFEST_SIZE:
            raise ManifestInvalidError(f"manifest is larger than {MAX_MANIFEST_SIZE} bytes")
        if is_digest(reference):
            expected = Digest.parse(reference)
            digest = Digest.of(data, expected.algorithm)
            if digest != expected:
                raise DigestMismatchError(str(expected), str(digest))
        else:
            digest = Digest.of(data)
        try:
            manifest = parse_manifest(data, content_type)
        except ManifestError as error:
            raise ManifestInvalidError(str(error)) from None
        if verify_references:
            await self._check_references(manifest)
        await self.blobs.put(digest, data)
        self.cache.put(StoredManifest(digest, data, manifest.media_type))
        await self.driver.put_content(paths.revision_link(self.name, digest), link_content(digest))
        if self.catalog is not None:
            await self.catalog.created(self.name)  # Listed from every worker once answered.
        if verify_references:
            # Before the referrer link and the tag: a PUT refused here leaves only an
            # untagged revision, not a referrer that its subject would keep alive.
            await self._still_referenced(manifest)
        if manifest.subject is not None:
            await self.driver.put_content(
                paths.referrer_link(self.name, manifest.subject.digest, digest),
                link_content(digest),
            )
        if not is_digest(reference):
            await self.tag(reference, digest)
        return digest, manifest

    async def _still_referenced(self, manifest: Manifest) -> None:
        """Check the references again, now that the revision link is written.

        An online collection may hide a blob between the first check and that write.
        It reads the revision links right after hiding and puts back at once what
        they name; one it hid before this link was written comes back at its next
        look, within its recheck delay: wait for that, so a manifest is not answered
        (and then pulled) while a blob it names is hidden. What stays is a window of a
        few file operations, between a hiding after this check and the put-back."""
        deadline = time.monotonic() + COLLECTOR_RECHECK + 1.0
        while True:
            try:
                await self._check_references(manifest)
                return
            except ManifestBlobUnknownError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)

    async def _check_references(self, manifest: Manifest) -> None:
        for blob in manifest.blobs:
            if blob.urls:
                continue  # A foreign layer: served from its URLs, not from here.
            if not await self.linked.is_linked(blob.digest):
                raise ManifestBlobUnknownError(str(blob.digest))
        for child in manifest.children:
            if not await self.exists(child.digest) and not await self.linked.is_linked(
                child.digest
            ):
                raise ManifestBlobUnknownError(str(child.digest))

    async def tag(self, tag: str, digest: Digest) -> None:
        # The index link first: registry:2 uses it to find every digest a tag had.
        await self.driver.put_content(
            paths.tag_index_link(self.name, tag, digest), link_content(digest)
        )
        await self.driver.put_content(paths.tag_current_link(self.name, tag), link_content(digest))

    async def delete_tag(self, tag: str) -> None:
        if await read_link(self.driver, paths.tag_current_link(self.name, tag)) is None:
            raise ManifestUnknownError(tag)
        try:
            await self.driver.delete(paths.tag_dir(self.name, tag))
        except PathNotFoundError:
            raise ManifestUnknownError(tag) from None

    async def delete(self, digest: Digest) -> None:
        """Delete a manifest from the repository, with every tag pointing at it (as registry:2)."""
        if not await self.exists(digest):
            raise ManifestUnknownError(str(digest))
        stored: StoredManifest | None
        try:
            stored = await self.load(digest)
        except ManifestUnknownError:
            stored = None
        for tag in await self.tags():
            if await read_link(self.driver, paths.tag_current_link(self.name, tag)) == digest:
                await self.driver.delete(paths.tag_dir(self.name, tag))
        if stored is not None:
            try:
                subject = parse_manifest(stored.data).subject
            except ManifestError:
                subject = None
            if subject is not None:
                link = paths.referrer_link(self.name, subject.digest, digest)
                with contextlib.suppress(PathNotFoundError):
                    await self.driver.delete(link.removesuffix("/link"))
        await self.driver.delete(paths.revision_dir(self.name, digest))

    # Listing

    async def tags(self) -> list[str]:
        """The tags that answer: a folder whose ``current/link`` was never written (a
        crash while the tag was made) is not one, though registry:2 lists it."""
        try:
            return await self.driver.list_holding(paths.tags(self.name), "current/link")
        except PathNotFoundError:
            # The catalog's rule: a repository is a folder with _manifests in it.
            if not await exists(self.driver, paths.manifests(self.name)):
                raise RepositoryUnknownError(self.name) from None
            return []

    async def referrers(
        self, subject: Digest, artifact_type: str | None
    ) -> list[dict[str, object]]:
        """Descriptors of the manifests whose subject is ``subject``, as an index lists them."""
        base = paths.referrers(self.name, subject)
        result: list[dict[str, object]] = []
        try:
            algorithms = await self.driver.list(base)
        except PathNotFoundError:
            return result
        for algorithm in algorithms:
            try:
                hexes = await self.driver.list(f"{base}/{algorithm}")
            except PathNotFoundError:
                continue
            for hex_part in hexes:
                digest = await read_link(self.driver, f"{base}/{algorithm}/{hex_part}/link")
                if digest is None or not await self.exists(digest):
                    continue
                descriptor = await self._referrer_descriptor(digest)
                if descriptor is None:
                    continue
                if artifact_type is None or descriptor.get("artifactType") == artifact_type:
                    result.append(descriptor)
        return result

    async def _referrer_descriptor(self, digest: Digest) -> dict[str, object] | None:
        try:
            stored = await self.load(digest)
            manifest = parse_manifest(stored.data)
        except (ManifestUnknownError, ManifestError):
            return None
        descriptor: dict[str, object] = {
            "mediaType": manifest.media_type,
            "digest": str(digest),
            "size": len(stored.data),
        }
        artifact_type = manifest.artifact_type
        if artifact_type is None and manifest.media_type not in INDEXES and manifest.blobs:
            artifact_type = manifest.blobs[0].media_type
        if artifact_type is not None:
            descriptor["artifactType"] = artifact_type
        if manifest.annotations:
            descriptor["annotations"] = manifest.annotations
        return descriptor


def referrers_index(descriptors: list[dict[str, object]]) -> dict[str, object]:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
