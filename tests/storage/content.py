"""Blobs and manifests for store tests, pushed straight through the Store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from registry.manifests import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from registry.reference import Digest
from registry.storage import Repository
from tests.pushing import DOCKER_CONFIG, DOCKER_LAYER, OCI_CONFIG, OCI_LAYER


async def body(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def digest_of(data: bytes, algorithm: str = "sha256") -> Digest:
    return Digest.of(data, algorithm)


def descriptor(media_type: str, data: bytes, **extra: object) -> dict[str, object]:
    return {"mediaType": media_type, "digest": str(digest_of(data)), "size": len(data), **extra}


async def push_blob(repo: Repository, data: bytes) -> Digest:
    session = await repo.uploads.start()
    info = await repo.uploads.complete(session.id, digest_of(data), body(data))
    return info.digest


def image_manifest(
    config: bytes,
    layers: list[bytes],
    *,
    media_type: str = OCI_MANIFEST,
    subject: bytes | None = None,
    subject_type: str = OCI_MANIFEST,
    artifact_type: str | None = None,
    annotations: dict[str, str] | None = None,
    config_type: str | None = None,
) -> bytes:
    docker = media_type == DOCKER_MANIFEST
    document: dict[str, object] = {"schemaVersion": 2, "mediaType": media_type}
    if artifact_type is not None:
        document["artifactType"] = artifact_type
    document["config"] = descriptor(
        config_type or (DOCKER_CONFIG if docker else OCI_CONFIG), config
    )
    document["layers"] = [
        descriptor(DOCKER_LAYER if docker else OCI_LAYER, layer) for layer in layers
    ]
    if subject is not None:
        document["subject"] = descriptor(subject_type, subject)
    if annotations:
        document["annotations"] = annotations
    return json.dumps(document, indent=3).encode()


def index_manifest(
    children: list[bytes],
    *,
    media_type: str = OCI_INDEX,
    subject: bytes | None = None,
    artifact_type: str | None = None,
    annotations: dict[str, str] | None = None,
) -> bytes:
    document: dict[str, object] = {"schemaVersion": 2, "mediaType": media_type}
    if artifact_type is not None:
        document["artifactType"] = artifact_type
    document["manifests"] = [
        descriptor(json.loads(child)["mediaType"], child) for child in children
    ]
    if subject is not None:
        document["subject"] = descriptor(OCI_MANIFEST, subject)
    if annotations:
        document["annotations"] = annotations
    return json.dumps(document).encode()


async def push_image(
    repo: Repository,
    tag: str | None,
    *,
    layers: list[bytes] | None = None,
    config: bytes | None = None,
    **options: object,
) -> tuple[Digest, bytes]:
    """Push config, layers and manifest; (manifest digest, manifest bytes)."""
    config = config if config is not None else json.dumps({"repo": repo.name, "tag": tag}).encode()
    layers = layers if layers is not None else [f"layer of {repo.name}:{tag}".encode()]
    await push_blob(repo, config)
    for layer in layers:
        await push_blob(repo, layer)
    manifest = image_manifest(config, layers, **options)  # type: ignore[arg-type]
    reference = tag if tag is not None else str(digest_of(manifest))
    media_type = json.loads(manifest)["mediaType"]
    digest, _ = await repo.manifests.put(reference, manifest, media_type)
    assert digest == digest_of(manifest)
    return digest, manifest
