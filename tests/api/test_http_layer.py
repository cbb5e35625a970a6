"""The HTTP layer as server.py adapts Hypercorn: status lines, refusals, upgrades, closed sockets.

Read from raw sockets: what is tested here (a status line's reason phrase, a
response to a request that does not parse, a socket the server still holds) is
what client libraries hide.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest

from tests.conftest import RegistryProcess
from tests.pushing import digest_of, push_blob

from .raw_http import (
    Connection,
    Stream,
    address_of,
    assert_spec_error,
    build,
    exchange,
    open_files,
    rss_bytes,
)

Factory = Callable[..., RegistryProcess]


def _status_line(reply_head: bytes) -> bytes:
    return reply_head.split(b"\r\n", 1)[0]


def test_status_lines_carry_the_standard_reason_phrase(
    shared_registry: RegistryProcess, repo: str
) -> None:
    """``HTTP/1.1 200 OK``, as registry:2 writes, not Hypercorn's bare ``HTTP/1.1 200 ``."""
    url = shared_registry.url
    data = b"reason phrases"
    with Connection(url) as connection:
        assert _status_line(connection.request("GET", "/v2/").head) == b"HTTP/1.1 200 OK"
        started = connection.request("POST", f"/v2/{repo}/blobs/uploads/")
        assert _status_line(started.head) == b"HTTP/1.1 202 Accepted"
        location = started.header("location") or ""
        path = "/" + location.split("/", 3)[3]
        done = connection.request(
            "PUT",
            f"{path}{'&' if '?' in path else '?'}digest={digest_of(data)}",
            [("Content-Length", str(len(data)))],
            data,
        )
        assert _status_line(done.head) == b"HTTP/1.1 201 Created"
        blob = f"/v2/{repo}/blobs/{digest_of(data)}"
        ranged = connection.request("GET", blob, [("Range", "bytes=2-5")])
        assert _status_line(ranged.head) == b"HTTP/1.1 206 Partial Content"
        beyond = connection.request("GET", blob, [("Range", "bytes=999-")])
        assert _status_line(beyond.head) == b"HTTP/1.1 416 Requested Range Not Satisfiable"
        missing = connection.request("HEAD", f"/v2/{repo}/blobs/{digest_of(b'none')}")
        assert _status_line(missing.head) == b"HTTP/1.1 404 Not Found"
        wrong = connection.request("PATCH", "/v2/")
        assert _status_line(wrong.head) == b"HTTP/1.1 405 Method Not Allowed"


