"""Manifest parsing: every media type, what is refused and why, and sniffing stored bytes."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest

from registry.manifests import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    OCI_EMPTY_JSON,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    ManifestError,
    parse_manifest,
    sniff_media_type,
)
from registry.reference import Digest
from tests.pushing import DOCKER_CONFIG, DOCKER_LAYER, OCI_CONFIG, OCI_LAYER
from tests.pushing import descriptor as desc
from tests.pushing import digest_of as digest

ARTIFACT = "application/vnd.example.signature.v1"


CONFIG = desc(OCI_CONFIG, b"{}")
LAYERS = [desc(OCI_LAYER, b"layer one"), desc(OCI_LAYER, b"layer two")]
OCI_IMAGE: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": OCI_MANIFEST,
    "config": CONFIG,
    "layers": LAYERS,
}
DOCKER_IMAGE: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": DOCKER_MANIFEST,
    "config": desc(DOCKER_CONFIG, b"{}"),
    "layers": [desc(DOCKER_LAYER, b"layer")],
}
CHILD = desc(OCI_MANIFEST, b"child manifest", platform={"os": "linux", "architecture": "amd64"})
OCI_IMAGE_INDEX: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": OCI_INDEX,
    "manifests": [CHILD],
}
DOCKER_LIST: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": DOCKER_MANIFEST_LIST,
    "manifests": [desc(DOCKER_MANIFEST, b"child")],
}


def encode(document: object) -> bytes:
    return json.dumps(document).encode()


def variant(document: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy with keys changed; a value of ``...`` removes the key."""
    result = copy.deepcopy(document)
    for key, value in changes.items():
        if value is ...:
            result.pop(key, None)
        else:
            result[key] = value
    return result


# Accepted manifests, with the Content-Type they are pushed with and the type they get.
ACCEPTED = {
    "oci manifest": (OCI_IMAGE, OCI_MANIFEST, OCI_MANIFEST),
    "oci manifest, no content type": (OCI_IMAGE, None, OCI_MANIFEST),
    "oci manifest, no mediaType": (variant(OCI_IMAGE, mediaType=...), OCI_MANIFEST, OCI_MANIFEST),
    "oci manifest, nothing says": (variant(OCI_IMAGE, mediaType=...), None, OCI_MANIFEST),
    "oci manifest, no layers": (variant(OCI_IMAGE, layers=...), OCI_MANIFEST, OCI_MANIFEST),
    "oci manifest, empty layers": (variant(OCI_IMAGE, layers=[]), OCI_MANIFEST, OCI_MANIFEST),
    "docker manifest": (DOCKER_IMAGE, DOCKER_MANIFEST, DOCKER_MANIFEST),
    "docker manifest, no content type": (DOCKER_IMAGE, None, DOCKER_MANIFEST),
    "oci index": (OCI_IMAGE_INDEX, OCI_INDEX, OCI_INDEX),
    "oci index, no mediaType": (variant(OCI_IMAGE_INDEX, mediaType=...), OCI_INDEX, OCI_INDEX),
    "oci index, nothing says": (variant(OCI_IMAGE_INDEX, mediaType=...), None, OCI_INDEX),
    "oci index, empty": (variant(OCI_IMAGE_INDEX, manifests=[]), OCI_INDEX, OCI_INDEX),
    "docker list": (DOCKER_LIST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST_LIST),
    "generic json type": (OCI_IMAGE, "application/json", OCI_MANIFEST),
    "generic octet-stream": (DOCKER_IMAGE, "application/octet-stream", DOCKER_MANIFEST),
    "generic text/plain": (OCI_IMAGE_INDEX, "text/plain", OCI_INDEX),
    "generic, nothing declared": (
        variant(OCI_IMAGE, mediaType=...),
        "application/json; charset=utf-8",
        OCI_MANIFEST,
    ),
    "content type parameters": (OCI_IMAGE, f"{OCI_MANIFEST}; charset=utf-8", OCI_MANIFEST),
    "content type case": (OCI_IMAGE, OCI_MANIFEST.upper(), OCI_MANIFEST),
    "content type spaces": (OCI_IMAGE, f"  {OCI_MANIFEST} ", OCI_MANIFEST),
    "empty content type": (OCI_IMAGE, "", OCI_MANIFEST),
    "artifact": (
        variant(
            OCI_IMAGE,
            artifactType=ARTIFACT,
            config=desc(OCI_EMPTY_JSON, b"{}"),
            layers=[desc("application/octet-stream", b"sig")],
        ),
        OCI_MANIFEST,
        OCI_MANIFEST,
    ),
    "unknown fields": (variant(OCI_IMAGE, extra={"x": [1, 2]}), OCI_MANIFEST, OCI_MANIFEST),
}


