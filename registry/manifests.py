"""Manifest media types, and parsing that tells a valid manifest from anything else.

The store keeps manifests as bytes; this module only reads them, so a manifest
is served back exactly as it was pushed (its digest depends on every byte).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .reference import Digest, InvalidReferenceError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_EMPTY_JSON = "application/vnd.oci.empty.v1+json"

IMAGE_MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = IMAGE_MANIFESTS | INDEXES

#: Content-Types older clients send that do not name a manifest kind.
GENERIC_TYPES = frozenset({"application/json", "application/octet-stream", "text/plain"})

#: distribution's maxManifestBodySize: nothing legitimate comes close.
MAX_MANIFEST_SIZE = 4 * 1024 * 1024


class ManifestError(ValueError):
    """The body is not a manifest this registry accepts; the message says why."""


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    artifact_type: str | None = None
    urls: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Manifest:
    """What the registry needs to know about a pushed manifest."""

    media_type: str
    blobs: tuple[Descriptor, ...]
    """Config and layers of an image manifest: they must be in the repository."""
    children: tuple[Descriptor, ...]
    """Manifests an index lists: they must be in the repository."""
    subject: Descriptor | None
    artifact_type: str | None
    annotations: dict[str, str]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEXES


def _descriptor(value: object, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise ManifestError(f"{where} is not a descriptor object")
    media_type = value.get("mediaType")
    digest = value.get("digest")
    size = value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestError(f"{where}.mediaType is missing or not a string")
    if not isinstance(digest, str):
        raise ManifestError(f"{where}.digest is missing or not a string")
    try:
        parsed = Digest.parse(digest)
    except InvalidReferenceError as error:
        raise ManifestError(f"{where}.digest: {error}") from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestError(f"{where}.size is missing or not a non-negative integer")
    urls = value.get("urls")
    if urls is None:
        urls = ()
    if not isinstance(urls, list | tuple) or not all(isinstance(u, str) for u in urls):
        raise ManifestError(f"{where}.urls is not a list of strings")
    artifact_type = value.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestError(f"{where}.artifactType is not a string")
    return Descriptor(media_type, parsed, size, artifact_type, tuple(urls))


def _descriptors(document: dict[str, object], key: str, required: bool) -> tuple[Descriptor, ...]:
    value = document.get(key)
    if value is None:
        if required:
            raise ManifestError(f"{key} is missing")
        return ()
    if not isinstance(value, list):
        raise ManifestError(f"{key} is not a list")
    return tuple(_descriptor(item, f"{key}[{i}]") for i, item in enumerate(value))


def _media_type(document: dict[str, object], content_type: str | None) -> str:
    """The manifest's media type: its own field, else the request's, else its shape."""
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestError("mediaType is not a string")
    if content_type is not None:
        content_type = content_type.split(";", 1)[0].strip().lower() or None
        if content_type in GENERIC_TYPES:
            content_type = None  # Says nothing about the kind of manifest.
    if declared and content_type and declared != content_type:
        raise ManifestError(f"mediaType {declared!r} does not match Content-Type {content_type!r}")
    media_type = declared or content_type
    if media_type is None:
        media_type = OCI_INDEX if "manifests" in document else OCI_MANIFEST
    if media_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED):
        raise ManifestError("Docker schema 1 manifests are not supported; push schema 2 or OCI")
    if media_type not in MANIFEST_TYPES:
        raise ManifestError(f"unsupported manifest media type {media_type!r}")
    if not declared and media_type in (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST):
        # Only the field survives in storage: without it the manifest would be
        # served as OCI. registry:2 refuses these too.
        raise ManifestError(f"a {media_type} manifest must have a mediaType field")
    return media_type


def _not_json(constant: str) -> object:
    # Python's decoder takes NaN and Infinity; JSON and Go clients do not.
    raise ManifestError(f"manifest is not valid JSON: {constant} is not a JSON value")


def parse_manifest(data: bytes, content_type: str | None = None) -> Manifest:
    """Parse and validate a pushed manifest; raise :class:`ManifestError` if it is not one."""
    try:
        document = json.loads(data, parse_constant=_not_json)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"manifest is not valid JSON: {error}") from None
    except RecursionError:
        raise ManifestError("manifest is nested too deeply") from None
    if not isinstance(document, dict):
        raise ManifestError("manifest is not a JSON object")
    version = document.get("schemaVersion")
    if not isinstance(version, int) or version != 2:
        raise ManifestError("schemaVersion must be 2")
    media_type = _media_type(document, content_type)
    subject = document.get("subject")
    artifact_type = document.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestError("artifactType is not a string")
    annotations = document.get("annotations")
    if annotations is None:
        annotations = {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise ManifestError("annotations must map strings to strings")
    if media_type in INDEXES:
        if "config" in document or "layers" in document:
            raise ManifestError("an index has no config or layers")
        blobs: tuple[Descriptor, ...] = ()
        children = _descriptors(document, "manifests", required=True)
    else:
        if "manifests" in document:
            raise ManifestError("an image manifest has no manifests list")
        config = _descriptor(document.get("config"), "config")
        layers = _descriptors(document, "layers", required=media_type == DOCKER_MANIFEST)
        blobs = (config, *layers)
        children = ()
    return Manifest(
        media_type=media_type,
        blobs=blobs,
        children=children,
        subject=_descriptor(subject, "subject") if subject is not None else None,
        artifact_type=artifact_type,
        annotations=annotations,
    )


def platform_child(data: bytes, os: str, architecture: str) -> Digest | None:
    """The first entry of a stored index or list for ``os``/``architecture``; never raises.

    registry:2 serves old clients that cannot read a Docker manifest list the
    linux/amd64 image instead, and a stored list may come from anywhere.
    """
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    entries = document.get("manifests") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict):
            continue
        platform = entry.get("platform")
        if not isinstance(platform, dict):
            continue
        if platform.get("os") == os and platform.get("architecture") == architecture:
            digest = entry.get("digest")
            try:
                return Digest.parse(digest) if isinstance(digest, str) else None
            except InvalidReferenceError:
                return None
    return None


def sniff_media_type(data: bytes) -> str:
    """The media type of a stored manifest, for serving it; never raises."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return OCI_MANIFEST
    if not isinstance(document, dict):
        return OCI_MANIFEST
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if document.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1_SIGNED if "signatures" in document else DOCKER_SCHEMA1
    return OCI_INDEX if "manifests" in document else OCI_MANIFEST
