"""``proxy.upstreams``: several upstreams by repository prefix, a Bearer-token one among
them, and repositories of this registry's own beside them."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path

from tests.access import token_config
from tests.api.support import assert_error
from tests.conftest import RegistryProcess
from tests.proxy.conftest import (
    UPSTREAM_PASSWORD,
    UPSTREAM_USER,
    BasicUpstream,
    bearer_client,
    client_of,
)
from tests.pushing import digest_of, push_image


def _upstream(prefix: str, url: str) -> dict[str, object]:
    return {
        "prefix": prefix,
        "remoteurl": url,
        "username": UPSTREAM_USER,
        "password": UPSTREAM_PASSWORD,
    }


def _blobs_of(client, repo: str, reference: str) -> list[str]:  # type: ignore[no-untyped-def]
    manifest = client.get(f"/v2/{repo}/manifests/{reference}")
    assert manifest.status_code == 200, manifest.text
    document = manifest.json()
    digests = []
    for descriptor in [document["config"], *document["layers"]]:
        blob = client.get(f"/v2/{repo}/blobs/{descriptor['digest']}")
        assert blob.status_code == 200, blob.text
        assert digest_of(blob.content) == descriptor["digest"]
        digests.append(descriptor["digest"])
    return digests


def _token_requests(upstream: RegistryProcess) -> list[str]:
    return [line for line in upstream.log().splitlines() if "GET /token?" in line]


def test_upstreams_by_prefix_with_local_repositories_beside_them(
    basic_upstream: BasicUpstream,
    bearer_upstream: RegistryProcess,
    registry_factory: Callable[..., RegistryProcess],
) -> None:
    with bearer_client(bearer_upstream) as upstream:
        bearer_digest, _ = push_image(upstream, "team/app", "v1", layers=[b"bearer layer"])
    with basic_upstream.client() as upstream:
        basic_digest, _ = push_image(upstream, "team/app", "v1", layers=[b"basic layer"])
    registry = registry_factory(
        {
            "proxy": {
                "upstreams": [
                    _upstream("tokens.test", bearer_upstream.url),
                    _upstream("basic.test/nested", basic_upstream.url),
                ]
            }
        }
    )
    pushing_tokens = len(_token_requests(bearer_upstream))
    with client_of(registry) as client:
        head = client.head("/v2/tokens.test/team/app/manifests/v1")
        assert head.headers["Docker-Content-Digest"] == bearer_digest
        assert len(_blobs_of(client, "tokens.test/team/app", "v1")) == 2
        got = client.get("/v2/basic.test/nested/team/app/manifests/v1")
        assert got.headers["Docker-Content-Digest"] == basic_digest
        _blobs_of(client, "basic.test/nested/team/app", "v1")
        # One token for the repository's pull scope, kept for every request after.
        token_requests = _token_requests(bearer_upstream)[pushing_tokens:]
        assert len(token_requests) == 1, token_requests
        assert "scope=repository%3Ateam%2Fapp%3Apull&" in token_requests[0]
        # A prefix matches whole components only: basic.test/other is this registry's own.
        own, _ = push_image(client, "basic.test/other", "v1")
        assert (
            client.get("/v2/basic.test/other/manifests/v1").headers["Docker-Content-Digest"] == own
        )
        pushed, _ = push_image(client, "team/own", "v1")
        assert client.get("/v2/team/own/manifests/v1").headers["Docker-Content-Digest"] == pushed
        assert_error(client.post("/v2/tokens.test/team/x/blobs/uploads/"), 405, "UNSUPPORTED")
        unknown = client.get("/v2/tokens.test/team/nothing/manifests/v1")
        assert_error(unknown, 404, "MANIFEST_UNKNOWN")
        catalog = client.get("/v2/_catalog").json()["repositories"]
        assert "tokens.test/team/app" in catalog and "team/own" in catalog
    log = registry.log()
    assert UPSTREAM_PASSWORD not in log
    assert base64.b64encode(f"{UPSTREAM_USER}:{UPSTREAM_PASSWORD}".encode()).decode() not in log
    assert "Bearer" not in log


def test_a_token_is_kept_until_it_expires(
    registry_factory: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    folder = tmp_path / "short-tokens"
    folder.mkdir()
    config = token_config(folder)
    config["access"]["tokenservice"]["expiration"] = "3s"  # type: ignore[index]
    upstream = registry_factory(config)
    with bearer_client(upstream) as pushing:
        push_image(pushing, "team/app", "v1")
    registry = registry_factory(
        {"proxy": {"upstreams": [_upstream("tokens.test", upstream.url)]}}, workers=2
    )
    before = len(_token_requests(upstream))
    with client_of(registry) as client:
        _blobs_of(client, "tokens.test/team/app", "v1")
        time.sleep(3.5)  # The token's 3 s are over.
        assert client.get("/v2/tokens.test/team/app/manifests/v1").status_code == 200
    # Per worker: one token each for the first pull at most, one more after the expiry.
    asked = len(_token_requests(upstream)) - before
    assert 2 <= asked <= 3, _token_requests(upstream)[before:]
