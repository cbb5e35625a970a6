"""Serving: Hypercorn settings from our config, TLS, and a supervisor for several workers.

The parent binds the sockets once, then forks workers that share them and
nothing else (upload sessions live in storage). Each worker builds its own
app from the config and runs it on uvloop.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets

from .config import Config, TLSConfig

log = logging.getLogger(__name__)

TLS_VERSIONS = {"tls1.2": ssl.TLSVersion.TLSv1_2, "tls1.3": ssl.TLSVersion.TLSv1_3}


class ServerError(RuntimeError):
    """The server cannot start; the message says why, for the person starting it."""


class RegistryHypercornConfig(HypercornConfig):
    """Hypercorn's config with our TLS floor and ciphers (Hypercorn fixes TLS 1.2, its own list)."""

    minimum_tls: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    cipher_suites: str | None = None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        context = super().create_ssl_context()
        if context is not None:
            context.minimum_version = self.minimum_tls
            if self.cipher_suites:
                context.set_ciphers(self.cipher_suites)
        return context


def _ipv6_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def binds(addr: str, net: str = "tcp") -> list[str]:
    """Hypercorn binds for registry:2's ``http.addr``.

    ``:5000`` listens on every interface (IPv6 and IPv4 through one dual-stack
    socket where IPv6 exists); ``localhost:5000`` on both loopback addresses,
    so the Docker engine's localhost exception works whichever it resolves.
    """
    if net == "unix" or addr.startswith("/") or addr.startswith("unix:"):
        return [addr if addr.startswith("unix:") else f"unix:{addr}"]
    host, _, port = addr.rpartition(":")
    if host in ("", "0.0.0.0", "[::]"):
        if host == "0.0.0.0" or not _ipv6_available():
            return [f"0.0.0.0:{port}"]
        return [f"[::]:{port}"]
    if host == "localhost":
        loopback = [f"127.0.0.1:{port}"]
        if _ipv6_available() and port != "0":
            loopback.append(f"[::1]:{port}")
        return loopback
    return [addr]


@dataclass(frozen=True, slots=True)
class TLSFiles:
    certificate: str
    key: str
    clientcas: tuple[str, ...] = ()


def hypercorn_config(config: Config, tls: TLSFiles | None) -> RegistryHypercornConfig:
    http = config.http
    hconfig = RegistryHypercornConfig()
    hconfig.accesslog = None  # Ours is in RegistryMiddleware.
    hconfig.errorlog = logging.getLogger("hypercorn.error")
    hconfig.keep_alive_timeout = 75
    hconfig.graceful_timeout = http.draintimeout or 5.0
    hconfig.workers = 1
    hconfig.include_server_header = False
    if http.http2_disabled:
        hconfig.alpn_protocols = ["http/1.1"]
    if tls is None:
        hconfig.bind = binds(http.addr, http.net)
        return hconfig
    hconfig.bind = binds(http.addr, http.net)
    hconfig.certfile = tls.certificate
    hconfig.keyfile = tls.key
    hconfig.minimum_tls = TLS_VERSIONS[http.tls.minimumtls]
    if http.tls.ciphersuites:
        hconfig.cipher_suites = ":".join(http.tls.ciphersuites)
    if tls.clientcas:
        # One bundle file, since Hypercorn's ca_certs takes one path.
        hconfig.ca_certs = _client_ca_bundle(tls.clientcas)
        hconfig.verify_mode = ssl.CERT_REQUIRED
    return hconfig


def _client_ca_bundle(paths: tuple[str, ...]) -> str:
    if len(paths) == 1:
        return paths[0]
    import tempfile

    bundle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
        "w", prefix="registry-clientcas-", suffix=".pem", delete=False
    )
    with bundle:
        for path in paths:
            with open(path, encoding="ascii") as file:
                bundle.write(file.read().rstrip("\n") + "\n")
    return bundle.name


def _check_file(key: str, path: str) -> None:
    if os.path.isdir(path):
        raise ServerError(f"{key}: {path}: is a folder, not a file")
    if not os.path.isfile(path):
        raise ServerError(f"{key}: {path}: no such file")
    if not os.access(path, os.R_OK):
        raise ServerError(f"{key}: {path}: permission denied")


