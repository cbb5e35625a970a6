"""The web pages over HTTP: what they show, who sees it, and what a forged form gets.

The browser tests (tests/e2e/test_ui_browser.py) walk the pages as a user does;
these check each rule on its own, against a real ``registry serve``.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.access import USERS, BearerAuth, htpasswd_config, token_config, write_htpasswd
from tests.conftest import RegistryProcess, plain_registry
from tests.pushing import ACCEPT_MANIFESTS, push_blob, push_image, push_index

CSRF_RE = re.compile(r'name="csrf(?:-token)?" (?:value|content)="([^"]+)"')
ROW_RE = re.compile(r'<th scope="row"><a href="[^"]*">([^<]+)</a></th>')


def csrf_of(page: httpx.Response) -> str:
    found = CSRF_RE.search(page.text)
    assert found, page.text
    return found.group(1)


def listed(page: httpx.Response) -> list[str]:
    return [html.unescape(name) for name in ROW_RE.findall(page.text)]


def first_link(page: httpx.Response) -> str | None:
    found = re.search(r'<a href="([^"]+)">First page</a>', page.text)
    return html.unescape(found.group(1)) if found else None


def next_link(page: httpx.Response) -> str | None:
    found = re.search(r'<a href="([^"]+)" rel="next"', page.text)
    return html.unescape(found.group(1)) if found else None


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    process = plain_registry(tmp_path_factory.mktemp("ui-open"), workers=2)
    yield process
    process.stop()


@pytest.fixture
def api(open_registry: RegistryProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=open_registry.url, headers=ACCEPT_MANIFESTS, timeout=30) as c:
        yield c


@pytest.fixture
def browser_like(open_registry: RegistryProcess) -> Iterator[httpx.Client]:
    """A client that keeps cookies, as a browser does."""
    with httpx.Client(base_url=open_registry.url, timeout=30) as c:
        yield c


def test_root_leads_to_the_pages_with_a_strict_policy(browser_like: httpx.Client) -> None:
    root = browser_like.get("/")
    assert root.status_code == 302 and root.headers["Location"] == "/ui/"
    for path in ("/ui/", "/ui/storage", "/ui/signin", "/ui/repository?name=no/such"):
        page = browser_like.get(path)
        policy = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["content-type"].startswith("text/html")
        # Nothing is fetched from elsewhere: every script and style is the registry's own.
        for source in re.findall(r'(?:src|href)="([^"]+)"', page.text):
            assert source.startswith("/") or source.startswith("#"), source
    cookie = browser_like.get("/ui/").headers.get("set-cookie") or ""
    # The session cookie is set once; its flags say where it may go.
    with httpx.Client(base_url=str(browser_like.base_url)) as fresh:
        header = fresh.get("/ui/").headers["set-cookie"]
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/ui/" in header
    assert cookie == ""  # The client already had its session.


def test_names_labels_and_history_are_escaped(
    api: httpx.Client, browser_like: httpx.Client
) -> None:
    hostile = "<script>alert(1)</script>"
    config = json.dumps(
        {
            "os": "linux",
            "architecture": "amd64",
            "config": {"Labels": {"x": hostile}, "Env": [f"X={hostile}"]},
            "history": [{"created_by": hostile}],
        }
    ).encode()
    digest, _ = push_image(api, "escape/me", "v1", config=config)
    page = browser_like.get("/ui/image", params={"name": "escape/me", "tag": "v1"})
    assert page.status_code == 200
    assert hostile not in page.text
    assert html.escape(hostile) in page.text or "&lt;script&gt;" in page.text
    # A search text goes back into the page escaped too.
    search = browser_like.get("/ui/", params={"q": '"><img src=x onerror=alert(1)>'})
    assert "<img src=x" not in search.text
    assert digest in page.text


def test_repositories_page_and_search(api: httpx.Client, browser_like: httpx.Client) -> None:
    for index in range(120):
        push_blob(api, f"paging/repo-{index:03d}", b"x")  # No manifest: not a repository.
    names = [f"paging/app-{index:03d}" for index in range(120)]
    for name in names[:3]:
        push_image(api, name, "v1")
    # The rest share one image: pushed by mounting, as clients do between repositories.
    for name in names[3:]:
        push_image(api, name, "v1", layers=[b"shared layer"])
    seen: list[str] = []
    url: str | None = "/ui/?q=paging/app"
    pages = 0
    while url is not None:
        page = browser_like.get(url)
        assert page.status_code == 200
        # Every page after the first leads back to it, with the search kept.
        back = first_link(page)
        assert (back is None) == (pages == 0)
        if back is not None:
            assert listed(browser_like.get(back)) == names[:50]
        rows = listed(page)
        assert 0 < len(rows) <= 50
        seen += rows
        url = next_link(page)
        pages += 1
    assert seen == names and pages == 3
    only = browser_like.get("/ui/", params={"q": "app-007"})
    assert listed(only) == ["paging/app-007"]
    assert "No repository matches" in browser_like.get("/ui/", params={"q": "nothing-like"}).text


def test_tags_are_paged_and_show_size_platforms_and_created(
    api: httpx.Client, browser_like: httpx.Client
) -> None:
    config = json.dumps(
        {"os": "linux", "architecture": "arm64", "variant": "v8", "created": "2025-05-06T07:08:09Z"}
    ).encode()
    layer = b"L" * 3000
    digest, manifest = push_image(api, "tags/many", "t000", config=config, layers=[layer])
    for index in range(1, 75):
        response = api.put(
            f"/v2/tags/many/manifests/t{index:03d}",
            content=manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert response.status_code == 201
    index_digest, _ = push_index(api, "tags/many", "zz-multi", children=2)
    first = browser_like.get("/ui/repository", params={"name": "tags/many"})
    assert listed(first) == [f"t{index:03d}" for index in range(50)]
    assert "76 tags" in first.text
    row = first.text.split('data-tag="t000"')[1].split("</tr>")[0]
    assert "linux/arm64/v8" in row and "2025-05-06 07:08 UTC" in row
    size = len(manifest) + len(config) + len(layer)
    assert f"{size / 1000:.1f} KB" in row
    assert f"docker pull 127.0.0.1:{api.base_url.port}/tags/many:t000" in row
    second_url = next_link(first)
    assert second_url is not None
    second = browser_like.get(second_url)
    assert listed(second) == [f"t{index:03d}" for index in range(50, 75)] + ["zz-multi"]
    assert next_link(second) is None
    assert first_link(first) is None
    back = first_link(second)
    assert back is not None and listed(browser_like.get(back)) == listed(first)
    multi = second.text.split('data-tag="zz-multi"')[1].split("</tr>")[0]
    assert "linux/arch0, linux/arch1" in multi
    index_page = browser_like.get("/ui/image", params={"name": "tags/many", "digest": index_digest})
    assert index_page.status_code == 200 and 'id="platforms"' in index_page.text
    assert digest in browser_like.get("/ui/image", params={"name": "tags/many", "tag": "t001"}).text


def test_storage_counts_shared_blobs_once(api: httpx.Client, browser_like: httpx.Client) -> None:
    shared = b"S" * 5000
    own_a, own_b = b"A" * 7000, b"B" * 11000
    config = json.dumps({"os": "linux", "architecture": "amd64"}).encode()
    _, manifest_a = push_image(api, "usage/a", "v1", layers=[shared, own_a], config=config)
    _, manifest_b = push_image(api, "usage/b", "v1", layers=[shared, own_b], config=config)
    page = browser_like.get("/ui/storage")
    row_a = page.text.split(">usage/a</a>")[1].split("</tr>")[0]
    row_b = page.text.split(">usage/b</a>")[1].split("</tr>")[0]
    size_a = len(manifest_a) + len(config) + len(shared) + len(own_a)
    size_b = len(manifest_b) + len(config) + len(shared) + len(own_b)
    assert f"{size_a / 1000:.1f} KB" in row_a
    assert f"{(len(manifest_a) + len(own_a)) / 1000:.1f} KB" in row_a  # Only in a.
    assert f"{(len(manifest_b) + len(own_b)) / 1000:.1f} KB" in row_b
    assert f"{size_b / 1000:.1f} KB" in row_b


def test_delete_needs_the_session_token(api: httpx.Client, browser_like: httpx.Client) -> None:
    push_image(api, "forms/app", "v1")
    push_image(api, "forms/app", "v2")
    confirm = browser_like.get("/ui/delete", params={"name": "forms/app", "tag": "v2"})
    assert confirm.status_code == 200 and 'id="confirm-delete"' in confirm.text
    token = csrf_of(confirm)
    # Another site's form: no token, a wrong one, or the right one from another origin.
    with httpx.Client(base_url=str(browser_like.base_url)) as stranger:
        no_token = stranger.post("/ui/delete", data={"name": "forms/app", "tag": "v2"})
    refused = [
        no_token,
        browser_like.post("/ui/delete", data={"name": "forms/app", "tag": "v2", "csrf": "x"}),
        browser_like.post(
            "/ui/delete",
            data={"name": "forms/app", "tag": "v2", "csrf": token},
            headers={"Origin": "http://evil.example"},
        ),
    ]
    assert [response.status_code for response in refused] == [403, 403, 403]
    assert api.get("/v2/forms/app/tags/list").json()["tags"] == ["v1", "v2"]
    done = browser_like.post("/ui/delete", data={"name": "forms/app", "tag": "v2", "csrf": token})
    assert done.status_code == 303
    assert done.headers["Location"] == "/ui/repository?name=forms%2Fapp&deleted=v2"
    assert api.get("/v2/forms/app/tags/list").json()["tags"] == ["v1"]
    after = browser_like.get(done.headers["Location"])
    assert listed(after) == ["v1"] and "Deleted v2." in after.text
    again = browser_like.post("/ui/delete", data={"name": "forms/app", "tag": "v2", "csrf": token})
    assert again.status_code == 404 and "nothing was deleted" in again.text


def test_deleting_a_manifest_takes_its_tags(api: httpx.Client, browser_like: httpx.Client) -> None:
    digest, _ = push_image(api, "forms/manifest", "a")
    api.put(
        "/v2/forms/manifest/manifests/b",
        content=api.get(f"/v2/forms/manifest/manifests/{digest}").content,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    push_image(api, "forms/manifest", "other", layers=[b"another"])
    confirm = browser_like.get("/ui/delete", params={"name": "forms/manifest", "digest": digest})
    assert "with its tags a, b" in confirm.text
    done = browser_like.post(
        "/ui/delete",
        data={"name": "forms/manifest", "digest": digest, "csrf": csrf_of(confirm)},
    )
    assert done.status_code == 303
    assert api.get("/v2/forms/manifest/tags/list").json()["tags"] == ["other"]
    assert api.head(f"/v2/forms/manifest/manifests/{digest}").status_code == 404


@pytest.mark.parametrize(
    "query",
    [
        {"name": "../../etc/passwd"},
        {"name": "UPPER/case"},
        {"name": "a" * 300},
        {"name": "nothing/here"},
        {},
    ],
)
def test_bad_repository_names_are_not_found(browser_like: httpx.Client, query: dict) -> None:
    page = browser_like.get("/ui/repository", params=query)
    assert page.status_code == 404 and "<html" in page.text


@pytest.mark.parametrize(
    "query",
    [
        {"digest": "sha256:nothex"},
        {"digest": "sha256:" + "0" * 64},
        {"tag": "-bad"},
        {"tag": "missing"},
        {},
    ],
)
def test_bad_image_references_are_not_found(
    api: httpx.Client, browser_like: httpx.Client, query: dict
) -> None:
    push_image(api, "refs/app", "v1")
    page = browser_like.get("/ui/image", params={"name": "refs/app", **query})
    assert page.status_code == 404 and "No " in page.text


def test_deletes_off_means_no_delete(registry_factory) -> None:
    registry = registry_factory()
    with httpx.Client(base_url=registry.url, headers=ACCEPT_MANIFESTS) as c:
        push_image(c, "keep/app", "v1")
        page = c.get("/ui/repository", params={"name": "keep/app"})
        assert "Delete" not in page.text
        confirm = c.get("/ui/delete", params={"name": "keep/app", "tag": "v1"})
        assert confirm.status_code == 405
        refused = c.post(
            "/ui/delete", data={"name": "keep/app", "tag": "v1", "csrf": csrf_of(page)}
        )
        assert refused.status_code == 405 and "storage.delete.enabled" in refused.text
        assert c.get("/v2/keep/app/tags/list").json()["tags"] == ["v1"]


def test_ui_can_be_turned_off(registry_factory) -> None:
    registry = registry_factory({"ui": {"enabled": False}})
    with httpx.Client(base_url=registry.url) as c:
        assert c.get("/ui/").status_code == 404
        assert c.get("/").status_code == 404
        assert c.get("/v2/").status_code == 200


def test_prefix_moves_the_pages(registry_factory) -> None:
    registry = registry_factory({"http": {"prefix": "/registry"}})
    with httpx.Client(base_url=registry.url) as c:
        assert c.get("/registry/").headers["Location"] == "/registry/ui/"
        page = c.get("/registry/ui/")
        assert page.status_code == 200 and 'href="/registry/ui/static/ui.css"' in page.text
        assert c.get("/registry/ui/static/ui.js").status_code == 200


# --- access control ---

ACCESS = {
    "admins": ["admin"],
    "default": {"anonymous": [], "authenticated": []},
    "rules": [
        {"repositories": ["alice/**"], "users": ["alice"], "actions": ["pull"]},
        {"repositories": ["public/**"], "anonymous": True, "actions": ["pull"]},
    ],
}


def _sign_in(c: httpx.Client, user: str, password: str, next_page: str = "") -> httpx.Response:
    form = c.get("/ui/signin")
    data = {"user": user, "password": password, "csrf": csrf_of(form)}
    if next_page:
        data["next"] = next_page
    return c.post("/ui/signin", data=data)


def _seed(registry: RegistryProcess, auth: httpx.Auth) -> None:
    with httpx.Client(base_url=registry.url, headers=ACCEPT_MANIFESTS, auth=auth) as c:
        for name in ("alice/app", "bob/app", "public/app"):
            push_image(c, name, "v1")


def test_htpasswd_sign_in_sees_only_what_the_user_may_pull(
    registry_factory, tmp_path: Path
) -> None:
    registry = registry_factory(
        {"storage": {"delete": {"enabled": True}}, **htpasswd_config(tmp_path, ACCESS)},
        workers=2,
    )
    _seed(registry, httpx.BasicAuth("admin", USERS["admin"]))
    with httpx.Client(base_url=registry.url) as c:
        assert listed(c.get("/ui/")) == ["public/app"]
        assert c.get("/ui/repository", params={"name": "alice/app"}).status_code == 404
        assert c.get("/ui/image", params={"name": "alice/app", "tag": "v1"}).status_code == 404
        assert "alice/app" not in c.get("/ui/storage").text
        wrong = _sign_in(c, "alice", "nope")
        assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
        # A redirect goes only to these pages, never to another site.
        signed = _sign_in(c, "alice", USERS["alice"], next_page="//evil.example/x")
        assert signed.status_code == 303 and signed.headers["Location"] == "/ui/"
        # Two workers, one session: the secret made at the start is shared.
        for _ in range(6):
            assert listed(c.get("/ui/")) == ["alice/app", "public/app"]
        page = c.get("/ui/repository", params={"name": "alice/app"})
        assert page.status_code == 200 and "Delete" not in page.text
        assert c.get("/ui/delete", params={"name": "alice/app", "tag": "v1"}).status_code == 403
        assert c.post("/ui/signout", data={"csrf": "forged"}).status_code == 403
        out = c.post("/ui/signout", data={"csrf": csrf_of(page)})
        assert out.status_code == 303
        assert listed(c.get("/ui/")) == ["public/app"]
    # The admin may delete; a forged cookie is an anonymous visitor.
    with httpx.Client(base_url=registry.url) as admin:
        _sign_in(admin, "admin", USERS["admin"])
        assert (
            'aria-label="Delete tag v1"'
            in admin.get("/ui/repository", params={"name": "bob/app"}).text
        )
        cookie = admin.cookies.get("registry_session")
        assert cookie
    forged = cookie[:-4] + ("AAAA" if not cookie.endswith("AAAA") else "BBBB")
    with httpx.Client(base_url=registry.url, cookies={"registry_session": forged}) as c:
        assert listed(c.get("/ui/")) == ["public/app"]


def test_removed_user_is_signed_out(registry_factory, tmp_path: Path) -> None:
    config = htpasswd_config(tmp_path, ACCESS)
    registry = registry_factory(config)
    _seed(registry, httpx.BasicAuth("admin", USERS["admin"]))
    with httpx.Client(base_url=registry.url) as c:
        _sign_in(c, "alice", USERS["alice"])
        assert "alice/app" in listed(c.get("/ui/"))
        remaining = {user: password for user, password in USERS.items() if user != "alice"}
        write_htpasswd(Path(config["auth"]["htpasswd"]["path"]), remaining)  # type: ignore[index]
        for _ in range(100):
            if "alice/app" not in listed(c.get("/ui/")):
                break
        assert listed(c.get("/ui/")) == ["public/app"]


def test_sign_in_is_throttled_like_the_api(registry_factory, tmp_path: Path) -> None:
    access = {**ACCESS, "failedlogins": {"limit": 2, "window": "1m", "delay": "0s"}}
    registry = registry_factory(htpasswd_config(tmp_path, access))
    with httpx.Client(base_url=registry.url) as c:
        statuses = [_sign_in(c, "alice", "nope").status_code for _ in range(3)]
        assert statuses[:2] == [401, 401] and statuses[2] == 429
        locked = _sign_in(c, "alice", USERS["alice"])
        assert locked.status_code == 429 and "registry_session" not in str(
            locked.headers.get("set-cookie", "")
        )


def test_token_service_users_sign_in(registry_factory, tmp_path: Path) -> None:
    registry = registry_factory(token_config(tmp_path, ACCESS))
    _seed(registry, BearerAuth("admin", USERS["admin"]))
    with httpx.Client(base_url=registry.url) as c:
        assert listed(c.get("/ui/")) == ["public/app"]
        assert _sign_in(c, "alice", USERS["alice"]).status_code == 303
        assert listed(c.get("/ui/")) == ["alice/app", "public/app"]


def test_outside_token_service_has_no_sign_in_here(registry_factory, tmp_path: Path) -> None:
    config = token_config(tmp_path)
    del config["access"]  # Tokens from elsewhere: the registry knows no passwords.
    registry = registry_factory(config)
    with httpx.Client(base_url=registry.url) as c:
        page = c.get("/ui/")
        assert page.status_code == 200 and listed(page) == []
        assert 'id="sign-in"' not in page.text
        form = c.get("/ui/signin")
        assert "token service outside it" in form.text
        posted = c.post(
            "/ui/signin", data={"user": "admin", "password": "x", "csrf": csrf_of(page)}
        )
        assert posted.status_code == 404


def test_http_secret_is_kept_out_of_check_config(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({"version": 0.1, "http": {"secret": "very-secret-value"}}))
    shown = subprocess.run(
        [sys.executable, "-m", "registry", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "very-secret-value" not in shown.stdout + shown.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"version": 0.1, "ui": {"enabled": "sometimes"}}))
    refused = subprocess.run(
        [sys.executable, "-m", "registry", "check-config", str(bad)],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "ui.enabled" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_oversized_or_unbounded_forms_are_refused(browser_like: httpx.Client) -> None:
    token = csrf_of(browser_like.get("/ui/"))
    big = browser_like.post(
        "/ui/signin", data={"user": "x" * 20000, "password": "y", "csrf": token}
    )
    assert big.status_code == 413

    def chunks() -> Iterator[bytes]:
        yield f"csrf={token}&user=a&password=".encode()
        yield b"b" * 1000

    chunked = browser_like.post(
        "/ui/signin",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert chunked.status_code == 411


#: Every page route, and how an anonymous visitor is asked for a repository it may not
#: pull: each must hide it. A new route fails the inventory test below until it is here.
HIDDEN_FROM_ANONYMOUS = {
    "ui.repositories": ("GET", "/ui/", {}),
    "ui.repository": ("GET", "/ui/repository", {"name": "bob/app"}),
    "ui.image": ("GET", "/ui/image", {"name": "bob/app", "tag": "v1"}),
    "ui.storage": ("GET", "/ui/storage", {}),
    "ui.confirm_delete": ("GET", "/ui/delete", {"name": "bob/app", "tag": "v1"}),
    "ui.delete": ("POST", "/ui/delete", {"name": "bob/app", "tag": "v1"}),
    "ui.sign_in_form": ("GET", "/ui/signin", {}),
    "ui.sign_in": ("POST", "/ui/signin", {"user": "bob", "password": "wrong"}),
    "ui.sign_out": ("POST", "/ui/signout", {}),
    "ui.static": ("GET", "/ui/static/ui.css", {}),
}


def test_every_page_route_hides_what_the_viewer_may_not_pull(
    registry_factory, tmp_path: Path
) -> None:
    from registry.app import create_app
    from registry.config import load_config

    config_dict = {"storage": {"delete": {"enabled": True}}, **htpasswd_config(tmp_path, ACCESS)}
    registry = registry_factory(config_dict)
    _seed(registry, httpx.BasicAuth("admin", USERS["admin"]))
    app = create_app(load_config(registry.workdir / "config.yml"))
    pages = {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if not rule.rule.startswith("/v2") and rule.endpoint not in ("token", "ui-root")
    }
    assert pages == set(HIDDEN_FROM_ANONYMOUS)
    with httpx.Client(base_url=registry.url) as c:
        token = csrf_of(c.get("/ui/"))
        for endpoint, (method, path, values) in HIDDEN_FROM_ANONYMOUS.items():
            if method == "GET":
                answer = c.get(path, params=values)
            else:
                answer = c.post(path, data={**values, "csrf": token})
            assert "bob/app" not in answer.text or answer.status_code == 404, endpoint
            if "name" in values:
                assert answer.status_code == 404, endpoint
        assert c.get("/v2/bob/app/tags/list").status_code == 401
    with httpx.Client(base_url=registry.url, auth=("admin", USERS["admin"])) as admin:
        assert admin.get("/v2/bob/app/tags/list").json()["tags"] == ["v1"]


def test_no_delete_where_the_api_refuses_one(registry_factory) -> None:
    """Read-only mode and pulled-through repositories: the API refuses deletes, so do
    the pages (no link, 405 on the form)."""
    registry = registry_factory(
        {
            "storage": {"delete": {"enabled": True}},
            "proxy": {"upstreams": [{"prefix": "hub", "remoteurl": "http://127.0.0.1:9"}]},
        }
    )
    with httpx.Client(base_url=registry.url, headers=ACCEPT_MANIFESTS) as c:
        push_image(c, "own/app", "v1")
        assert c.get("/ui/delete", params={"name": "own/app", "tag": "v1"}).status_code == 200
        cached = c.get("/ui/delete", params={"name": "hub/library/x", "tag": "v1"})
        assert cached.status_code == 405 and "pulled through from" in cached.text
    registry.config["storage"]["maintenance"] = {"readonly": {"enabled": True}}  # type: ignore[index]
    registry.restart()
    with httpx.Client(base_url=registry.url, headers=ACCEPT_MANIFESTS) as c:
        page = c.get("/ui/repository", params={"name": "own/app"})
        assert listed(page) == ["v1"] and "Delete" not in page.text
        refused = c.post("/ui/delete", data={"name": "own/app", "tag": "v1", "csrf": csrf_of(page)})
        assert refused.status_code == 405 and "read-only" in refused.text
        assert c.get("/v2/own/app/tags/list").json()["tags"] == ["v1"]


def test_a_delete_on_the_pages_sends_the_apis_event(registry_factory, tmp_path: Path) -> None:
    from tests.api.test_notifications import Receiver, notifying

    receiver = Receiver().start()
    try:
        registry = registry_factory(notifying(tmp_path, receiver))
        with httpx.Client(base_url=registry.url, headers=ACCEPT_MANIFESTS) as c:
            push_image(c, "events/app", "v1")
            pushed = len(receiver.wait_for(3))  # Config, layer, manifest.
            confirm = c.get("/ui/delete", params={"name": "events/app", "tag": "v1"})
            done = c.post(
                "/ui/delete", data={"name": "events/app", "tag": "v1", "csrf": csrf_of(confirm)}
            )
            assert done.status_code == 303
        events = receiver.wait_for(pushed + 1)[pushed:]
        assert [
            (e["action"], e["target"]["repository"], e["target"].get("tag")) for e in events
        ] == [("delete", "events/app", "v1")]
    finally:
        receiver.stop()
