"""Thousands of random and hostile requests against real registry processes.

Whatever arrives (odd methods, traversal in every path segment, lying or
absurd headers, broken or giant manifests, digests of every shape, extreme
pagination, garbage credentials), the registry answers below 500 with the
standard reason phrase, every error is the spec's JSON body (never HTML or a
traceback), nothing unhandled reaches its log, and afterwards it still serves
normally with its memory within a bound of what it used before.

Requests are sent byte for byte (``raw_http``): a client library would clean
up exactly what is being tested. Several requests go out per example, on one
keep-alive connection where the server keeps it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import quote, quote_from_bytes

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.access import USERS, htpasswd_config
from tests.conftest import RegistryProcess
from tests.pushing import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    digest_of,
    push_blob,
    push_image,
)

from .raw_http import (
    Connection,
    NoReplyError,
    Reply,
    Stream,
    address_of,
    assert_spec_error,
    build,
    rss_bytes,
)

#: The registry's resident memory after the fuzzing may be at most this multiple of
#: what it was once warmed up (every route served once). Measured: at most 1.2x
#: (54 MiB warm, 65 MiB after the 32 MiB manifests), over about 8,800 requests.
RSS_GROWTH_LIMIT = 2.0


def fuzz(examples: int) -> settings:
    """Hypothesis settings for ``examples`` examples of network round trips (no deadline)."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


REPO = "fuzz/app"
MANIFEST_TYPES = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST]


@dataclass
class Fuzzed:
    """A registry under fuzzing: the process, what it held when warm, what was sent."""

    process: RegistryProcess
    auth: httpx.Auth | None = None
    warm_rss: int = 0
    blobs: list[tuple[str, int]] = field(default_factory=list)
    """(digest, size) of blobs pushed to REPO, for manifests that reference them."""
    manifest: str = ""
    sent: int = 0

    @property
    def url(self) -> str:
        return self.process.url

    def check_still_serving(self) -> None:
        """Alive, answering normally, memory bounded, nothing unhandled in the log."""
        assert self.process.process is not None and self.process.process.poll() is None
        with httpx.Client(base_url=self.url, auth=self.auth, timeout=30) as client:
            base = client.get("/v2/")
            assert base.status_code == 200 and base.json() == {}, base.text
            digest = push_blob(client, "fuzz/after", f"still here {self.sent}".encode())
            assert client.head(f"/v2/fuzz/after/blobs/{digest}").status_code == 200
        assert self.process.process.pid is not None
        rss = rss_bytes(self.process.process.pid)
        assert rss <= RSS_GROWTH_LIMIT * self.warm_rss, (rss, self.warm_rss)
        log = self.process.log()
        assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]


def _start(workdir: Path, extra: dict[str, object], auth: httpx.Auth | None) -> Fuzzed:
    config: dict[str, object] = {
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "data")},
            "delete": {"enabled": True},
        },
        **extra,
    }
    process = RegistryProcess(workdir, config).start()
    fuzzed = Fuzzed(process, auth)
    with httpx.Client(base_url=process.url, auth=auth, timeout=30) as client:
        # Warm every path once so that lazy imports and caches count as "before".
        digest, _ = push_image(client, REPO, "latest")
        fuzzed.manifest = digest
        for data in (b'{"architecture":"amd64","os":"linux"}', b"layer", b"x" * 70_000):
            fuzzed.blobs.append((push_blob(client, REPO, data), len(data)))
        client.get(f"/v2/{REPO}/tags/list", params={"n": 1})
        client.get("/v2/_catalog")
        client.get(f"/v2/{REPO}/referrers/{digest}")
        client.get(f"/v2/{REPO}/blobs/{fuzzed.blobs[2][0]}", headers={"Range": "bytes=1-9"})
        client.delete(f"/v2/{REPO}/blobs/{digest_of(b'none')}")
    assert process.process is not None and process.process.pid is not None
    fuzzed.warm_rss = rss_bytes(process.process.pid)
    return fuzzed


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    """No access control, deletes enabled: every handler is reachable."""
    fuzzed = _start(tmp_path_factory.mktemp("fuzz-open"), {}, None)
    yield fuzzed
    _stop_cleanly(fuzzed)


