"""What recording metrics costs a request, measured on the request path itself.

    python bench/metrics_cost.py [--requests 200000] [--wrk SECONDS --rounds 3]

Calls the access-log middleware around a trivial app with a manifest GET as
Docker sends it (eight headers), without and with the metrics recorder, and
a storage read through the instrumented driver and without; the recorder is
flushed every 5,000 requests (a second of a busy worker), and that is counted
too. Prints CPU microseconds per request (CPU time, so other processes on the
machine do not count); the difference is what metrics cost.

``--wrk``: end to end too, manifest GETs by tag with wrk on one connection to
one worker, without and with ``http.debug.prometheus`` (interleaved, best of
``--rounds``), as the worker's CPU time per request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# prometheus-client picks its multiprocess values at import: the folder comes first.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="metrics-cost-")

from registry.metrics import Recorder
from registry.middleware import RegistryMiddleware
from registry.storage.driver.inmemory import InMemoryDriver
from registry.storage.driver.instrumented import InstrumentedDriver

SCOPE: dict[str, Any] = {
    "type": "http",
    "http_version": "1.1",
    "method": "GET",
    "path": "/v2/library/debian/manifests/bookworm",
    "raw_path": b"/v2/library/debian/manifests/bookworm",
    "query_string": b"",
    "client": ("127.0.0.1", 40000),
    "headers": [
        (b"host", b"registry.example.com:5000"),
        (b"user-agent", b"docker/28.2.2 go/go1.24.3 git-commit/e6534b4 kernel/6.1.0"),
        (b"accept", b"application/vnd.oci.image.manifest.v1+json"),
        (b"accept", b"application/vnd.oci.image.index.v1+json"),
        (b"accept", b"application/vnd.docker.distribution.manifest.v2+json"),
        (b"accept", b"application/vnd.docker.distribution.manifest.list.v2+json"),
        (b"authorization", b"Bearer " + b"x" * 600),
        (b"accept-encoding", b"gzip"),
    ],
}
BODY = b"{" + b"x" * 1500 + b"}"


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": BODY, "more_body": False})


async def receive() -> Any:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(event: Any) -> None:
    return None


async def per_request(
    middleware: RegistryMiddleware, count: int, recorder: Recorder | None
) -> float:
    started = time.process_time()
    for index in range(count):
        await middleware(SCOPE, receive, send)
        if recorder is not None and index % 5000 == 4999:
            recorder.flush()
    return (time.process_time() - started) / count * 1e6


async def per_read(driver: Any, count: int, recorder: Recorder | None) -> float:
    started = time.process_time()
    for index in range(count):
        await driver.get_content("/docker/registry/v2/repositories/a/_manifests/tags/t/link")
        if recorder is not None and index % 5000 == 4999:
            recorder.flush()
    return (time.process_time() - started) / count * 1e6


async def main(count: int) -> None:
    recorder = Recorder("inmemory")
    plain = RegistryMiddleware(app, access_log_enabled=False)
    measured = RegistryMiddleware(app, access_log_enabled=False, metrics=recorder)
    memory = InMemoryDriver()
    await memory.put_content("/docker/registry/v2/repositories/a/_manifests/tags/t/link", b"x")
    timed = InstrumentedDriver(memory, recorder.observe_storage)
    best: dict[str, float] = {}
    for _ in range(5):  # Interleaved, best of five: the machine's noise is not the metrics'.
        for name, run in (
            ("request without metrics", per_request(plain, count, None)),
            ("request with metrics", per_request(measured, count, recorder)),
            ("storage read without", per_read(memory, count, None)),
            ("storage read instrumented", per_read(timed, count, recorder)),
        ):
            best[name] = min(best.get(name, float("inf")), await run)
    for name, micros in best.items():
        print(f"{name:28} {micros:6.2f} µs")
    http = best["request with metrics"] - best["request without metrics"]
    storage = best["storage read instrumented"] - best["storage read without"]
    print(f"{'metrics per request':28} {http:6.2f} µs")
    print(f"{'metrics per storage action':28} {storage:6.2f} µs")


def end_to_end(seconds: int, rounds: int) -> None:
    """Server CPU time per manifest GET (wrk, one connection), without and with metrics.

    CPU time of the worker, not requests per second: on a shared machine the
    second is what other processes leave, the first is the work itself.
    """
    import httpx

    from bench.compare import ACCEPT, REPO
    from bench.servers import _tree, free_port, ours, workdir
    from tests.pushing import push_image

    folder = workdir()
    servers = {}
    for name, debug in (("without", {}), ("with", {"debug": _debug()})):
        port = free_port()
        http = {"addr": f"127.0.0.1:{port}", "workers": 1, **debug}
        server = ours(folder, workers=1, extra={"http": http}, port=port)
        server.name = f"ours-{name}"
        servers[name] = server.start()
    best: dict[str, float] = {}
    try:
        for server in servers.values():
            with httpx.Client(base_url=server.url) as client:
                push_image(client, REPO, "latest")
        for _ in range(rounds):
            for name, server in servers.items():
                assert server.process is not None
                worker = _tree(server.process.pid)[-1]
                before = _cpu_seconds(worker)
                url = f"{server.url}/v2/{REPO}/manifests/latest"
                result = subprocess.run(
                    ["wrk", "-t1", "-c1", f"-d{seconds}s", "-H", f"Accept: {ACCEPT}", url],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                found = re.search(r"(\d+) requests in", result.stdout)
                assert found and "Non-2xx" not in result.stdout, result.stdout
                micros = (_cpu_seconds(worker) - before) / int(found.group(1)) * 1e6
                best[name] = min(best.get(name, float("inf")), micros)
    finally:
        for server in servers.values():
            server.stop()
    for name, micros in best.items():
        print(f"manifest GET {name} metrics: {micros:6.1f} µs of worker CPU a request")
    print(f"metrics cost end to end:  {best['with'] - best['without']:6.1f} µs a request")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _debug() -> dict[str, object]:
    from bench.servers import free_port

    return {"addr": f"127.0.0.1:{free_port()}", "prometheus": {"enabled": True}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--wrk", type=int, default=0, help="seconds per wrk run (0: no wrk)")
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.requests))
    if arguments.wrk:
        end_to_end(arguments.wrk, arguments.rounds)
