"""Prometheus metrics on the debug listener (``http.debug``), summed over every worker.

Each test starts a real registry with two workers and its debug listener on a
free loopback port, sends requests over new connections (so both workers take
some: the access log's process ids show it), then scrapes ``/metrics`` until
every worker has flushed and compares the series with what it sent. The names
and labels are checked against Debian's Go registry (registry:2) too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from registry.server import EARLY_EXIT
from tests.access import USERS, htpasswd_config
from tests.conftest import RegistryProcess
from tests.go_registry import GoRegistry
from tests.pushing import (
    ACCEPT_MANIFESTS,
    OCI_MANIFEST,
    digest_of,
    image_manifest,
    push_blob,
    push_image,
    start_upload,
    with_query,
)
from tests.services.ports import free_port

Factory = Callable[..., RegistryProcess]
Labels = frozenset[tuple[str, str]]

#: registry:2's storage actions (its base driver's names).
REGISTRY2_ACTIONS = {
    "GetContent", "PutContent", "Reader", "Writer", "Stat", "List", "Move", "Delete",
    "URLFor", "Walk",
}  # fmt: skip
ACCESS_PID_RE = re.compile(r"registry\.access\[(\d+)\]")
#: How long a test waits for counts to add up before it fails saying which do not.
DEADLINE = 60.0


@dataclass
class Scrape:
    """One scrape of a metrics endpoint: families by name, sample values by (name, labels)."""

    types: dict[str, str]
    samples: dict[tuple[str, Labels], float]

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def series(self, name: str) -> dict[Labels, float]:
        return {labels: v for (sample, labels), v in self.samples.items() if sample == name}

    def label_names(self, family: str) -> set[frozenset[str]]:
        """The label name sets of a family's samples (``le`` of buckets left out)."""
        return {
            frozenset(name for name, _ in labels if name != "le")
            for (sample, labels) in self.samples
            if sample == family
            or (
                sample.startswith(family + "_")
                and sample[len(family) + 1 :] in ("bucket", "sum", "count", "total")
            )
        }


