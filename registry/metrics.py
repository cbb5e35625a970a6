"""Metrics: registry:2's names and labels, summed over every worker by prometheus-client.

Each worker records into prometheus-client's multiprocess files (one set per
process, in the folder the supervisor makes, see ``debug.py``), and whichever
worker answers a scrape adds them all up. Recording is on the request path of
every manifest GET (about 200 µs of work each), where prometheus-client's own
calls would cost 20 µs a request (each value is a locked write to a memory
map). So a request only adds to plain dicts and lists of this process, and
:meth:`Recorder.flush` moves the sums into prometheus-client's values every
FLUSH_SECONDS and before a scrape: a scrape sees other workers at most that old.

Names, labels and buckets are registry:2's (docker/go-metrics over
client_golang), read from a running ``docker-registry`` 2.8.2: ``handler`` is
the route name with ``-`` as ``_``, ``method`` is lower-case, ``code`` the status.
"""

from __future__ import annotations

import functools
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

#: How stale another worker's numbers may be in a scrape (this worker's are flushed first).
FLUSH_SECONDS = 1.0

#: registry:2's HTTP latency buckets (go-metrics' defaults), seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60)
#: registry:2's request and response size buckets: 1 KiB to 2 GiB, doubling.
SIZE_BUCKETS = tuple(1024.0 * 2**power for power in range(22))
#: registry:2's storage action buckets (client_golang's DefBuckets), seconds.
STORAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

#: The route table's names (``api/routes.py``) as registry:2 labels them.
HANDLERS = (
    "base",
    "catalog",
    "tags",
    "manifest",
    "blob_upload",
    "blob_upload_chunk",
    "blob",
    "referrers",
)
#: Methods labelled as themselves (lower-case, as client_golang does); others are "other",
#: so a client inventing methods cannot make new series without end.
METHODS = {m: m.lower() for m in ("GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS")}
#: Requests whose body is content being pushed, by handler.
PUSHES = {"blob_upload": "blob", "blob_upload_chunk": "blob", "manifest": "manifest"}
#: Responses whose body is content being pulled, by handler.
PULLS = {"blob": "blob", "manifest": "manifest"}
BODY_METHODS = frozenset({"PUT", "PATCH", "POST"})
#: A pull-through cache's counters (distribution 3's names), each by ``type``: blob, manifest.
PROXY_COUNTERS = {
    "requests": "The number of total incoming proxy request received",
    "hits": "The number of total proxy request hits",
    "misses": "The number of total proxy request misses",
    "pulled_bytes": "The size of total bytes pulled from the upstream",
}


def route_name(rest: str) -> str | None:
    """The handler label of the path after ``/v2/``: the route table's answer, without its regexes.

    Matching the table's patterns costs 3-11 µs a request; this tests the same
    things in the same order with string operations, and the tests check it
    against :func:`registry.api.routes.match` on paths made from every pattern.
    """
    if rest == "":
        return "base"
    if rest == "_catalog":
        return "catalog"
    if len(rest) > 10 and rest.endswith("/tags/list"):
        return "tags"
    head, _, last = rest.rpartition("/")  # (.+)/KIND/([^/]+): last, then kind and parent
    parent, _, kind = head.rpartition("/")
    if last and parent and kind == "manifests":
        return "manifest"
    if (len(rest) > 14 and rest.endswith("/blobs/uploads")) or (
        len(rest) > 15 and rest.endswith("/blobs/uploads/")
    ):
        return "blob_upload"
    if last and kind == "uploads" and len(parent) > 6 and parent.endswith("/blobs"):
        return "blob_upload_chunk"
    if last and parent and kind == "blobs":
        return "blob"
    if last and parent and kind == "referrers":
        return "referrers"
    return None


def _add_observations(
    histogram: Histogram, labels: tuple[str, ...], counts: list[float], total: float
) -> None:
    """Add bucket counts (one per bound, then +Inf) and their sum to a histogram's series."""
    child = histogram.labels(*labels)
    # prometheus-client has no call that adds n observations at once: these are the
    # values its observe() adds to (pinned versions; the tests read them back).
    for index, count in enumerate(counts):
        if count:
            child._buckets[index].inc(count)
    child._sum.inc(total)


