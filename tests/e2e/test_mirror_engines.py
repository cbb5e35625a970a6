"""The registry as the mirror of Docker Hub names for real engines: dockerd, containerd, podman.

The upstream is Debian's Go registry with htpasswd auth, holding an image (built here from
busybox-static, with a marker file of this run so no engine already has its layers) under
Docker Hub's names: ``library/busybox:latest`` and ``someuser/tool:1``. The registry reads
it through registry:2's ``proxy`` section, credentials in its config file. Each engine
pulls a Hub name, is served through the registry (its access log shows the manifest and
blob GETs as cache misses), forgets the image, and pulls it again with the upstream
stopped: served from the cache. There is no internet here, so an engine that fell back
to the real Hub would fail; the access log shows what the registry served all the same.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import RegistryProcess
from tests.proxy.conftest import UPSTREAM_PASSWORD, UPSTREAM_USER, BasicUpstream, proxy_section

from .clients import ContainersTools, Podman, containers_tools, run
from .conftest import DOCKER_CLIENT, DockerEngine, busybox_tar
from .needs import require
from .test_clients_containerd import Ctr
from .test_engine_plain_http import engine_files, output, registry_engine, reload_options

pytestmark = pytest.mark.e2e

#: Docker Hub's names of the upstream's image, as an engine asks a mirror for them.
HUB_NAMES = {"busybox": "library/busybox:latest", "someuser/tool:1": "someuser/tool:1"}
#: An access-log line of a manifest or blob read: method, name, kind, reference, status.
ACCESS_RE = re.compile(
    r'"(GET|HEAD) /v2/(\S+?)/(manifests|blobs)/([^\s?]+)(?:\?\S*)? HTTP/[\d.]+" (\d{3}) '
)


@dataclass
class Hub:
    """The upstream and what it holds, by Hub name: manifest digest, image id, blobs
    (config and layers)."""

    upstream: BasicUpstream
    images: dict[str, tuple[str, str]] = field(default_factory=dict)
    blobs: dict[str, set[str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.upstream.url

    def running(self) -> Hub:
        if self.upstream.go.process is None:
            self.upstream.start()
        return self

    def blobs_of(self, name: str) -> set[str]:
        """The config and layer digests of ``name`` (``repo:tag``) upstream."""
        repo, tag = name.rsplit(":", 1)
        with self.upstream.client() as client:
            response = client.get(f"/v2/{repo}/manifests/{tag}")
            assert response.status_code == 200, response.text
            document = response.json()
        return {entry["digest"] for entry in [document["config"], *document["layers"]]}


@pytest.fixture(scope="module")
def hub(docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """The Go registry with htpasswd, the image pushed to it by the session's engine."""
    upstream = BasicUpstream(tmp_path_factory.mktemp("hub") / "go").start()
    hub = Hub(upstream)
    try:
        host = upstream.url.removeprefix("http://")
        source = f"e2e/mirror-source:{uuid.uuid4().hex[:12]}"
        docker_engine.import_image(source, busybox_tar({"etc/mirror.txt": uuid.uuid4().bytes}))
        image_id = docker_engine.docker("image", "inspect", "--format", "{{.Id}}", source)
        docker_engine.docker(
            "login", host, "-u", UPSTREAM_USER, "--password-stdin",
            input=UPSTREAM_PASSWORD.encode(),
        )  # fmt: skip
        for name in HUB_NAMES.values():
            target = f"{host}/{name}"
            docker_engine.docker("image", "tag", source, target)
            pushed = docker_engine.docker("image", "push", target).stdout
            digest = pushed.split("digest: ")[1].split()[0]
            hub.images[name] = (digest, image_id.stdout.strip())
            hub.blobs[name] = hub.blobs_of(name)
            docker_engine.docker("image", "rm", target)
        docker_engine.docker("logout", host)
        docker_engine.docker("image", "rm", source)
        yield hub
    finally:
        upstream.stop()


@pytest.fixture
def mirror(hub: Hub, registry_factory: Callable[..., RegistryProcess]) -> RegistryProcess:
    """The registry as a pull-through cache of the (running) upstream; default ttl (0).
    Two workers, as on a machine with two cores: an engine's requests land on either."""
    return registry_factory(proxy_section(hub.running().url), workers=2)


def served(log: str) -> list[tuple[str, str, str, str, int, str]]:
    """(method, name, kind, reference, status, cache) of every manifest and blob request."""
    found = []
    for line in log.splitlines():
        match = ACCESS_RE.search(line)
        if match:
            cache = re.search(r" cache=(\w+)", line)
            method, name, kind, reference, status = match.groups()
            found.append(
                (method, name, kind, reference, int(status), cache.group(1) if cache else "")
            )
    return found


