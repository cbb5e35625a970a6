"""Image content written by the tests themselves: layers, configs, manifests, OCI layouts.

Everything here is deterministic (tar and gzip headers carry no times), so a
digest computed here is the digest a client must report after pushing the
content without changing it.

Two renderings of a manifest matter to the clients:

* ``docker``: Go's ``json.MarshalIndent(m, "", "   ")`` over distribution's
  schema2 struct (fields in the order schemaVersion, mediaType, config,
  layers; a descriptor as mediaType, size, digest). The Docker engine builds
  every manifest it pushes this way, even for an image it just pulled.
* ``compact``: Go's ``json.Marshal`` over the same struct, which is how
  containers/image (podman, buildah, skopeo) writes a manifest it had to
  update, for example after swapping its layers' uncompressed digests for the
  compressed ones it found in the registry.

``json.dumps`` with the matching separators produces the same bytes for the
plain ASCII strings used here.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.pushing import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    digest_of,
)

OCI_LAYOUT = '{"imageLayoutVersion":"1.0.0"}'
REF_NAME = "org.opencontainers.image.ref.name"


def render(document: dict[str, object], rendering: str) -> bytes:
    """Manifest bytes as Docker (``docker``) or containers/image (``compact``) write them."""
    if rendering == "docker":
        return json.dumps(document, indent=3).encode()
    if rendering == "compact":
        return json.dumps(document, separators=(",", ":")).encode()
    raise ValueError(f"unknown rendering {rendering!r}")


def tar_of(files: dict[str, bytes]) -> bytes:
    """An uncompressed tar of regular files (folders made as needed), with no times or owners.

    Files under ``bin/`` are executable.
    """
    buffer = io.BytesIO()
    folders: set[str] = set()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            parts = name.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                folder = "/".join(parts[:depth])
                if folder not in folders:
                    folders.add(folder)
                    info = tarfile.TarInfo(folder)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o755 if name.startswith("bin/") else 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue()


@dataclass(frozen=True)
class Layer:
    tar: bytes
    """Uncompressed: its digest is the layer's diff ID."""
    blob: bytes
    """What the registry stores: the tar, gzipped."""

    @classmethod
    def of(cls, tar: bytes) -> Layer:
        return cls(tar, gzip.compress(tar, compresslevel=6, mtime=0))

    @property
    def diff_id(self) -> str:
        return digest_of(self.tar)

    @property
    def digest(self) -> str:
        return digest_of(self.blob)


@dataclass(frozen=True)
class Image:
    """One platform's config, layers and manifest bytes."""

    config: bytes
    layers: tuple[Layer, ...]
    manifest: bytes
    media_type: str
    architecture: str

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    @property
    def config_digest(self) -> str:
        return digest_of(self.config)

    def blobs(self) -> dict[str, bytes]:
        """Everything the registry stores for this image, by digest (the manifest included)."""
        found = {digest_of(self.config): self.config, self.digest: self.manifest}
        for layer in self.layers:
            found[layer.digest] = layer.blob
        return found

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.manifest),
            **extra,
        }


def image(
    files: list[dict[str, bytes]],
    *,
    architecture: str = "amd64",
    docker: bool = False,
    rendering: str = "compact",
    config_extra: dict[str, object] | None = None,
) -> Image:
    """An image with one layer per mapping of ``files``; OCI unless ``docker``."""
    layers = tuple(Layer.of(tar_of(layer_files)) for layer_files in files)
    config_document: dict[str, object] = {
        "architecture": architecture,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        **(config_extra or {}),
    }
    config = json.dumps(config_document, separators=(",", ":")).encode()
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    config_type = DOCKER_CONFIG if docker else OCI_CONFIG
    layer_type = DOCKER_LAYER if docker else OCI_LAYER

    def describe(kind: str, data: bytes) -> dict[str, object]:
        # distribution's and containers/image's schema2 struct order; OCI's is digest, size.
        if docker:
            return {"mediaType": kind, "size": len(data), "digest": digest_of(data)}
        return {"mediaType": kind, "digest": digest_of(data), "size": len(data)}

    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": describe(config_type, config),
        "layers": [describe(layer_type, layer.blob) for layer in layers],
    }
    return Image(config, layers, render(document, rendering), media_type, architecture)


@dataclass(frozen=True)
class Index:
    manifest: bytes
    images: tuple[Image, ...]

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    def blobs(self) -> dict[str, bytes]:
        found = {self.digest: self.manifest}
        for child in self.images:
            found.update(child.blobs())
        return found


def index(images: list[Image]) -> Index:
    """An OCI image index of ``images``, each with its platform."""
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            child.descriptor(platform={"architecture": child.architecture, "os": "linux"})
            for child in images
        ],
    }
    return Index(json.dumps(document, indent=2).encode(), tuple(images))


@dataclass
class Layout:
    """An OCI image layout folder: ``oci-layout``, ``index.json`` and ``blobs/sha256``."""

    path: Path
    refs: dict[str, Image | Index] = field(default_factory=dict)

    def write(self) -> Layout:
        blobs = self.path / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text(OCI_LAYOUT)
        entries = []
        for name, content in self.refs.items():
            for digest, data in content.blobs().items():
                (blobs / digest.removeprefix("sha256:")).write_bytes(data)
            media_type = OCI_INDEX if isinstance(content, Index) else content.media_type
            entries.append(
                {
                    "mediaType": media_type,
                    "digest": content.digest,
                    "size": len(content.manifest),
                    "annotations": {REF_NAME: name},
                }
            )
        top = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        (self.path / "index.json").write_text(json.dumps(top, indent=2))
        return self

    def archive(self, path: Path) -> Path:
        """The layout as an ``oci-archive`` tar (what ``podman load`` and ``ctr import`` read)."""
        with tarfile.open(path, "w") as tar:
            for entry in sorted(self.path.rglob("*")):
                tar.add(entry, arcname=str(entry.relative_to(self.path)), recursive=False)
        return path


def write_dir(path: Path, content: Image) -> Path:
    """skopeo's ``dir:`` transport: ``manifest.json``, ``version`` and blobs named by hex digest."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "version").write_text("Directory Transport Version: 1.1\n")
    (path / "manifest.json").write_bytes(content.manifest)
    for digest, data in content.blobs().items():
        if digest != content.digest:
            (path / digest.removeprefix("sha256:")).write_bytes(data)
    return path


def read_dir(path: Path) -> dict[str, bytes]:
    """Blobs of a ``dir:`` copy by digest, checked against their names."""
    found: dict[str, bytes] = {}
    for entry in path.iterdir():
        if entry.name in ("manifest.json", "version") or entry.name.endswith(".signature"):
            continue
        data = entry.read_bytes()
        assert digest_of(data) == "sha256:" + entry.name, f"{entry} does not match its name"
        found["sha256:" + entry.name] = data
    return found
