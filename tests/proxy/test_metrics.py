"""The cache's counters on the debug listener (distribution 3's names), and its mark in
the access log."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RegistryProcess
from tests.proxy.conftest import BasicUpstream, client_of, proxy_section, wait_stored
from tests.pushing import push_image
from tests.services.ports import free_port


def _samples(url: str) -> dict[tuple[str, str], float]:
    text = httpx.get(url, timeout=60).text
    return {
        (sample.name, sample.labels.get("type", "")): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("registry_proxy_")
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def test_hits_misses_and_bytes_pulled(
    basic_upstream: BasicUpstream, registry_factory: Callable[..., RegistryProcess]
) -> None:
    layer = b"x" * 1000
    with basic_upstream.client() as upstream:
        _, manifest = push_image(upstream, "team/app", "v1", layers=[layer])
    port = free_port()
    debug = {"debug": {"addr": f"127.0.0.1:{port}", "prometheus": {"enabled": True}}}
    registry = registry_factory({**proxy_section(basic_upstream.url, ttl="1h"), "http": debug})
    with client_of(registry) as client:
        document = client.get("/v2/team/app/manifests/v1").json()
        digest = document["layers"][0]["digest"]
        for _ in range(2):
            assert client.get(f"/v2/team/app/blobs/{digest}").content == layer
            wait_stored(registry, "team/app", [digest])  # Then the second GET is a hit.
        assert client.get("/v2/team/app/manifests/v1").status_code == 200
    samples = _samples(f"http://127.0.0.1:{port}/metrics")
    assert samples[("registry_proxy_requests_total", "manifest")] == 2
    assert samples[("registry_proxy_misses_total", "manifest")] == 1
    assert samples[("registry_proxy_hits_total", "manifest")] == 1
    assert samples[("registry_proxy_pulled_bytes_total", "manifest")] == len(manifest)
    assert samples[("registry_proxy_requests_total", "blob")] == 2
    assert samples[("registry_proxy_misses_total", "blob")] == 1
    assert samples[("registry_proxy_hits_total", "blob")] == 1
    assert samples[("registry_proxy_pulled_bytes_total", "blob")] == len(layer)
    log = registry.log_with(" cache=hit")
    assert f'"GET /v2/team/app/blobs/{digest} HTTP/1.1" 200 1000' in log
    assert " cache=miss" in log
