"""Three instances on one bucket and one Redis, behind haproxy: one registry to clients.

Every piece is real: Ceph's S3 gateway, redis-server, haproxy (round-robin per request,
so the requests of one push land on different instances) and, for the crash, the
Docker engine pushing through the balancer while one instance is killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.api.raw_http import process_tree
from tests.api.test_metrics import debug_config, scrape
from tests.conftest import RegistryProcess
from tests.e2e.conftest import DockerEngine, busybox_tar
from tests.pushing import (
    ACCEPT_MANIFESTS,
    digest_of,
    image_manifest,
    push_blob,
    start_upload,
    upload_id_of,
)
from tests.services.ceph import CephS3
from tests.services.haproxy import Haproxy
from tests.services.ports import free_port
from tests.services.redis import RedisServer

pytestmark = pytest.mark.e2e

ROOT = "/scale-out"
INSTANCES = 3


@dataclass
class Deployment:
    instances: list[RegistryProcess]
    balancer: Haproxy
    metrics: list[str]
    """Each instance's ``/metrics`` (its own debug listener)."""

    def receiving_an_upload(self, pusher: subprocess.Popen[bytes]) -> int:
        """An instance receiving an upload's body now (its gauge of uploads in flight,
        which a worker brings up to date before it answers a scrape). A request that is
        merely slow will not do: haproxy retries a bodyless one (the closing ``PUT``,
        which may hash a whole layer) on another instance when its instance dies, and
        the client never sees the failure."""
        while pusher.poll() is None:
            for index, url in enumerate(self.metrics):
                if scrape(url).samples.get(("registry_blob_uploads_in_flight", frozenset())):
                    return index
            time.sleep(0.02)
        raise AssertionError(f"the push ended before an upload was seen in flight\n{pusher}")

    @property
    def url(self) -> str:
        return self.balancer.url

    def kill(self, index: int) -> None:
        """SIGKILL the instance's supervisor and workers at once, as a crashed machine."""
        process = self.instances[index].process
        assert process is not None
        for pid in process_tree(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()
        self.instances[index].process = None

    def restart(self, index: int) -> None:
        instance = self.instances[index]
        instance.start(addr=instance.url.split("://", 1)[1])
        self.balancer.wait_up(INSTANCES)

    def logs(self) -> list[str]:
        return [instance.log() for instance in self.instances]


def instance_config(
    ceph_s3: CephS3, bucket: str, redis: RedisServer, **storage: Any
) -> dict[str, Any]:
    return {
        "storage": {
            "s3": ceph_s3.driver_parameters(bucket, ROOT),
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "redis"},
            **storage,
        },
        "redis": {"addr": redis.addr, "password": redis.password},
    }


@pytest.fixture
def deploy(
    ceph_s3: CephS3,
    s3_bucket: str,
    redis_server: RedisServer,
    registry_factory: Callable[..., RegistryProcess],
    balancer: Callable[[list[str]], Haproxy],
) -> Iterator[Callable[..., Deployment]]:
    """Start three instances (one worker each: the machine has two cores) and haproxy."""

    def start(**storage: Any) -> Deployment:
        config = instance_config(ceph_s3, s3_bucket, redis_server, **storage)
        ports = [free_port() for _ in range(INSTANCES)]
        instances = [registry_factory({**config, **debug_config(port)}) for port in ports]
        proxy = balancer([instance.url.split("://", 1)[1] for instance in instances])
        return Deployment(instances, proxy, [f"http://127.0.0.1:{port}/metrics" for port in ports])

    yield start


def pull_all(url: str, repo: str, tag: str) -> tuple[str, dict[str, str]]:
    """The manifest's digest and each blob's (as hashed from the bytes received; blob
    reads follow the redirect to the gateway, as clients do)."""
    with httpx.Client(base_url=url, follow_redirects=True, timeout=120) as client:
        response = client.get(f"/v2/{repo}/manifests/{tag}", headers=ACCEPT_MANIFESTS)
        assert response.status_code == 200, response.text
        document = response.json()
        hashed = {}
        for item in [document["config"], *document["layers"]]:
            blob = client.get(f"/v2/{repo}/blobs/{item['digest']}")
            assert blob.status_code == 200, blob.text
            hashed[item["digest"]] = "sha256:" + hashlib.sha256(blob.content).hexdigest()
        return digest_of(response.content), hashed


def listing(url: str, repo: str) -> tuple[Any, Any]:
    catalog = httpx.get(f"{url}/v2/_catalog", timeout=30)
    tags = httpx.get(f"{url}/v2/{repo}/tags/list", timeout=30)
    assert catalog.status_code == 200 and tags.status_code == 200
    return catalog.json(), tags.json()