@pytest.mark.parametrize(
    ("document", "content_type", "media_type"), ACCEPTED.values(), ids=ACCEPTED.keys()
)
def test_accepted(document: dict[str, Any], content_type: str | None, media_type: str) -> None:
    manifest = parse_manifest(encode(document), content_type)
    assert manifest.media_type == media_type
    assert manifest.is_index == (media_type in (OCI_INDEX, DOCKER_MANIFEST_LIST))


@pytest.mark.parametrize(
    ("document", "content_type", "media_type"), ACCEPTED.values(), ids=ACCEPTED.keys()
)
def test_sniffed_type_agrees_with_parsed_type(
    document: dict[str, Any], content_type: str | None, media_type: str
) -> None:
    """Stored bytes are served with the type they were accepted as, in every process."""
    assert sniff_media_type(encode(document)) == media_type


def test_image_manifest_fields() -> None:
    manifest = parse_manifest(encode(OCI_IMAGE), OCI_MANIFEST)
    assert manifest.blobs == (
        Descriptor(OCI_CONFIG, Digest.parse(digest(b"{}")), 2),
        Descriptor(OCI_LAYER, Digest.parse(digest(b"layer one")), 9),
        Descriptor(OCI_LAYER, Digest.parse(digest(b"layer two")), 9),
    )
    assert manifest.children == ()
    assert manifest.subject is None
    assert manifest.artifact_type is None
    assert manifest.annotations == {}
    assert not manifest.is_index


def test_index_fields() -> None:
    manifest = parse_manifest(encode(OCI_IMAGE_INDEX), OCI_INDEX)
    assert manifest.blobs == ()
    assert manifest.children == (
        Descriptor(OCI_MANIFEST, Digest.parse(digest(b"child manifest")), 14),
    )
    assert manifest.is_index


