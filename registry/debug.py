"""The debug listener (``http.debug.addr``): metrics and health on a port of its own.

registry:2 serves ``/metrics`` and ``/debug/health`` on a second listener with
no access control, so it is off by default and meant for localhost or a
private network; the public port never answers these paths (they are no
routes there: 404). The supervisor binds it before forking, like the public
sockets, and every worker serves it beside the public app, so whichever worker
accepts a scrape answers it: prometheus-client sums every worker's values from
the files in the supervisor's run folder, and health results come from the
file the checking worker writes there (``health.py``).

``/livez`` and ``/readyz`` (probes for orchestrators; registry:2 has neither)
are on this listener only, beside ``/debug/health``: the public port stays
exactly registry:2's (a path outside ``/v2/`` is a 404 there, and an
Internet-facing port tells nobody whether the instance is draining), and a
probe that goes through the public port's TLS and access control would fail
for reasons that are not the instance's health. ``/livez`` says the worker's
event loop answers; ``/readyz`` adds that the health checks have all run and
pass and that the worker serves, so a Kubernetes readiness probe takes a
draining instance (``health.file``) out of its Service.

This module is imported by the supervisor, which stays free of
prometheus-client until a worker exits (:meth:`RunFolder.worker_exited`), long
after :class:`RunFolder` has set the environment variable it reads at import.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

from .config import Config

if TYPE_CHECKING:
    from .health import HealthState
    from .metrics import Recorder

log = logging.getLogger(__name__)

#: prometheus-client's multiprocess mode: where every process writes its values.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

RUN_PREFIX = "registry-run-"

HEALTH_PATH = "/debug/health"
LIVE_PATH = "/livez"
READY_PATH = "/readyz"


class RunFolder:
    """A temporary folder the supervisor shares with its workers while it runs.

    It holds prometheus-client's per-process value files (so it is
    ``PROMETHEUS_MULTIPROC_DIR``, set before any worker exists) and the health
    results. Made empty at start, so counters start at zero with the server,
    and removed at exit. Its name holds the supervisor's process id, so the
    folder of a supervisor that was killed (SIGKILL, the OOM killer) is removed
    by the next start instead of filling the temporary folder.
    """

    def __init__(self) -> None:
        _remove_orphans()
        self.path = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{os.getpid()}-")
        self._previous = os.environ.get(MULTIPROC_ENV)
        os.environ[MULTIPROC_ENV] = self.path

    def worker_exited(self, pid: int | None) -> None:
        """A worker is gone: its in-flight gauges stop counting (its counters stay in the sums)."""
        if pid is None:
            return
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self.path)  # type: ignore[no-untyped-call]

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = self._previous


def _remove_orphans() -> None:
    """Remove the run folders of supervisors that no longer run (a live pid's folder stays)."""
    parent = tempfile.gettempdir()
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        pid, dash, _ = name.removeprefix(RUN_PREFIX).partition("-")
        if not name.startswith(RUN_PREFIX) or not dash or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        except (PermissionError, OverflowError):
            pass  # Another user's process runs with that id: leave it.


def run_folder() -> str | None:
    """The supervisor's run folder, in a worker; None in a process started otherwise (tests)."""
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.path.isdir(path) else None


@dataclass(frozen=True, slots=True)
class DebugListener:
    """The debug sockets, bound by the supervisor, and Hypercorn's settings for them."""

    hconfig: HypercornConfig
    sockets: Sockets

    def close(self) -> None:
        for sock in self.sockets.insecure_sockets:
            sock.close()

    def urls(self) -> list[str]:
        urls = []
        for sock in self.sockets.insecure_sockets:
            host, port = sock.getsockname()[:2]
            urls.append(f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}")
        return urls


def bind_debug(addr: str, binds: list[str], backlog: int) -> DebugListener:
    """Bind and listen on ``http.debug.addr`` (``binds``: Hypercorn's form of it); plain HTTP."""
    hconfig = HypercornConfig()
    hconfig.bind = binds
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("hypercorn.error")
    hconfig.include_server_header = False
    hconfig.graceful_timeout = 1.0  # Scrapes and probes are short; a stop should not wait.
    hconfig.backlog = backlog
    try:
        sockets = hconfig.create_sockets()
    except OSError as error:
        raise OSError(f"http.debug.addr: cannot listen on {addr}: {error.strerror}") from None
    for sock in sockets.insecure_sockets:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.listen(backlog)
    return DebugListener(hconfig, sockets)


class DebugApp:
    """The debug listener's ASGI app: metrics, registry:2's health, probes for orchestrators.

    * ``http.debug.prometheus.path`` (``/metrics``): every worker's metrics, summed;
    * ``/debug/health``: registry:2's, ``{}`` or 503 with the failing checks;
    * ``/livez``: the process answers (200 ``{}``);
    * ``/readyz``: checks pass and this worker serves (else 503, naming why).
    """

    def __init__(
        self, config: Config, state: HealthState, recorder: Recorder | None = None
    ) -> None:
        prometheus = config.http.debug.prometheus
        self.metrics_path = prometheus.path if prometheus.enabled else None
        self.state = state
        self.recorder = recorder

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        status, content_type, body = await self._answer(scope)
        headers = [
            (b"content-type", content_type.encode("latin-1")),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-cache"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        payload = b"" if scope["method"] == "HEAD" else body
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    async def _answer(self, scope: HTTPScope) -> tuple[int, str, bytes]:
        path = scope["path"]
        known = (self.metrics_path, HEALTH_PATH, LIVE_PATH, READY_PATH)
        if path not in known:
            return 404, "text/plain; charset=utf-8", b"404 page not found\n"
        if scope["method"] not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"405 method not allowed\n"
        if path == self.metrics_path:
            accept = ", ".join(
                value.decode("latin-1") for name, value in scope["headers"] if name == b"accept"
            )
            return await self._metrics(accept)
        if path == HEALTH_PATH:
            return _json(self.state.failures)
        if path == READY_PATH:
            return _json(self.state.readiness())
        return _json({})

    async def _metrics(self, accept: str) -> tuple[int, str, bytes]:
        if self.recorder is not None:
            self.recorder.flush()  # This worker's numbers exact, the others' FLUSH_SECONDS old.
        folder = run_folder()
        if folder is None:
            return 503, "text/plain; charset=utf-8", b"metrics need the server's run folder\n"
        # Reading every worker's files takes milliseconds: not on the event loop.
        return await asyncio.to_thread(_exposition, folder, accept)


def _exposition(folder: str, accept: str) -> tuple[int, str, bytes]:
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    registry.register(_GoBounds(MultiProcessCollector(None, path=folder)))  # type: ignore[no-untyped-call]
    encode, content_type = choose_encoder(accept)
    return 200, content_type, encode(registry)


class _GoBounds:
    """Bucket bounds written as registry:2 (Go) writes them: ``le="1"``, not ``le="1.0"``.

    Prometheus keeps ``le`` as a string, so with Python's spelling a query
    summing by ``le`` over registry:2 and this registry (a migration, a mixed
    fleet) would see two buckets where there is one.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def collect(self) -> Iterator[Any]:
        for metric in self.inner.collect():
            if metric.type == "histogram":
                metric.samples = [
                    sample._replace(labels={**sample.labels, "le": _go_bound(sample.labels["le"])})
                    if "le" in sample.labels
                    else sample
                    for sample in metric.samples
                ]
            yield metric


def _go_bound(text: str) -> str:
    """``1.0`` -> ``1``, ``1024.0`` -> ``1024``; ``0.005``, ``+Inf`` and ``1.048576e+06`` stay."""
    whole, dot, fraction = text.partition(".")
    return whole if dot and fraction == "0" and whole.isdigit() else text


def _json(failures: dict[str, str]) -> tuple[int, str, bytes]:
    """registry:2's health body: ``{}`` with 200, or each failing check's error with 503."""
    body = json.dumps(failures, separators=(",", ":")).encode()  # Byte for byte as Go writes it.
    return (503 if failures else 200), "application/json; charset=utf-8", body