def test_a_chunked_push_spread_over_instances_pulls_from_each(
    deploy: Callable[..., Deployment],
) -> None:
    deployment = deploy()
    repo = "team/app"
    chunks = [os.urandom(6 * 1024 * 1024 + 11) for _ in range(4)]
    layer = b"".join(chunks)
    with httpx.Client(base_url=deployment.url, timeout=120) as client:
        location = start_upload(client, repo)
        upload_id = upload_id_of(location)
        offset = 0
        for chunk in chunks:
            response = client.patch(
                location,
                content=chunk,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                },
            )
            assert response.status_code == 202, response.text
            offset += len(chunk)
            assert response.headers["Range"] == f"0-{offset - 1}"
            location = response.headers["Location"]
        done = client.put(location, params={"digest": digest_of(layer)})
        assert done.status_code == 201, done.text
        config = b'{"architecture":"amd64","os":"linux"}'
        push_blob(client, repo, config)
        manifest = image_manifest(config, [layer])
        put = client.put(
            f"/v2/{repo}/manifests/v1",
            content=manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert put.status_code == 201, put.text

    # The PATCHes of the one upload were answered by more than one instance.
    answered = [
        sum(f"PATCH /v2/{repo}/blobs/uploads/{upload_id}" in line for line in log.splitlines())
        for log in deployment.logs()
    ]
    assert sum(answered) == len(chunks)
    assert sum(1 for count in answered if count) >= 2, answered

    # Every instance serves it whole, and lists the same.
    expected = digest_of(manifest)
    for instance in deployment.instances:
        digest, blobs = pull_all(instance.url, repo, "v1")
        assert digest == expected
        assert all(wanted == got for wanted, got in blobs.items()), blobs
        assert listing(instance.url, repo) == (
            {"repositories": [repo]},
            {"name": repo, "tags": ["v1"]},
        )


def test_an_instance_killed_mid_push_the_client_retries_through_the_balancer(
    deploy: Callable[..., Deployment], docker_engine: DockerEngine
) -> None:
    deployment = deploy()
    port = deployment.balancer.port
    reference = f"127.0.0.1:{port}/crash/big:v1"
    # Random bytes do not compress: docker streams about 150 MB through gzip, for seconds.
    docker_engine.import_image(
        reference, busybox_tar({"payload.bin": os.urandom(150 * 1024 * 1024)})
    )
    image_id = docker_engine.docker("image", "inspect", "-f", "{{.Id}}", reference).stdout.strip()
    log_start = len(docker_engine.log())
    pusher = docker_engine.popen("push", reference)
    try:
        victim = deployment.receiving_an_upload(pusher)
        deployment.kill(victim)
        output, _ = pusher.communicate(timeout=900)
    finally:
        if pusher.poll() is None:
            pusher.kill()
    assert pusher.returncode == 0, output
    # The engine saw the upload cut, and started it again (its log says so).
    assert "Upload failed, retrying" in docker_engine.log()[log_start:], output

    # Every image digest is right, from the balancer and from each instance left.
    docker_engine.docker("rmi", reference)
    docker_engine.docker("pull", reference)
    assert (
        docker_engine.docker("image", "inspect", "-f", "{{.Id}}", reference).stdout.strip()
        == image_id
    )
    survivors = [i for i in range(INSTANCES) if i != victim]
    results = {i: pull_all(deployment.instances[i].url, "crash/big", "v1") for i in survivors}
    # The killed instance comes back to the same storage and serves the same.
    deployment.restart(victim)
    results[victim] = pull_all(deployment.instances[victim].url, "crash/big", "v1")
    digests = {digest for digest, _ in results.values()}
    assert len(digests) == 1
    for _, blobs in results.values():
        assert all(wanted == got for wanted, got in blobs.items()), blobs
    listings = {repr(listing(instance.url, "crash/big")) for instance in deployment.instances}
    assert len(listings) == 1, listings


def abandoned_uploads(url: str, count: int) -> list[str]:
    with httpx.Client(base_url=url, timeout=60) as client:
        ids = []
        for index in range(count):
            location = start_upload(client, f"left/behind{index}")
            response = client.patch(location, content=b"half a layer")
            assert response.status_code == 202
            ids.append(upload_id_of(location))
        return ids


def test_upload_purging_and_collection_run_once_not_once_per_instance(
    deploy: Callable[..., Deployment],
    ceph_s3: CephS3,
    s3_bucket: str,
    redis_server: RedisServer,
    registry_factory: Callable[..., RegistryProcess],
) -> None:
    # Garbage made by one instance that does no purging, then left for the deployment.
    first = registry_factory(
        instance_config(
            ceph_s3, s3_bucket, redis_server, maintenance={"uploadpurging": {"enabled": False}}
        )
    )
    uploads = abandoned_uploads(first.url, 4)
    with httpx.Client(base_url=first.url, timeout=60) as client:
        garbage = push_blob(client, "left/unused", os.urandom(4096))
    first.stop()
    time.sleep(1.5)  # Older than the age and grace below.

    deployment = deploy(
        maintenance={
            "uploadpurging": {"enabled": True, "age": "1s", "interval": "1h"},
            "gc": {"enabled": True, "interval": "1h", "grace": "1s"},
        }
    )
    # Each instance, at its start, wanted to purge and collect: one did each.
    wait_for(deployment, "purged 4 abandoned upload(s)")
    wait_for(deployment, "garbage collection:")
    time.sleep(2)  # The others' first looks are over too.
    logs = deployment.logs()
    for job in ("purge", "gc"):
        ran = [log for log in logs if f"{job}: runs in this process now" in log]
        assert len(ran) == 1, (job, logs)
    purged = [log for log in logs if "purged 4 abandoned upload(s)" in log]
    assert len(purged) == 1 and all(upload in purged[0] for upload in uploads)
    assert sum(log.count("garbage collection:") for log in logs) == 1
    blob = httpx.head(f"{deployment.url}/v2/left/unused/blobs/{garbage}", timeout=30)
    assert blob.status_code == 404


def wait_for(deployment: Deployment, text: str) -> None:
    """Until one instance's log holds ``text`` (a job's summary follows its start)."""
    for _ in range(600):
        if any(text in log for log in deployment.logs()):
            return
        time.sleep(0.1)
    raise AssertionError(f"no instance logged {text!r}:\n" + "\n".join(deployment.logs()))
