"""Blobs: the global content-addressable store, and each repository's view of it.

Content is stored once per digest; a repository sees a blob only through a
link file (pushed or mounted there), so access stays per repository.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..reference import Digest
from . import paths
from .driver import PathNotFoundError, StorageDriver
from .errors import BlobUnknownError


@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: Digest
    size: int


def link_content(digest: Digest) -> bytes:
    return str(digest).encode()


async def read_link(driver: StorageDriver, path: str) -> Digest | None:
    """The digest a link file holds, or None when there is no (valid) link."""
    try:
        content = await driver.get_content(path)
    except PathNotFoundError:
        return None
    try:
        return Digest.parse(content.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None


async def exists(driver: StorageDriver, path: str) -> bool:
    try:
        await driver.stat(path)
    except PathNotFoundError:
        return False
    return True


class BlobStore:
    """The global content-addressable store (``blobs/``)."""

    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver

    async def stat(self, digest: Digest) -> BlobInfo:
        try:
            info = await self.driver.stat(paths.blob_data(digest))
        except PathNotFoundError:
            raise BlobUnknownError(str(digest)) from None
        return BlobInfo(digest, info.size)

    async def get(self, digest: Digest) -> bytes:
        try:
            return await self.driver.get_content(paths.blob_data(digest))
        except PathNotFoundError:
            raise BlobUnknownError(str(digest)) from None

    async def put(self, digest: Digest, content: bytes) -> None:
        """Store small content (a manifest) whose digest the caller computed."""
        await self.driver.put_content(paths.blob_data(digest), content)

    async def url(self, digest: Digest, expires: float) -> str | None:
        """Where a client may fetch the content itself (S3's presigned URL), or None."""
        return await self.driver.url_for(paths.blob_data(digest), expires)

    def read(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        return self.driver.read(paths.blob_data(digest), offset, length)


class LinkedBlobs:
    """One repository's blobs: ``_layers`` links into the global store."""

    def __init__(self, blobs: BlobStore, name: str) -> None:
        self.blobs = blobs
        self.driver = blobs.driver
        self.name = name

    async def is_linked(self, digest: Digest) -> bool:
        # Manifests are served through the blob endpoint too, as zot and
        # registry:2's manifest-as-blob readers expect.
        return await exists(self.driver, paths.layer_link(self.name, digest)) or await exists(
            self.driver, paths.revision_link(self.name, digest)
        )

    async def stat(self, digest: Digest) -> BlobInfo:
        if not await self.is_linked(digest):
            raise BlobUnknownError(str(digest))
        return await self.blobs.stat(digest)

    async def link(self, digest: Digest) -> None:
        await self.driver.put_content(paths.layer_link(self.name, digest), link_content(digest))

    async def unlink(self, digest: Digest) -> None:
        try:
            await self.driver.delete(paths.layer_link(self.name, digest).removesuffix("/link"))
        except PathNotFoundError:
            raise BlobUnknownError(str(digest)) from None

    async def mount(self, digest: Digest, source: LinkedBlobs) -> BlobInfo | None:
        """Link a blob another repository holds; None when it cannot be mounted."""
        try:
            info = await source.stat(digest)
        except BlobUnknownError:
            return None
        await self.link(digest)
        if not await exists(self.driver, paths.blob_data(digest)):
            # The garbage collector hid it between the check and the link: the client is
            # told to upload it (the link brings the hidden copy back on its next look).
            return None
        return info
