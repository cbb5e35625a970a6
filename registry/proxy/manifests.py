"""Manifests pulled through: by digest once (content never changes), by tag re-checked
with a HEAD once the tag is older than ``ttl``.

A tag's ``current/link`` is rewritten at every check upstream, so its modification
time is when the tag was last known to be right: every worker and instance sharing
the storage sees it, and a restart keeps it.
"""

from __future__ import annotations

import logging
import time

from ..manifests import DOCKER_MANIFEST_LIST, platform_child
from ..reference import Digest, is_digest
from ..storage import Repository, paths
from ..storage.driver import PathNotFoundError
from ..storage.errors import DigestMismatchError, ManifestInvalidError, ManifestUnknownError
from .client import UpstreamClient
from .errors import UpstreamError, UpstreamInvalidError, UpstreamNotFoundError
from .observer import Observer, ignore

log = logging.getLogger(__name__)

HIT = "hit"
MISS = "miss"
STALE = "stale"


async def _stored(
    repo: Repository, remote: str, reference: str, client: UpstreamClient, observe: Observer
) -> Digest:
    """Fetch the manifest ``reference`` names upstream, check its digest, store it."""
    fetched = await client.manifest(remote, reference)
    observe("pulled_bytes", "manifest", len(fetched.data))
    expected = Digest.parse(reference) if is_digest(reference) else fetched.digest
    algorithm = expected.algorithm if expected is not None else "sha256"
    actual = Digest.of(fetched.data, algorithm)
    if expected is not None and actual != expected:
        raise UpstreamInvalidError(
            f"{remote}/manifests/{reference}: the upstream sent content of digest {actual}, "
            f"not {expected}"
        )
    try:
        digest, _ = await repo.manifests.put(
            reference, fetched.data, fetched.media_type, verify_references=False
        )
    except (ManifestInvalidError, DigestMismatchError) as error:
        raise UpstreamInvalidError(f"{remote}/manifests/{reference}: {error}") from None
    return digest


async def _tagged(repo: Repository, tag: str) -> tuple[Digest | None, float]:
    """The digest a tag names here (if its manifest is here) and the tag's age in seconds."""
    try:
        info = await repo.manifests.driver.stat(paths.tag_current_link(repo.name, tag))
        digest = await repo.manifests.resolve(tag)
    except (PathNotFoundError, ManifestUnknownError):
        return None, float("inf")
    return digest, max(0.0, time.time() - info.modified)


async def pull_manifest(
    repo: Repository,
    client: UpstreamClient,
    remote: str,
    reference: str,
    ttl: float,
    observe: Observer = ignore,
) -> str:
    """Make what ``reference`` names current in storage: HIT, MISS or STALE.

    Raises UpstreamError when nothing stored can stand in, and on a 404 upstream
    (the upstream is the authority on what exists).
    """
    if is_digest(reference):
        if await repo.manifests.exists(Digest.parse(reference)):
            return HIT
        await _stored(repo, remote, reference, client, observe)
        return MISS
    local, age = await _tagged(repo, reference)
    if local is not None and age < ttl:
        return HIT
    try:
        current = await client.manifest_digest(remote, reference)
        if current is not None and current == local:
            await repo.manifests.tag(reference, current)  # Checked now.
            return HIT
        if current is not None and await repo.manifests.exists(current):
            await repo.manifests.tag(reference, current)  # Pulled by digest before.
            return MISS
        named = str(current) if current else reference
        digest = await _stored(repo, remote, named, client, observe)
        if current is not None:
            await repo.manifests.tag(reference, digest)
        return MISS
    except UpstreamNotFoundError:
        raise
    except UpstreamError as error:
        if local is None:
            raise
        log.warning(
            "proxy: %s:%s served from the cache and may be stale (%s, last checked %.0f s "
            "ago): %s",
            repo.name, reference, client.url, age, error,
        )  # fmt: skip
        return STALE


async def pull_platform_child(
    repo: Repository,
    client: UpstreamClient,
    remote: str,
    tag: str,
    os: str,
    architecture: str,
    observe: Observer = ignore,
) -> None:
    """The image a Docker manifest list names for a client that cannot read lists: the
    manifest read answers it from storage, so it is pulled through too."""
    try:
        stored = await repo.manifests.get(tag)
    except ManifestUnknownError:
        return
    if stored.media_type != DOCKER_MANIFEST_LIST:
        return
    child = platform_child(stored.data, os, architecture)
    if child is not None:
        await pull_manifest(repo, client, remote, str(child), 0.0, observe)