def _stop_cleanly(fuzzed: Fuzzed) -> None:
    """Stopped, it leaves nothing behind: no request still running to be cancelled."""
    fuzzed.process.stop()
    log = fuzzed.process.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    """htpasswd users; failed logins are neither delayed nor locked out, to keep the pace."""
    workdir = tmp_path_factory.mktemp("fuzz-htpasswd")
    access = {"failedlogins": {"limit": 1_000_000, "window": "1s", "delay": "0"}}
    extra = htpasswd_config(workdir, access)
    fuzzed = _start(workdir, extra, httpx.BasicAuth("admin", USERS["admin"]))
    yield fuzzed
    _stop_cleanly(fuzzed)


# --- what every answer must be ---------------------------------------------------


def _documented_server_error(reply: Reply, headers: Sequence[tuple[str, str]]) -> bool:
    """The one 5xx HTTP itself asks for: 501 for a transfer coding other than one ``chunked``."""
    codings = [v.strip().lower() for k, v in headers if k.lower() == "transfer-encoding"]
    return reply.status == 501 and bool(codings) and codings != ["chunked"]


def check(reply: Reply, method: str, headers: Sequence[tuple[str, str]] = ()) -> None:
    """The invariants every response holds, whatever the request."""
    assert reply.status < 500 or _documented_server_error(reply, list(headers)), (
        reply.head,
        reply.body[:1000],
    )
    try:
        phrase = HTTPStatus(reply.status).phrase
    except ValueError:
        phrase = ""
    assert reply.reason == phrase, reply.head
    assert b"Traceback" not in reply.body, reply.body[:2000]
    assert not reply.body.lstrip().startswith(b"<"), reply.body[:500]
    assert reply.header("docker-distribution-api-version") == "registry/2.0", reply.head
    if reply.status >= 400 and method != "HEAD":
        assert_spec_error(reply)


def send(
    fuzzed: Fuzzed,
    connection: Connection,
    method: str,
    target: str | bytes,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    framing: bool = True,
) -> Reply | None:
    """Send one request and check the answer.

    ``framing``: add an honest Content-Length (unless the headers frame the body
    already). A request whose headers promise more body than is sent is followed
    by closing our side: the server may answer it or drop it, but not hang or fail.
    """
    headers = list(headers or [])
    framed = any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers)
    if framing and not framed and (body or method in ("PUT", "POST", "PATCH")):
        headers.append(("Content-Length", str(len(body))))
    data = build(method, target, headers, body)
    fuzzed.sent += 1
    if _may_wait_for_more(headers, body):
        return _send_short(fuzzed, data, method, headers)
    try:
        reply = connection.send(data, method)
    except NoReplyError:
        raise AssertionError(f"no answer to {data[:300]!r}") from None
    if reply.status == 101:  # h2c: the answer follows in HTTP/2, which is test_http2's.
        connection.close()
        return reply
    check(reply, method, headers)
    if framed:
        connection.close()  # What the server took for body, or not, stays unknown.
    return reply


def _may_wait_for_more(headers: Sequence[tuple[str, str]], body: bytes) -> bool:
    """The headers may make the server wait for body bytes that never come."""
    for name, value in headers:
        if name.lower() == "transfer-encoding":
            return True
        if name.lower() == "content-length":
            digits = value.strip()
            if DIGITS.fullmatch(digits) and (len(digits) > 30 or int(digits) > len(body)):
                return True
    return False


def _send_short(
    fuzzed: Fuzzed, data: bytes, method: str, headers: list[tuple[str, str]]
) -> Reply | None:
    with socket.create_connection(address_of(fuzzed.url), timeout=30) as sock:
        # Answered (and closed) before all was sent: the answer may still be there.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        try:
            reply = Stream(sock).reply(method)
        except NoReplyError:
            return None  # The server saw the request end early and dropped it.
    if reply.status != 101:
        check(reply, method, headers)
    return reply


# --- strategies -------------------------------------------------------------------

HEX = "0123456789abcdef"
DIGITS = re.compile("[0-9]+")
METHODS = st.one_of(
    st.sampled_from(
        [
            *("GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"),
            *("PROPFIND", "MKCOL", "LOCK", "BREW", "get", "Get", "M-SEARCH", "PRI"),
        ]
    ),
    st.from_regex(r"[A-Z]{1,24}", fullmatch=True),
    st.from_regex(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,40}", fullmatch=True),
)

