"""``/v2/<name>/tags/list`` and ``/v2/_catalog``: ``n``/``last`` pagination and ``Link``."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import RegistryProcess
from tests.pushing import digest_of, image_manifest, push_blob, push_image, push_manifest

from .support import assert_error

LINK_RE = re.compile(r'<([^>]+)>; rel="next"')
TAGS = ["a", "b", "c", "d", "e"]
Factory = Callable[..., RegistryProcess]


def _tag_all(client: httpx.Client, repo: str, tags: list[str]) -> None:
    _, body = push_image(client, repo, tags[0])
    for tag in tags[1:]:
        assert push_manifest(client, repo, tag, body).status_code == 201


def _next_link(response: httpx.Response) -> str | None:
    link = response.headers.get("Link")
    if link is None:
        return None
    found = LINK_RE.fullmatch(link)
    assert found, link
    return found.group(1)


def _follow(client: httpx.Client, url: str, key: str) -> Iterator[list[str]]:
    """Every page, following ``Link`` until there is none."""
    next_url: str | None = url
    while next_url is not None:
        response = client.get(next_url)
        assert response.status_code == 200, response.text
        yield response.json()[key]
        next_url = _next_link(response)


# --- tags -----------------------------------------------------------------------------


def test_tags_list(client: httpx.Client, repo: str) -> None:
    _tag_all(client, repo, ["latest", "v1", "1.0", "V2", "_x"])
    response = client.get(f"/v2/{repo}/tags/list")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"name": repo, "tags": sorted(["latest", "v1", "1.0", "V2", "_x"])}
    assert "Link" not in response.headers


# (query, tags on the page, Link's query or None)
TAG_PAGES = [
    ({"n": "2"}, ["a", "b"], {"last": "b", "n": "2"}),
    ({"n": "2", "last": "b"}, ["c", "d"], {"last": "d", "n": "2"}),
    ({"n": "2", "last": "d"}, ["e"], None),
    ({"n": "5"}, TAGS, None),
    ({"n": "10"}, TAGS, None),
    ({"n": "4"}, ["a", "b", "c", "d"], {"last": "d", "n": "4"}),
    ({"last": "b"}, ["c", "d", "e"], None),
    ({"last": "bb"}, ["c", "d", "e"], None),
    ({"last": "e"}, [], None),
    ({"last": "z", "n": "1"}, [], None),
    ({"n": "0"}, [], None),
    ({"n": "0", "last": "a"}, [], None),
    ({"n": ""}, TAGS, None),
]


@pytest.mark.parametrize(("query", "page", "link"), TAG_PAGES)
def test_tags_pagination(
    client: httpx.Client,
    repo: str,
    query: dict[str, str],
    page: list[str],
    link: dict[str, str] | None,
) -> None:
    _tag_all(client, repo, TAGS)
    response = client.get(f"/v2/{repo}/tags/list", params=query)
    assert response.status_code == 200, response.text
    assert response.json() == {"name": repo, "tags": page}
    next_url = _next_link(response)
    if link is None:
        assert next_url is None
        return
    assert next_url is not None
    parts = urlsplit(next_url)
    assert parts.path == f"/v2/{repo}/tags/list"
    assert {k: v[0] for k, v in parse_qs(parts.query).items()} == link


def test_tags_link_followed_to_the_end(client: httpx.Client, repo: str) -> None:
    _tag_all(client, repo, TAGS)
    pages = list(_follow(client, f"/v2/{repo}/tags/list?n=2", "tags"))
    assert pages == [["a", "b"], ["c", "d"], ["e"]]


@pytest.mark.parametrize("n", ["abc", "-1", "1.5", "0x10", " 2"])
def test_tags_non_numeric_n_is_ignored(client: httpx.Client, repo: str, n: str) -> None:
    """registry:2 2.8 ignores ``n`` on tags/list: a malformed one lists every tag, no error."""
    _tag_all(client, repo, TAGS)
    response = client.get(f"/v2/{repo}/tags/list", params={"n": n})
    assert response.status_code == 200, response.text
    assert response.json() == {"name": repo, "tags": TAGS}
    assert "Link" not in response.headers


def test_tags_of_unknown_repository(client: httpx.Client, repo: str) -> None:
    assert_error(client.get(f"/v2/{repo}/tags/list"), 404, "NAME_UNKNOWN")
    assert_error(client.get(f"/v2/{repo}/tags/list?n=1"), 404, "NAME_UNKNOWN")


def test_tags_of_repository_with_only_blobs_or_uploads(client: httpx.Client, repo: str) -> None:
    """A repository the catalog does not list is unknown to tags/list too, as in registry:2."""
    push_blob(client, f"{repo}/blobs", b"a blob without a manifest")
    assert client.post(f"/v2/{repo}/uploads/blobs/uploads/").status_code == 202
    assert_error(client.get(f"/v2/{repo}/blobs/tags/list"), 404, "NAME_UNKNOWN")
    assert_error(client.get(f"/v2/{repo}/uploads/tags/list"), 404, "NAME_UNKNOWN")


def test_tags_of_a_parent_folder(client: httpx.Client, repo: str) -> None:
    """``a`` is no repository because ``a/b`` is one."""
    push_image(client, f"{repo}/child", "latest")
    assert_error(client.get(f"/v2/{repo}/tags/list"), 404, "NAME_UNKNOWN")
    assert client.get(f"/v2/{repo}/child/tags/list").json()["tags"] == ["latest"]


def test_tags_of_repository_with_untagged_manifests(client: httpx.Client, repo: str) -> None:
    digest, body = push_image(client, repo, "temporary")
    assert client.delete(f"/v2/{repo}/manifests/temporary").status_code == 202
    assert client.get(f"/v2/{repo}/manifests/{digest}").content == body
    response = client.get(f"/v2/{repo}/tags/list")
    assert response.status_code == 200
    assert response.json() == {"name": repo, "tags": []}


def test_tags_after_deleting_every_tag(client: httpx.Client, repo: str) -> None:
    _tag_all(client, repo, ["a", "b"])
    for tag in ("a", "b"):
        assert client.delete(f"/v2/{repo}/manifests/{tag}").status_code == 202
    response = client.get(f"/v2/{repo}/tags/list")
    assert response.status_code == 200
    assert response.json() == {"name": repo, "tags": []}


# --- catalog --------------------------------------------------------------------------

REPOSITORIES = ["a/b/c", "a/b", "alpha", "beta", "gamma/delta/epsilon", "z9"]


@pytest.fixture
def catalog_registry(registry_factory: Factory) -> Iterator[httpx.Client]:
    """A registry of its own (the catalog is global), with maxentries 5."""
    registry = registry_factory({"catalog": {"maxentries": 5}})
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        for name in REPOSITORIES:
            push_image(client, name, "latest")
        push_blob(client, "only/blobs", b"a blob without a manifest")
        client.post("/v2/only/uploads/blobs/uploads/")
        yield client


def test_catalog_lists_nested_names_and_not_blob_only_ones(
    catalog_registry: httpx.Client,
) -> None:
    pages = list(_follow(catalog_registry, "/v2/_catalog?n=5", "repositories"))
    listed = [name for page in pages for name in page]
    assert listed == sorted(REPOSITORIES)
    assert "only/blobs" not in listed and "only/uploads" not in listed


# (query, page, Link's query or None)
CATALOG_PAGES = [
    ({"n": "2"}, ["a/b", "a/b/c"], {"last": "a/b/c", "n": "2"}),
    ({"n": "2", "last": "a/b/c"}, ["alpha", "beta"], {"last": "beta", "n": "2"}),
    ({"n": "2", "last": "beta"}, ["gamma/delta/epsilon", "z9"], None),
    ({"n": "3", "last": "alpha"}, ["beta", "gamma/delta/epsilon", "z9"], None),
    ({"n": "0"}, [], None),
    ({"last": "gamma"}, ["gamma/delta/epsilon", "z9"], None),
    ({"last": "z9"}, [], None),
    # No n: the page size is catalog.maxentries.
    (
        {},
        ["a/b", "a/b/c", "alpha", "beta", "gamma/delta/epsilon"],
        {"last": "gamma/delta/epsilon", "n": "5"},
    ),
]


@pytest.mark.parametrize(("query", "page", "link"), CATALOG_PAGES)
def test_catalog_pagination(
    catalog_registry: httpx.Client,
    query: dict[str, str],
    page: list[str],
    link: dict[str, str] | None,
) -> None:
    response = catalog_registry.get("/v2/_catalog", params=query)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"repositories": page}
    next_url = _next_link(response)
    if link is None:
        assert next_url is None
        return
    assert next_url is not None
    parts = urlsplit(next_url)
    assert parts.path == "/v2/_catalog"
    assert {k: v[0] for k, v in parse_qs(parts.query).items()} == link


def test_catalog_link_followed_to_the_end(catalog_registry: httpx.Client) -> None:
    pages = list(_follow(catalog_registry, "/v2/_catalog?n=2", "repositories"))
    assert pages == [["a/b", "a/b/c"], ["alpha", "beta"], ["gamma/delta/epsilon", "z9"]]


@pytest.mark.parametrize("n", ["6", "1000", "0006", "+6", "9223372036854775807"])
def test_catalog_n_beyond_maxentries(catalog_registry: httpx.Client, n: str) -> None:
    """As registry:2 2.8: a number above catalog.maxentries is refused, naming it."""
    response = catalog_registry.get("/v2/_catalog", params={"n": n})
    assert_error(response, 400, "PAGINATION_NUMBER_INVALID")
    assert response.json()["errors"][0]["detail"] == {"n": int(n)}


@pytest.mark.parametrize("n", ["abc", "-1", "2.0", "1e3", " 2", "", "9" * 5000])
def test_catalog_malformed_n_gives_the_default_page(catalog_registry: httpx.Client, n: str) -> None:
    """registry:2 2.8 ignores an ``n`` that is no 64-bit number or negative: the default page."""
    response = catalog_registry.get("/v2/_catalog", params={"n": n})
    assert response.status_code == 200, response.text
    assert response.json() == {"repositories": sorted(REPOSITORIES)[:5]}
    assert _next_link(response) == "/v2/_catalog?last=gamma%2Fdelta%2Fepsilon&n=5"


def test_catalog_default_bound_is_1000(client: httpx.Client, repo: str) -> None:
    push_image(client, repo, "latest")
    assert client.get("/v2/_catalog", params={"n": "1000"}).status_code == 200
    response = client.get("/v2/_catalog", params={"n": "1001"})
    assert_error(response, 400, "PAGINATION_NUMBER_INVALID")


def test_empty_catalog(registry_factory: Factory) -> None:
    registry = registry_factory()
    response = httpx.get(f"{registry.url}/v2/_catalog")
    assert response.status_code == 200
    assert response.json() == {"repositories": []}
    assert "Link" not in response.headers


# --- limits: tags.maxtags clamps, catalog.maxentries refuses -----------------------------


@contextlib.contextmanager
def _tags_registry(registry_factory: Factory, config: dict[str, object]) -> Iterator[httpx.Client]:
    """A registry of its own with ``config``, and repository ``many`` tagged with TAGS."""
    registry = registry_factory(config)
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        _tag_all(client, "many", TAGS)
        yield client


def test_tags_n_above_maxtags_is_clamped_with_a_link(registry_factory: Factory) -> None:
    """``crane ls`` asks for n=1000: it gets tags.maxtags of them and a Link, never a 400."""
    with _tags_registry(registry_factory, {"tags": {"maxtags": 2}}) as client:
        response = client.get("/v2/many/tags/list", params={"n": "1000"})
        assert response.status_code == 200, response.text
        assert response.json() == {"name": "many", "tags": ["a", "b"]}
        assert _next_link(response) == "/v2/many/tags/list?last=b&n=2"
        pages = list(_follow(client, "/v2/many/tags/list?n=1000", "tags"))
        assert pages == [["a", "b"], ["c", "d"], ["e"]]
        assert client.get("/v2/many/tags/list?n=1").json()["tags"] == ["a"]


def test_tags_without_n_are_all_listed_beyond_maxtags(registry_factory: Factory) -> None:
    """tags.maxtags bounds the n a client asks for; a list asked without n is whole."""
    with _tags_registry(registry_factory, {"tags": {"maxtags": 2}}) as client:
        response = client.get("/v2/many/tags/list")
        assert response.json()["tags"] == TAGS
        assert "Link" not in response.headers


def test_tags_limit_is_not_catalog_maxentries(registry_factory: Factory) -> None:
    """catalog.maxentries below 1000 used to make ``crane ls`` (n=1000) fail on tags."""
    with _tags_registry(registry_factory, {"catalog": {"maxentries": 2}}) as client:
        response = client.get("/v2/many/tags/list", params={"n": "1000"})
        assert response.status_code == 200, response.text
        assert response.json()["tags"] == TAGS
        assert "Link" not in response.headers
        assert_error(client.get("/v2/_catalog?n=3"), 400, "PAGINATION_NUMBER_INVALID")


def test_tags_maxtags_from_the_environment(registry_factory: Factory) -> None:
    registry = registry_factory(env={"REGISTRY_TAGS_MAXTAGS": "3"})
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        _tag_all(client, "many", TAGS)
        response = client.get("/v2/many/tags/list", params={"n": "4"})
        assert response.json()["tags"] == ["a", "b", "c"]
        assert _next_link(response) == "/v2/many/tags/list?last=c&n=3"


@pytest.mark.parametrize("n", ["9" * 5000, "1" + "0" * 4400, "0" * 5000 + "2"])
def test_tags_n_with_thousands_of_digits(client: httpx.Client, repo: str, n: str) -> None:
    """Python's int() refuses more than 4300 digits; the answer is a page, never a 500."""
    _tag_all(client, repo, TAGS)
    response = client.get(f"/v2/{repo}/tags/list", params={"n": n})
    assert response.status_code == 200, response.text
    expected = ["a", "b"] if n.endswith("2") else TAGS
    assert response.json()["tags"] == expected