# A request's numbers since the last flush, per (handler, method, status), in one list:
# [count, duration buckets..., duration sum, request size buckets..., sum, response ...].
_DURATION = 1
_DURATION_SUM = _DURATION + len(DURATION_BUCKETS) + 1
_REQUEST = _DURATION_SUM + 1
_REQUEST_SUM = _REQUEST + len(SIZE_BUCKETS) + 1
_RESPONSE = _REQUEST_SUM + 1
_RESPONSE_SUM = _RESPONSE + len(SIZE_BUCKETS) + 1
_ENTRY = _RESPONSE_SUM + 1
_STORAGE_SUM = len(STORAGE_BUCKETS) + 1


class Recorder:
    """One worker's metrics: recorded in plain values, flushed to prometheus-client's files."""

    def __init__(self, driver: str) -> None:
        self.driver = driver
        self.requests_family = Counter(
            "registry_http_requests_total",
            "Total number of HTTP requests made.",
            ("code", "handler", "method"),
            registry=None,
        )
        self.in_flight_family = Gauge(
            "registry_http_in_flight_requests",
            "The in-flight HTTP requests",
            ("handler",),
            registry=None,
            multiprocess_mode="livesum",
        )
        self.duration_family = Histogram(
            "registry_http_request_duration_seconds",
            "The HTTP request latencies in seconds.",
            ("handler", "method"),
            registry=None,
            buckets=DURATION_BUCKETS,
        )
        self.request_size_family = Histogram(
            "registry_http_request_size_bytes",
            "The HTTP request sizes in bytes.",
            ("handler",),
            registry=None,
            buckets=SIZE_BUCKETS,
        )
        self.response_size_family = Histogram(
            "registry_http_response_size_bytes",
            "The HTTP response sizes in bytes.",
            ("handler",),
            registry=None,
            buckets=SIZE_BUCKETS,
        )
        self.storage_family = Histogram(
            "registry_storage_action_seconds",
            "The number of seconds that the storage action takes",
            ("driver", "action"),
            registry=None,
            buckets=STORAGE_BUCKETS,
        )
        self.pushed_family = Counter(
            "registry_pushed_bytes_total",
            "Bytes of blobs and manifests received by pushes the registry accepted.",
            ("type",),
            registry=None,
        )
        self.pulled_family = Counter(
            "registry_pulled_bytes_total",
            "Bytes of blobs and manifests sent to pulls (GET answered 200 or 206).",
            ("type",),
            registry=None,
        )
        # distribution 3's pull-through cache counters (registry:2 2.8 has none), by type.
        self.proxy_families = {
            name: Counter(f"registry_proxy_{name}_total", text, ("type",), registry=None)
            for name, text in PROXY_COUNTERS.items()
        }
        self.uploads_family = Gauge(
            "registry_blob_uploads_in_flight",
            "Blob upload requests (POST, PATCH or PUT with data) being received now.",
            registry=None,
            multiprocess_mode="livesum",
        )
        self.requests: dict[tuple[str, str, int], list[float]] = {}
        self.storage: dict[str, list[float]] = {}
        self.running: dict[str, int] = dict.fromkeys(HANDLERS, 0)
        """Requests in flight by handler; all shown from the start, as in registry:2."""
        self.flushed_running: dict[str, int] = {}
        self.pushed: dict[str, int] = {}
        self.pulled: dict[str, int] = {}
        self.proxy: dict[tuple[str, str], int] = {}
        self.uploading = 0
        self.flushed_uploading = -1

    # --- the request path: plain dicts and lists only ---

    def request(
        self, scope: Mapping[str, Any], receive: Callable[[], Awaitable[Any]], api: str
    ) -> RequestRecord | None:
        """Start recording a request to a route of the API under ``api`` (``{prefix}/v2``)."""
        path: str = scope["path"]
        if path == api:
            handler: str | None = "base"
        elif path.startswith(api) and path[len(api) : len(api) + 1] == "/":
            handler = route_name(path[len(api) + 1 :])
        else:
            return None
        if handler is None:
            return None
        return RequestRecord(self, handler, scope, receive)

    def observe_storage(self, action: str, seconds: float) -> None:
        entry = self.storage.get(action)
        if entry is None:
            entry = self.storage[action] = [0.0] * (_STORAGE_SUM + 1)
        entry[bisect_left(STORAGE_BUCKETS, seconds)] += 1
        entry[_STORAGE_SUM] += seconds

    def observe_proxy(self, name: str, kind: str, amount: int = 1) -> None:
        """A pull-through cache's request, hit, miss (``name``) or bytes pulled from upstream
        (``pulled_bytes``), of a ``blob`` or ``manifest`` (``kind``)."""
        key = (name, kind)
        self.proxy[key] = self.proxy.get(key, 0) + amount

    # --- moving the sums into prometheus-client's values ---

    def flush(self) -> None:
        requests, self.requests = self.requests, {}
        durations: dict[tuple[str, str], list[float]] = {}
        request_sizes: dict[str, list[float]] = {}
        response_sizes: dict[str, list[float]] = {}
        for (handler, method, status), entry in requests.items():
            self.requests_family.labels(str(status), handler, method).inc(entry[0])
            _merge(durations, (handler, method), entry, _DURATION, _DURATION_SUM)
            _merge(request_sizes, handler, entry, _REQUEST, _REQUEST_SUM)
            _merge(response_sizes, handler, entry, _RESPONSE, _RESPONSE_SUM)
        for key, sums in durations.items():
            _add_observations(self.duration_family, key, sums[:-1], sums[-1])
        for handler, sums in request_sizes.items():
            _add_observations(self.request_size_family, (handler,), sums[:-1], sums[-1])
        for handler, sums in response_sizes.items():
            _add_observations(self.response_size_family, (handler,), sums[:-1], sums[-1])
        storage, self.storage = self.storage, {}
        for action, entry in storage.items():
            counts = entry[:_STORAGE_SUM]
            _add_observations(self.storage_family, (self.driver, action), counts, entry[-1])
        for handler, running in self.running.items():
            if self.flushed_running.get(handler) != running:
                self.in_flight_family.labels(handler).set(running)
                self.flushed_running[handler] = running
        if self.uploading != self.flushed_uploading:
            self.uploads_family.set(self.uploading)
            self.flushed_uploading = self.uploading
        for amounts, family in (
            (self.pushed, self.pushed_family),
            (self.pulled, self.pulled_family),
        ):
            for kind, amount in amounts.items():
                if amount:
                    family.labels(kind).inc(amount)
            amounts.clear()
        proxy, self.proxy = self.proxy, {}
        for (name, kind), amount in proxy.items():
            self.proxy_families[name].labels(kind).inc(amount)


