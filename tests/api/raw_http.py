"""HTTP/1.1 spoken byte for byte, for tests that send what no client library would.

httpx and http.client normalise what they send (paths, header names, lengths)
and hide what they receive (the status line's reason, header order, a second
response); these helpers do neither. Also: the memory of a registry process.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .support import API_VERSION

Headers = Sequence[tuple[str, str]]

#: Longest response head read; a registry's are a few hundred bytes.
MAX_HEAD = 256 * 1024


class NoReplyError(Exception):
    """The server closed the connection (or reset it) without a complete response."""


@dataclass
class Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = field(repr=False)
    head: bytes = field(repr=False)
    """The status line and headers exactly as received."""

    def header(self, name: str) -> str | None:
        values = self.headers_named(name)
        return values[0] if values else None

    def headers_named(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    @property
    def closes(self) -> bool:
        return any(value.lower() == "close" for value in self.headers_named("connection"))

    def json(self) -> object:
        return json.loads(self.body)


def address_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    return parts.hostname, parts.port


def build(
    method: str, target: str | bytes, headers: Headers = (), body: bytes = b"", host: str = "test"
) -> bytes:
    """A request as bytes: ``Host`` is added when ``headers`` has none; nothing is checked."""
    if isinstance(target, str):
        target = target.encode("utf-8", "surrogateescape")
    lines = [method.encode("latin-1") + b" " + target + b" HTTP/1.1"]
    if not any(name.lower() == "host" for name, _ in headers):
        lines.append(b"Host: " + host.encode("latin-1"))
    lines.extend(
        name.encode("latin-1") + b": " + value.encode("latin-1", "replace")
        for name, value in headers
    )
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Stream:
    """A socket with a read buffer: responses are read exactly, nothing beyond is lost."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self) -> None:
        try:
            data = self.sock.recv(1 << 16)
        except ConnectionResetError:
            data = b""
        if not data:
            raise NoReplyError(f"connection closed after {len(self.buffer)} unread bytes")
        self.buffer += data

    def read_until(self, marker: bytes, limit: int) -> bytes:
        while (end := self.buffer.find(marker)) < 0:
            if len(self.buffer) > limit:
                raise AssertionError(f"no {marker!r} in the first {limit} bytes")
            self._fill()
        end += len(marker)
        data = bytes(self.buffer[:end])
        del self.buffer[:end]
        return data

    def read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_to_end(self) -> bytes:
        while True:
            try:
                self._fill()
            except NoReplyError:
                break
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    def reply(self, method: str) -> Reply:
        """The next final response (1xx ones are skipped); its body unless ``method`` is HEAD."""
        while True:
            head = self.read_until(b"\r\n\r\n", MAX_HEAD)
            status_line, *lines = head[:-4].split(b"\r\n")
            version, _, rest = status_line.partition(b" ")
            code, _, reason = rest.partition(b" ")
            assert version == b"HTTP/1.1", status_line
            status = int(code)
            if not 100 <= status < 200 or status == 101:
                break
        headers = []
        for line in lines:
            name, colon, value = line.partition(b":")
            assert colon and name and name == name.strip(), f"malformed header line {line!r}"
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        reply = Reply(status, reason.decode("latin-1"), headers, b"", head)
        if method == "HEAD" or status in (101, 204, 304):
            return reply
        if (reply.header("transfer-encoding") or "").lower() == "chunked":
            reply.body = self._chunked()
        elif (length := reply.header("content-length")) is not None:
            reply.body = self.read(int(length))
        else:
            reply.body = self.read_to_end()
        return reply

    def _chunked(self) -> bytes:
        body = bytearray()
        while True:
            size = int(self.read_until(b"\r\n", 1024).split(b";")[0], 16)
            if size == 0:
                self.read_until(b"\r\n", MAX_HEAD)  # No trailers from this server.
                return bytes(body)
            body += self.read(size)
            self.read(2)


class Connection:
    """One keep-alive connection that reconnects when the server closed the last one."""

    def __init__(self, url: str, timeout: float = 60) -> None:
        self.address = address_of(url)
        self.timeout = timeout
        self.stream: Stream | None = None

    def _open(self) -> Stream:
        if self.stream is None:
            self.stream = Stream(socket.create_connection(self.address, timeout=self.timeout))
        return self.stream

    def send(self, data: bytes, method: str) -> Reply:
        """Send one request, read its response; raises NoReplyError if the server closed instead."""
        stream = self._open()
        # Answered (and closed) before all was sent: the answer may still be there.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stream.sock.sendall(data)
        try:
            reply = stream.reply(method)
        except NoReplyError:
            self.close()
            raise
        if reply.closes:
            self.close()
        return reply

    def request(
        self, method: str, target: str | bytes, headers: Headers = (), body: bytes = b""
    ) -> Reply:
        return self.send(build(method, target, headers, body), method)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.sock.close()
            self.stream = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def exchange(
    url: str, method: str, target: str | bytes, headers: Headers = (), body: bytes = b""
) -> Reply:
    """One request on a connection of its own."""
    with Connection(url) as connection:
        return connection.request(method, target, headers, body)


def assert_spec_error(reply: Reply, status: int | None = None, code: str | None = None) -> None:
    """An error as the spec has it: JSON ``{"errors": [{code, message, detail}]}``, our header."""
    if status is not None:
        assert reply.status == status, (reply.status, reply.body[:500])
    assert reply.status >= 400, reply
    assert reply.header("docker-distribution-api-version") == API_VERSION, reply.head
    content_type = (reply.header("content-type") or "").split(";")[0].strip()
    assert content_type == "application/json", reply.head
    document = reply.json()
    assert isinstance(document, dict) and set(document) == {"errors"}, reply.body[:500]
    errors = document["errors"]
    assert isinstance(errors, list) and errors, document
    for entry in errors:
        assert isinstance(entry, dict) and set(entry) >= {"code", "message", "detail"}, entry
        assert isinstance(entry["code"], str) and entry["code"].isupper(), entry
        assert isinstance(entry["message"], str) and entry["message"], entry
    if code is not None:
        assert errors[0]["code"] == code, document


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (a registry's supervisor and workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    parent = int(file.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children.get(current, []))
    return found


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants, as bench/servers.py measures it."""
    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/status") as file:
                total += next(
                    int(line.split()[1]) * 1024 for line in file if line.startswith("VmRSS:")
                )
        except (OSError, StopIteration):
            continue
    return total


def open_files(pid: int) -> int:
    """File descriptors ``pid`` and its descendants (the server's workers) hold."""
    total = 0
    for member in process_tree(pid):
        try:
            total += len(os.listdir(f"/proc/{member}/fd"))
        except OSError:
            continue
    return total


def header_lines(head: bytes) -> Iterable[bytes]:
    """The header lines of a response head, split only at CRLF."""
    return head.split(b"\r\n")[1:]
