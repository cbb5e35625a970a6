"""The Quart app on its own (no native reads in front) serves the whole API too.

The server puts NativeReads in front of Quart for manifest and blob reads;
``create_app`` alone must still answer them, through the same handlers.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from registry.app import create_app
from registry.config import load_config
from registry.storage.driver.inmemory import InMemoryDriver
from tests.access import USERS, basic, htpasswd_config
from tests.pushing import OCI_MANIFEST, digest_of, image_manifest


async def test_reads_through_quart_alone() -> None:
    app = create_app(load_config(None, environ={}), driver=InMemoryDriver())
    client = app.test_client()
    config, layer = b'{"os":"linux"}', b"layer bytes"
    for blob in (config, layer):
        started = await client.post("/v2/quart/alone/blobs/uploads/")
        assert started.status_code == 202
        done = await client.put(
            f"{started.headers['Location']}?digest={digest_of(blob)}", data=blob
        )
        assert done.status_code == 201
    manifest = image_manifest(config, [layer])
    pushed = await client.put(
        "/v2/quart/alone/manifests/v1", data=manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert pushed.status_code == 201

    got = await client.get("/v2/quart/alone/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert got.status_code == 200
    assert await got.get_data() == manifest
    assert got.headers["Docker-Content-Digest"] == digest_of(manifest)
    assert got.headers["Content-Type"] == OCI_MANIFEST

    head = await client.head(f"/v2/quart/alone/blobs/{digest_of(layer)}")
    assert head.status_code == 200
    assert head.headers["Docker-Content-Digest"] == digest_of(layer)
    assert await head.get_data() == b""  # (Quart's test client recounts Content-Length.)

    ranged = await client.get(
        f"/v2/quart/alone/blobs/{digest_of(layer)}", headers={"Range": "bytes=0-4"}
    )
    assert ranged.status_code == 206
    assert await ranged.get_data() == layer[:5]

    missing = await client.get("/v2/quart/alone/manifests/v2")
    assert missing.status_code == 404
    assert json.loads(await missing.get_data())["errors"][0]["code"] == "MANIFEST_UNKNOWN"


async def test_with_access_control_the_app_alone_refuses_everything(tmp_path: Path) -> None:
    """Served without the access guard in front (another ASGI server, a test), the app
    fails closed: nothing is served, rather than everything to anyone."""
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({"version": 0.1, **htpasswd_config(tmp_path)}))
    app = create_app(load_config(str(path), environ={}), driver=InMemoryDriver())
    client = app.test_client()
    auth = {"Authorization": basic("admin", USERS["admin"])}
    for method, url in (
        ("GET", "/v2/"),
        ("GET", "/v2/_catalog"),
        ("GET", "/v2/a/tags/list"),
        ("GET", "/v2/a/manifests/latest"),
        ("HEAD", f"/v2/a/blobs/{digest_of(b'x')}"),
        ("POST", "/v2/a/blobs/uploads/"),
    ):
        response = await client.open(url, method=method, headers=auth)
        assert response.status_code == 401, (method, url)
