"""Pushing test content over the HTTP API, the way clients do it."""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urlencode

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

#: The Accept header of a client that reads every manifest type, as Docker, containerd
#: and skopeo send it: registry:2 serves an OCI manifest only to a client that names it.
ACCEPT_MANIFESTS = {"Accept": ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes, **extra: object) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}


def with_query(location: str, **values: str) -> str:
    """Add query values to an upload Location, keeping the ones the registry put there."""
    separator = "&" if "?" in location else "?"
    return location + separator + urlencode(values)


def push_blob(client: httpx.Client, repo: str, data: bytes) -> str:
    """POST then PUT (monolithic), as most clients push small blobs."""
    started = client.post(f"/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202, started.text
    digest = digest_of(data)
    done = client.put(
        with_query(started.headers["Location"], digest=digest),
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert done.status_code == 201, done.text
    return digest


def image_manifest(
    config: bytes,
    layers: list[bytes],
    *,
    media_type: str = OCI_MANIFEST,
    subject: dict[str, object] | None = None,
    artifact_type: str | None = None,
    annotations: dict[str, str] | None = None,
) -> bytes:
    docker = media_type == DOCKER_MANIFEST
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config),
        "layers": [descriptor(DOCKER_LAYER if docker else OCI_LAYER, layer) for layer in layers],
    }
    if artifact_type is not None:
        document["artifactType"] = artifact_type
    if subject is not None:
        document["subject"] = subject
    if annotations:
        document["annotations"] = annotations
    return json.dumps(document, indent=2).encode()


def push_manifest(
    client: httpx.Client, repo: str, reference: str, manifest: bytes, media_type: str | None = None
) -> httpx.Response:
    if media_type is None:
        media_type = json.loads(manifest).get("mediaType", OCI_MANIFEST)
    return client.put(
        f"/v2/{repo}/manifests/{reference}", content=manifest, headers={"Content-Type": media_type}
    )


def push_image(
    client: httpx.Client,
    repo: str,
    tag: str,
    *,
    layers: list[bytes] | None = None,
    config: bytes | None = None,
    media_type: str = OCI_MANIFEST,
    **manifest_options: object,
) -> tuple[str, bytes]:
    """Push config, layers and manifest; returns (manifest digest, manifest bytes)."""
    config = (
        config
        if config is not None
        else json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    )
    layers = layers if layers is not None else [f"layer of {repo}:{tag}".encode()]
    push_blob(client, repo, config)
    for layer in layers:
        push_blob(client, repo, layer)
    manifest = image_manifest(config, layers, media_type=media_type, **manifest_options)  # type: ignore[arg-type]
    response = push_manifest(client, repo, tag, manifest, media_type)
    assert response.status_code == 201, response.text
    return digest_of(manifest), manifest


def image_index(
    children: list[tuple[str, bytes]],
    *,
    media_type: str = OCI_INDEX,
    subject: dict[str, object] | None = None,
    artifact_type: str | None = None,
    annotations: dict[str, str] | None = None,
) -> bytes:
    """An index (or Docker manifest list) of (media type, manifest bytes) children."""
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            descriptor(child_type, child, platform={"architecture": f"arch{i}", "os": "linux"})
            for i, (child_type, child) in enumerate(children)
        ],
    }
    if artifact_type is not None:
        document["artifactType"] = artifact_type
    if subject is not None:
        document["subject"] = subject
    if annotations:
        document["annotations"] = annotations
    return json.dumps(document, indent=2).encode()


def push_index(
    client: httpx.Client,
    repo: str,
    tag: str,
    *,
    media_type: str = OCI_INDEX,
    children: int = 2,
) -> tuple[str, bytes]:
    """Push ``children`` images by digest, then an index of them under ``tag``."""
    child_type = DOCKER_MANIFEST if media_type == DOCKER_LIST else OCI_MANIFEST
    pushed: list[tuple[str, bytes]] = []
    for i in range(children):
        config = json.dumps({"architecture": f"arch{i}", "os": "linux", "tag": tag}).encode()
        layer = f"layer {i} of {repo}:{tag}".encode()
        push_blob(client, repo, config)
        push_blob(client, repo, layer)
        child = image_manifest(config, [layer], media_type=child_type)
        response = push_manifest(client, repo, digest_of(child), child, child_type)
        assert response.status_code == 201, response.text
        pushed.append((child_type, child))
    index = image_index(pushed, media_type=media_type)
    response = push_manifest(client, repo, tag, index, media_type)
    assert response.status_code == 201, response.text
    return digest_of(index), index


def upload_id_of(location: str) -> str:
    """The session id in an upload's ``Location`` (its last path segment)."""
    return location.rstrip("/").rsplit("/", 1)[-1].split("?")[0]


def start_upload(client: httpx.Client, repo: str) -> str:
    """POST a new upload session; returns its Location."""
    started = client.post(f"/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202, started.text
    return started.headers["Location"]