def check_served(
    mirror: RegistryProcess,
    before: int,
    name: str,
    reference: str,
    blobs: set[str],
    manifest: str,
    blob: str,
) -> str:
    """Since log offset ``before``, ``name:reference`` was served (200) with ``manifest`` as
    the cache outcome of each manifest read by tag, and each of ``blobs`` was downloaded
    (200) with ``blob`` as its outcome. The log: a request's line follows its response."""
    for _ in range(200):
        log = mirror.log()[before:]
        requests = served(log)
        gets = {r[3]: r for r in requests if r[0] == "GET" and r[1] == name and r[2] == "blobs"}
        if blobs <= set(gets):
            break
        time.sleep(0.05)
    tagged = [r for r in requests if r[1] == name and r[2] == "manifests" and r[3] == reference]
    assert tagged, log[-5000:]
    assert all(r[4] == 200 and r[5] == manifest for r in tagged), tagged
    assert set(gets) == blobs, (gets, blobs, log[-5000:])
    assert all(r[4] == 200 and r[5] == blob for r in gets.values()), gets
    return log


def docker_pull(engine: DockerEngine, hub: Hub, short: str, name: str) -> tuple[str, str]:
    """``docker pull`` a Docker Hub name: the upstream's digest and image id; its
    repository and tag as the mirror sees them."""
    digest, image_id = hub.images[name]
    pulled = engine.docker("image", "pull", short)
    assert f"Digest: {digest}" in pulled.stdout, pulled.stdout
    inspect = engine.docker("image", "inspect", "--format", "{{.Id}}", short)
    assert inspect.stdout.strip() == image_id
    repo, tag = name.rsplit(":", 1)
    return repo, tag


def test_docker_pulls_hub_names_through_the_mirror_then_with_the_upstream_stopped(
    hub: Hub, mirror: RegistryProcess
) -> None:
    require("/usr/sbin/dockerd", "docker.io")
    require(DOCKER_CLIENT, "docker.io")
    engine = DockerEngine(Path(tempfile.mkdtemp(prefix="reg-mirror-", dir="/tmp")))
    try:
        engine.start({})
        # As a user configures it: `registry engine mirror add URL --reload`.
        added = registry_engine(
            "mirror", "add", mirror.url, *engine_files(engine), *reload_options(engine)
        )
        assert added.returncode == 0, output(added) + engine.log()[-3000:]
        assert json.loads(engine.config_file.read_text()) == {"registry-mirrors": [mirror.url]}
        info = json.loads(engine.docker("info", "--format", "{{json .RegistryConfig}}").stdout)
        assert [m.rstrip("/") for m in info["Mirrors"]] == [mirror.url]

        for short, name in HUB_NAMES.items():
            repo, tag = docker_pull(engine, hub, short, name)
            check_served(mirror, 0, repo, tag, hub.blobs[name], "miss", "miss")
            ran = engine.docker(
                "run", "--rm", "--network", "none", short, "/bin/busybox", "echo", "mirrored"
            )
            assert ran.stdout.strip() == "mirrored"
            engine.docker("image", "rm", short)

        hub.upstream.stop()
        before = len(mirror.log())
        for short, name in HUB_NAMES.items():
            repo, tag = docker_pull(engine, hub, short, name)
            # The tag cannot be checked (ttl 0): served stale; content by digest is a hit.
            log = check_served(mirror, before, repo, tag, hub.blobs[name], "stale", "hit")
            assert f"{repo}:{tag} served from the cache and may be stale" in log
            engine.docker("image", "rm", short)
        assert UPSTREAM_PASSWORD not in mirror.log()
    finally:
        engine.stop()