_TRAVERSALS = [
    "..",
    ".",
    "%2e%2e",
    "%2E%2E",
    ".%2e",
    "%2e.",
    "..%2f..",
    "%2e%2e%2f%2e%2e",
    "..%5c..",
    "%00",
    "a%00b",
    "%2f",
    "",
    "%252e%252e",
    "%c0%ae%c0%ae",
    "..;",
    "~",
    "%ff",
    "caf%C3%A9",
    "\u00e9",
    "%e2%80%8b",
    "a" * 300,
    "%20",
    "+",
    "a%0d%0ab",
    "_catalog",
    "tags",
    "blobs",
    "manifests",
    "uploads",
    "referrers",
]
COMPONENTS = st.one_of(
    st.sampled_from(_TRAVERSALS),
    st.binary(max_size=12).map(lambda raw: quote_from_bytes(raw, safe="")),
    st.from_regex(r"[a-z0-9]+(?:[._-][a-z0-9]+)*", fullmatch=True),
    st.text(max_size=12).map(lambda text: quote(text, safe="")),
    st.text(st.characters(codec="utf-8"), max_size=8),
)
NAMES = st.one_of(
    st.just(REPO),
    st.lists(COMPONENTS, min_size=1, max_size=6).map("/".join),
    st.sampled_from(["/", "//", "a//b", "../" * 12 + "etc/passwd", "a/" * 130 + "a"]),
)
DIGESTS = st.one_of(
    st.text(HEX, min_size=64, max_size=64).map(lambda h: f"sha256:{h}"),
    st.text(HEX, min_size=128, max_size=128).map(lambda h: f"sha512:{h}"),
    st.text(HEX, min_size=96, max_size=96).map(lambda h: f"sha384:{h}"),
    st.text(HEX, max_size=200).map(lambda h: f"sha256:{h}"),
    st.text(HEX.upper(), min_size=64, max_size=64).map(lambda h: f"sha256:{h}"),
    st.text("0123456789abcdefghijklmnopqrstuvwxyz+._-:=", max_size=80),
    st.sampled_from(
        [
            "sha256:",
            ":",
            "sha256",
            ":" + "a" * 64,
            "SHA256:" + "a" * 64,
            "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "blake3:" + "a" * 64,
            "sha256:" + "a" * 64 + ":" + "b" * 64,
            "sha256:" + "a" * 10_000,
            "sha256:..%2f..%2f..%2f..",
            "sha256:%2e%2e",
            "sha256:" + "%00" * 64,
            "sha256:" + "\u0661" * 64,
            "sha256:" + "a" * 63 + "%0a",
        ]
    ),
)
TAGS = st.one_of(
    st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", fullmatch=True),
    st.sampled_from(["", ".", "..", "-x", "x" * 129, "latest%00", "%2e%2e", "a:b", "@"]),
    st.text(max_size=20).map(lambda text: quote(text, safe="")),
)
NUMBERS = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["", "-0", "+1", "0x10", "1e3", "1.5", " 1", "NaN", "\u0661", "1_000"]),
    # Beyond 64 bits, and beyond the 4300 digits Python's int() takes.
    st.integers(20, 6000).map(lambda n: "9" * n),
)
QUERY_VALUES = st.one_of(
    st.text(max_size=40).map(lambda text: quote(text, safe="")),
    st.binary(max_size=20).map(lambda raw: quote_from_bytes(raw, safe="")),
    NUMBERS,
    DIGESTS,
    NAMES,
)
QUERIES = st.lists(
    st.tuples(
        st.sampled_from(["n", "last", "digest", "mount", "from", "artifactType", "x", ""]),
        QUERY_VALUES,
    ),
    max_size=5,
).map(lambda pairs: ("?" + "&".join(f"{k}={v}" for k, v in pairs)) if pairs else "")
UPLOAD_IDS = st.one_of(
    st.uuids().map(str),
    st.sampled_from(["..", "%2e%2e", "..%2f..%2f..%2foutside", "", "x" * 500, "%00"]),
    st.text(max_size=40).map(lambda text: quote(text, safe="")),
)


