"""Host names, addresses and HOST:PORT as certificates and engines spell them."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
from typing import Any

import pytest
from cryptography import x509

from tools.certs_hosts import (
    HostNameError,
    canonical_host,
    default_hosts,
    format_host_port,
    general_name,
    general_names,
    name_matches,
    parse_host_port,
    parse_ip,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", x509.IPAddress(ipaddress.ip_address("127.0.0.1"))),
        ("::1", x509.IPAddress(ipaddress.ip_address("::1"))),
        ("[fd00::2]", x509.IPAddress(ipaddress.ip_address("fd00::2"))),
        ("2001:DB8::1", x509.IPAddress(ipaddress.ip_address("2001:db8::1"))),
        ("localhost", x509.DNSName("localhost")),
        ("Registry.Example.com.", x509.DNSName("registry.example.com")),
        ("*.example.com", x509.DNSName("*.example.com")),
        ("host_with_underscore", x509.DNSName("host_with_underscore")),
        ("1.2.3", x509.DNSName("1.2.3")),  # not an address: a (strange) DNS name
    ],
)
def test_general_name(text: str, expected: x509.GeneralName) -> None:
    assert general_name(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "bad name",
        "-lead.example",
        "trail-.example",
        "a" * 64 + ".example",
        "a..b",
        "*",
        "[1.2.3.4]",
    ],
)
def test_bad_names_are_refused(text: str) -> None:
    with pytest.raises(HostNameError):
        general_name(text)


def test_zone_ids_are_refused() -> None:
    with pytest.raises(HostNameError, match="zone id"):
        parse_ip("fe80::1%eth0")


def test_too_long_name_is_refused() -> None:
    with pytest.raises(HostNameError, match="longer than 253"):
        canonical_host(".".join(["a" * 60] * 5))


def test_general_names_drop_duplicates_keep_order() -> None:
    names = general_names(["b.example", "127.0.0.1", "B.EXAMPLE", "::1", "0:0:0:0:0:0:0:1"])
    assert [str(n.value) for n in names] == ["b.example", "127.0.0.1", "::1"]


@pytest.mark.parametrize(
    ("host", "matches"),
    [
        ("registry.example.com", True),
        ("REGISTRY.example.com", True),
        ("x.apps.example.com", True),
        ("apps.example.com", False),  # a wildcard needs one label
        ("y.x.apps.example.com", False),  # and only one
        ("10.0.0.1", True),
        ("10.0.0.2", False),
        ("::1", True),
        ("[::1]", True),
        ("other.example.com", False),
    ],
)
def test_name_matches(host: str, matches: bool) -> None:
    sans = general_names(["registry.example.com", "*.apps.example.com", "10.0.0.1", "::1"])
    assert name_matches(host, sans) is matches


def test_an_address_never_matches_a_dns_entry_spelling_it() -> None:
    assert not name_matches("10.0.0.1", [x509.DNSName("10.0.0.1")])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("registry.example.com:5000", ("registry.example.com", 5000)),
        ("localhost:5000", ("localhost", 5000)),
        ("10.0.0.1:443", ("10.0.0.1", 443)),
        ("[::1]:5000", ("::1", 5000)),
        ("[fd00::2]", ("fd00::2", None)),
        ("registry.example.com", ("registry.example.com", None)),
    ],
)
def test_parse_host_port(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "::1:5000",
        "[::1:5000",
        "[::1]5000",
        "[127.0.0.1]:5000",
        "host:0",
        "host:65536",
        "host:port",
        "host:",
        "bad host:5000",
        "host:5000/v2",
        " host:5000",
        "https://host:5000",
    ],
)
def test_parse_host_port_refuses(text: str) -> None:
    with pytest.raises(HostNameError):
        parse_host_port(text)


def test_format_host_port_brackets_ipv6() -> None:
    assert format_host_port("::1", 5000) == "[::1]:5000"
    assert format_host_port("10.0.0.1", 5000) == "10.0.0.1:5000"
    assert format_host_port("registry", None) == "registry"


# --- default_hosts --------------------------------------------------------------


def test_default_hosts_name_this_machine() -> None:
    hosts = default_hosts()
    for expected in ("localhost", "127.0.0.1", "::1", canonical_host(socket.gethostname())):
        assert expected in hosts
    assert len(hosts) == len(set(hosts))
    for host in hosts:
        address = parse_ip(host)
        assert address is None or not address.is_link_local


def _fake_ip(links: list[dict[str, Any]]) -> Any:
    def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert cmd[:2] == ["ip", "-j"]
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(links), stderr="")

    return run


def test_default_hosts_from_ip_skip_link_local(monkeypatch: pytest.MonkeyPatch) -> None:
    links: list[dict[str, Any]] = [
        {
            "ifname": "eth0",
            "addr_info": [
                {"family": "inet", "local": "192.0.2.7", "scope": "global"},
                {"family": "inet6", "local": "2001:db8::7", "scope": "global"},
                {"family": "inet6", "local": "fe80::1234", "scope": "link"},
                {"family": "inet", "local": "169.254.3.4", "scope": "global"},
            ],
        },
        {"ifname": "down0", "addr_info": []},
    ]
    monkeypatch.setattr(subprocess, "run", _fake_ip(links))
    hosts = default_hosts()
    assert "192.0.2.7" in hosts and "2001:db8::7" in hosts
    assert "fe80::1234" not in hosts and "169.254.3.4" not in hosts


def test_default_hosts_without_ip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(2, "No such file or directory", cmd[0])

    def resolver(host: str, port: object, **kwargs: Any) -> list[tuple[Any, ...]]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("198.51.100.9", 0)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fe80::9", 0, 0, 2)),
        ]

    monkeypatch.setattr(subprocess, "run", missing)
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    hosts = default_hosts()
    assert "198.51.100.9" in hosts
    assert "fe80::9" not in hosts
    assert "localhost" in hosts


def test_default_hosts_survive_garbage_and_failing_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    def garbage(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 0, stdout="{not json", stderr="")

    def fails(*args: Any, **kwargs: Any) -> Any:
        raise OSError("resolver down")

    monkeypatch.setattr(subprocess, "run", garbage)
    monkeypatch.setattr(socket, "getaddrinfo", fails)
    monkeypatch.setattr(socket, "getfqdn", fails)
    monkeypatch.setattr(socket, "gethostname", lambda: "Bad Name!")
    assert default_hosts() == ("localhost", "127.0.0.1", "::1")
