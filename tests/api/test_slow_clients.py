"""Slow, silent and trickling clients: others are still served, and slow transfers are not cut.

server.py's limits (docs/reliability.md): KEEP_ALIVE_TIMEOUT bounds how long a
connection may sit without a request in progress (headers included), nothing
bounds a request in progress, and the soft limit on open files is raised to
the hard one so that hundreds of held connections leave descriptors to spare.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.conftest import RegistryProcess
from tests.pushing import digest_of, push_blob, push_image, start_upload, with_query

from .raw_http import Stream, address_of, build, open_files, rss_bytes

Factory = Callable[..., RegistryProcess]

#: A soft limit on open files below what the test holds (300 slow connections), with a
#: hard limit above: served only if the registry raises its soft limit, as it does.
NOFILE = (256, 4096)


class Trickler:
    """Connections that send one byte at a time, every ``interval`` seconds, from a thread."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.sockets: list[socket.socket] = []
        self.cut = 0
        """Connections the server closed while we trickled."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def add(self, sock: socket.socket) -> None:
        self.sockets.append(sock)

    def start(self) -> Trickler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for sock in list(self.sockets):
                try:
                    sock.send(b"x")
                except OSError:
                    self.sockets.remove(sock)
                    sock.close()
                    self.cut += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.sockets:
            sock.close()


def _connect(url: str, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(address_of(url), timeout=30)
    if first:
        sock.sendall(first)
    return sock


def _soft_nofile(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no open files limit")


@pytest.fixture
def slow_clients() -> Iterator[list[Trickler | list[socket.socket]]]:
    """Everything a test opens, closed afterwards whatever happens."""
    opened: list[Trickler | list[socket.socket]] = []
    yield opened
    for item in opened:
        if isinstance(item, Trickler):
            item.stop()
        else:
            for sock in item:
                sock.close()


def test_slow_clients_do_not_keep_others_waiting(
    registry_factory: Factory, slow_clients: list[Trickler | list[socket.socket]]
) -> None:
    """300 slow connections (100 trickling headers, 100 silent, 100 trickling a body) while a
    normal client pushes and pulls: every normal request is answered.

    The registry starts with a soft open-files limit of 256 (below the 300 held
    connections): it serves them because it raises the limit to the hard one.
    """
    registry = registry_factory({}, wrap=["prlimit", f"--nofile={NOFILE[0]}:{NOFILE[1]}"])
    assert registry.process is not None
    pid = registry.process.pid
    assert _soft_nofile(pid) == NOFILE[1]
    url = registry.url
    before = rss_bytes(pid)

    headers = Trickler(interval=1.0)
    bodies = Trickler(interval=1.0)
    silent: list[socket.socket] = []
    slow_clients += [headers, bodies, silent]
    for index in range(100):
        headers.add(_connect(url, b"GET /v2/ HTTP/1.1\r\nHost: slow\r\nX-Slow: "))
        silent.append(_connect(url))
        digest = digest_of(f"never sent {index}".encode())
        bodies.add(
            _connect(
                url,
                f"POST /v2/slow/body{index}/blobs/uploads/?digest={digest} HTTP/1.1\r\n"
                f"Host: slow\r\nContent-Length: {1 << 20}\r\n\r\n".encode(),
            )
        )
    headers.start()
    bodies.start()

    # The server holds them all (they are not refused or dropped)...
    deadline = time.monotonic() + 30
    while open_files(pid) < 300 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_files(pid) >= 300, open_files(pid)
    # ...and answers a normal client throughout, on new connections and old.
    with httpx.Client(base_url=url, timeout=30) as client:
        for round_ in range(5):
            assert client.get("/v2/").status_code == 200
            digest, manifest = push_image(client, "slow/normal", f"v{round_}")
            fetched = client.get(
                f"/v2/slow/normal/manifests/v{round_}",
                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
            )
            assert fetched.status_code == 200 and fetched.content == manifest
            with httpx.Client(base_url=url, timeout=30) as fresh:
                assert fresh.get("/v2/").status_code == 200
            time.sleep(1)
    held = rss_bytes(pid)
    assert headers.cut == 0 and bodies.cut == 0  # None was cut within the 75 s keep-alive.
    # 300 held connections cost little memory (measured: about 10 MiB).
    assert held - before < 64 * 1024 * 1024, (before, held)


#: Runs ``registry serve`` with server.KEEP_ALIVE_TIMEOUT set from its first argument.
LAUNCHER = """\
import sys

import registry.server

registry.server.KEEP_ALIVE_TIMEOUT = float(sys.argv[1])
from registry.cli import main