def write_hosts_toml(folder: Path, mirror: RegistryProcess) -> Path:
    """A ``certs.d``-style folder: Docker Hub's names tried at the mirror first."""
    hub = folder / "docker.io"
    hub.mkdir(parents=True)
    (hub / "hosts.toml").write_text(
        'server = "https://registry-1.docker.io"\n\n'
        f'[host."{mirror.url}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )
    return folder


def test_containerd_pulls_through_a_hosts_toml_mirror_then_with_the_upstream_stopped(
    hub: Hub,
    registry_factory: Callable[..., RegistryProcess],
    docker_engine: DockerEngine,
    tmp_path: Path,
) -> None:
    # A tag trusted for an hour: the second pull is all hits, with the upstream stopped.
    mirror = registry_factory(proxy_section(hub.running().url, ttl="1h"))
    hosts = write_hosts_toml(tmp_path / "certs.d", mirror)
    name = HUB_NAMES["busybox"]
    repo, tag = name.rsplit(":", 1)
    digest, _ = hub.images[name]
    reference = f"docker.io/{name}"
    suffix = uuid.uuid4().hex[:8]
    first = Ctr(docker_engine, f"e2e-mirror-{suffix}")
    second = Ctr(docker_engine, f"e2e-mirror-again-{suffix}")
    try:
        first("images", "pull", "--hosts-dir", str(hosts), reference)
        assert first.image_digests() == {reference: digest}
        assert hub.blobs[name] <= first.content()
        log = check_served(mirror, 0, repo, tag, hub.blobs[name], "miss", "miss")
        # containerd names the repository's registry in each request to a mirror.
        asked = [line for line in log.splitlines() if f'- "GET /v2/{repo}/' in line]
        assert asked and all("?ns=docker.io HTTP" in line for line in asked), asked
        first.remove_all()  # No namespace holds the content now: the next pull downloads it.

        hub.upstream.stop()
        before = len(mirror.log())
        second("images", "pull", "--hosts-dir", str(hosts), reference)
        assert second.image_digests() == {reference: digest}
        check_served(mirror, before, repo, tag, hub.blobs[name], "hit", "hit")
    finally:
        first.remove_all()
        second.remove_all()


@pytest.fixture
def tools(tmp_path: Path) -> Iterator[ContainersTools]:
    yield from containers_tools(tmp_path)


def podman_with(podman: Podman, registries_conf: Path, *args: str) -> str:
    """podman on its private storage, with ``registries_conf`` as its only registries.conf."""
    env = {"CONTAINERS_REGISTRIES_CONF": str(registries_conf)}
    return run([podman.binary, *podman.args(), *args], env=env).stdout


def podman_pull(podman: Podman, registries_conf: Path, hub: Hub, name: str) -> tuple[str, str]:
    """``podman pull docker.io/NAME``: the upstream's digest and image id; the repository
    and tag as the mirror sees them."""
    digest, image_id = hub.images[name]
    repo, tag = name.rsplit(":", 1)
    reference = f"docker.io/{name}"
    podman_with(podman, registries_conf, "pull", reference)
    inspected = json.loads(podman_with(podman, registries_conf, "image", "inspect", reference))
    assert inspected[0]["Digest"] == digest
    assert f"docker.io/{repo}@{digest}" in inspected[0]["RepoDigests"]
    assert "sha256:" + inspected[0]["Id"] == image_id
    return repo, tag


def test_podman_pulls_through_a_registries_conf_mirror_then_with_the_upstream_stopped(
    hub: Hub, mirror: RegistryProcess, tools: ContainersTools, tmp_path: Path
) -> None:
    host = mirror.url.removeprefix("http://")
    registries_conf = tmp_path / "registries.conf"
    registries_conf.write_text(
        '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n\n'
        f'[[registry.mirror]]\nlocation = "{host}"\ninsecure = true\n'
    )
    podman = tools.podman("puller")
    for name in HUB_NAMES.values():
        repo, tag = podman_pull(podman, registries_conf, hub, name)
        check_served(mirror, 0, repo, tag, hub.blobs[name], "miss", "miss")
        podman_with(podman, registries_conf, "image", "rm", f"docker.io/{name}")

    hub.upstream.stop()
    before = len(mirror.log())
    for name in HUB_NAMES.values():
        repo, tag = podman_pull(podman, registries_conf, hub, name)
        reference = f"docker.io/{name}"
        log = check_served(mirror, before, repo, tag, hub.blobs[name], "stale", "hit")
        assert f"{repo}:{tag} served from the cache and may be stale" in log
        podman_with(podman, registries_conf, "image", "rm", reference)


def test_several_upstreams_mirrored_under_a_prefix_for_containerd_and_podman(
    hub: Hub,
    registry_factory: Callable[..., RegistryProcess],
    docker_engine: DockerEngine,
    tools: ContainersTools,
    tmp_path: Path,
) -> None:
    """With ``proxy.upstreams``, Hub names live under ``docker.io/`` here: containerd is
    pointed there with ``override_path``, podman with a mirror location that has a path."""
    upstream = {
        "prefix": "docker.io",
        "remoteurl": hub.running().url,
        "username": UPSTREAM_USER,
        "password": UPSTREAM_PASSWORD,
    }
    mirror = registry_factory({"proxy": {"upstreams": [upstream]}})
    host = mirror.url.removeprefix("http://")
    name = HUB_NAMES["busybox"]
    digest, image_id = hub.images[name]
    repo, tag = name.rsplit(":", 1)
    local = f"docker.io/{repo}"
    reference = f"docker.io/{name}"

    hosts = tmp_path / "certs.d" / "docker.io"
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(
        'server = "https://registry-1.docker.io"\n\n'
        f'[host."{mirror.url}/v2/docker.io"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        "  override_path = true\n"
    )
    ctr = Ctr(docker_engine, f"e2e-mirror-prefix-{uuid.uuid4().hex[:8]}")
    try:
        ctr("images", "pull", "--hosts-dir", str(hosts.parent), reference)
        assert ctr.image_digests() == {reference: digest}
    finally:
        ctr.remove_all()
    check_served(mirror, 0, local, tag, hub.blobs[name], "miss", "miss")

    registries_conf = tmp_path / "registries.conf"
    registries_conf.write_text(
        '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n\n'
        f'[[registry.mirror]]\nlocation = "{host}/docker.io"\ninsecure = true\n'
    )
    podman = tools.podman("puller")
    before = len(mirror.log())
    podman_with(podman, registries_conf, "pull", reference)
    inspected = json.loads(podman_with(podman, registries_conf, "image", "inspect", reference))
    assert "sha256:" + inspected[0]["Id"] == image_id
    # The tag re-checked upstream (ttl 0) and unchanged; every blob already here.
    check_served(mirror, before, local, tag, hub.blobs[name], "hit", "hit")
