"""A storage that fills up mid-push: a clear error, nothing half kept, reads go on, and
pushes work again once room is made, without a restart.

The storage is a real filesystem of 48 MiB (tmpfs, mounted by the test as root).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RegistryProcess
from tests.pushing import OCI_MANIFEST, digest_of, image_manifest, push_blob, push_image, with_query

pytestmark = pytest.mark.e2e

Factory = Callable[..., RegistryProcess]
MIB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        message = "mounting a small filesystem needs root"
        if os.environ.get("E2E_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    folder = tmp_path / "small"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _assert_full(response: httpx.Response) -> None:
    assert response.status_code == 507, response.text
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE"
    assert error["message"] == "the registry's storage is full"


def _files(root: Path, part: str) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and part in str(path)]


def test_a_full_disk_refuses_cleanly_and_recovers(
    registry_factory: Factory, small_disk: Path
) -> None:
    root = small_disk / "data"
    registry = registry_factory(
        {
            "storage": {
                "filesystem": {"rootdirectory": str(root)},
                "delete": {"enabled": True},
            }
        },
        workers=2,
    )
    with httpx.Client(base_url=registry.url, timeout=120) as client:
        kept_digest, kept_manifest = push_image(client, "full/kept", "v1", layers=[os.urandom(MIB)])

        # A monolithic push bigger than the room left: 507, and nothing of it kept.
        big = os.urandom(64 * MIB)
        refused = client.post(
            "/v2/full/app/blobs/uploads/", params={"digest": digest_of(big)}, content=big
        )
        _assert_full(refused)
        assert client.head(f"/v2/full/app/blobs/{digest_of(big)}").status_code == 404
        assert _files(root, "_uploads") == []
        assert not [path for path in root.rglob("*") if ".tmp~" in path.name]

        # A chunked push: chunks go in until one does not fit; that one is taken back
        # whole, and the session stays usable at its previous length.
        started = client.post("/v2/full/chunked/blobs/uploads/")
        location = started.headers["Location"]
        accepted = 0
        while True:
            chunk = os.urandom(8 * MIB)
            answer = client.patch(location, content=chunk)
            if answer.status_code != 202:
                _assert_full(answer)
                break
            accepted += len(chunk)
            location = answer.headers["Location"]
        assert accepted > 0
        status = client.get(location)
        assert status.status_code == 204
        assert status.headers["Range"] == f"0-{accepted - 1}"

        # A manifest does not fit either (the chunks took the room): refused whole.
        config = b'{"os":"linux","architecture":"amd64"}'
        layer = os.urandom(1024)
        with httpx.Client(base_url=registry.url, timeout=120) as small:
            for blob in (config, layer):
                answer = small.post(
                    "/v2/full/late/blobs/uploads/", params={"digest": digest_of(blob)}, content=blob
                )
                assert answer.status_code in (201, 507), answer.text

        # Reads go on while the disk is full.
        got = client.get("/v2/full/kept/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert got.status_code == 200 and got.content == kept_manifest
        assert client.get("/v2/_catalog").status_code == 200

        # Room is made (the session cancelled): pushes work again, same process.
        assert client.delete(location).status_code == 204
        digest = push_blob(client, "full/after", os.urandom(4 * MIB))
        assert client.head(f"/v2/full/after/blobs/{digest}").status_code == 200
        pushed, _ = push_image(client, "full/after", "v1", config=config, layers=[layer])
        accept = {"Accept": OCI_MANIFEST}
        for reference in (f"after/manifests/{pushed}", f"kept/manifests/{kept_digest}"):
            assert client.get(f"/v2/full/{reference}", headers=accept).status_code == 200
    assert "Traceback" not in registry.log()


def test_a_manifest_that_does_not_fit_is_not_half_written(
    registry_factory: Factory, small_disk: Path
) -> None:
    root = small_disk / "data"
    registry = registry_factory({"storage": {"filesystem": {"rootdirectory": str(root)}}})
    with httpx.Client(base_url=registry.url, timeout=120) as client:
        config, layer = b'{"os":"linux"}', b"a layer"
        for blob in (config, layer):
            push_blob(client, "full/manifest", blob)
        filler = small_disk / "filler"
        # Fill every byte left, so the next write of any size fails.
        descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for size in (MIB, 4096, 1):
                while True:
                    try:
                        os.write(descriptor, b"\0" * size)
                    except OSError:
                        break
        finally:
            os.close(descriptor)
        manifest = image_manifest(config, [layer])
        refused = client.put(
            "/v2/full/manifest/manifests/v1",
            content=manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        _assert_full(refused)
        assert client.get("/v2/full/manifest/manifests/v1").status_code == 404
        assert client.get(f"/v2/full/manifest/manifests/{digest_of(manifest)}").status_code == 404
        assert not [path for path in root.rglob("*") if ".tmp~" in path.name]
        filler.unlink()
        done = client.put(
            "/v2/full/manifest/manifests/v1",
            content=manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert done.status_code == 201, done.text
        upload = client.post("/v2/full/manifest/blobs/uploads/")
        assert upload.status_code == 202
        finished = client.put(with_query(upload.headers["Location"], digest=digest_of(b"")))
        assert finished.status_code == 201