@st.composite
def targets(draw: st.DrawFn) -> str:
    """A request target: an API route with fuzzed parts, or anything at all."""
    name = draw(NAMES)
    route = draw(
        st.sampled_from(
            [
                "/v2/",
                "/v2",
                "/v2/_catalog",
                f"/v2/{name}/tags/list",
                f"/v2/{name}/manifests/{draw(st.one_of(TAGS, DIGESTS))}",
                f"/v2/{name}/blobs/{draw(DIGESTS)}",
                f"/v2/{name}/blobs/uploads/",
                f"/v2/{name}/blobs/uploads/{draw(UPLOAD_IDS)}",
                f"/v2/{name}/referrers/{draw(DIGESTS)}",
                f"/{name}",
                f"//v2//{name}",
                f"/v2/../v2/{name}/tags/list",
                f"/v2/%2e%2e/{name}",
                "*",
                "/token",
            ]
        )
    )
    target = route + draw(QUERIES)
    if draw(st.integers(0, 9)) == 0:
        target = draw(st.text(min_size=1, max_size=200)).replace(" ", "%20")
    return target


def _header_value(max_size: int = 200) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=max_size),
        st.text(st.characters(min_codepoint=0, max_codepoint=0xFF), max_size=40),
    )


HEADERS = st.one_of(
    st.tuples(st.just("Accept"), st.one_of(_header_value(), st.sampled_from(MANIFEST_TYPES))),
    st.tuples(
        st.just("Accept"),
        st.lists(
            st.sampled_from([*MANIFEST_TYPES, "*/*", "x/y;q=0.1", ";;", ","]), max_size=300
        ).map(", ".join),
    ),
    st.tuples(st.just("Content-Type"), st.one_of(_header_value(), st.sampled_from(MANIFEST_TYPES))),
    st.tuples(st.just("Authorization"), _header_value(400)),
    st.tuples(
        st.just("Authorization"),
        st.sampled_from(["Basic", "Bearer", "basic", "Digest", "Basic Og==", "Bearer ..."]).flatmap(
            lambda scheme: _header_value(100).map(lambda value: f"{scheme} {value}")
        ),
    ),
    st.tuples(
        st.just("Range"),
        st.one_of(
            _header_value(60),
            st.sampled_from(
                ["bytes=0-", "bytes=-5", "bytes=5-1", "bytes=-0", "bytes=-", "items=1-"]
            ),
            st.tuples(NUMBERS, NUMBERS).map(lambda pair: f"bytes={pair[0]}-{pair[1]}"),
            st.lists(st.just("0-1"), max_size=500).map(lambda parts: "bytes=" + ",".join(parts)),
        ),
    ),
    st.tuples(
        st.just("Content-Range"),
        st.one_of(
            _header_value(60),
            st.tuples(NUMBERS, NUMBERS).map(lambda pair: f"{pair[0]}-{pair[1]}"),
            st.sampled_from(["0-", "-", "bytes 0-1/2", "bytes */*", "0-0/0", "5-1"]),
        ),
    ),
    st.tuples(st.just("Content-Length"), st.one_of(NUMBERS, _header_value(20))),
    st.tuples(st.sampled_from(["If-None-Match", "If-Match", "If-Range"]), _header_value()),
    st.tuples(st.sampled_from(["X-Forwarded-Host", "X-Forwarded-Proto"]), _header_value(100)),
    st.tuples(
        st.just("Host"), st.one_of(_header_value(100), st.integers(200, 8000).map("h".__mul__))
    ),
    st.tuples(st.just("Expect"), st.sampled_from(["100-continue", "garbage"])),
    st.tuples(st.just("Connection"), st.sampled_from(["close", "keep-alive", "upgrade", "x"])),
    st.tuples(st.just("Upgrade"), st.sampled_from(["h2c", "websocket", "x"])),
    st.tuples(st.just("Transfer-Encoding"), st.sampled_from(["chunked", "gzip", "chunked, gzip"])),
    st.tuples(st.from_regex(r"[A-Za-z0-9-]{1,40}", fullmatch=True), _header_value()),
)
BODIES = st.one_of(st.just(b""), st.binary(max_size=2048), st.text(max_size=200).map(str.encode))


# --- the fuzzers ----------------------------------------------------------------------


def test_fuzz_methods_and_paths(open_registry: Fuzzed) -> None:
    """Odd methods on traversal, encodings, unicode and overlong paths: never a 5xx."""

    @fuzz(500)
    @given(target=targets(), methods=st.lists(METHODS, min_size=1, max_size=4), body=BODIES)
    def run(target: str, methods: list[str], body: bytes) -> None:
        with Connection(open_registry.url) as connection:
            for method in methods:
                send(open_registry, connection, method, target, body=body)

    run()
    open_registry.check_still_serving()