def scrape(url: str) -> Scrape:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, (response.status_code, response.text)
    types: dict[str, str] = {}
    samples: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(response.text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(types, samples)


@dataclass
class Expected:
    """What the test sent: requests by (code, handler, method), bytes pushed and pulled."""

    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    pushed: Counter[str] = field(default_factory=Counter)
    pulled: Counter[str] = field(default_factory=Counter)

    def mismatches(self, seen: Scrape) -> list[str]:
        wrong = []
        counted = {
            (dict(labels)["code"], dict(labels)["handler"], dict(labels)["method"]): value
            for labels, value in seen.series("registry_http_requests_total").items()
        }
        for key in set(counted) | set(self.requests):
            if counted.get(key, 0.0) != self.requests[key]:
                wrong.append(f"requests {key}: {counted.get(key, 0.0)} != {self.requests[key]}")
        for name, amounts in (
            ("registry_pushed_bytes_total", self.pushed),
            ("registry_pulled_bytes_total", self.pulled),
        ):
            for kind in ("blob", "manifest"):
                if seen.value(name, type=kind) != amounts[kind]:
                    wrong.append(f"{name} {kind}: {seen.value(name, type=kind)} != {amounts[kind]}")
        return wrong


def wait_for(url: str, expected: Expected) -> Scrape:
    """Scrape until every worker's numbers are in and add up (a flush is every second)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        seen = scrape(url)
        wrong = expected.mismatches(seen)
        if not wrong:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError("metrics never added up:\n" + "\n".join(sorted(wrong)))
        time.sleep(0.2)


def new_connections(url: str) -> httpx.Client:
    """A client that opens a connection per request, so the kernel spreads them over workers."""
    return httpx.Client(
        base_url=url,
        timeout=30,
        headers=ACCEPT_MANIFESTS,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def traffic(client: httpx.Client, repo: str, count: int, expected: Expected) -> None:
    """Push ``count`` images (config, one layer, manifest), pull each, and a few other reads."""
    for index in range(count):
        config = json.dumps({"architecture": "amd64", "os": "linux", "n": index}).encode()
        layer = f"layer {index} of {repo} ".encode() * (index + 1)
        _, manifest = push_image(client, repo, f"t{index}", layers=[layer], config=config)
        expected.requests["202", "blob_upload", "post"] += 2
        expected.requests["201", "blob_upload_chunk", "put"] += 2
        expected.requests["201", "manifest", "put"] += 1
        expected.pushed["blob"] += len(config) + len(layer)
        expected.pushed["manifest"] += len(manifest)
        pulled = client.get(f"/v2/{repo}/manifests/t{index}")
        assert pulled.status_code == 200 and pulled.content == manifest
        expected.requests["200", "manifest", "get"] += 1
        expected.pulled["manifest"] += len(manifest)
        for blob in (config, layer):
            got = client.get(f"/v2/{repo}/blobs/{digest_of(blob)}")
            assert got.status_code == 200 and got.content == blob
            expected.requests["200", "blob", "get"] += 1
            expected.pulled["blob"] += len(blob)
        assert client.head(f"/v2/{repo}/manifests/t{index}").status_code == 200
        expected.requests["200", "manifest", "head"] += 1
    assert client.get("/v2/").status_code == 200
    expected.requests["200", "base", "get"] += 1
    assert client.get(f"/v2/{repo}/tags/list").status_code == 200
    expected.requests["200", "tags", "get"] += 1
    assert client.get("/v2/_catalog").status_code == 200
    expected.requests["200", "catalog", "get"] += 1
    assert client.get(f"/v2/{repo}/manifests/missing").status_code == 404
    expected.requests["404", "manifest", "get"] += 1


def debug_config(port: int, **prometheus: object) -> dict[str, object]:
    return {
        "http": {
            "debug": {
                "addr": f"127.0.0.1:{port}",
                "prometheus": {"enabled": True, **prometheus},
            }
        }
    }


def wait_ready(debug: str) -> None:
    """Until ``/readyz`` answers 200 several times in a row, so every worker has seen it: it
    answers 503 until the health checks have run once (registry/health.py), which a busy
    machine may not have done by the time the public port listens."""
    deadline = time.monotonic() + DEADLINE
    streak = 0
    while streak < 4:
        status = httpx.get(f"{debug}/readyz", timeout=30).status_code
        if status == 200:
            streak += 1
            continue
        streak = 0
        assert time.monotonic() < deadline, f"{debug}/readyz stays {status}"
        time.sleep(0.05)


@dataclass
class Served:
    registry: RegistryProcess
    debug: str

    @property
    def metrics(self) -> str:
        return f"{self.debug}/metrics"

    def worker_pids(self, since: int = 0) -> set[str]:
        """The workers that logged requests after ``since`` characters of the log."""
        return set(ACCESS_PID_RE.findall(self.registry.log()[since:]))


@pytest.fixture
def served(registry_factory: Factory) -> Served:
    port = free_port()
    registry = registry_factory(debug_config(port), workers=2)
    return Served(registry, f"http://127.0.0.1:{port}")


def spread_traffic(served: Served, repo: str, expected: Expected, rounds: int = 10) -> None:
    """Traffic until both workers have served some of it (usually at once)."""
    offset = len(served.registry.log())
    with new_connections(served.registry.url) as client:
        for round_ in range(rounds):
            traffic(client, f"{repo}{round_}", 2, expected)
            served.registry.log_with(f"GET /v2/{repo}{round_}/manifests/missing")
            if len(served.worker_pids(offset)) >= 2:
                return
    raise AssertionError(f"one worker served everything:\n{served.registry.log()[-2000:]}")


def test_counts_are_summed_over_both_workers(served: Served) -> None:
    expected = Expected()
    spread_traffic(served, "test/summed", expected)
    seen = wait_for(served.metrics, expected)
    for _ in range(3):  # Each worker's numbers count once, whichever worker answers.
        again = scrape(served.metrics)
        assert expected.mismatches(again) == []
    puts = expected.requests["201", "manifest", "put"]
    duration = "registry_http_request_duration_seconds"
    assert seen.value(f"{duration}_count", handler="manifest", method="put") == puts
    assert seen.value(f"{duration}_bucket", handler="manifest", method="put", le="+Inf") == puts
    requests = sum(expected.requests.values())
    sizes = ("registry_http_request_size_bytes_count", "registry_http_response_size_bytes_count")
    for name in sizes:
        assert sum(seen.series(name).values()) == requests, name
    pushed = expected.pushed["blob"]
    assert seen.value("registry_http_request_size_bytes_sum", handler="blob_upload_chunk") > pushed
    for handler in ("base", "catalog", "tags", "manifest", "blob_upload", "blob_upload_chunk"):
        assert ("registry_http_in_flight_requests", frozenset({("handler", handler)})) in (
            seen.samples
        ), handler
    assert sum(seen.series("registry_http_in_flight_requests").values()) == 0
    assert seen.value("registry_blob_uploads_in_flight") == 0
    storage = seen.series("registry_storage_action_seconds_count")
    assert storage, "no storage actions recorded"
    for labels, count in storage.items():
        names = dict(labels)
        assert set(names) == {"driver", "action"}, names
        assert names["driver"] == "filesystem" and names["action"] in REGISTRY2_ACTIONS, names
        assert count > 0
    actions = {dict(labels)["action"] for labels in storage}
    assert {"PutContent", "GetContent", "Stat", "Move"} <= actions, actions


def test_public_port_never_serves_the_debug_paths(
    registry_factory: Factory, tmp_path: Path
) -> None:
    port = free_port()
    config = debug_config(port)
    config["health"] = {"file": [{"file": str(tmp_path / "drain"), "interval": "1s"}]}
    registry = registry_factory(config, workers=2)
    debug = f"http://127.0.0.1:{port}"
    wait_ready(debug)
    for path in ("/metrics", "/debug/health", "/livez", "/readyz"):
        assert httpx.get(f"{debug}{path}", timeout=30).status_code == 200, path
        for _ in range(4):  # Either worker may answer.
            public = httpx.get(f"{registry.url}{path}", timeout=30)
            assert public.status_code == 404, (path, public.status_code, public.text)
    assert httpx.get(f"{debug}/v2/", timeout=30).status_code == 404


def test_with_access_control_the_debug_paths_stay_off_the_public_port(
    registry_factory: Factory, tmp_path: Path
) -> None:
    """Anonymous or signed in, the public port has no debug path (404 after the login
    the guard asks for); the debug listener asks nobody, as registry:2's does, and the
    start warns when it listens beyond this machine."""
    port = free_port()
    config = {**debug_config(port), **htpasswd_config(tmp_path)}
    config["http"]["debug"]["addr"] = f"0.0.0.0:{port}"  # type: ignore[index]
    registry = registry_factory(config, workers=2)
    assert "http.debug.addr: 0.0.0.0:" in registry.log()
    assert "answers anyone who reaches it" in registry.log()
    wait_ready(f"http://127.0.0.1:{port}")
    user, password = next(iter(USERS.items()))
    for path in ("/metrics", "/debug/health", "/livez", "/readyz"):
        anonymous = httpx.get(f"{registry.url}{path}", timeout=30)
        assert anonymous.status_code == 404, (path, anonymous.status_code)
        signed_in = httpx.get(f"{registry.url}{path}", auth=(user, password), timeout=30)
        assert signed_in.status_code == 404, (path, signed_in.status_code)
        assert httpx.get(f"http://127.0.0.1:{port}{path}", timeout=30).status_code == 200
    with httpx.Client(base_url=registry.url, auth=(user, password), timeout=30) as client:
        push_blob(client, "test/guarded", b"counted with access control on")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    assert password not in text and "Basic " not in text


def test_disabled_prometheus_serves_no_metrics(registry_factory: Factory) -> None:
    port = free_port()
    config = debug_config(port)
    config["http"]["debug"]["prometheus"]["enabled"] = False  # type: ignore[index]
    registry = registry_factory(config, workers=2)
    debug = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        push_blob(client, "test/disabled", b"not counted")
    for _ in range(4):
        assert httpx.get(f"{debug}/metrics", timeout=30).status_code == 404
    assert httpx.get(f"{debug}/debug/health", timeout=30).status_code == 200


def test_metrics_path_is_configurable(registry_factory: Factory) -> None:
    port = free_port()
    registry_factory(debug_config(port, path="/custom/metrics"), workers=2)
    debug = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{debug}/metrics", timeout=30).status_code == 404
    seen = scrape(f"{debug}/custom/metrics")
    assert seen.types.get("registry_http_in_flight_requests") == "gauge", seen.types


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as file:
        return [int(child) for child in file.read().split()]


def _age(pid: int) -> float:
    """Seconds since the process started, from /proc (clock ticks since boot)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as file:
        started = int(file.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime", encoding="ascii") as file:
        uptime = float(file.read().split()[0])
    return uptime - started / os.sysconf("SC_CLK_TCK")


def test_counters_survive_a_killed_worker(served: Served) -> None:
    """Multiprocess mode keeps a dead worker's counters in the sums; its gauges go."""
    expected = Expected()
    spread_traffic(served, "test/killed", expected)
    wait_for(served.metrics, expected)
    process = served.registry.process
    assert process is not None
    victim = _children(process.pid)[0]
    # A worker that dies younger than EARLY_EXIT stops the server (it would fail again).
    while _age(victim) <= EARLY_EXIT + 0.5:
        time.sleep(0.1)
    os.kill(victim, signal.SIGKILL)
    restarted = f"worker {victim} exited with code -9; starting another"
    assert restarted in served.registry.log_with(restarted)
    for _ in range(3):
        assert expected.mismatches(scrape(served.metrics)) == []
    spread_traffic(served, "test/after-kill", expected)
    seen = wait_for(served.metrics, expected)
    assert sum(seen.series("registry_http_in_flight_requests").values()) == 0


def test_metrics_add_up_across_a_reload(served: Served) -> None:
    """SIGHUP starts new workers: the retired ones' counts stay, the new ones add to them."""
    expected = Expected()
    spread_traffic(served, "test/before-reload", expected)
    wait_for(served.metrics, expected)
    process = served.registry.process
    assert process is not None
    old = set(_children(process.pid))
    process.send_signal(signal.SIGHUP)
    served.registry.log_with("configuration reloaded")
    deadline = time.monotonic() + DEADLINE
    while old & set(_children(process.pid)):  # The old generation finishes and exits.
        assert time.monotonic() < deadline, "the old workers never exited"
        time.sleep(0.1)
    assert expected.mismatches(scrape(served.metrics)) == []
    spread_traffic(served, "test/after-reload", expected)
    seen = wait_for(served.metrics, expected)
    assert sum(seen.series("registry_http_in_flight_requests").values()) == 0


# --- the same requests to registry:2 and to ours: every family and label set of its is ours ---


class GoWithMetrics(NamedTuple):
    registry: GoRegistry
    metrics: str


@pytest.fixture
def go_registry(tmp_path: Path) -> Iterator[GoWithMetrics]:
    """Debian's ``docker-registry`` 2.8.2 with its debug listener and Prometheus on."""
    debug_port = free_port()
    registry = GoRegistry(tmp_path / "go-data", tmp_path, debug_config(debug_port))
    yield GoWithMetrics(registry.start(), f"http://127.0.0.1:{debug_port}/metrics")
    registry.stop()


def compared_traffic(client: httpx.Client) -> None:
    """Pushes (monolithic and chunked), pulls, reads, a delete and some errors."""
    repo = "compare/app"
    _, manifest = push_image(client, repo, "v1")
    chunked = b"chunk one, " * 100
    location = start_upload(client, repo)
    patched = client.patch(
        location, content=chunked, headers={"Content-Type": "application/octet-stream"}
    )
    assert patched.status_code == 202, patched.text
    done = client.put(with_query(patched.headers["Location"], digest=digest_of(chunked)))
    assert done.status_code == 201, done.text
    config = b'{"architecture":"arm64","os":"linux"}'
    push_blob(client, repo, config)
    second = image_manifest(config, [chunked])
    put = client.put(
        f"/v2/{repo}/manifests/v2", content=second, headers={"Content-Type": OCI_MANIFEST}
    )
    assert put.status_code == 201, put.text
    for reference in ("v1", "v2", digest_of(manifest)):
        assert client.get(f"/v2/{repo}/manifests/{reference}").status_code == 200
        assert client.head(f"/v2/{repo}/manifests/{reference}").status_code == 200
    assert client.get(f"/v2/{repo}/blobs/{digest_of(chunked)}").status_code == 200
    assert client.head(f"/v2/{repo}/blobs/{digest_of(config)}").status_code == 200
    assert client.get(f"/v2/{repo}/blobs/sha256:{'0' * 64}").status_code == 404
    assert client.get(f"/v2/{repo}/manifests/nope").status_code == 404
    assert client.get("/v2/").status_code == 200
    assert client.get("/v2/_catalog").status_code == 200
    assert client.get(f"/v2/{repo}/tags/list").status_code == 200
    assert client.delete(f"/v2/{repo}/manifests/{digest_of(second)}").status_code == 202


def test_names_and_labels_are_registry2s(
    registry_factory: Factory, go_registry: GoWithMetrics
) -> None:
    port = free_port()
    config = debug_config(port)
    config["storage"] = {"delete": {"enabled": True}}
    ours = registry_factory(config, workers=2)
    go_metrics = go_registry.metrics
    before = scrape(go_metrics).series("registry_http_requests_total")  # Its start's probes.
    for url in (go_registry.registry.url, ours.url):
        with new_connections(url) as client:
            compared_traffic(client)
    theirs = scrape(go_metrics)
    expected = Expected()
    for labels, value in theirs.series("registry_http_requests_total").items():
        names = dict(labels)
        count = int(value - before.get(labels, 0.0))
        if count:
            expected.requests[names["code"], names["handler"], names["method"]] = count
    assert expected.requests, "registry:2 counted no requests"
    # Same requests, same answers, same series and counts (bytes are ours alone).
    expected.pushed = Counter({"blob": 0, "manifest": 0})
    ours_seen = _wait_requests(f"http://127.0.0.1:{port}/metrics", expected)
    families = [
        name for name in theirs.types if name.startswith(("registry_http_", "registry_storage_"))
    ]
    assert "registry_storage_action_seconds" in families, families
    for family in families:
        assert family in ours_seen.types, f"{family} missing from ours"
        assert ours_seen.types[family] == theirs.types[family], family
        missing = theirs.label_names(family) - ours_seen.label_names(family)
        assert not missing, f"{family}: label sets {missing} missing from ours"
        if theirs.types[family] == "histogram":  # Same bounds, spelt the same (le is a string).
            bounds = {dict(labels)["le"] for labels in ours_seen.series(f"{family}_bucket")}
            assert bounds == {dict(labels)["le"] for labels in theirs.series(f"{family}_bucket")}
    in_flight = "registry_http_in_flight_requests"
    handlers = {dict(labels)["handler"] for labels in theirs.series(in_flight)}
    assert handlers <= {
        dict(labels)["handler"] for labels in ours_seen.series("registry_http_in_flight_requests")
    }
    ours_actions = {
        dict(labels)["action"]
        for labels in ours_seen.series("registry_storage_action_seconds_count")
    }
    assert ours_actions <= REGISTRY2_ACTIONS
    their_actions = {
        dict(labels)["action"] for labels in theirs.series("registry_storage_action_seconds_count")
    }
    # registry:2 asks the filesystem driver for a redirect URL it cannot give (URLFor).
    assert their_actions - {"URLFor"} <= ours_actions, (their_actions, ours_actions)


def _wait_requests(url: str, expected: Expected) -> Scrape:
    """Like :func:`wait_for`, on the request counts only."""
    deadline = time.monotonic() + DEADLINE
    while True:
        seen = scrape(url)
        wrong = [line for line in expected.mismatches(seen) if line.startswith("requests")]
        if not wrong:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError("ours counted other requests:\n" + "\n".join(sorted(wrong)))
        time.sleep(0.2)


def _run_folder_of(pid: int) -> Path:
    """The folder of the value files a worker has mapped (prometheus-client maps them)."""
    with open(f"/proc/{pid}/maps", encoding="utf-8") as file:
        for line in file:
            path = Path(line.split(maxsplit=5)[-1].strip())
            if path.name.startswith("counter_") and path.parent.name.startswith("registry-run-"):
                return path.parent
    raise AssertionError(f"process {pid} has no value files mapped")


def test_a_killed_servers_run_folder_goes_at_the_next_start(served: Served) -> None:
    """A supervisor killed outright cannot remove its folder: the next one does."""
    expected = Expected()
    spread_traffic(served, "test/orphan", expected)
    wait_for(served.metrics, expected)
    process = served.registry.process
    assert process is not None
    workers = _children(process.pid)
    folder = _run_folder_of(workers[0])
    assert any(folder.glob("counter_*.db")), list(folder.iterdir())
    process.kill()
    process.wait()
    for worker in workers:
        os.kill(worker, signal.SIGKILL)
    assert folder.is_dir()
    served.registry.start()
    assert not folder.exists()
    with httpx.Client(base_url=served.registry.url, timeout=30) as client:
        assert client.get("/v2/").status_code == 200
