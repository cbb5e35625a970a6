"""The ``proxy`` section: registry:2's keys, ``proxy.upstreams``, and a message naming the
key for every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.config import ConfigError, ProxyUpstream, Secret, load_config


def _load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.yml"
    path.write_text("version: 0.1\n" + text)
    return load_config(str(path), environ={})


def test_registry2_proxy_section(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        "proxy:\n  remoteurl: https://registry-1.docker.io/\n  username: me\n"
        "  password: s3cret\n  ttl: 10m\n",
    )
    assert config.proxy.enabled
    (upstream,) = config.proxy.upstreams
    assert upstream == ProxyUpstream(
        remoteurl="https://registry-1.docker.io",
        prefix="",
        username="me",
        password=Secret("s3cret"),
        ttl=600.0,
        expire=7 * 24 * 3600.0,
    )
    assert "s3cret" not in repr(config)
    assert not _load(tmp_path, "").proxy.enabled
    assert _load(tmp_path, "proxy:\n  remoteurl: http://up:5000\n").proxy.upstreams[0].ttl == 0


def test_environment_overrides(tmp_path: Path) -> None:
    environ = {
        "REGISTRY_PROXY_REMOTEURL": "http://127.0.0.1:5001",
        "REGISTRY_PROXY_USERNAME": "me",
        "REGISTRY_PROXY_PASSWORD": "pw",
    }
    (upstream,) = load_config(None, environ=environ).proxy.upstreams
    assert upstream.remoteurl == "http://127.0.0.1:5001"
    assert upstream.password is not None and upstream.password.reveal() == "pw"


def test_upstreams_by_prefix_longest_first(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        "proxy:\n  remoteurl: http://all:5000\n  upstreams:\n"
        "    - prefix: ghcr.io\n      remoteurl: https://ghcr.io\n"
        "    - prefix: ghcr.io/team/\n      remoteurl: https://mirror.example\n"
        "      username: u\n      password: p\n      ttl: 1h\n",
    )
    assert [upstream.prefix for upstream in config.proxy.upstreams] == [
        "ghcr.io/team",
        "ghcr.io",
        "",
    ]
    assert config.proxy.upstreams[0].ttl == 3600.0


def test_expire_top_level_per_upstream_and_never(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        "proxy:\n  remoteurl: http://all:5000\n  expire: 24h\n  upstreams:\n"
        "    - prefix: kept\n      remoteurl: https://kept.example\n      expire: 0\n"
        "    - prefix: short\n      remoteurl: https://short.example\n      expire: 1m\n"
        "    - prefix: usual\n      remoteurl: https://usual.example\n",
    )
    expires = {upstream.prefix: upstream.expire for upstream in config.proxy.upstreams}
    assert expires == {"": 86400.0, "kept": 0.0, "short": 60.0, "usual": 604800.0}
    environ = {"REGISTRY_PROXY_REMOTEURL": "http://up:5000", "REGISTRY_PROXY_EXPIRE": "0"}
    assert load_config(None, environ=environ).proxy.upstreams[0].expire == 0.0


def test_exec_credential_helper_warns(tmp_path: Path) -> None:
    config = _load(tmp_path, "proxy:\n  remoteurl: http://up:5000\n  exec:\n    command: helper\n")
    assert any(warning.startswith("proxy.exec.command:") for warning in config.warnings)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("remoteurl: ftp://x", "proxy.remoteurl: expected an http(s) URL"),
        ("remoteurl: ''", "proxy.remoteurl: must not be empty"),
        ("remoteurl: https://me:pw@hub.example", "proxy.remoteurl: put credentials in username"),
        ("remoteurl: https://hub.example?x=1", "proxy.remoteurl: expected an http(s) URL"),
        ("remoteurl: http://up\n  username: ''", "proxy.username: must not be empty"),
        ("remoteurl: http://up\n  username: me", "proxy.password: required with proxy.username"),
        ("remoteurl: http://up\n  password: pw", "proxy.username: required with proxy.password"),
        ("remoteurl: http://up\n  password: [1]", "proxy.password: expected a string"),
        ("username: me\n  password: pw", "proxy.username: needs proxy.remoteurl"),
        ("ttl: 1h", "proxy.ttl: needs proxy.remoteurl"),
        ("remoteurl: http://up\n  ttl: soon", "proxy.ttl: 'soon' is not a duration"),
        ("remoteurl: http://up\n  ttl: -1", "proxy.ttl: must not be negative"),
        ("remoteurl: http://up\n  remote: x", "proxy.remote: unknown configuration key"),
        ("expire: 1h", "proxy.expire: needs proxy.remoteurl"),
        ("remoteurl: http://up\n  expire: weekly", "proxy.expire: 'weekly' is not a duration"),
        ("remoteurl: http://up\n  expire: -1", "proxy.expire: must be 0 (never) or at least 60s"),
        ("remoteurl: http://up\n  expire: 30s", "proxy.expire: must be 0 (never) or at least 60s"),
        ("remoteurl: http://up\n  expire: true", "proxy.expire:"),
        (
            "upstreams: [{prefix: x, remoteurl: 'http://up', expire: 1s}]",
            "proxy.upstreams[0].expire: must be 0 (never) or at least 60s",
        ),
        ("upstreams: {prefix: x}", "proxy.upstreams.prefix: unknown configuration key"),
        ("upstreams: x", "proxy.upstreams: expected a list of upstreams"),
        ("upstreams: [x]", "proxy.upstreams[0]: expected a map with prefix"),
        ("upstreams: [{remoteurl: 'http://up'}]", "proxy.upstreams[0].prefix: required"),
        ("upstreams: [{prefix: x}]", "proxy.upstreams[0].remoteurl: required"),
        (
            "upstreams: [{prefix: x, remoteurl: 'http://up', token: t}]",
            "proxy.upstreams[0].token: unknown key",
        ),
        (
            "upstreams: [{prefix: Docker.IO, remoteurl: 'http://up'}]",
            "proxy.upstreams[0].prefix: 'Docker.IO' is not a repository name prefix",
        ),
        (
            "upstreams: [{prefix: a//b, remoteurl: 'http://up'}]",
            "proxy.upstreams[0].prefix: 'a//b' is not a repository name prefix",
        ),
        (
            "upstreams: [{prefix: x, remoteurl: 'up:5000'}]",
            "proxy.upstreams[0].remoteurl: expected an http(s) URL",
        ),
        (
            "upstreams: [{prefix: x, remoteurl: 'http://up', username: u}]",
            "proxy.upstreams[0].password: required with proxy.upstreams[0].username",
        ),
        (
            "upstreams: [{prefix: x, remoteurl: 'http://up', password: p}]",
            "proxy.upstreams[0].username: required with proxy.upstreams[0].password",
        ),
        (
            "upstreams: [{prefix: x, remoteurl: 'http://up', ttl: forever}]",
            "proxy.upstreams[0].ttl: 'forever' is not a duration",
        ),
        (
            "upstreams: [{prefix: x, remoteurl: 'http://a'}, {prefix: x/, remoteurl: 'http://b'}]",
            "proxy.upstreams[1].prefix: 'x' names another upstream too",
        ),
        ("[1]", "proxy: expected a map of settings"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, section: str, message: str) -> None:
    text = f"proxy: {section}\n" if section.startswith("[") else f"proxy:\n  {section}\n"
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, text)
    assert message in str(raised.value)


def test_the_commented_example_loads_as_documented(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "config.example.yaml"
    lines = example.read_text().splitlines()
    first = lines.index(next(line for line in lines if line.startswith("# proxy:")))
    block = "\n".join(line[2:] for line in lines[first:] if line.startswith("# "))
    config = _load(tmp_path, block + "\n")
    assert [upstream.prefix for upstream in config.proxy.upstreams] == ["docker.io", "ghcr.io", ""]
    assert config.proxy.upstreams[0].ttl == 600.0