@pytest.mark.parametrize("n", ["9" * 5000, "-" + "9" * 5000, "0" * 5000 + "3"])
def test_catalog_n_with_thousands_of_digits(catalog_registry: httpx.Client, n: str) -> None:
    """Too big for Go's Atoi: registry:2 gives the default page; leading zeros are still 3."""
    response = catalog_registry.get("/v2/_catalog", params={"n": n})
    assert response.status_code == 200, response.text
    assert len(response.json()["repositories"]) == (3 if n.endswith("3") else 5)


def test_catalog_page_without_n_is_100(registry_factory: Factory) -> None:
    """registry:2's default page is 100 repositories (or catalog.maxentries if smaller)."""
    registry = registry_factory()
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        config, layer = b'{"os":"linux"}', b"one layer"
        push_blob(client, "r000", config)
        push_blob(client, "r000", layer)
        manifest = image_manifest(config, [layer])
        names = [f"r{i:03d}" for i in range(101)]
        for name in names:
            for blob in (config, layer):
                mounted = client.post(
                    f"/v2/{name}/blobs/uploads/", params={"mount": digest_of(blob), "from": "r000"}
                )
                assert mounted.status_code == 201, mounted.text
            assert push_manifest(client, name, "latest", manifest).status_code == 201
        response = client.get("/v2/_catalog")
        assert response.json()["repositories"] == names[:100]
        assert _next_link(response) == "/v2/_catalog?last=r099&n=100"
        assert client.get("/v2/_catalog?last=r099").json()["repositories"] == ["r100"]
        assert len(client.get("/v2/_catalog?n=101").json()["repositories"]) == 101


def test_a_push_is_in_the_catalog_of_every_worker_at_once(registry_factory: Factory) -> None:
    """Each worker keeps the catalog's index in memory: a repository pushed through one
    is listed by the next request, whichever worker takes it (new connections spread
    over both; the access log's process ids show both answered)."""
    registry = registry_factory(workers=2)
    names: list[str] = []
    for n in range(12):
        name = f"spread/app{n:02}" if n % 2 else f"flat{n:02}"
        with httpx.Client(base_url=registry.url) as client:
            push_image(client, name, "v1")
        names.append(name)
        for _ in range(3):
            with httpx.Client(base_url=registry.url) as client:
                listed = client.get("/v2/_catalog", params={"n": 1000}).json()["repositories"]
            assert listed == sorted(names)
    pids = set(re.findall(r"registry\.access\[(\d+)\]", registry.log_with("_catalog")))
    assert len(pids) == 2, "one worker answered everything: the test proved nothing"