def test_interim_response_has_its_reason_phrase(shared_registry: RegistryProcess) -> None:
    """``Expect: 100-continue`` gets ``HTTP/1.1 100 Continue`` before the final answer."""
    with socket.create_connection(address_of(shared_registry.url), timeout=30) as sock:
        sock.sendall(build("PUT", "/v2/", [("Expect", "100-continue"), ("Content-Length", "2")]))
        stream = Stream(sock)
        interim = stream.read_until(b"\r\n\r\n", 4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim
        sock.sendall(b"{}")
        final = stream.reply("PUT")
        assert _status_line(final.head) == b"HTTP/1.1 405 Method Not Allowed"


@pytest.mark.parametrize(
    ("request_bytes", "status_line"),
    [
        (b"GARBAGE\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (b"GET /v2/ HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (
            b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 400 Bad Request",
        ),
        (
            b"POST /v2/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 501 Not Implemented",
        ),
    ],
    ids=["request-line", "header-line", "content-length", "transfer-coding"],
)
def test_unparsable_requests_get_a_spec_error(
    shared_registry: RegistryProcess, request_bytes: bytes, status_line: bytes
) -> None:
    """Refused by the HTTP layer before any app runs, yet the same JSON error as the API's."""
    with socket.create_connection(address_of(shared_registry.url), timeout=30) as sock:
        sock.sendall(request_bytes)
        reply = Stream(sock).reply("GET")
    assert _status_line(reply.head) == status_line
    assert_spec_error(reply, code="UNSUPPORTED")
    assert reply.closes


def test_headers_beyond_the_limit_get_431(shared_registry: RegistryProcess) -> None:
    """Headers over 64 KiB (server.MAX_HEADER_BYTES), arriving in pieces: 431 and a spec error."""
    with socket.create_connection(address_of(shared_registry.url), timeout=30) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        # 80 KiB of headers, 1 KiB at a time; the server answers (and closes) on the way.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(80):
                sock.sendall(b"X-Filler: " + b"f" * 1012 + b"\r\n")
                time.sleep(0.001)
        reply = Stream(sock).reply("GET")
    assert _status_line(reply.head) == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert_spec_error(reply, code="UNSUPPORTED")


def test_headers_within_the_limit_are_served(shared_registry: RegistryProcess) -> None:
    """A 40 KiB header (a bearer token with a certificate chain, say) arriving in pieces."""
    with socket.create_connection(address_of(shared_registry.url), timeout=30) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        for _ in range(40):
            sock.sendall(b"X-Filler: " + b"f" * 1012 + b"\r\n")
            time.sleep(0.001)
        sock.sendall(b"\r\n")
        reply = Stream(sock).reply("GET")
    assert reply.status == 200, reply.body


def test_websocket_upgrade_is_ignored(shared_registry: RegistryProcess) -> None:
    """No WebSockets in a registry: the upgrade is ignored (RFC 9110 7.8), as registry:2 does.

    Hypercorn handed such a request to the app as a WebSocket, which answered 500
    with a traceback in the log; a half-formed handshake got an empty 400.
    """
    handshake = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ]
    offset = len(shared_registry.log())
    with Connection(shared_registry.url) as connection:
        for headers in (handshake, handshake[:2]):
            reply = connection.request("GET", "/v2/", headers)
            assert reply.status == 200 and reply.json() == {}, reply.head
        # Still HTTP/1.1 on the same connection.
        assert connection.request("GET", "/v2/").status == 200
    assert "Traceback" not in shared_registry.log()[offset:]


def _h2_exchange(
    url: str, streams: list[tuple[list[tuple[str, str]], bytes | None]]
) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """Requests over one HTTP/2 connection (prior knowledge); (status, headers, body) each."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    answers: dict[int, tuple[int, dict[bytes, bytes], bytearray]] = {}
    ended: set[int] = set()
    with socket.create_connection(address_of(url), timeout=30) as sock:
        connection.initiate_connection()
        for index, (headers, data) in enumerate(streams):
            stream_id = 1 + 2 * index
            connection.send_headers(stream_id, headers, end_stream=data is None)
            if data is not None:
                connection.send_data(stream_id, data, end_stream=True)
            sock.sendall(connection.data_to_send())
            while stream_id not in ended:
                received = sock.recv(65536)
                assert received, "connection closed"
                for event in connection.receive_data(received):
                    if isinstance(event, h2.events.ResponseReceived):
                        fields = dict(event.headers)
                        answers[event.stream_id] = (int(fields[b":status"]), fields, bytearray())
                    elif isinstance(event, h2.events.DataReceived):
                        answers[event.stream_id][2].extend(event.data)
                        connection.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                        ended.add(event.stream_id)
                sock.sendall(connection.data_to_send())
    return [(status, fields, bytes(body)) for status, fields, body in answers.values()]


def test_http2_connect_is_refused_and_the_connection_kept(
    shared_registry: RegistryProcess,
) -> None:
    """CONNECT (a tunnel, or RFC 8441's WebSocket) over HTTP/2: 405 UNSUPPORTED, like any
    method without a route; other streams on the connection go on."""
    authority = shared_registry.url.split("://", 1)[1]
    get = [(":method", "GET"), (":path", "/v2/"), (":scheme", "http"), (":authority", authority)]
    websocket = [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":path", "/v2/"),
        (":scheme", "http"),
        (":authority", authority),
    ]
    tunnel = [(":method", "CONNECT"), (":authority", "example.com:443")]
    offset = len(shared_registry.log())
    answers = _h2_exchange(
        shared_registry.url, [(websocket, b"hello"), (tunnel, b"x"), (get, None)]
    )
    for status, fields, body in answers[:2]:
        assert status == 405
        assert fields[b"docker-distribution-api-version"] == b"registry/2.0"
        assert fields[b"content-type"] == b"application/json"
        assert b'"code":"UNSUPPORTED"' in body
    assert answers[2][0] == 200 and answers[2][2] == b"{}"
    assert "Traceback" not in shared_registry.log()[offset:]


def test_http2_does_not_offer_websockets(shared_registry: RegistryProcess) -> None:
    """SETTINGS_ENABLE_CONNECT_PROTOCOL is not announced (Hypercorn announces it)."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    with socket.create_connection(address_of(shared_registry.url), timeout=30) as sock:
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        settings: dict[int, int] = {}
        while not settings:
            received = sock.recv(65536)
            assert received
            for event in connection.receive_data(received):
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    settings = {int(k): v.new_value for k, v in event.changed_settings.items()}
    assert settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL, 0) == 0
    assert settings[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] == 64 * 1024


def test_sockets_of_closed_connections_are_released(registry_factory: Factory) -> None:
    """A connection the client closed releases its file descriptor now, not at the idle timeout.

    Hypercorn kept such a socket in CLOSE-WAIT until its keep-alive timer fired
    (75 s): a client opening and closing connections held a descriptor for each.
    """
    registry = registry_factory()
    assert registry.process is not None
    pid = registry.process.pid
    with Connection(registry.url) as warm:
        warm.request("GET", "/v2/")
    baseline = open_files(pid)
    for _ in range(100):
        exchange(registry.url, "GET", "/v2/")  # Keep-alive answered, then closed by us.
        socket.create_connection(address_of(registry.url)).close()  # Never a request.
    # Well within the 75 s keep-alive: released as the clients close, not by the timer.
    deadline = time.monotonic() + 10
    while open_files(pid) > baseline + 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_files(pid) <= baseline + 5, (open_files(pid), baseline)
    # And the server goes on serving, on connections old and new.
    with httpx.Client(base_url=registry.url) as client:
        push_blob(client, "released/after", b"after the closed connections")


def test_clients_that_leave_a_paused_connection_are_released(registry_factory: Factory) -> None:
    """h11 pauses a connection after a request while more is buffered (pipelined requests) or
    an upgrade was proposed; Hypercorn kept such a connection, its task and buffers, until
    shutdown if the client left before the answer was written (about 10 KiB each, and a
    cancelled task with a traceback at shutdown)."""
    registry = registry_factory()
    assert registry.process is not None
    pid = registry.process.pid
    with httpx.Client(base_url=registry.url) as client:
        digest = push_blob(client, "paused/app", b"0123456789")
    target = f"/v2/paused/app/blobs/{digest}"
    kinds = [
        build("GET", target) * 5,
        build("GET", target, [("Connection", "Upgrade"), ("Upgrade", "websocket")]),
        build("HEAD", target, [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c")]),
    ]
    exchange(registry.url, "GET", target)
    before = rss_bytes(pid)
    for index in range(1500):
        with socket.create_connection(address_of(registry.url), timeout=30) as sock:
            sock.sendall(kinds[index % len(kinds)])
            sock.recv(100)  # Part of the first answer, then gone.
    exchange(registry.url, "GET", "/v2/")
    after = rss_bytes(pid)
    assert after - before < 6 * 1024 * 1024, (before, after)  # Measured: under 1 MiB.
    registry.stop()
    assert "Traceback" not in registry.log(), registry.log()[-3000:]