def test_fuzz_headers(open_registry: Fuzzed) -> None:
    """Lying, absurd, garbled and numerous headers on every route."""

    @fuzz(400)
    @given(
        target=targets(),
        method=st.sampled_from(["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]),
        headers=st.lists(HEADERS, max_size=8),
        many=st.integers(0, 150),
        body=BODIES,
    )
    def run(
        target: str, method: str, headers: list[tuple[str, str]], many: int, body: bytes
    ) -> None:
        headers = headers + [(f"X-Fuzz-{i}", "v" * (i % 50)) for i in range(many)]
        with Connection(open_registry.url) as connection:
            send(open_registry, connection, method, target, headers, body)

    run()
    open_registry.check_still_serving()


def test_fuzz_blob_routes_on_real_content(open_registry: Fuzzed) -> None:
    """Reads of blobs and manifests that exist, with fuzzed Range, Accept and conditions."""
    digest, size = open_registry.blobs[2]

    @fuzz(300)
    @given(headers=st.lists(HEADERS, max_size=4))
    def run(headers: list[tuple[str, str]]) -> None:
        headers = [(k, v) for k, v in headers if k.lower() not in ("transfer-encoding", "host")]
        with Connection(open_registry.url) as connection:
            for method, target in (
                ("GET", f"/v2/{REPO}/blobs/{digest}"),
                ("HEAD", f"/v2/{REPO}/blobs/{digest}"),
                ("GET", f"/v2/{REPO}/manifests/latest"),
                ("HEAD", f"/v2/{REPO}/manifests/{open_registry.manifest}"),
            ):
                reply = send(open_registry, connection, method, target, headers, framing=False)
                if reply is not None and reply.status == 206:
                    assert len(reply.body) <= size

    run()
    open_registry.check_still_serving()


@st.composite
def descriptors(draw: st.DrawFn, blobs: list[tuple[str, int]]) -> object:
    """A descriptor: of a blob that exists, or with any field wrong."""
    known = draw(st.sampled_from(blobs))
    descriptor: dict[str, object] = {
        "mediaType": draw(st.one_of(st.sampled_from([OCI_CONFIG, OCI_LAYER, *MANIFEST_TYPES]))),
        "digest": known[0],
        "size": known[1],
    }
    broken = draw(st.sampled_from(["", "digest", "size", "mediaType", "drop", "extra", "type"]))
    if broken == "digest":
        descriptor["digest"] = draw(st.one_of(DIGESTS, st.integers(), st.none()))
    elif broken == "size":
        descriptor["size"] = draw(
            st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=5), st.none())
        )
    elif broken == "mediaType":
        descriptor["mediaType"] = draw(st.one_of(st.text(max_size=30), st.integers(), st.none()))
    elif broken == "drop":
        del descriptor[draw(st.sampled_from(sorted(descriptor)))]
    elif broken == "extra":
        descriptor[draw(st.sampled_from(["urls", "annotations", "platform", "data"]))] = draw(
            JSON_VALUES
        )
    elif broken == "type":
        return draw(JSON_VALUES)
    return descriptor


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


