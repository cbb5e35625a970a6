"""Every route, with access control on: anonymous, a user without the right, a user with it.

Both ways of signing in (htpasswd and tokens from the built-in service), both
ways into a handler (native reads and Quart). The table below must name every
method of every route of the route table, so a route added later without a row
here fails ``test_the_table_covers_every_route``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from registry.api.routes import ROUTES
from tests.access import USERS, BearerAuth, htpasswd_config, parse_challenge, token_config
from tests.conftest import RegistryProcess
from tests.pushing import (
    ACCEPT_MANIFESTS,
    digest_of,
    push_blob,
    push_image,
    start_upload,
    with_query,
)

from .raw_http import assert_spec_error, exchange
from .support import assert_error

#: reader may pull team/**, alice pull and push, admin everything; bob nothing there.
POLICY: dict[str, object] = {
    "admins": ["admin"],
    "groups": {"dev": ["alice"]},
    "rules": [
        {"repositories": ["team/**"], "groups": ["dev"], "actions": ["pull", "push"]},
        {"repositories": ["team/**"], "users": ["reader"], "actions": ["pull"]},
        {"repositories": ["bob/**"], "users": ["bob"], "actions": ["*"]},
    ],
}
REPO = "team/app"
#: For each need: (a user without it, a user with it).
USERS_FOR = {
    "pull": ("bob", "reader"),
    "push": ("reader", "alice"),
    "delete": ("alice", "admin"),
    "login": (None, "bob"),
    "catalog": (None, "bob"),
}

Send = Callable[[httpx.Client, httpx.Client], httpx.Response]


@dataclass(frozen=True)
class Case:
    route: str
    method: str
    need: str
    send: Send
    """(client under test, admin client) -> the response; the admin prepares what is needed."""
    status: int
    """What a caller with the right gets."""


def _blob(admin: httpx.Client) -> str:
    return push_blob(admin, REPO, os.urandom(64))


def _image(admin: httpx.Client) -> tuple[str, bytes]:
    return push_image(admin, REPO, f"t{uuid.uuid4().hex[:8]}", layers=[os.urandom(32)])


def _session(admin: httpx.Client) -> str:
    return start_upload(admin, REPO)


def _path(location: str) -> str:
    return httpx.URL(location).raw_path.decode()


CASES = [
    Case("base", "GET", "login", lambda c, a: c.get("/v2/"), 200),
    Case("base", "HEAD", "login", lambda c, a: c.head("/v2/"), 200),
    Case("catalog", "GET", "catalog", lambda c, a: c.get("/v2/_catalog"), 200),
    Case("tags", "GET", "pull", lambda c, a: (_image(a), c.get(f"/v2/{REPO}/tags/list"))[1], 200),
    Case(
        "manifest",
        "GET",
        "pull",
        lambda c, a: c.get(f"/v2/{REPO}/manifests/{_image(a)[0]}"),
        200,
    ),
    Case(
        "manifest",
        "HEAD",
        "pull",
        lambda c, a: c.head(f"/v2/{REPO}/manifests/{_image(a)[0]}"),
        200,
    ),
    Case(
        "manifest",
        "PUT",
        "push",
        lambda c, a: c.put(
            f"/v2/{REPO}/manifests/again",
            content=_image(a)[1],
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        ),
        201,
    ),
    Case(
        "manifest",
        "DELETE",
        "delete",
        lambda c, a: c.delete(f"/v2/{REPO}/manifests/{_image(a)[0]}"),
        202,
    ),
    Case("blob", "GET", "pull", lambda c, a: c.get(f"/v2/{REPO}/blobs/{_blob(a)}"), 200),
    Case("blob", "HEAD", "pull", lambda c, a: c.head(f"/v2/{REPO}/blobs/{_blob(a)}"), 200),
    Case("blob", "DELETE", "delete", lambda c, a: c.delete(f"/v2/{REPO}/blobs/{_blob(a)}"), 202),
    Case("blob-upload", "POST", "push", lambda c, a: c.post(f"/v2/{REPO}/blobs/uploads/"), 202),
    Case(
        "blob-upload-chunk",
        "GET",
        "push",
        lambda c, a: c.get(_path(_session(a))),
        204,
    ),
    Case(
        "blob-upload-chunk",
        "PATCH",
        "push",
        lambda c, a: c.patch(_path(_session(a)), content=b"chunk"),
        202,
    ),
    Case(
        "blob-upload-chunk",
        "PUT",
        "push",
        lambda c, a: c.put(
            with_query(_path(_session(a)), digest=digest_of(b"whole")), content=b"whole"
        ),
        201,
    ),
    Case(
        "blob-upload-chunk",
        "DELETE",
        "push",
        lambda c, a: c.delete(_path(_session(a))),
        204,
    ),
    Case(
        "referrers",
        "GET",
        "pull",
        lambda c, a: c.get(f"/v2/{REPO}/referrers/{_image(a)[0]}"),
        200,
    ),
]


def test_the_table_covers_every_route() -> None:
    """A route (or method) without a row here would go untested with access control on."""
    table = {(case.route, case.method) for case in CASES}
    routes = {(route.name, method) for route in ROUTES for method in route.methods}
    assert table == routes
    needs = {
        (route.name, method): route.needs[method] for route in ROUTES for method in route.methods
    }
    assert {(c.route, c.method): c.need for c in CASES} == needs


def _registry(workdir: Path, mode: str) -> RegistryProcess:
    make = htpasswd_config if mode == "htpasswd" else token_config
    config: dict[str, object] = {
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "data")},
            "delete": {"enabled": True},
        },
        **make(workdir, POLICY),
    }
    return RegistryProcess(workdir, config).start()


@pytest.fixture(scope="module", params=["htpasswd", "token"])
def guarded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, RegistryProcess]]:
    registry = _registry(tmp_path_factory.mktemp(f"access-{request.param}"), request.param)
    yield request.param, registry
    registry.stop()


def connect(registry: RegistryProcess, mode: str, user: str | None) -> httpx.Client:
    """A client signed in as ``user`` (None: anonymous, no credentials at all)."""
    auth: httpx.Auth | None = None
    if user is not None:
        if mode == "htpasswd":
            auth = httpx.BasicAuth(user, USERS[user])
        else:
            auth = BearerAuth(user, USERS[user])
    return httpx.Client(base_url=registry.url, auth=auth, timeout=30, headers=ACCEPT_MANIFESTS)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method}-{c.route}")
def test_anonymous_gets_401_with_a_challenge(
    guarded: tuple[str, RegistryProcess], case: Case
) -> None:
    mode, registry = guarded
    with connect(registry, mode, "admin") as admin, connect(registry, mode, None) as anonymous:
        response = case.send(anonymous, admin)
    assert response.status_code == 401, response.text
    if case.method != "HEAD":
        assert_error(response, 401, "UNAUTHORIZED")
    scheme, params = parse_challenge(response.headers["WWW-Authenticate"])
    if mode == "htpasswd":
        assert (scheme, params) == ("basic", {"realm": "test-realm"})
        return
    assert scheme == "bearer"
    assert params["realm"] == f"{registry.url}/token"
    assert params["service"] == "registry.test"
    if case.need in ("pull", "delete"):
        assert params["scope"] == f"repository:{REPO}:{case.need}"
    elif case.need == "push":  # As registry:2 asks, though push alone is required.
        assert params["scope"] == f"repository:{REPO}:pull,push"
    elif case.need == "catalog":
        assert params["scope"] == "registry:catalog:*"
    else:
        assert "scope" not in params


@pytest.mark.parametrize(
    "case", [c for c in CASES if USERS_FOR[c.need][0]], ids=lambda c: f"{c.method}-{c.route}"
)
def test_a_user_without_the_right_gets_403_denied(
    guarded: tuple[str, RegistryProcess], case: Case
) -> None:
    mode, registry = guarded
    without = USERS_FOR[case.need][0]
    with connect(registry, mode, "admin") as admin, connect(registry, mode, without) as client:
        response = case.send(client, admin)
    assert response.status_code == 403, response.text
    if case.method != "HEAD":
        assert_error(response, 403, "DENIED")
        detail = response.json()["errors"][0]["detail"]
        assert detail == [{"Type": "repository", "Name": REPO, "Action": case.need}]
    if mode == "token":
        scheme, params = parse_challenge(response.headers["WWW-Authenticate"])
        assert (scheme, params["error"]) == ("bearer", "insufficient_scope")
        wanted = "pull,push" if case.need == "push" else case.need
        assert params["scope"] == f"repository:{REPO}:{wanted}"
    line = f'{without} "{case.method} '
    assert line in registry.log_with(line)  # The access log names the user.


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method}-{c.route}")
def test_a_user_with_the_right_is_served(guarded: tuple[str, RegistryProcess], case: Case) -> None:
    mode, registry = guarded
    with_right = USERS_FOR[case.need][1]
    with connect(registry, mode, "admin") as admin, connect(registry, mode, with_right) as client:
        response = case.send(client, admin)
    assert response.status_code == case.status, response.text


def test_invalid_credentials_are_401_not_anonymous(guarded: tuple[str, RegistryProcess]) -> None:
    """A wrong password (or a forged token) is never taken for an anonymous caller."""
    mode, registry = guarded
    wrong = (
        {"Authorization": "Basic " + "YWxpY2U6bm9wZQ=="}  # alice:nope
        if mode == "htpasswd"
        else {"Authorization": "Bearer not.a.token"}
    )
    response = httpx.get(f"{registry.url}/v2/", headers=wrong)
    assert_error(response, 401, "UNAUTHORIZED")
    _, params = parse_challenge(response.headers["WWW-Authenticate"])
    if mode == "token":
        assert params["error"] == "invalid_token"


@pytest.mark.parametrize(
    "target", ["//v2/", "//v2//public/app/blobs/..", "///v2/public/app/tags/list"]
)
def test_extra_leading_slashes_reach_no_route(
    guarded: tuple[str, RegistryProcess], target: str
) -> None:
    """The guard judges the path as sent; a path only the web framework would have
    routed (it drops extra leading slashes) must not be served by it: 404, no route."""
    _, registry = guarded
    reply = exchange(registry.url, "GET", target)
    assert_spec_error(reply, 404, "UNSUPPORTED")
