"""containerd's ``?ns=``: a mirror read names the registry the image belongs to, and an
upstream with that prefix serves it, not this registry's repository of the same name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests.access import USERS, htpasswd_config
from tests.conftest import RegistryProcess
from tests.proxy.conftest import UPSTREAM_PASSWORD, UPSTREAM_USER, BasicUpstream
from tests.pushing import ACCEPT_MANIFESTS, digest_of, push_image


def test_ns_routes_mirror_reads_to_the_upstream_and_access_control_sees_it(
    basic_upstream: BasicUpstream,
    registry_factory: Callable[..., RegistryProcess],
    tmp_path: Path,
) -> None:
    with basic_upstream.client() as upstream:
        hub_digest, _ = push_image(upstream, "library/busybox", "v1", layers=[b"from the hub"])
    access = {
        "admins": ["admin"],
        "default": {"anonymous": [], "authenticated": []},
        "rules": [{"repositories": ["docker.io/**"], "anonymous": True, "actions": ["pull"]}],
    }
    registry = registry_factory(
        {
            **htpasswd_config(tmp_path, access),
            "proxy": {
                "upstreams": [
                    {
                        "prefix": "docker.io",
                        "remoteurl": basic_upstream.url,
                        "username": UPSTREAM_USER,
                        "password": UPSTREAM_PASSWORD,
                    }
                ]
            },
        }
    )
    admin = httpx.Client(
        base_url=registry.url, headers=ACCEPT_MANIFESTS, auth=("admin", USERS["admin"])
    )
    anonymous = httpx.Client(base_url=registry.url, headers=ACCEPT_MANIFESTS)
    with admin, anonymous:
        # The team's own library/busybox, a different image under the same name.
        local_digest, _ = push_image(admin, "library/busybox", "v1", layers=[b"our own"])
        assert local_digest != hub_digest

        mirrored = anonymous.get("/v2/library/busybox/manifests/v1?ns=docker.io")
        assert mirrored.status_code == 200, mirrored.text
        assert mirrored.headers["Docker-Content-Digest"] == hub_digest
        layer = mirrored.json()["layers"][0]["digest"]
        blob = anonymous.get(f"/v2/library/busybox/blobs/{layer}?ns=docker.io")
        assert blob.status_code == 200 and blob.content == b"from the hub"
        assert digest_of(blob.content) == layer

        # Without ns (or with a registry no upstream stands for) it is the local one,
        # which anonymous callers may not read.
        assert anonymous.get("/v2/library/busybox/manifests/v1").status_code == 401
        assert anonymous.get("/v2/library/busybox/manifests/v1?ns=ghcr.io").status_code == 401
        own = admin.get("/v2/library/busybox/manifests/v1?ns=ghcr.io")
        assert own.headers["Docker-Content-Digest"] == local_digest
        assert (
            admin.get("/v2/library/busybox/manifests/v1").headers["Docker-Content-Digest"]
            == local_digest
        )
        # The cached copy is the upstream's repository, under its prefix.
        cached = anonymous.get("/v2/docker.io/library/busybox/manifests/v1?ns=docker.io")
        assert cached.headers["Docker-Content-Digest"] == hub_digest
        # Writes are never routed: a push names its repository in the path.
        pushed = admin.put(
            "/v2/library/busybox/manifests/v2?ns=docker.io",
            content=own.content,
            headers={"Content-Type": own.headers["Content-Type"]},
        )
        assert pushed.status_code == 201
        assert admin.get("/v2/library/busybox/tags/list").json()["tags"] == ["v1", "v2"]
