"""``storage.maintenance.readonly``: every write refused with 405 UNSUPPORTED, reads served."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import RegistryProcess
from tests.pushing import (
    ACCEPT_MANIFESTS,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    image_manifest,
    push_blob,
    push_image,
    start_upload,
    with_query,
)

from .support import assert_error

Factory = Callable[..., RegistryProcess]


@dataclass
class Populated:
    client: httpx.Client
    root: Path
    digest: str
    manifest: bytes
    blob: str
    upload: str
    """Path of an upload session started before the switch to read-only."""


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).digest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def readonly(registry_factory: Factory, tmp_path: Path) -> Iterator[Populated]:
    root = tmp_path / "storage"
    storage: dict[str, object] = {
        "filesystem": {"rootdirectory": str(root)},
        "delete": {"enabled": True},
    }
    writer = registry_factory({"storage": storage})
    with httpx.Client(base_url=writer.url, timeout=30) as client:
        digest, manifest = push_image(client, "library/app", "v1")
        blob = push_blob(client, "library/app", b"a plain blob")
        location = start_upload(client, "library/app")
        client.patch(location, content=b"half")
        upload = "/v2/" + location.split("/v2/", 1)[1]
    writer.stop()
    storage["maintenance"] = {"readonly": {"enabled": True}}
    reader = registry_factory({"storage": storage})
    with httpx.Client(base_url=reader.url, timeout=30, headers=ACCEPT_MANIFESTS) as client:
        yield Populated(client, root, digest, manifest, blob, upload)


def test_reads_work(readonly: Populated) -> None:
    client = readonly.client
    assert client.get("/v2/").status_code == 200
    assert client.get("/v2/_catalog").json() == {"repositories": ["library/app"]}
    assert client.get("/v2/library/app/tags/list").json()["tags"] == ["v1"]
    for reference in ("v1", readonly.digest):
        response = client.get(f"/v2/library/app/manifests/{reference}")
        assert response.status_code == 200
        assert response.content == readonly.manifest
        assert client.head(f"/v2/library/app/manifests/{reference}").status_code == 200
    blob = client.get(f"/v2/library/app/blobs/{readonly.blob}")
    assert blob.content == b"a plain blob"
    ranged = client.get(f"/v2/library/app/blobs/{readonly.blob}", headers={"Range": "bytes=2-6"})
    assert ranged.status_code == 206
    assert ranged.content == b"plain"
    assert client.head(f"/v2/library/app/blobs/{readonly.blob}").status_code == 200
    referrers = client.get(f"/v2/library/app/referrers/{readonly.digest}")
    assert referrers.status_code == 200
    status = client.get(readonly.upload)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-3"


def _writes(populated: Populated) -> list[tuple[str, str, dict[str, object]]]:
    digest, blob, upload = populated.digest, populated.blob, populated.upload
    artifact = image_manifest(
        b"a plain blob", [], subject=descriptor(OCI_MANIFEST, populated.manifest)
    )
    return [
        ("POST", "/v2/library/app/blobs/uploads/", {}),
        ("POST", "/v2/library/new/blobs/uploads/", {}),
        ("POST", f"/v2/library/app/blobs/uploads/?digest={digest_of(b'x')}", {"content": b"x"}),
        ("POST", f"/v2/library/other/blobs/uploads/?mount={blob}&from=library/app", {}),
        ("PATCH", upload, {"content": b"more"}),
        ("PUT", with_query(upload, digest=digest_of(b"half")), {}),
        ("DELETE", upload, {}),
        ("PUT", "/v2/library/app/manifests/v2", {"content": populated.manifest}),
        ("PUT", f"/v2/library/app/manifests/{digest}", {"content": populated.manifest}),
        ("PUT", f"/v2/library/app/manifests/{digest_of(artifact)}", {"content": artifact}),
        ("DELETE", "/v2/library/app/manifests/v1", {}),
        ("DELETE", f"/v2/library/app/manifests/{digest}", {}),
        ("DELETE", f"/v2/library/app/blobs/{blob}", {}),
    ]


def test_every_write_is_refused(readonly: Populated) -> None:
    before = _tree(readonly.root)
    for method, path, extra in _writes(readonly):
        headers = {"Content-Type": OCI_MANIFEST} if "/manifests/" in path else {}
        response = readonly.client.request(method, path, headers=headers, **extra)  # type: ignore[arg-type]
        assert_error(response, 405, "UNSUPPORTED")
    assert _tree(readonly.root) == before
    # Everything is still where it was.
    client = readonly.client
    assert client.get(f"/v2/library/app/manifests/{readonly.digest}").status_code == 200
    assert client.get("/v2/library/app/manifests/v1").status_code == 200
    assert client.get(f"/v2/library/app/blobs/{readonly.blob}").status_code == 200
    assert client.get(readonly.upload).headers["Range"] == "0-3"