@st.composite
def manifests(draw: st.DrawFn, blobs: list[tuple[str, int]]) -> bytes:
    """Manifest-shaped documents with wrong parts, or not JSON, or nested absurdly."""
    kind = draw(st.sampled_from(["manifest", "index", "both", "json", "bytes", "deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=4096))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "deep":
        depth = draw(st.integers(100, 200_000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return (opener * depth + "1" + closer * depth).encode()
    document: dict[str, object] = {
        "schemaVersion": draw(st.one_of(st.just(2), JSON_VALUES)),
    }
    if draw(st.booleans()):
        document["mediaType"] = draw(st.one_of(st.sampled_from(MANIFEST_TYPES), JSON_VALUES))
    if kind in ("manifest", "both"):
        document["config"] = draw(descriptors(blobs))
        document["layers"] = draw(st.lists(descriptors(blobs), max_size=4))
    if kind in ("index", "both"):
        document["manifests"] = draw(st.lists(descriptors(blobs), max_size=4))
    for key in draw(st.lists(st.sampled_from(["subject", "annotations", "artifactType"]))):
        document[key] = draw(st.one_of(descriptors(blobs), JSON_VALUES))
    return json.dumps(document).encode()


def test_fuzz_manifest_pushes(open_registry: Fuzzed) -> None:
    """Broken manifests and indexes under every media type: 201 or a 4xx spec error."""

    @fuzz(400)
    @given(
        body=manifests(open_registry.blobs),
        content_type=st.one_of(st.sampled_from(MANIFEST_TYPES), _header_value(60)),
        reference=st.one_of(TAGS, DIGESTS),
    )
    def run(body: bytes, content_type: str, reference: str) -> None:
        target = f"/v2/{REPO}/manifests/{reference}"
        with Connection(open_registry.url) as connection:
            reply = send(
                open_registry, connection, "PUT", target, [("Content-Type", content_type)], body
            )
            if reply is not None and reply.status == 201:
                # Accepted: then it is served back byte for byte, by digest.
                digest = "sha256:" + hashlib.sha256(body).hexdigest()
                accept = [("Accept", ", ".join(MANIFEST_TYPES))]
                target = f"/v2/{REPO}/manifests/{digest}"
                read = send(open_registry, connection, "GET", target, accept)
                assert read is not None and read.status == 200 and read.body == body

    run()
    open_registry.check_still_serving()


@pytest.mark.parametrize(
    "size",
    [4 * 1024 * 1024, 4 * 1024 * 1024 + 1, 5 * 1024 * 1024, 32 * 1024 * 1024],
    ids=["4MiB", "4MiB+1", "5MiB", "32MiB"],
)
def test_giant_manifests(open_registry: Fuzzed, size: int) -> None:
    """CVE-2017-11468 (registry:2 before 2.6.2: manifests read whole, any size, into memory).

    Up to the 4 MiB limit a manifest is judged on its content; beyond, refused
    with 413 MANIFEST_INVALID, and the memory check after shows none was kept.
    """
    config, config_size = open_registry.blobs[0]
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config, "size": config_size},
        "layers": [],
        "annotations": {"padding": ""},
    }
    bare = len(json.dumps(document).encode())
    document["annotations"] = {"padding": "p" * (size - bare)}
    body = json.dumps(document).encode()
    assert len(body) == size
    for content_type in (OCI_MANIFEST, OCI_INDEX):
        with Connection(open_registry.url) as connection:
            reply = send(
                open_registry,
                connection,
                "PUT",
                f"/v2/{REPO}/manifests/giant",
                [("Content-Type", content_type)],
                body,
            )
        assert reply is not None
        if size > 4 * 1024 * 1024:
            assert_spec_error(reply, 413, "MANIFEST_INVALID")
        elif content_type == OCI_MANIFEST:
            assert reply.status == 201, reply.body[:500]
        else:
            # An image manifest under an index's Content-Type (CVE-2021-41190).
            assert_spec_error(reply, 400, "MANIFEST_INVALID")
    open_registry.check_still_serving()


def test_fuzz_pagination(open_registry: Fuzzed) -> None:
    """Extreme, negative, non-numeric and repeated ``n`` and ``last``."""

    @fuzz(300)
    @given(
        n=st.lists(NUMBERS, max_size=2),
        last=st.lists(st.one_of(TAGS, NAMES, st.text(max_size=300)), max_size=2),
    )
    def run(n: list[str], last: list[str]) -> None:
        query = "&".join(
            [f"n={quote(value, safe='')}" for value in n]
            + [f"last={quote(value, safe='')}" for value in last]
        )
        with Connection(open_registry.url) as connection:
            for path in ("/v2/_catalog", f"/v2/{REPO}/tags/list"):
                reply = send(open_registry, connection, "GET", f"{path}?{query}")
                assert reply is not None
                if reply.status == 200:
                    document = reply.json()
                    assert isinstance(document, dict)
                    listed = document.get("repositories", document.get("tags"))
                    assert isinstance(listed, list) and len(listed) <= 1000

    run()
    open_registry.check_still_serving()


def test_fuzz_digests(open_registry: Fuzzed) -> None:
    """Digests of every shape on every route that takes one."""

    @fuzz(300)
    @given(digest=DIGESTS)
    def run(digest: str) -> None:
        with Connection(open_registry.url) as connection:
            for method, target in (
                ("GET", f"/v2/{REPO}/blobs/{digest}"),
                ("HEAD", f"/v2/{REPO}/blobs/{digest}"),
                ("DELETE", f"/v2/{REPO}/blobs/{digest}"),
                ("GET", f"/v2/{REPO}/manifests/{digest}"),
                ("DELETE", f"/v2/{REPO}/manifests/{digest}"),
                ("GET", f"/v2/{REPO}/referrers/{digest}"),
                ("POST", f"/v2/{REPO}/blobs/uploads/?digest={digest}"),
                ("POST", f"/v2/{REPO}/blobs/uploads/?mount={digest}&from=fuzz/other"),
            ):
                send(open_registry, connection, method, target)
            # Completing a real upload with it.
            started = send(open_registry, connection, "POST", f"/v2/{REPO}/blobs/uploads/")
            assert started is not None and started.status == 202
            location = started.header("location")
            assert location is not None
            path = "/" + location.split("/", 3)[3] if "://" in location else location
            separator = "&" if "?" in path else "?"
            send(open_registry, connection, "PUT", f"{path}{separator}digest={digest}", body=b"x")

    run()
    open_registry.check_still_serving()


def test_fuzz_chunked_uploads(open_registry: Fuzzed) -> None:
    """A real upload session driven with fuzzed PATCH and PUT framing."""
    chunk_headers = st.lists(
        st.one_of(
            st.tuples(
                st.just("Content-Range"),
                st.one_of(
                    st.tuples(st.integers(0, 10), st.integers(-2, 20)).map(
                        lambda pair: f"{pair[0]}-{pair[1]}"
                    ),
                    st.tuples(NUMBERS, NUMBERS).map(lambda pair: f"{pair[0]}-{pair[1]}"),
                    _header_value(40),
                ),
            ),
            st.tuples(st.just("Content-Type"), _header_value(40)),
            st.tuples(st.just("Content-Length"), st.integers(0, 12).map(str)),
        ),
        max_size=3,
    )

    @fuzz(250)
    @given(
        steps=st.lists(
            st.tuples(
                st.sampled_from(["PATCH", "PUT", "GET", "DELETE"]),
                chunk_headers,
                st.binary(max_size=8),
                st.one_of(st.none(), DIGESTS),
            ),
            min_size=1,
            max_size=5,
        )
    )
    def run(steps: list[tuple[str, list[tuple[str, str]], bytes, str | None]]) -> None:
        with Connection(open_registry.url) as connection:
            started = send(open_registry, connection, "POST", f"/v2/{REPO}/blobs/uploads/")
            assert started is not None and started.status == 202
            location = started.header("location") or ""
            path = "/" + location.split("/", 3)[3] if "://" in location else location
            for method, headers, body, digest in steps:
                target = path if digest is None else f"{path}?digest={digest}"
                send(open_registry, connection, method, target, headers, body)
            send(open_registry, connection, "DELETE", path)

    run()
    open_registry.check_still_serving()


def test_fuzz_credentials(auth_registry: Fuzzed) -> None:
    """Garbage, truncated, oversized and foreign-scheme credentials: 401 with a challenge."""
    credentials = st.one_of(
        _header_value(300),
        st.sampled_from(["Basic", "Basic ", "Bearer", "Bearer ", "Basic Og==", "Negotiate x"]),
        st.binary(max_size=60).map(lambda raw: "Basic " + base64.b64encode(raw).decode()),
        st.text(max_size=30).map(lambda text: "Bearer " + quote(text)),
        st.integers(1, 40_000).map(lambda n: "Bearer " + "a" * n),
        st.sampled_from(["a.b.c", "eyJhbGciOiJub25lIn0.e30.", "eyJ.eyJ.sig"]).map(
            lambda token: f"Bearer {token}"
        ),
    )

    @fuzz(300)
    @given(authorization=credentials, target=targets())
    def run(authorization: str, target: str) -> None:
        with Connection(auth_registry.url) as connection:
            for method, path in (("GET", "/v2/"), ("GET", target), ("POST", target)):
                reply = send(
                    auth_registry, connection, method, path, [("Authorization", authorization)]
                )
                if reply is None or reply.status == 101:
                    continue
                if reply.status == 401:
                    assert (reply.header("www-authenticate") or "").startswith("Basic realm=")
                # Nobody gets in: a credential the header cannot carry is a 400 at most
                # (a path that is the root, such as //, leads to the web pages' sign-in).
                if reply.status == 302:
                    assert reply.header("location") == "/ui/", reply.head
                    continue
                assert reply.status in (400, 401, 404, 405), reply.head

    run()
    auth_registry.check_still_serving()