def check_tls(tls: TLSConfig) -> TLSFiles | None:
    """Refuse, with a clear message naming the key and file, TLS files that cannot work."""
    if tls.certificate is None or tls.key is None:
        return None
    from tools.certs import CertificateError, check_key_pair
    from tools.certs_x509 import load_certificates

    for key, path in (("http.tls.certificate", tls.certificate), ("http.tls.key", tls.key)):
        _check_file(key, path)
    try:
        check_key_pair(Path(tls.certificate), Path(tls.key))
    except CertificateError as error:
        # The toolkit's messages start with the file they are about.
        message = str(error)
        key = "http.tls"
        if message.startswith(f"{tls.key}:"):
            key = "http.tls.key"
        elif message.startswith(f"{tls.certificate}:"):
            key = "http.tls.certificate"
        raise ServerError(f"{key}: {message}") from None
    for path in tls.clientcas:
        _check_file("http.tls.clientcas", path)
        try:
            load_certificates(Path(path))
        except CertificateError as error:
            raise ServerError(f"http.tls.clientcas: {error}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.certificate, tls.key)
    except ssl.SSLError as error:
        reason = error.reason or str(error)
        if "KEY_VALUES_MISMATCH" in reason.upper():
            raise ServerError(
                f"http.tls.key: {tls.key} does not match the certificate {tls.certificate}"
            ) from None
        raise ServerError(
            f"http.tls: cannot load {tls.certificate} with {tls.key}: {reason}"
        ) from None
    for path in tls.clientcas:
        try:
            context.load_verify_locations(path)
        except ssl.SSLError as error:
            raise ServerError(f"http.tls.clientcas: {path}: {error.reason or error}") from None
    if tls.ciphersuites:
        try:
            context.set_ciphers(":".join(tls.ciphersuites))
        except ssl.SSLError:
            raise ServerError(
                f"http.tls.ciphersuites: no usable cipher in {', '.join(tls.ciphersuites)}"
            ) from None
    return TLSFiles(tls.certificate, tls.key, tls.clientcas)


def _bound_urls(sockets: Sockets) -> list[str]:
    urls = []
    for scheme, group in (("https", sockets.secure_sockets), ("http", sockets.insecure_sockets)):
        for sock in group:
            name = sock.getsockname()
            if sock.family == socket.AF_UNIX:
                urls.append(f"{scheme}+unix://{name}")
            elif sock.family == socket.AF_INET6:
                urls.append(f"{scheme}://[{name[0]}]:{name[1]}")
            else:
                urls.append(f"{scheme}://{name[0]}:{name[1]}")
    return urls


def _keep_http2_connections_alive() -> None:
    """Drop request data for HTTP/2 streams already answered instead of the whole connection.

    Hypercorn 0.18 raises KeyError, and closes the connection with every
    request on it, when DATA arrives for a stream whose response has gone out
    (pgjones/hypercorn#329): a ``POST /blobs/uploads/`` is answered before the
    client's closing (even empty) DATA frame arrives. The data is acknowledged,
    so the connection's flow-control window stays open, and dropped.
    """
    import h2.events
    import hypercorn.protocol
    from hypercorn.protocol.h2 import H2Protocol

    class AnsweredStreamsH2Protocol(H2Protocol):
        async def _handle_events(self, events: list[h2.events.Event]) -> None:
            for event in events:
                # One at a time: a stream may be answered while earlier events are handled.
                if (
                    isinstance(event, h2.events.DataReceived)
                    and event.stream_id not in self.streams
                ):
                    self.connection.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                    continue
                await super()._handle_events([event])
            await self._flush()

    # ProtocolWrapper makes its H2Protocol by this module-level name.
    setattr(hypercorn.protocol, "H2Protocol", AnsweredStreamsH2Protocol)  # noqa: B010


def _worker(
    config: Config, hconfig: RegistryHypercornConfig, sockets: Sockets, first: bool = True
) -> None:
    """One server process: its own app, its own event loop, the shared sockets."""
    # Imported here, after the fork: the supervisor never loads Quart, so it
    # stays small and the workers' memory is their own.
    from hypercorn.asyncio.run import worker_serve
    from hypercorn.utils import wrap_app

    from .app import create_asgi_app

    _keep_http2_connections_alive()
    # Upload purging walks the whole store: one worker does it, not all of them.
    app = create_asgi_app(config, maintenance=first)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await worker_serve(
            wrap_app(app, 0, "asgi"), hconfig, sockets=sockets, shutdown_trigger=stop.wait
        )

    _run(main)


def _run(main: Callable[[], Any]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main())
    else:
        uvloop.run(main())


def worker_count(config: Config) -> int:
    return config.http.workers or os.cpu_count() or 1


def serve(
    config: Config, tls: TLSFiles | None = None, *, ready: Callable[[list[str]], None] | None = None
) -> int:
    """Bind, start the workers, supervise them until SIGINT/SIGTERM; the exit code."""
    hconfig = hypercorn_config(config, tls)
    try:
        sockets = hconfig.create_sockets()
    except OSError as error:
        raise ServerError(
            f"http.addr: cannot listen on {config.http.addr}: {error.strerror}"
        ) from None
    # Listen now, not when a worker starts: a client that connects as soon as the
    # address is announced waits in the backlog instead of being refused.
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
        sock.listen(hconfig.backlog)
    urls = _bound_urls(sockets)
    count = worker_count(config)
    if ready is not None:
        ready(urls)
    if count == 1:
        _worker(config, hconfig, sockets)
        return 0
    return _supervise(config, hconfig, sockets, count)


#: A worker that dies sooner than this after its start is not restarted: it would again.
EARLY_EXIT = 2.0


def _supervise(
    config: Config, hconfig: RegistryHypercornConfig, sockets: Sockets, count: int
) -> int:
    context = multiprocessing.get_context("fork")
    stopping = False
    exit_code = 0
    started: dict[int, float] = {}
    firsts: dict[int, bool] = {}

    def start(first: bool) -> BaseProcess:
        process = context.Process(
            target=_worker, args=(config, hconfig, sockets, first), daemon=False
        )
        process.start()
        started[process.sentinel] = time.monotonic()
        firsts[process.sentinel] = first
        return process

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    processes = [start(index == 0) for index in range(count)]
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while processes:
        finished = wait([process.sentinel for process in processes])
        for process in [p for p in processes if p.sentinel in finished]:
            process.join()
            processes.remove(process)
            if stopping:
                continue
            if time.monotonic() - started[process.sentinel] < EARLY_EXIT:
                log.error(
                    "worker %s failed at start (code %s); stopping", process.pid, process.exitcode
                )
                exit_code = 1
                stop(signal.SIGTERM, None)
            else:
                log.error(
                    "worker %s exited with code %s; starting another", process.pid, process.exitcode
                )
                processes.append(start(firsts[process.sentinel]))
    for group in (sockets.secure_sockets, sockets.insecure_sockets):
        for sock in group:
            sock.close()
    sys.stdout.flush()
    return exit_code
