"""Serving: Hypercorn settings from our config, TLS, and a supervisor for several workers.

The parent binds the sockets once, then forks workers that share them and
nothing else (upload sessions live in storage). Each worker builds its own
app from the config and runs it on uvloop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import os
import secrets
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets

from .config import Config, Secret, TLSConfig
from .debug import DebugListener, RunFolder, bind_debug
from .memory import limit_arenas, trim_until
from .protocol import adapt_hypercorn

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


# Hypercorn's limits, each chosen for a registry (measurements: docs/reliability.md).
# A registry must take a 1 GiB layer over a slow link and serve one to a slow
# reader, so nothing here bounds how long a request may last; what is bounded is
# how long a connection may hold a socket without a request in progress, and how
# much memory one connection may make the server hold.

#: Seconds a connection may stay without a request in progress: from accepting it
#: until its request headers are complete, and between requests. Hypercorn's idle
#: timer covers both and stops while a request is served, so this is both the
#: header deadline (a client trickling headers is cut here) and the keep-alive, and
#: never cuts an upload or download. 75 s, nginx's keep-alive: clients keep an idle
#: connection between the steps of a push, and closing it sooner only makes them
#: reconnect (or, racing a request into a closing socket, retry it).
KEEP_ALIVE_TIMEOUT = 75.0
#: None on purpose. Hypercorn's read_timeout is not a header timeout: it bounds every
#: wait for client bytes for the whole life of a connection, including while the
#: client, having sent its request, waits for a long blob download or a commit that
#: re-hashes a large upload, and it then drops the response (measured: with 3 s, a
#: 32 MiB blob read at about 1 MB/s stopped after 7 MB). The header deadline is
#: KEEP_ALIVE_TIMEOUT; dead peers are found by TCP keep-alive (TCP_KEEPALIVE below).
READ_TIMEOUT: int | None = None
#: Request line and headers, at most, when they come in several reads (Hypercorn
#: answers 431 beyond). Bearer tokens may be 16 KiB (auth.tokens.MAX_TOKEN_LENGTH,
#: an x5c chain), so Hypercorn's 16 KiB would refuse valid requests whose headers
#: arrive in pieces (over TLS, records are 16 KiB); 64 KiB bounds what a client
#: trickling headers makes us buffer.
MAX_HEADER_BYTES = 64 * 1024
#: Same bound for HTTP/2 header lists (HPACK-decoded), so both protocols take the same requests.
H2_MAX_HEADER_LIST_SIZE = MAX_HEADER_BYTES
#: HTTP/2 requests in flight on one connection: RFC 9113's recommended minimum, what
#: Hypercorn defaults to. Clients pull a few layers at once; each stream is a task.
H2_MAX_CONCURRENT_STREAMS = 100
#: HTTP/2's own default frame size (what Hypercorn advertises too): a frame is
#: buffered whole before it is handed on, so bigger frames mean more memory per stream.
H2_MAX_INBOUND_FRAME_SIZE = 16 * 1024
#: Pending connections the kernel queues per socket before accept (Linux caps it at
#: net.core.somaxconn, 4096 by default): a burst of clients, e.g. a fleet pulling at
#: once, waits instead of being refused. Hypercorn's 100 overflows under such bursts.
BACKLOG = 4096
#: Request events queued between Hypercorn and the app per request (Hypercorn: 10).
#: Each holds at most one socket read (protocol.SOCKET_READ, 256 KiB), so an upload
#: has at most 768 KiB here beyond body.py's own window: a full queue stops Hypercorn
#: reading, which is the backpressure that slows a fast client to the disk's pace.
#: With 64 KiB reads a queue of 4 cost uploads 10-15 %; with 256 KiB reads 3 and 10
#: measured alike.
MAX_APP_QUEUE_SIZE = 3
#: TLS handshakes must finish within this (Hypercorn: 60 s). A handshake is a few KiB
#: and two round trips; a client that connects and never speaks TLS holds a socket
#: until then, before the idle timer even starts.
SSL_HANDSHAKE_TIMEOUT = 20.0
#: TCP keep-alive on accepted connections, as Go's net/http (registry:2) has by
#: default: a peer that vanished mid-upload (a crash, a cable) is found in about
#: 2 minutes instead of holding its socket forever, since no timeout above covers a
#: request in progress. (idle seconds, probe interval seconds, probes)
TCP_KEEPALIVE = (60, 10, 6)


def hypercorn_config(config: Config, tls: TLSFiles | None) -> RegistryHypercornConfig:
    http = config.http
    hconfig = RegistryHypercornConfig()
    hconfig.accesslog = None  # Ours is in RegistryMiddleware.
    hconfig.errorlog = logging.getLogger("hypercorn.error")
    hconfig.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    hconfig.read_timeout = READ_TIMEOUT
    hconfig.h11_max_incomplete_size = MAX_HEADER_BYTES
    hconfig.h2_max_header_list_size = H2_MAX_HEADER_LIST_SIZE
    hconfig.h2_max_concurrent_streams = H2_MAX_CONCURRENT_STREAMS
    hconfig.h2_max_inbound_frame_size = H2_MAX_INBOUND_FRAME_SIZE
    hconfig.backlog = BACKLOG
    hconfig.max_app_queue_size = MAX_APP_QUEUE_SIZE
    hconfig.ssl_handshake_timeout = SSL_HANDSHAKE_TIMEOUT
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


#: How long a worker retired by a reload may take to finish the requests it has
#: (an upload of a large layer over a slow link): it accepts nothing new meanwhile.
RETIRE_GRACE = 3600.0


def _worker(
    config: Config,
    hconfig: RegistryHypercornConfig,
    sockets: Sockets,
    first: bool = True,
    ready: Connection | None = None,
    debug: DebugListener | None = None,
    supervisor: int | None = None,
) -> None:
    """One server process: its own app, its own event loop, the shared sockets.

    With ``debug`` (``http.debug.addr``), it serves the debug app there too.

    SIGTERM/SIGINT stop it within ``http.draintimeout``; SIGUSR2 (a reload)
    stops it accepting and lets the requests in flight finish, up to RETIRE_GRACE.
    It ends with its ``supervisor`` too, however that one ends.
    """
    # The supervisor's handlers and wake-up pipe came with the fork: not this process's.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # The supervisor's: a reload.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)  # Until the event loop takes them.
    if supervisor is not None:
        _end_with(supervisor)
    limit_arenas()
    # Already loaded by the supervisor (_preload), whose pages this process shares.
    from hypercorn.asyncio.run import worker_serve
    from hypercorn.utils import wrap_app

    from .app import create_asgi_apps

    adapt_hypercorn()
    # Upload purging walks the whole store: one worker does it, not all of them.
    app, debug_app, retire_background = create_asgi_apps(config, maintenance=first)
    if ready is not None:
        ready.send_bytes(b"ready")  # Built: files read, storage reached. A reload goes on.
        ready.close()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def finish(grace: float | None = None) -> None:
            # Read by Hypercorn when it answers and when it stops: every answer from
            # now on says Connection: close, so no client sends another request here.
            hconfig.keep_alive_max_requests = 0
            if grace is not None:
                hconfig.graceful_timeout = grace
            stop.set()

        def retire() -> None:
            finish(RETIRE_GRACE)
            retire_background()  # The new workers purge, collect, check and deliver.

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, finish)
        loop.add_signal_handler(signal.SIGUSR2, retire)
        servers = [
            worker_serve(
                wrap_app(app, 0, "asgi"), hconfig, sockets=sockets, shutdown_trigger=stop.wait
            )
        ]
        if debug is not None:
            servers.append(
                worker_serve(
                    wrap_app(debug_app, 0, "asgi"),
                    debug.hconfig,
                    sockets=debug.sockets,
                    shutdown_trigger=stop.wait,
                )
            )
        await asyncio.gather(*servers, trim_until(stop))

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


Reload = Callable[[], "tuple[Config, TLSFiles | None]"]
"""Reads the configuration again, checked as at start; raises what a bad one gives."""


def with_secret(config: Config, made: Secret | None = None) -> Config:
    """``config`` with an ``http.secret``: its own, or one made here (``made``: the one made
    at the start, so a reload keeps the web pages' sign-ins), shared by every worker."""
    if config.http.secret is not None:
        return config
    secret = made or Secret(secrets.token_urlsafe(32))
    return dataclasses.replace(config, http=dataclasses.replace(config.http, secret=secret))


def serve(
    config: Config,
    tls: TLSFiles | None = None,
    *,
    ready: Callable[[list[str]], None] | None = None,
    reload: Reload | None = None,
) -> int:
    """Bind, start the workers, supervise them until SIGINT/SIGTERM; the exit code.

    SIGHUP calls ``reload`` and, if the new configuration is good, replaces the
    workers with ones built from it (see :class:`Supervisor`).
    """
    config = with_secret(config)
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
        _keep_alive(sock)
        sock.listen(hconfig.backlog)
    _raise_open_file_limit()
    urls = _bound_urls(sockets)
    debug = _bind_debug(config, hconfig.backlog)
    # Made before the workers: prometheus-client's multiprocess folder, and health results.
    folder = RunFolder()
    try:
        _preload(config)  # After RunFolder: prometheus-client reads its variable on import.
        supervisor = Supervisor(config, tls, hconfig, sockets, reload, debug, folder)
        if ready is not None:
            ready(urls)
        if debug is not None:
            log.info("debug endpoints at %s (metrics, /debug/health)", ", ".join(debug.urls()))
            if not all(is_loopback_url(url) for url in debug.urls()):
                log.warning(
                    "http.debug.addr: %s answers anyone who reaches it (no access control, "
                    "as in registry:2): keep it on localhost or a private network",
                    config.http.debug.addr,
                )
        return supervisor.run()
    finally:
        for group in (sockets.secure_sockets, sockets.insecure_sockets):
            for sock in group:
                sock.close()
        if debug is not None:
            debug.close()
        folder.remove()
        sys.stdout.flush()


#: Linux's prctl option: a signal for this process when the process that forked it ends.
PR_SET_PDEATHSIG = 1


def _end_with(supervisor: int) -> None:
    """SIGTERM (finish what is in flight, then exit) when the supervisor is gone, even
    killed outright (kill -9, the OOM killer): otherwise the workers would go on
    serving the port with nobody to restart or reload them, and a new start would
    share the port with them."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # Not Linux: the supervisor's own stop still ends us.
        return
    if os.getppid() != supervisor:  # It ended before the request took hold.
        os.kill(os.getpid(), signal.SIGTERM)


def _preload(config: Config) -> None:
    """Import what the workers will run, once, before forking: they share those pages
    with the supervisor and each other instead of each holding a copy (a third less
    memory charged for two workers). ``gc.freeze`` keeps the collector from writing
    to every preloaded object, which would copy the pages it touches into each worker.
    What the configuration leaves off (metrics, events, access control, S3, Redis) stays
    unloaded."""
    import gc

    import hypercorn.asyncio.run  # noqa: F401

    from . import app  # noqa: F401

    if config.http.debug.metrics:
        from . import metrics  # noqa: F401
    if config.notifications.enabled:
        from .notifications import sender  # noqa: F401
    if config.auth.enabled:
        from .auth import guard  # noqa: F401
    if config.storage.driver == "s3":
        from .storage.driver import s3  # noqa: F401 - aiobotocore: about 20 MiB
    if config.storage.cache.blobdescriptor == "redis":
        from .storage import redis_cache  # noqa: F401 - redis-py
    if config.ui.enabled:
        from . import ui  # noqa: F401 - the pages, itsdangerous
    gc.collect()
    gc.freeze()


def is_loopback_url(url: str) -> bool:
    """Served on this machine only (localhost, a loopback address, a unix socket)."""
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if host == "localhost" or "+unix" in url:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind_debug(config: Config, backlog: int) -> DebugListener | None:
    """The debug listener (``http.debug.addr``), bound once like the public sockets."""
    addr = config.http.debug.addr
    if addr is None:
        return None
    try:
        return bind_debug(addr, binds(addr), backlog)
    except OSError as error:
        raise ServerError(str(error)) from None


def _keep_alive(sock: socket.socket) -> None:
    """TCP keep-alive (TCP_KEEPALIVE) for every connection the socket accepts (Linux copies it)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    idle, interval, probes = TCP_KEEPALIVE
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; macOS has only the on/off switch here.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, probes)


