"""Access control holds for repositories pulled through as for local ones, and a caller
refused never causes a request upstream."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.access import USERS, BearerAuth, htpasswd_config, token_config
from tests.api.support import assert_error
from tests.conftest import RegistryProcess
from tests.proxy.conftest import BasicUpstream, client_of, proxy_section
from tests.pushing import push_image

POLICY: dict[str, object] = {
    "admins": ["admin"],
    "rules": [{"repositories": ["team/**"], "users": ["alice"], "actions": ["pull"]}],
}


@pytest.mark.parametrize("mode", ["htpasswd", "token"])
def test_refused_callers_cause_no_upstream_request(
    basic_upstream: BasicUpstream,
    registry_factory: Callable[..., RegistryProcess],
    tmp_path: Path,
    mode: str,
) -> None:
    with basic_upstream.client() as upstream:
        digest, _ = push_image(upstream, "team/app", "v1")
        push_image(upstream, "other/app", "v1")
    make = htpasswd_config if mode == "htpasswd" else token_config
    registry = registry_factory({**proxy_section(basic_upstream.url), **make(tmp_path, POLICY)})

    def signed_in(user: str) -> httpx.Client:
        auth: httpx.Auth = (
            httpx.BasicAuth(user, USERS[user])
            if mode == "htpasswd"
            else BearerAuth(user, USERS[user])
        )
        return client_of(registry, auth=auth)

    with client_of(registry) as anonymous, signed_in("bob") as bob, signed_in("alice") as alice:
        for reference in ("manifests/v1", f"manifests/{digest}", f"blobs/{digest}", "tags/list"):
            assert_error(anonymous.get(f"/v2/team/app/{reference}"), 401, "UNAUTHORIZED")
            if reference != "tags/list":
                assert anonymous.head(f"/v2/team/app/{reference}").status_code == 401
            assert_error(bob.get(f"/v2/team/app/{reference}"), 403, "DENIED")
            assert_error(alice.get(f"/v2/other/app/{reference}"), 403, "DENIED")
        assert not basic_upstream.requests("registry-pull-through"), (
            "a refused caller went upstream"
        )
        # Pushing needs push first (403 for alice), then meets the cache's refusal.
        assert_error(alice.post("/v2/team/app/blobs/uploads/"), 403, "DENIED")
        got = alice.get("/v2/team/app/manifests/v1")
        assert got.status_code == 200
        assert got.headers["Docker-Content-Digest"] == digest
    with signed_in("admin") as admin:
        assert_error(admin.post("/v2/team/app/blobs/uploads/"), 405, "UNSUPPORTED")