def _merge(
    into: dict[Any, list[float]], key: Any, entry: list[float], start: int, end: int
) -> None:
    """Add a histogram's slice of a request entry (buckets, then sum at ``end``) to ``into``."""
    sums = into.get(key)
    if sums is None:
        into[key] = entry[start : end + 1]
        return
    for index in range(end + 1 - start):
        sums[index] += entry[start + index]


class RequestRecord:
    """One request being recorded: started by :meth:`Recorder.request`, ended by :meth:`finish`."""

    __slots__ = ("handler", "method", "push", "receive", "received", "recorder", "size", "upload")

    def __init__(
        self,
        recorder: Recorder,
        handler: str,
        scope: Mapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
    ) -> None:
        self.recorder = recorder
        self.handler = handler
        method: str = scope["method"]
        self.method = METHODS.get(method, "other")
        # client_golang's approximate request size: URL, method, protocol, headers, body.
        query: bytes = scope["query_string"]
        path: bytes = scope.get("raw_path") or b""
        headers = scope["headers"]
        size = len(path) + len(method) + 8 + (len(query) + 1 if query else 0)
        size += sum([len(name) + len(value) for name, value in headers])
        self.received = 0
        self.push = None
        self.upload = False
        self.receive = receive
        if method in BODY_METHODS:
            self.push = PUSHES.get(handler)
            body = 0
            chunked = False
            for name, value in headers:
                if name == b"content-length" and value.isdigit():
                    body = int(value)
                elif name == b"transfer-encoding":
                    chunked = True
            size += body
            if self.push is not None:
                self.receive = self._counting(receive)
                self.upload = self.push == "blob" and (body > 0 or chunked)
                if self.upload:
                    recorder.uploading += 1
        self.size = size
        recorder.running[handler] += 1

    def _counting(self, receive: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        async def counting() -> Any:
            event = await receive()
            if event["type"] == "http.request":
                self.received += len(event.get("body", b""))
            return event

        return counting

    def finish(self, status: int, sent: int, seconds: float) -> None:
        """The response is sent (``sent`` body bytes) or the request ended without one."""
        recorder = self.recorder
        handler = self.handler
        status = status or 500  # No response: Hypercorn answers 500 (or the client left).
        key = (handler, self.method, status)
        entry = recorder.requests.get(key)
        if entry is None:
            entry = recorder.requests[key] = [0.0] * _ENTRY
        entry[0] += 1
        entry[_DURATION + bisect_left(DURATION_BUCKETS, seconds)] += 1
        entry[_DURATION_SUM] += seconds
        entry[_REQUEST + bisect_left(SIZE_BUCKETS, self.size)] += 1
        entry[_REQUEST_SUM] += self.size
        entry[_RESPONSE + bisect_left(SIZE_BUCKETS, sent)] += 1
        entry[_RESPONSE_SUM] += sent
        recorder.running[handler] -= 1
        if self.push is not None:
            if self.upload:
                recorder.uploading -= 1
            if 200 <= status < 300:
                recorder.pushed[self.push] = recorder.pushed.get(self.push, 0) + self.received
        elif status in (200, 206) and self.method == "get" and handler in PULLS:
            kind = PULLS[handler]
            recorder.pulled[kind] = recorder.pulled.get(kind, 0) + sent


# --- garbage collection: called by the collector, in whatever process runs it ---


class _GarbageCollection:
    def __init__(self) -> None:
        self.runs = Counter(
            "registry_gc_runs_total", "Garbage collection runs finished.", registry=None
        )
        self.blobs = Counter(
            "registry_gc_blobs_deleted_total", "Blobs deleted by garbage collection.", registry=None
        )
        self.manifests = Counter(
            "registry_gc_manifests_deleted_total",
            "Manifests deleted by garbage collection.",
            registry=None,
        )
        self.size = Counter(
            "registry_gc_bytes_deleted_total",
            "Bytes of blobs deleted by garbage collection.",
            registry=None,
        )
        self.last = Gauge(
            "registry_gc_last_run_timestamp_seconds",
            "When the last garbage collection run finished (Unix time).",
            registry=None,
            multiprocess_mode="max",
        )


@functools.cache
def _gc() -> _GarbageCollection:
    # Made on first use, in the process that collects: families made in the
    # supervisor before the fork would leave it a file of values of its own.
    return _GarbageCollection()


def gc_deleted(*, blobs: int = 0, manifests: int = 0, size: int = 0) -> None:
    """Count what garbage collection deleted: per item or per run, as the collector likes.

    Served when it runs in a worker (online collection); in ``registry
    garbage-collect`` the numbers stay in that process and go with it.
    """
    metrics = _gc()
    if blobs:
        metrics.blobs.inc(blobs)
    if manifests:
        metrics.manifests.inc(manifests)
    if size:
        metrics.size.inc(size)


def gc_finished() -> None:
    """Count a finished garbage collection run (dry runs too) and note when it ended."""
    metrics = _gc()
    metrics.runs.inc()
    metrics.last.set(time.time())


def families() -> Iterable[str]:
    """Every metric family this registry serves (documentation and tests)."""
    return (
        "registry_http_requests_total",
        "registry_http_request_duration_seconds",
        "registry_http_request_size_bytes",
        "registry_http_response_size_bytes",
        "registry_http_in_flight_requests",
        "registry_storage_action_seconds",
        "registry_pushed_bytes_total",
        "registry_pulled_bytes_total",
        "registry_blob_uploads_in_flight",
        "registry_gc_runs_total",
        "registry_gc_blobs_deleted_total",
        "registry_gc_manifests_deleted_total",
        "registry_gc_bytes_deleted_total",
        "registry_gc_last_run_timestamp_seconds",
        *(f"registry_proxy_{name}_total" for name in PROXY_COUNTERS),
    )
