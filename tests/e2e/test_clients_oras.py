"""oras-py (the OCI Registry As Storage Python SDK) against the registry: artifacts and referrers.

oras-py 0.2 pushes files as an artifact (``Registry.push``), in one PUT or in
chunks, and sets a ``subject``; it has no parameter for ``artifactType``. An
artifact with an ``artifactType`` is therefore pushed with oras-py's own
lower-level calls (``upload_blob`` for the blobs, ``upload_manifest`` for a
manifest the test builds) and pulled back with ``Registry.pull``. The
referrers API is read over plain HTTP: oras-py has no call for it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest

from tests.pushing import push_image

pytestmark = pytest.mark.e2e

try:
    import oras.oci as oras_oci
    import oras.provider as oras_provider
except ImportError:  # pragma: no cover - the test extra installs it
    if os.environ.get("E2E_REQUIRED") == "1":
        raise
    pytest.skip(
        "oras not found: install it with `pip install -e '.[test]'`", allow_module_level=True
    )

EMPTY_CONFIG = {
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "size": 2,
}
SBOM = "application/vnd.example.sbom.v1+json"
SIGNATURE = "application/vnd.example.signature.v1"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def client(host: str) -> oras_provider.Registry:
    return oras_provider.Registry(hostname=host, insecure=True)


def push_typed_artifact(
    oras: oras_provider.Registry,
    target: str,
    path: Path,
    media_type: str,
    artifact_type: str,
    subject: dict[str, object] | None = None,
    annotations: dict[str, str] | None = None,
) -> str:
    """Push ``path`` as the one layer of an artifact with ``artifactType``; returns its digest."""
    container = oras.get_container(target)
    layer = oras_oci.NewLayer(str(path), media_type=media_type)
    layer["annotations"] = {"org.opencontainers.image.title": path.name}
    assert oras.upload_blob(str(path), container, layer).status_code in (200, 201)
    empty = path.parent / "empty.json"
    empty.write_bytes(b"{}")
    assert oras.upload_blob(str(empty), container, EMPTY_CONFIG).status_code in (200, 201)
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": artifact_type,
        "config": EMPTY_CONFIG,
        "layers": [layer],
    }
    if subject is not None:
        document["subject"] = subject
    if annotations:
        document["annotations"] = annotations
    response = oras.upload_manifest(document, container)
    assert response.status_code == 201, response.text
    # requests sends json= as json.dumps(document): the digest is that text's.
    digest = sha256(json.dumps(document).encode())
    assert response.headers["Docker-Content-Digest"] == digest
    if subject is not None:
        assert response.headers["OCI-Subject"] == subject["digest"]
    return digest


def test_push_and_pull_file_artifacts(registry_factory, tmp_path: Path) -> None:
    registry = registry_factory(workers=2)
    host = f"127.0.0.1:{registry.port}"
    oras = client(host)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"release notes pushed by oras\n")
    config = tmp_path / "config.json"
    config.write_bytes(b'{"kind":"notes"}')

    pushed = oras.push(
        f"{host}/artifacts/notes:v1",
        files=[f"{notes}:text/plain"],
        manifest_config=f"{config}:application/vnd.example.notes.config+json",
        manifest_annotations={"org.example.purpose": "e2e"},
        disable_path_validation=True,
    )
    assert pushed.status_code == 201
    document = oras.get_manifest(f"{host}/artifacts/notes:v1")
    assert pushed.headers["Docker-Content-Digest"] == sha256(json.dumps(document).encode())
    assert document["config"]["mediaType"] == "application/vnd.example.notes.config+json"
    assert document["config"]["digest"] == sha256(config.read_bytes())
    assert document["layers"][0]["digest"] == sha256(notes.read_bytes())
    assert document["annotations"] == {"org.example.purpose": "e2e"}
    files = oras.pull(f"{host}/artifacts/notes:v1", outdir=str(tmp_path / "pulled"))
    assert [Path(f).read_bytes() for f in files] == [notes.read_bytes()]

    # Chunked: POST, PATCH with Content-Range per chunk, PUT.
    big = tmp_path / "data.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    chunked = oras.push(
        f"{host}/artifacts/notes:chunked",
        files=[f"{big}:application/octet-stream"],
        do_chunked=True,
        chunk_size=1024 * 1024,
        disable_path_validation=True,
    )
    assert chunked.status_code == 201
    patches = [
        line for line in registry.log().splitlines() if '"PATCH /v2/artifacts/notes/blobs/' in line
    ]
    assert len(patches) == 4 and all('HTTP/1.1" 202' in line for line in patches), patches
    files = oras.pull(f"{host}/artifacts/notes:chunked", outdir=str(tmp_path / "chunked"))
    assert [sha256(Path(f).read_bytes()) for f in files] == [sha256(big.read_bytes())]

    # An artifactType, through oras-py's lower-level calls.
    sbom = tmp_path / "sbom.json"
    sbom.write_bytes(b'{"packages":[]}')
    digest = push_typed_artifact(
        oras, f"{host}/artifacts/notes:sbom", sbom, "application/json", SBOM
    )
    typed = oras.get_manifest(f"{host}/artifacts/notes:sbom")
    assert typed["artifactType"] == SBOM
    head = httpx.head(
        f"{registry.url}/v2/artifacts/notes/manifests/sbom",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert head.headers["Docker-Content-Digest"] == digest
    files = oras.pull(f"{host}/artifacts/notes:sbom", outdir=str(tmp_path / "sbom"))
    assert [Path(f).read_bytes() for f in files] == [sbom.read_bytes()]


def test_attach_artifacts_and_list_referrers(registry_factory, tmp_path: Path) -> None:
    registry = registry_factory()
    host = f"127.0.0.1:{registry.port}"
    oras = client(host)
    with httpx.Client(base_url=registry.url, timeout=30) as http:
        image_digest, image_manifest = push_image(http, "app/signed", "1.0")
    subject = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": image_digest,
        "size": len(image_manifest),
    }

    # One through Registry.push (its subject parameter), one with an artifactType.
    signature = tmp_path / "signature.txt"
    signature.write_bytes(b"signed, sealed, delivered\n")
    pushed = oras.push(
        f"{host}/app/signed:signature",
        files=[f"{signature}:{SIGNATURE}"],
        subject=oras_oci.Subject(**subject),
        disable_path_validation=True,
    )
    assert pushed.status_code == 201
    assert pushed.headers["OCI-Subject"] == image_digest
    signature_digest = pushed.headers["Docker-Content-Digest"]
    sbom = tmp_path / "sbom.json"
    sbom.write_bytes(b'{"packages":["busybox"]}')
    sbom_digest = push_typed_artifact(
        oras,
        f"{host}/app/signed:sbom",
        sbom,
        "application/json",
        SBOM,
        subject=subject,
        annotations={"org.example.kind": "sbom"},
    )

    listed = httpx.get(f"{registry.url}/v2/app/signed/referrers/{image_digest}")
    assert listed.status_code == 200
    assert listed.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
    assert "OCI-Filters-Applied" not in listed.headers
    referrers = {entry["digest"]: entry for entry in listed.json()["manifests"]}
    assert set(referrers) == {signature_digest, sbom_digest}
    # Without an artifactType, the config's media type stands in (the spec's rule).
    assert referrers[signature_digest]["artifactType"] == "application/vnd.unknown.config.v1+json"
    assert referrers[sbom_digest]["artifactType"] == SBOM
    assert referrers[sbom_digest]["annotations"] == {"org.example.kind": "sbom"}
    for digest, entry in referrers.items():
        served = httpx.get(
            f"{registry.url}/v2/app/signed/manifests/{digest}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert entry["size"] == len(served.content) and sha256(served.content) == digest
        assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"

    filtered = httpx.get(
        f"{registry.url}/v2/app/signed/referrers/{image_digest}", params={"artifactType": SBOM}
    )
    assert filtered.status_code == 200
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [entry["digest"] for entry in filtered.json()["manifests"]] == [sbom_digest]

    none = httpx.get(
        f"{registry.url}/v2/app/signed/referrers/{image_digest}",
        params={"artifactType": "application/vnd.example.nothing"},
    )
    assert none.headers["OCI-Filters-Applied"] == "artifactType"
    assert none.json()["manifests"] == []

    # The artifacts pull back as files with oras-py.
    files = oras.pull(f"{host}/app/signed@{sbom_digest}", outdir=str(tmp_path / "out"))
    assert [Path(f).read_bytes() for f in files] == [sbom.read_bytes()]