def test_subject_artifact_type_annotations() -> None:
    subject = desc(OCI_MANIFEST, b"subject manifest")
    document = variant(
        OCI_IMAGE,
        subject=subject,
        artifactType=ARTIFACT,
        annotations={"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    )
    manifest = parse_manifest(encode(document), OCI_MANIFEST)
    assert manifest.subject == Descriptor(
        OCI_MANIFEST, Digest.parse(digest(b"subject manifest")), 16
    )
    assert manifest.artifact_type == ARTIFACT
    assert manifest.annotations == {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}


def test_index_with_subject_and_artifact_type() -> None:
    document = variant(
        OCI_IMAGE_INDEX,
        subject=desc(OCI_MANIFEST, b"subject"),
        artifactType=ARTIFACT,
        annotations={"k": "v"},
    )
    manifest = parse_manifest(encode(document), OCI_INDEX)
    assert manifest.subject is not None
    assert manifest.subject.digest == Digest.parse(digest(b"subject"))
    assert manifest.artifact_type == ARTIFACT
    assert manifest.annotations == {"k": "v"}


def test_descriptor_extras() -> None:
    foreign = desc(
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        b"foreign",
        urls=["https://example.com/a", "https://example.com/b"],
        artifactType=ARTIFACT,
        annotations={"a": "b"},
    )
    manifest = parse_manifest(encode(variant(OCI_IMAGE, layers=[foreign])), OCI_MANIFEST)
    layer = manifest.blobs[1]
    assert layer.urls == ("https://example.com/a", "https://example.com/b")
    assert layer.artifact_type == ARTIFACT


def test_sha512_descriptors() -> None:
    config = {
        "mediaType": OCI_CONFIG,
        "digest": "sha512:" + hashlib.sha512(b"{}").hexdigest(),
        "size": 2,
    }
    manifest = parse_manifest(encode(variant(OCI_IMAGE, config=config)), OCI_MANIFEST)
    assert manifest.blobs[0].digest.algorithm == "sha512"


def bad_descriptor(**changes: Any) -> dict[str, Any]:
    return variant(OCI_IMAGE, config=variant(CONFIG, **changes))


REFUSED = {
    # Not a manifest at all.
    "empty": (b"", OCI_MANIFEST),
    "not json": (b"{not json", OCI_MANIFEST),
    "not utf-8": (b'{"schemaVersion": 2, "x": "\xff"}', OCI_MANIFEST),
    "a list": (b"[]", OCI_MANIFEST),
    "a string": (b'"manifest"', OCI_MANIFEST),
    "null": (b"null", OCI_MANIFEST),
    # Not JSON (RFC 8259), though Python's decoder takes them; Go clients refuse them.
    "NaN": (encode(variant(OCI_IMAGE, extra=float("nan"))), OCI_MANIFEST),
    "Infinity": (encode(variant(OCI_IMAGE, annotations=..., extra=[float("inf")])), OCI_MANIFEST),
    "-Infinity": (encode(variant(OCI_IMAGE, extra={"x": float("-inf")})), OCI_MANIFEST),
    "no schemaVersion": (variant(OCI_IMAGE, schemaVersion=...), OCI_MANIFEST),
    "schemaVersion 1": (variant(OCI_IMAGE, schemaVersion=1), OCI_MANIFEST),
    "schemaVersion 3": (variant(OCI_IMAGE, schemaVersion=3), OCI_MANIFEST),
    "schemaVersion string": (variant(OCI_IMAGE, schemaVersion="2"), OCI_MANIFEST),
    # Go clients decode schemaVersion into an int: 2.0 would make the image unpullable.
    "schemaVersion 2.0": (variant(OCI_IMAGE, schemaVersion=2.0), OCI_MANIFEST),
    "schemaVersion true": (variant(OCI_IMAGE, schemaVersion=True), OCI_MANIFEST),
    # Media types.
    "content type mismatch": (OCI_IMAGE, DOCKER_MANIFEST),
    "content type mismatch, index": (OCI_IMAGE_INDEX, OCI_MANIFEST),
    "content type mismatch, docker": (DOCKER_IMAGE, OCI_MANIFEST),
    "unknown mediaType": (variant(OCI_IMAGE, mediaType="application/vnd.example+json"), None),
    "unknown content type": (variant(OCI_IMAGE, mediaType=...), "application/vnd.example+json"),
    "mediaType not a string": (variant(OCI_IMAGE, mediaType=2), OCI_MANIFEST),
    "mediaType a list": (variant(OCI_IMAGE, mediaType=[OCI_MANIFEST]), None),
    "docker manifest without mediaType": (variant(DOCKER_IMAGE, mediaType=...), DOCKER_MANIFEST),
    "docker list without mediaType": (variant(DOCKER_LIST, mediaType=...), DOCKER_MANIFEST_LIST),
    "docker manifest without layers": (variant(DOCKER_IMAGE, layers=...), DOCKER_MANIFEST),
    # Schema 1.
    "schema1 content type": (
        {"schemaVersion": 1, "name": "a", "tag": "b", "fsLayers": [], "history": []},
        DOCKER_SCHEMA1,
    ),
    "schema1 signed content type": (
        {"schemaVersion": 1, "name": "a", "tag": "b", "signatures": []},
        DOCKER_SCHEMA1_SIGNED,
    ),
    "schema1 mediaType": (variant(DOCKER_IMAGE, mediaType=DOCKER_SCHEMA1), None),
    "schema1 mediaType, version 2": (variant(OCI_IMAGE, mediaType=DOCKER_SCHEMA1_SIGNED), None),
    "schema1 content type, version 2": (variant(OCI_IMAGE, mediaType=...), DOCKER_SCHEMA1),
    # Config.
    "missing config": (variant(OCI_IMAGE, config=...), OCI_MANIFEST),
    "null config": (variant(OCI_IMAGE, config=None), OCI_MANIFEST),
    "config a string": (variant(OCI_IMAGE, config=digest(b"{}")), OCI_MANIFEST),
    "config a list": (variant(OCI_IMAGE, config=[CONFIG]), OCI_MANIFEST),
    # Descriptors.
    "no digest": (bad_descriptor(digest=...), OCI_MANIFEST),
    "digest not a string": (bad_descriptor(digest=1), OCI_MANIFEST),
    "digest invalid": (bad_descriptor(digest="sha256:abc"), OCI_MANIFEST),
    "digest uppercase": (bad_descriptor(digest=digest(b"{}").upper()), OCI_MANIFEST),
    "digest unknown algorithm": (bad_descriptor(digest="md5:" + "0" * 32), OCI_MANIFEST),
    "digest path": (bad_descriptor(digest="sha256:../../../etc/passwd"), OCI_MANIFEST),
    "no size": (bad_descriptor(size=...), OCI_MANIFEST),
    "negative size": (bad_descriptor(size=-1), OCI_MANIFEST),
    "size a string": (bad_descriptor(size="2"), OCI_MANIFEST),
    "size a float": (bad_descriptor(size=2.5), OCI_MANIFEST),
    "size a bool": (bad_descriptor(size=True), OCI_MANIFEST),
    "size null": (bad_descriptor(size=None), OCI_MANIFEST),
    "no mediaType": (bad_descriptor(mediaType=...), OCI_MANIFEST),
    "empty mediaType": (bad_descriptor(mediaType=""), OCI_MANIFEST),
    "mediaType a number": (bad_descriptor(mediaType=1), OCI_MANIFEST),
    "urls a string": (bad_descriptor(urls="https://example.com"), OCI_MANIFEST),
    "urls of numbers": (bad_descriptor(urls=[1]), OCI_MANIFEST),
    "urls an empty string": (bad_descriptor(urls=""), OCI_MANIFEST),
    "urls an empty object": (bad_descriptor(urls={}), OCI_MANIFEST),
    "urls zero": (bad_descriptor(urls=0), OCI_MANIFEST),
    "descriptor artifactType a number": (bad_descriptor(artifactType=1), OCI_MANIFEST),
    # Layers and manifests lists.
    "layers not a list": (variant(OCI_IMAGE, layers=LAYERS[0]), OCI_MANIFEST),
    "layers a string": (variant(OCI_IMAGE, layers="layer"), OCI_MANIFEST),
    "layer not an object": (variant(OCI_IMAGE, layers=[digest(b"x")]), OCI_MANIFEST),
    "layer null": (variant(OCI_IMAGE, layers=[None]), OCI_MANIFEST),
    "bad second layer": (
        variant(OCI_IMAGE, layers=[LAYERS[0], variant(LAYERS[1], size=-5)]),
        OCI_MANIFEST,
    ),
    "manifest with manifests": (variant(OCI_IMAGE, manifests=[CHILD]), OCI_MANIFEST),
    "index with layers": (variant(OCI_IMAGE_INDEX, layers=LAYERS), OCI_INDEX),
    "index with config": (variant(OCI_IMAGE_INDEX, config=CONFIG), OCI_INDEX),
    "index with empty layers": (variant(OCI_IMAGE_INDEX, layers=[]), OCI_INDEX),
    "docker list with layers": (variant(DOCKER_LIST, layers=LAYERS), None),
    "index without manifests": (variant(OCI_IMAGE_INDEX, manifests=...), OCI_INDEX),
    "index manifests null": (variant(OCI_IMAGE_INDEX, manifests=None), OCI_INDEX),
    "index manifests an object": (variant(OCI_IMAGE_INDEX, manifests=CHILD), OCI_INDEX),
    "index bad child": (variant(OCI_IMAGE_INDEX, manifests=[variant(CHILD, digest="x")]), None),
    # Subject, artifactType, annotations.
    "subject not an object": (variant(OCI_IMAGE, subject=digest(b"s")), OCI_MANIFEST),
    "subject bad digest": (
        variant(OCI_IMAGE, subject=variant(desc(OCI_MANIFEST, b"s"), digest="sha256:1")),
        OCI_MANIFEST,
    ),
    "subject without size": (
        variant(OCI_IMAGE, subject=variant(desc(OCI_MANIFEST, b"s"), size=...)),
        OCI_MANIFEST,
    ),
    "artifactType a number": (variant(OCI_IMAGE, artifactType=1), OCI_MANIFEST),
    "artifactType an object": (variant(OCI_IMAGE_INDEX, artifactType={}), OCI_INDEX),
    "annotations a list": (variant(OCI_IMAGE, annotations=[["k", "v"]]), OCI_MANIFEST),
    "annotations an empty list": (variant(OCI_IMAGE, annotations=[]), OCI_MANIFEST),
    "annotations a string": (variant(OCI_IMAGE, annotations="k=v"), OCI_MANIFEST),
    "annotations false": (variant(OCI_IMAGE, annotations=False), OCI_MANIFEST),
    "annotation value a number": (variant(OCI_IMAGE, annotations={"k": 1}), OCI_MANIFEST),
    "annotation value null": (variant(OCI_IMAGE, annotations={"k": None}), OCI_MANIFEST),
    "annotation value an object": (variant(OCI_IMAGE, annotations={"k": {}}), OCI_MANIFEST),
}


@pytest.mark.parametrize(("document", "content_type"), REFUSED.values(), ids=REFUSED.keys())
def test_refused(document: dict[str, Any] | bytes, content_type: str | None) -> None:
    data = document if isinstance(document, bytes) else encode(document)
    with pytest.raises(ManifestError) as raised:
        parse_manifest(data, content_type)
    assert str(raised.value)


def test_refusals_say_why() -> None:
    cases = {
        "schemaVersion": (variant(OCI_IMAGE, schemaVersion=1), OCI_MANIFEST),
        "Content-Type": (OCI_IMAGE, DOCKER_MANIFEST),
        "schema 1": ({"schemaVersion": 2}, DOCKER_SCHEMA1),
        "config": (variant(OCI_IMAGE, config=...), OCI_MANIFEST),
        "layers[1].size": (
            variant(OCI_IMAGE, layers=[LAYERS[0], variant(LAYERS[1], size=-1)]),
            OCI_MANIFEST,
        ),
        "manifests": (variant(OCI_IMAGE_INDEX, manifests=...), OCI_INDEX),
        "subject.digest": (variant(OCI_IMAGE, subject=variant(CHILD, digest="x")), OCI_MANIFEST),
        "annotations": (variant(OCI_IMAGE, annotations={"k": 1}), OCI_MANIFEST),
    }
    for words, (document, content_type) in cases.items():
        with pytest.raises(ManifestError) as raised:
            parse_manifest(encode(document), content_type)
        assert words in str(raised.value), (words, str(raised.value))


# Sniffing the type of stored bytes (never raises)

SNIFFED = {
    "declared oci": (encode(OCI_IMAGE), OCI_MANIFEST),
    "declared docker": (encode(DOCKER_IMAGE), DOCKER_MANIFEST),
    "declared index": (encode(OCI_IMAGE_INDEX), OCI_INDEX),
    "declared list": (encode(DOCKER_LIST), DOCKER_MANIFEST_LIST),
    "declared anything": (encode({"mediaType": "application/x"}), "application/x"),
    "index by shape": (encode(variant(OCI_IMAGE_INDEX, mediaType=...)), OCI_INDEX),
    "manifest by shape": (encode(variant(OCI_IMAGE, mediaType=...)), OCI_MANIFEST),
    "schema1": (encode({"schemaVersion": 1, "fsLayers": []}), DOCKER_SCHEMA1),
    "schema1 signed": (encode({"schemaVersion": 1, "signatures": []}), DOCKER_SCHEMA1_SIGNED),
    "empty mediaType": (encode(variant(OCI_IMAGE_INDEX, mediaType="")), OCI_INDEX),
    "mediaType a number": (encode(variant(OCI_IMAGE, mediaType=5)), OCI_MANIFEST),
    "not json": (b"\x00\xff garbage", OCI_MANIFEST),
    "a list": (b"[1, 2]", OCI_MANIFEST),
    "empty": (b"", OCI_MANIFEST),
}


@pytest.mark.parametrize(("data", "media_type"), SNIFFED.values(), ids=SNIFFED.keys())
def test_sniff_media_type(data: bytes, media_type: str) -> None:
    assert sniff_media_type(data) == media_type