def _raise_open_file_limit() -> None:
    """Raise the soft limit on open files to the hard one, as Go does at start (so registry:2).

    Every connection is a file: with the usual soft limit of 1024, a few hundred
    slow or idle clients would leave no descriptor for the next client, a blob
    or an upload. The workers inherit the limit.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as error:  # RLIM_INFINITY above the kernel's nr_open
        log.debug("cannot raise the open files limit from %d to %d: %s", soft, hard, error)


#: A worker that dies sooner than this after its start is not restarted: it would again.
EARLY_EXIT = 2.0
#: How long the workers of a reloaded configuration may take to be built.
READY_TIMEOUT = 60.0


@dataclass
class _Worker:
    process: BaseProcess
    started: float
    first: bool


class Supervisor:
    """Starts the workers, restarts one that dies, and replaces them all on SIGHUP.

    A reload is a rolling replacement, so no connection is dropped: the new
    configuration is read and checked (a bad one is logged, naming the key, and
    the running one stays); workers built from it are started on the same
    sockets and, once every one of them is built, the old ones stop accepting
    and finish the requests they have (SIGUSR2). What cannot change without
    binding again (where it listens, TLS on or off) needs a restart and is
    refused. Log level, read-only mode, users and rules, notification
    endpoints and renewed certificate files all take effect.
    """

    def __init__(
        self,
        config: Config,
        tls: TLSFiles | None,
        hconfig: RegistryHypercornConfig,
        sockets: Sockets,
        reload: Reload | None,
        debug: DebugListener | None = None,
        folder: RunFolder | None = None,
    ) -> None:
        self.config = config
        self.debug = debug
        self.folder = folder
        self.tls = tls
        self.hconfig = hconfig
        self.sockets = sockets
        self.reload = reload
        self.context = multiprocessing.get_context("fork")
        self.workers: dict[int, _Worker] = {}
        """The current generation, by sentinel."""
        self.retiring: dict[int, BaseProcess] = {}
        self.stopping = False
        self.reload_asked = False
        self.exit_code = 0
        # SIGINT, SIGTERM and SIGHUP are this supervisor's from its making (see _signal),
        # before the address is announced: a reload asked for as soon as it is printed
        # must not find the default action (ending the process).
        self._wakeup_read, self._wakeup_write = os.pipe()
        os.set_blocking(self._wakeup_write, False)
        self._previous_wakeup = signal.set_wakeup_fd(self._wakeup_write)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._signal)

    def _start(self, first: bool, ready: Connection | None = None) -> _Worker:
        process = self.context.Process(
            target=_worker,
            args=(self.config, self.hconfig, self.sockets, first, ready, self.debug, os.getpid()),
            daemon=False,
        )
        process.start()
        return _Worker(process, time.monotonic(), first)

    def _signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self.reload_asked = True
        else:
            self.stopping = True
            # Our copies of the listening sockets go now, the workers' when they
            # stop accepting: a new connection is then refused at once instead of
            # waiting in the backlog, unanswered, until the drain ends.
            for group in (self.sockets.secure_sockets, self.sockets.insecure_sockets):
                for sock in group:
                    sock.close()
            self._kill(signal.SIGTERM)

    def _kill(self, signum: int) -> None:
        for process in [w.process for w in self.workers.values()] + list(self.retiring.values()):
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signum)

    def run(self) -> int:
        wakeup_read = self._wakeup_read
        count = worker_count(self.config)
        for index in range(count):
            worker = self._start(index == 0)
            self.workers[worker.process.sentinel] = worker
        try:
            while self.workers or self.retiring:
                waiting = [*self.workers, *self.retiring, wakeup_read]
                for ready in wait(waiting):
                    if ready == wakeup_read:
                        os.read(wakeup_read, 512)
                    elif ready in self.retiring:
                        self._gone(self.retiring.pop(ready))
                    elif ready in self.workers:
                        self._exited(self.workers.pop(ready))
                if self.reload_asked and not self.stopping:
                    self.reload_asked = False
                    self._reload()
        finally:
            signal.set_wakeup_fd(self._previous_wakeup)
            os.close(self._wakeup_read)
            os.close(self._wakeup_write)
        return self.exit_code

    def _gone(self, process: BaseProcess) -> None:
        process.join()
        if self.folder is not None:
            self.folder.worker_exited(process.pid)  # Its in-flight gauges stop counting.

    def _exited(self, worker: _Worker) -> None:
        process = worker.process
        self._gone(process)
        if self.stopping:
            return
        if time.monotonic() - worker.started < EARLY_EXIT:
            log.error(
                "worker %s failed at start (code %s); stopping", process.pid, process.exitcode
            )
            self.exit_code = 1
            self.stopping = True
            self._kill(signal.SIGTERM)
            return
        log.error("worker %s exited with code %s; starting another", process.pid, process.exitcode)
        replacement = self._start(worker.first)
        self.workers[replacement.process.sentinel] = replacement

    def _reload(self) -> None:
        if self.reload is None:
            log.warning("SIGHUP: this registry was started without a configuration to read again")
            return
        try:
            config, tls = self.reload()
            config = with_secret(config, self.config.http.secret)
            _check_reloadable(self.config, config, self.tls, tls)
        except (ValueError, ServerError) as error:
            log.error("reload refused, the running configuration stays: %s", error)
            return
        old = (self.config, self.tls, self.hconfig)
        self.config, self.tls = config, tls
        self.hconfig = hypercorn_config(config, tls)
        fresh = self._start_generation(worker_count(config))
        if fresh is None:
            self.config, self.tls, self.hconfig = old
            log.error("reload refused, the running configuration stays: new workers failed")
            return
        for worker in self.workers.values():
            self.retiring[worker.process.sentinel] = worker.process
            if worker.process.pid is not None:
                os.kill(worker.process.pid, signal.SIGUSR2)
        self.workers = fresh
        log.info(
            "configuration reloaded: %d new worker(s); %d finishing their requests",
            len(fresh),
            len(self.retiring),
        )

    def _start_generation(self, count: int) -> dict[int, _Worker] | None:
        """Workers of the current configuration, once all are built; None if one fails."""
        started: dict[int, _Worker] = {}
        pipes: dict[Connection, _Worker] = {}
        for index in range(count):
            parent, child = self.context.Pipe(duplex=False)
            worker = self._start(index == 0, child)
            child.close()
            started[worker.process.sentinel] = worker
            pipes[parent] = worker
        deadline = time.monotonic() + READY_TIMEOUT
        failed = False
        while pipes and not failed:
            left = deadline - time.monotonic()
            if left <= 0:
                failed = True
                break
            for ready in wait([*pipes, *started], timeout=left):
                if isinstance(ready, Connection):
                    try:
                        ready.recv_bytes()
                    except EOFError:  # Died before it was built.
                        failed = True
                    pipes.pop(ready)
                    ready.close()
                else:
                    failed = True  # A new worker exited.
        for pipe in pipes:
            pipe.close()
        if not failed:
            return started
        for worker in started.values():
            if worker.process.is_alive() and worker.process.pid is not None:
                os.kill(worker.process.pid, signal.SIGKILL)
            self._gone(worker.process)
        return None


def _check_reloadable(
    old: Config, new: Config, old_tls: TLSFiles | None, new_tls: TLSFiles | None
) -> None:
    """What a reload cannot change (the sockets are bound once): refused, naming the key."""
    for key, before, after in (
        ("http.addr", old.http.addr, new.http.addr),
        ("http.net", old.http.net, new.http.net),
        ("http.tls", old_tls is not None, new_tls is not None),
        ("http.debug.addr", old.http.debug.addr, new.http.debug.addr),
    ):
        if before != after:
            raise ServerError(f"{key}: changing it needs a restart (the sockets are bound once)")
