"""A real Prometheus server scrapes the registry's debug listener and sees the pushes.

Debian's ``prometheus`` scrapes ``/metrics`` every second; the test pushes
images over the HTTP API to a registry with two workers and asks Prometheus,
through its HTTP API, for the sum PromQL gives over every worker's series.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.api.test_metrics import free_port, new_connections
from tests.conftest import RegistryProcess
from tests.pushing import push_image

from .needs import require

pytestmark = pytest.mark.e2e

Factory = Callable[..., RegistryProcess]
#: Generous: Prometheus starts, scrapes every second, and the workers flush every second.
DEADLINE = 120.0


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def query(self, promql: str) -> float | None:
        """The value of an instant query's single result; None while it has no result."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=30)
        assert response.status_code == 200, response.text
        document = response.json()
        assert document["status"] == "success", document
        results = document["data"]["result"]
        if not results:
            return None
        assert len(results) == 1, results
        return float(results[0]["value"][1])

    def wait_for(self, promql: str, expected: float) -> None:
        deadline = time.monotonic() + DEADLINE
        value = None
        while value != expected:
            if time.monotonic() > deadline:
                targets = httpx.get(f"{self.url}/api/v1/targets", timeout=30).text
                raise AssertionError(
                    f"{promql} = {value}, expected {expected}; targets: {targets}\n"
                    f"{self.log.read_text()[-3000:]}"
                )
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)
            value = self.query(promql)


def start_prometheus(workdir: Path, target: str) -> Prometheus:
    binary = require("/usr/bin/prometheus", "prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "registry", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=output,
            cwd=workdir,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            if httpx.get(f"{prometheus.url}/-/ready", timeout=5).status_code == 200:
                return prometheus
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop(prometheus)
            raise RuntimeError(f"prometheus did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def stop(prometheus: Prometheus) -> None:
    if prometheus.process.poll() is None:
        prometheus.process.terminate()
        try:
            prometheus.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            prometheus.process.kill()
            prometheus.process.wait()


@pytest.fixture
def scraped(
    registry_factory: Factory, tmp_path: Path
) -> Iterator[tuple[RegistryProcess, Prometheus]]:
    port = free_port()
    registry = registry_factory(
        {"http": {"debug": {"addr": f"127.0.0.1:{port}", "prometheus": {"enabled": True}}}},
        workers=2,
    )
    folder = tmp_path / "prometheus"
    folder.mkdir()
    prometheus = start_prometheus(folder, f"127.0.0.1:{port}")
    yield registry, prometheus
    stop(prometheus)


def test_prometheus_sees_the_pushes(scraped: tuple[RegistryProcess, Prometheus]) -> None:
    registry, prometheus = scraped
    prometheus.wait_for('up{job="registry"}', 1)
    images = 6
    pushed = 0
    with new_connections(registry.url) as client:
        for index in range(images):
            layer = f"layer {index} for prometheus ".encode() * 50
            config = f'{{"architecture":"amd64","os":"linux","n":{index}}}'.encode()
            image = push_image(client, "prometheus/app", f"v{index}", layers=[layer], config=config)
            manifest = image[1]
            pushed += len(layer) + len(config) + len(manifest)
    prometheus.wait_for(
        'sum(registry_http_requests_total{handler="manifest",method="put"})', images
    )
    prometheus.wait_for(
        'sum(registry_http_requests_total{handler="blob_upload",method="post",code="202"})',
        2 * images,
    )
    prometheus.wait_for("sum(registry_pushed_bytes_total)", pushed)
    prometheus.wait_for(
        'sum(registry_http_request_duration_seconds_count{handler="manifest",method="put"})', images
    )
    storage = prometheus.query('count(registry_storage_action_seconds_count{driver="filesystem"})')
    assert storage is not None and storage >= 4, storage
