"""``Location`` headers: ``http.host``, ``http.relativeurls``, ``X-Forwarded-*``, prefix."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.conftest import RegistryProcess
from tests.pushing import (
    ACCEPT_MANIFESTS,
    digest_of,
    image_manifest,
    push_image,
    push_manifest,
    with_query,
)

from .support import assert_error

Factory = Callable[..., RegistryProcess]
DATA = b"located blob"


def _locations(client: httpx.Client, repo: str, headers: dict[str, str]) -> dict[str, str]:
    """The Location of every kind of response that has one."""
    found: dict[str, str] = {}
    started = client.post(f"/v2/{repo}/blobs/uploads/", headers=headers)
    assert started.status_code == 202
    found["post"] = started.headers["Location"]
    # Requests go to the registry itself, wherever the Location points.
    upload_path = "/v2/" + found["post"].split("/v2/", 1)[1]
    status = client.get(upload_path, headers=headers)
    found["status"] = status.headers["Location"]
    patched = client.patch(upload_path, content=DATA, headers=headers)
    assert patched.status_code == 202
    found["patch"] = patched.headers["Location"]
    done = client.put(with_query(upload_path, digest=digest_of(DATA)), headers=headers)
    assert done.status_code == 201, done.text
    found["put"] = done.headers["Location"]
    single = client.post(
        f"/v2/{repo}/blobs/uploads/",
        params={"digest": digest_of(b"single")},
        content=b"single",
        headers=headers,
    )
    found["single"] = single.headers["Location"]
    mounted = client.post(
        f"/v2/{repo}/mounted/blobs/uploads/",
        params={"mount": digest_of(DATA), "from": repo},
        headers=headers,
    )
    assert mounted.status_code == 201
    found["mount"] = mounted.headers["Location"]
    config = client.post(
        f"/v2/{repo}/blobs/uploads/", params={"digest": digest_of(b"{}")}, content=b"{}"
    )
    assert config.status_code == 201
    manifest = image_manifest(b"{}", [DATA])
    pushed = client.put(
        f"/v2/{repo}/manifests/v1",
        content=manifest,
        headers={**headers, "Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert pushed.status_code == 201, pushed.text
    found["manifest"] = pushed.headers["Location"]
    return found


def _paths(repo: str) -> dict[str, str]:
    """What each Location names, from ``/v2/`` on (upload ids are checked by prefix)."""
    return {
        "post": f"/v2/{repo}/blobs/uploads/",
        "status": f"/v2/{repo}/blobs/uploads/",
        "patch": f"/v2/{repo}/blobs/uploads/",
        "put": f"/v2/{repo}/blobs/{digest_of(DATA)}",
        "single": f"/v2/{repo}/blobs/{digest_of(b'single')}",
        "mount": f"/v2/{repo}/mounted/blobs/{digest_of(DATA)}",
        "manifest": f"/v2/{repo}/manifests/{digest_of(image_manifest(b'{}', [DATA]))}",
    }


def _assert_locations(found: dict[str, str], base: str, repo: str) -> None:
    for kind, path in _paths(repo).items():
        assert found[kind].startswith(base + path), (kind, found[kind], base + path)


def test_default_is_absolute_from_host_header(client: httpx.Client, repo: str) -> None:
    found = _locations(client, repo, {})
    _assert_locations(found, str(client.base_url).rstrip("/"), repo)


def test_host_header_chosen_by_the_client(client: httpx.Client, repo: str) -> None:
    found = _locations(client, repo, {"Host": "registry.example.net:5443"})
    _assert_locations(found, "http://registry.example.net:5443", repo)


def test_x_forwarded_headers(client: httpx.Client, repo: str) -> None:
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "proxy.example.com"}
    found = _locations(client, repo, headers)
    _assert_locations(found, "https://proxy.example.com", repo)


def test_x_forwarded_lists_take_the_first(client: httpx.Client, repo: str) -> None:
    headers = {
        "X-Forwarded-Proto": "https, http",
        "X-Forwarded-Host": "outer.example.com:8443, inner.example.com",
    }
    found = _locations(client, repo, headers)
    _assert_locations(found, "https://outer.example.com:8443", repo)


def test_x_forwarded_proto_alone(client: httpx.Client, repo: str) -> None:
    found = _locations(client, repo, {"X-Forwarded-Proto": "https"})
    host = str(client.base_url).split("://", 1)[1].rstrip("/")
    _assert_locations(found, f"https://{host}", repo)


def test_http_host(registry_factory: Factory) -> None:
    registry = registry_factory({"http": {"host": "https://registry.example.com:8443"}})
    with httpx.Client(base_url=registry.url) as client:
        found = _locations(client, "hosted", {})
        _assert_locations(found, "https://registry.example.com:8443", "hosted")
        # http.host wins over what a proxy says.
        proxied = _locations(
            client,
            "proxied",
            {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "proxy.example.com"},
        )
        _assert_locations(proxied, "https://registry.example.com:8443", "proxied")


def test_relative_urls(registry_factory: Factory) -> None:
    registry = registry_factory({"http": {"relativeurls": True}})
    with httpx.Client(base_url=registry.url) as client:
        found = _locations(client, "relative", {"X-Forwarded-Host": "proxy.example.com"})
        _assert_locations(found, "", "relative")
        assert all(location.startswith("/v2/") for location in found.values())


def test_prefix(registry_factory: Factory) -> None:
    registry = registry_factory({"http": {"prefix": "/mirror"}})
    with httpx.Client(base_url=f"{registry.url}/mirror", headers=ACCEPT_MANIFESTS) as client:
        assert client.get("/v2/").status_code == 200
        digest, body = push_image(client, "prefixed", "v1")
        assert client.get(f"/v2/prefixed/manifests/{digest}").content == body
        found = _locations(client, "located", {})
        _assert_locations(found, f"{registry.url}/mirror", "located")
        for tag in ("v2", "v3"):
            pushed = push_manifest(client, "prefixed", tag, body)
            assert pushed.status_code == 201
        tags = client.get("/v2/prefixed/tags/list", params={"n": "1"})
        assert tags.headers["Link"] == '</mirror/v2/prefixed/tags/list?last=v1&n=1>; rel="next"'
        catalog = client.get("/v2/_catalog", params={"n": "1"})
        assert catalog.json() == {"repositories": ["located"]}
        assert catalog.headers["Link"] == '</mirror/v2/_catalog?last=located&n=1>; rel="next"'
    # Outside the prefix there is no API.
    assert_error(httpx.get(f"{registry.url}/v2/"), 404, "UNSUPPORTED")
    assert_error(httpx.get(f"{registry.url}/v2/prefixed/tags/list"), 404, "UNSUPPORTED")


def test_prefix_with_relative_urls(registry_factory: Factory) -> None:
    registry = registry_factory({"http": {"prefix": "/mirror", "relativeurls": True}})
    # A relative Location is resolved against the origin, not the prefixed base URL.
    with httpx.Client(base_url=registry.url) as client:
        started = client.post("/mirror/v2/relative/blobs/uploads/")
        location = started.headers["Location"]
        assert location.startswith("/mirror/v2/relative/blobs/uploads/")
        done = client.put(with_query(location, digest=digest_of(DATA)), content=DATA)
        assert done.status_code == 201, done.text
        assert done.headers["Location"] == f"/mirror/v2/relative/blobs/{digest_of(DATA)}"
        assert client.get(done.headers["Location"]).content == DATA
