"""Host names and addresses as certificates and container engines spell them.

A certificate names its hosts in the Subject Alternative Name extension: an IP
address must be an ``IPAddress`` entry (a client never matches an IP against a
DNS entry), anything else a ``DNSName`` in ASCII (IDNA) form. Engines name a
registry ``HOST:PORT`` with IPv6 addresses in brackets, which is also the name
of its ``certs.d`` folder.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import subprocess
from collections.abc import Iterable, Sequence

from cryptography import x509


class HostNameError(ValueError):
    """A host name, address or ``HOST:PORT`` that cannot be used; the message says why."""


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# One DNS label: letters, digits, hyphens and (as real host names carry them) underscores,
# neither starting nor ending with a hyphen.
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_MAX_DNS_NAME = 253
_LOOPBACK_NAMES = ("localhost",)
_LOOPBACK_ADDRESSES = ("127.0.0.1", "::1")


def parse_ip(text: str) -> IPAddress | None:
    """Return the address ``text`` spells (``[::1]`` accepted), or None for a name.

    Zone ids (``fe80::1%eth0``) are refused: a certificate cannot carry them.
    """
    bracketed = text.startswith("[") and text.endswith("]")
    candidate = text[1:-1] if bracketed else text
    if "%" in candidate:
        raise HostNameError(f"{text!r}: an address with a zone id cannot go in a certificate")
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        if bracketed:
            raise HostNameError(f"{text!r}: not an IPv6 address inside the brackets") from None
        return None
    if bracketed and not isinstance(address, ipaddress.IPv6Address):
        raise HostNameError(f"{text!r}: brackets hold an IPv6 address")
    return address


def normalize_dns_name(text: str) -> str:
    """Lower-case, IDNA-encode and validate a DNS name (a leading ``*.`` wildcard allowed)."""
    name = text.strip().rstrip(".")
    if not name:
        raise HostNameError(f"{text!r}: empty host name")
    try:
        ascii_name = name.encode("idna").decode("ascii") if not name.isascii() else name
    except UnicodeError:
        raise HostNameError(f"{text!r}: not a valid internationalised host name") from None
    ascii_name = ascii_name.lower()
    if len(ascii_name) > _MAX_DNS_NAME:
        raise HostNameError(f"{text!r}: longer than {_MAX_DNS_NAME} characters")
    labels = ascii_name.split(".")
    if labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    for label in labels:
        if not _LABEL_RE.match(label):
            raise HostNameError(
                f"{text!r}: {label!r} is not a valid DNS label "
                "(letters, digits, '-', '_'; at most 63; no leading or trailing '-')"
            )
    return ascii_name


def canonical_host(text: str) -> str:
    """The spelling used to compare hosts: compressed address or normalized DNS name."""
    address = parse_ip(text)
    return str(address) if address is not None else normalize_dns_name(text)


def general_name(text: str) -> x509.GeneralName:
    """The Subject Alternative Name entry for ``text``: IP address or DNS name."""
    address = parse_ip(text)
    if address is not None:
        return x509.IPAddress(address)
    return x509.DNSName(normalize_dns_name(text))


def general_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """SAN entries for ``hosts`` in the given order, duplicates dropped."""
    seen: set[str] = set()
    names: list[x509.GeneralName] = []
    for host in hosts:
        key = canonical_host(host)
        if key not in seen:
            seen.add(key)
            names.append(general_name(host))
    return names


def describe_name(name: x509.GeneralName) -> str:
    """``DNS:example.com`` / ``IP:::1``, the spelling OpenSSL prints."""
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    return f"{type(name).__name__}:{name.value}"


def host_of(name: x509.GeneralName) -> str | None:
    """The host ``name`` stands for, or None for SAN kinds a TLS client does not match."""
    if isinstance(name, x509.DNSName):
        return str(name.value).lower()
    if isinstance(name, x509.IPAddress) and isinstance(
        name.value, ipaddress.IPv4Address | ipaddress.IPv6Address
    ):
        return str(name.value)
    return None


def name_matches(host: str, names: Sequence[x509.GeneralName]) -> bool:
    """Whether a TLS client connecting to ``host`` accepts a certificate naming ``names``.

    Follows RFC 6125 as clients apply it: addresses only match IP entries, a
    wildcard stands for exactly one left-most label.
    """
    address = parse_ip(host)
    if address is not None:
        return any(isinstance(name, x509.IPAddress) and name.value == address for name in names)
    wanted = normalize_dns_name(host)
    for name in names:
        if not isinstance(name, x509.DNSName):
            continue
        pattern = str(name.value).lower().rstrip(".")
        if pattern == wanted:
            return True
        if pattern.startswith("*."):
            head, _, rest = wanted.partition(".")
            if head and rest == pattern[2:]:
                return True
    return False


def parse_host_port(text: str) -> tuple[str, int | None]:
    """Split ``HOST:PORT`` (``[v6]:PORT``, or a bare ``HOST``) the way engines name a registry.

    Returns the host as written inside the name (IPv6 without brackets) and the port.
    """
    if not text or text != text.strip() or "/" in text:
        raise HostNameError(f"{text!r}: expected HOST:PORT, e.g. registry.example.com:5000")
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise HostNameError(f"{text!r}: missing ']' after the IPv6 address")
        host, rest = text[1:close], text[close + 1 :]
        parse_ip(f"[{host}]")
        if rest and not rest.startswith(":"):
            raise HostNameError(f"{text!r}: expected ':PORT' after ']'")
        port_text = rest[1:] if rest else None
    else:
        if text.count(":") > 1:
            raise HostNameError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:5000")
        host, sep, port_part = text.partition(":")
        port_text = port_part if sep else None
        canonical_host(host)
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise HostNameError(f"{text!r}: port must be a number from 1 to 65535")
    return host, int(port_text)


def format_host_port(host: str, port: int | None) -> str:
    """The ``HOST:PORT`` spelling engines use for folder names (IPv6 in brackets)."""
    address = parse_ip(host)
    shown = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else host
    return shown if port is None else f"{shown}:{port}"


def _interface_addresses_from_ip() -> list[str] | None:
    """Addresses from ``ip -j addr`` (iproute2), or None when it cannot tell."""
    try:
        done = subprocess.run(
            ["ip", "-j", "addr", "show"],
            capture_output=True,
            check=True,
            timeout=10,
            text=True,
        )
        links = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if not isinstance(links, list):
        return None
    addresses: list[str] = []
    for link in links:
        infos = link.get("addr_info", []) if isinstance(link, dict) else []
        for info in infos if isinstance(infos, list) else []:
            if not isinstance(info, dict) or info.get("scope") == "link":
                continue
            local = info.get("local")
            if isinstance(local, str):
                addresses.append(local)
    return addresses


def _interface_addresses_from_resolver(hostname: str) -> list[str]:
    """Addresses the resolver gives for this machine's name: the fallback without ``ip``."""
    try:
        infos = socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    return [str(info[4][0]) for info in infos]


def default_hosts() -> tuple[str, ...]:
    """Names and addresses a client on this machine or its networks may use to reach it.

    The host name, its fully qualified name, ``localhost``, the loopback
    addresses and every address on the interfaces; link-local addresses are
    left out because they only mean something together with an interface.
    Nothing here raises: a name that cannot be looked up is skipped.
    """
    hostname = socket.gethostname()
    try:
        fqdn = socket.getfqdn()
    except OSError:
        fqdn = hostname
    candidates = [hostname, fqdn, *_LOOPBACK_NAMES, *_LOOPBACK_ADDRESSES]
    addresses = _interface_addresses_from_ip()
    if addresses is None:
        addresses = _interface_addresses_from_resolver(hostname)
    candidates.extend(addresses)

    hosts: list[str] = []
    seen: set[str] = set()
    for candidate in candidates:
        try:
            key = canonical_host(candidate)
        except HostNameError:
            continue
        address = parse_ip(key)
        if address is not None and (address.is_link_local or address.is_unspecified):
            continue
        if key not in seen:
            seen.add(key)
            hosts.append(key)
    return tuple(hosts)
