"""Choosing an upstream by name, reading challenges and token replies."""

from __future__ import annotations

import json

import pytest

from registry.config import ProxyUpstream
from registry.proxy.challenge import MAX_CHALLENGE, parse_challenge
from registry.proxy.credentials import _token_of
from registry.proxy.errors import UpstreamInvalidError
from registry.proxy.routing import route

UPSTREAMS = (
    ProxyUpstream("https://mirror.example", prefix="ghcr.io/team"),
    ProxyUpstream("https://ghcr.io", prefix="ghcr.io"),
    ProxyUpstream("https://registry-1.docker.io", prefix="docker.io"),
)


@pytest.mark.parametrize(
    ("name", "remote", "url"),
    [
        ("ghcr.io/team/app", "app", "https://mirror.example"),
        ("ghcr.io/teamx/app", "teamx/app", "https://ghcr.io"),
        ("docker.io/alpine", "library/alpine", "https://registry-1.docker.io"),
        ("docker.io/library/alpine", "library/alpine", "https://registry-1.docker.io"),
        ("docker.io/me/tool", "me/tool", "https://registry-1.docker.io"),
        ("ghcr.io", None, None),
        ("ghcr.iox/app", None, None),
        ("team/app", None, None),
    ],
)
def test_route_by_whole_components(name: str, remote: str | None, url: str | None) -> None:
    target = route(UPSTREAMS, name)
    if remote is None:
        assert target is None
    else:
        assert target is not None
        assert (target.remote, target.upstream.remoteurl) == (remote, url)


def test_registry2_proxy_takes_every_name_and_hub_names_get_library() -> None:
    hub = (ProxyUpstream("https://registry-1.docker.io"),)
    assert route(hub, "alpine").remote == "library/alpine"  # type: ignore[union-attr]
    other = (ProxyUpstream("http://127.0.0.1:5001"),)
    assert route(other, "alpine").remote == "alpine"  # type: ignore[union-attr]


def test_challenges() -> None:
    bearer = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/alpine:pull"'
    )
    assert bearer is not None and bearer.scheme == "bearer"
    assert bearer.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/alpine:pull",
    }
    basic = parse_challenge('Basic realm="upstream"')
    assert basic is not None and basic.scheme == "basic"
    assert basic.params == {"realm": "upstream"}
    assert parse_challenge('Bearer realm="a\\"b", error=invalid_token').params == {  # type: ignore[union-attr]
        "realm": 'a"b',
        "error": "invalid_token",
    }
    assert parse_challenge(None) is None
    assert parse_challenge("") is None
    assert parse_challenge('Bearer realm="' + "x" * MAX_CHALLENGE + '"') is None


def test_token_replies() -> None:
    token, keep = _token_of(json.dumps({"token": "t", "expires_in": 300}).encode())
    assert (token, keep) == ("t", 270.0)
    assert _token_of(b'{"access_token": "a"}') == ("a", 54.0)  # 60 s when not said
    for bad in (b"not json", b"[]", b"{}", b'{"token": 5}', b'{"token": "a\\nb"}'):
        with pytest.raises(UpstreamInvalidError):
            _token_of(bad)