sys.exit(main(sys.argv[sys.argv.index("serve"):]))
"""

#: The shortened keep-alive of the next tests: they show in seconds what the real
#: 75 s does, and that uploads and downloads lasting several times it go through.
SHORT_KEEP_ALIVE = 1.0


@pytest.fixture
def quick_registry(registry_factory: Factory, tmp_path: Path) -> RegistryProcess:
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER)
    return registry_factory(
        {"storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}}},
        wrap=[sys.executable, str(launcher), str(SHORT_KEEP_ALIVE)],
    )


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (we keep sending nothing)."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


def test_idle_and_trickling_connections_are_cut(
    quick_registry: RegistryProcess, slow_clients: list[Trickler | list[socket.socket]]
) -> None:
    """Without a request in progress a connection lives KEEP_ALIVE_TIMEOUT: a silent one, one
    trickling its headers, one idle after a request. (Bounded waits: 15 times the timeout.)"""
    url = quick_registry.url
    silent = _connect(url)
    kept_alive = _connect(url, b"GET /v2/ HTTP/1.1\r\nHost: quick\r\n\r\n")
    trickling = Trickler(interval=0.5)
    trickling.add(_connect(url, b"GET /v2/ HTTP/1.1\r\nHost: quick\r\nX-Slow: "))
    slow_clients += [[silent, kept_alive], trickling.start()]
    assert _closed_by_server(silent, within=15 * SHORT_KEEP_ALIVE)
    assert _closed_by_server(kept_alive, within=15 * SHORT_KEEP_ALIVE)
    deadline = time.monotonic() + 15 * SHORT_KEEP_ALIVE
    while trickling.cut == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert trickling.cut == 1


def test_slow_upload_and_download_outlast_the_idle_timeout(
    quick_registry: RegistryProcess, tmp_path: Path
) -> None:
    """A PATCH body trickled over several keep-alive timeouts (with one pause longer than
    the timeout), and a download read as slowly, both complete: no limit bounds a request
    in progress."""
    url = quick_registry.url
    data = os.urandom(2 << 20)
    pieces = 16  # 128 KiB every 0.2 s, and one pause: 2 MiB in about 4.5 s.
    with httpx.Client(base_url=url, timeout=60) as client:
        location = start_upload(client, "quick/slow")

        def trickle() -> Iterator[bytes]:
            for index in range(pieces):
                yield data[index * len(data) // pieces : (index + 1) * len(data) // pieces]
                time.sleep(1.5 * SHORT_KEEP_ALIVE if index == pieces // 2 else 0.2)

        started = time.monotonic()
        patched = client.patch(
            location,
            content=trickle(),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
        )
        took = time.monotonic() - started
        assert patched.status_code == 202, patched.text
        assert took > 3 * SHORT_KEEP_ALIVE  # The test tests something: it outlasted the timer.
        done = client.put(with_query(patched.headers["Location"], digest=digest_of(data)))
        assert done.status_code == 201, done.text

    # Read back at about 512 KiB/s through a small receive buffer, so the server waits on us.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(30)
        sock.connect(address_of(url))
        sock.sendall(
            f"GET /v2/quick/slow/blobs/{digest_of(data)} HTTP/1.1\r\nHost: q\r\n\r\n".encode()
        )
        received = bytearray()
        started = time.monotonic()
        while True:
            piece = sock.recv(64 * 1024)
            if not piece:
                break
            received += piece
            head, _, body = bytes(received).partition(b"\r\n\r\n")
            if len(body) >= len(data):
                break
            time.sleep(0.12)
        took = time.monotonic() - started
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    assert took > 3 * SHORT_KEEP_ALIVE


def test_open_files_limit_is_raised_to_the_hard_limit(registry_factory: Factory) -> None:
    """As Go does at start (so registry:2): the soft limit goes up to the hard one."""
    registry = registry_factory({}, wrap=["prlimit", "--nofile=512:2048"])
    assert registry.process is not None
    assert _soft_nofile(registry.process.pid) == 2048
    with httpx.Client(base_url=registry.url) as client:
        push_blob(client, "limits/app", b"served")


def _patch_head(url: str, location: str, length: int) -> bytes:
    """A PATCH's request head; its body follows on the socket."""
    parts = urlsplit(urljoin(url, location))
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = [("Content-Type", "application/octet-stream"), ("Content-Length", str(length))]
    return build("PATCH", target, headers, host=parts.netloc)


def test_a_chunk_waiting_for_its_session_is_held_back_by_the_network(
    registry_factory: Factory,
) -> None:
    """A PATCH that waits for its session (another chunk is being written to it) is read no
    further than the worker's window: the rest stays in the network and the client is
    slowed, so the worker's memory does not grow with the body. Once the session is free,
    the held chunk is read and kept whole after the first."""
    registry = registry_factory()
    assert registry.process is not None
    pid = registry.process.pid
    # The held chunk outgrows what the kernels may buffer between the two (on loopback
    # the receiver's buffer may grow to net.ipv4.tcp_rmem's maximum, 32 MiB here).
    first, held = 2 << 20, 128 << 20
    with httpx.Client(base_url=registry.url, timeout=60) as client:
        location = start_upload(client, "held/back")
    writer = _connect(registry.url, _patch_head(registry.url, location, first))
    waiter = socket.socket()
    waiter.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    waiter.settimeout(60)
    waiter.connect(address_of(registry.url))
    try:
        writer.sendall(bytes(first // 2))  # The session is taken, half its chunk written.
        time.sleep(0.5)
        before = rss_bytes(pid)
        sent = [0]

        def send_held() -> None:
            waiter.sendall(_patch_head(registry.url, location, held))
            piece = bytes(64 * 1024)
            while sent[0] < held:
                waiter.sendall(piece)
                sent[0] += len(piece)

        sender = threading.Thread(target=send_held, daemon=True)
        sender.start()
        deadline = time.monotonic() + 60
        last, still_since = -1, time.monotonic()
        while time.monotonic() - still_since < 1.5:  # Held back: no progress for a while.
            assert time.monotonic() < deadline and sender.is_alive(), sent[0]
            if sent[0] != last:
                last, still_since = sent[0], time.monotonic()
            time.sleep(0.1)
        grown = rss_bytes(pid) - before
        assert grown < 8 << 20, (grown, sent[0])  # Measured: under 2 MiB.

        writer.sendall(bytes(first - first // 2))  # The first chunk ends; the session is free.
        written = Stream(writer).reply("PATCH")
        assert written.status == 202, written
        sender.join(60)
        assert sent[0] == held
        reply = Stream(waiter).reply("PATCH")
        assert reply.status == 202, reply
        assert reply.header("Range") == f"0-{first + held - 1}", reply
    finally:
        writer.close()
        waiter.close()
