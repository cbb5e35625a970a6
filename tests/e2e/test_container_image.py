"""The registry as a container image: the top-level Dockerfile, built and run here with no hub.

* The base is Debian bookworm made by ``mmdebstrap`` from apt's own mirror and
  ``docker import``-ed once per session; its root filesystem is kept in
  ``~/.cache/registry-tests`` for the next run.
* pip in the build gets the project's dependencies as wheels made on this
  machine (``pip wheel``) and served on loopback to ``docker build --network
  host`` through the Dockerfile's ``PIP_*`` build arguments: the build's
  containers cannot reach PyPI here (no NAT, and this machine's TLS proxy is
  trusted only by the host).
* Then Docker's registry lab, word for word, against ``docker container run -d
  -p PORT:5000 IMAGE`` (a free port rather than 5000), on a private engine that
  keeps a bridge of its own so that ``-p`` publishes the port; and what the
  image promises: a non-root server, the volume, ``REGISTRY_*`` overrides, the
  HEALTHCHECK, and ``docker stop`` (SIGTERM) finishing an upload in flight.
* The systemd unit in contrib/systemd: checked against the CLI and the image's
  config, and by ``systemd-analyze verify`` (which needs no running systemd).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.services.ports import free_port

from .conftest import DockerEngine, busybox_tar
from .needs import require

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "e2e/debian-python:bookworm"
IMAGE = "e2e/registry:image"
#: Bookworm's python3: the wheels made here must be for the same Python.
BASE_PYTHON = (3, 11)
#: The image's user (the Dockerfile's UID and GID build arguments).
UID = "1000"
#: registry:2's config path, the image's too.
CONFIG = "/etc/docker/registry/config.yml"
MiB = 1 << 20


def _debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb822 or one-line sources), else Debian's."""
    sources = Path("/etc/apt")
    for path in sorted(sources.glob("sources.list.d/*.sources")):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() == "uris":
                for uri in value.split():
                    if uri.rstrip("/").endswith("/debian"):
                        return uri
    for path in [sources / "sources.list", *sorted(sources.glob("sources.list.d/*.list"))]:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            words = [word for word in line.split() if not word.startswith("[")]
            if len(words) >= 2 and words[0] == "deb" and words[1].rstrip("/").endswith("/debian"):
                return words[1]
    return "http://deb.debian.org/debian"


def _run(command: list[str], what: str, timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{result.stderr[-4000:]}"
    return result


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def _free_port() -> int:
    """Free on every address (``-p PORT:5000`` binds them all), and this xdist worker's own."""
    return free_port(host="")


def _storage_driver(root: Path) -> str:
    """overlay2 where this kernel mounts overlays on this disk, else vfs (a full copy per layer).

    With vfs every build step and every container copies the whole image (some
    hundred MB), which makes this module's runs several times longer.
    """
    probe = root / "overlay-probe"
    folders = {name: probe / name for name in ("lower", "upper", "work", "merged")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    options = ",".join(f"{name}dir={folders[name]}" for name in ("lower", "upper", "work"))
    mounted = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(folders["merged"])],
        capture_output=True,
        check=False,
    )
    if mounted.returncode == 0:
        subprocess.run(["umount", str(folders["merged"])], capture_output=True, check=False)
    shutil.rmtree(probe, ignore_errors=True)
    return "overlay2" if mounted.returncode == 0 else "vfs"


@dataclass
class BridgedEngine(DockerEngine):
    """A private dockerd like the session's, but on a bridge of its own: ``-p`` publishes.

    The session's engine has no bridge (``--bridge=none``). This one's bridge is
    made here with its own name and subnet, so it never touches ``docker0`` or
    another engine's network; ``--iptables=false`` still holds, the userland
    proxy forwards published ports.
    """

    bridge: str = ""
    storage_driver: str = "vfs"

    def start_bridged(self) -> None:
        dockerd = require("/usr/sbin/dockerd", "docker.io")
        self.config_file.write_text("{}")
        command = [
            dockerd,
            f"--storage-driver={self.storage_driver}",
            "--iptables=false",
            "--ip6tables=false",
            f"--bridge={self.bridge}",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"-H={self.host}",
            f"--pidfile={self.pidfile}",
            f"--config-file={self.config_file}",
        ]
        with (self.root / "dockerd.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dockerd exited:\n{self.log()}")
            if self.socket.exists() and self.docker("version", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"dockerd did not start:\n{self.log()}")

    def build(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``docker build`` with BuildKit: it runs only the steps that change files (vfs copies)."""
        result = subprocess.run(
            [
                "/usr/bin/docker",
                "-H",
                self.host,
                "build",
                "--progress=plain",
                *args,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=900,
            env={
                **os.environ,
                "DOCKER_CONFIG": str(self.root / "client"),
                "DOCKER_BUILDKIT": "1",
            },
        )
        assert result.returncode == 0, f"docker build failed:\n{result.stderr[-6000:]}"
        return result


@pytest.fixture(scope="session")
def bridged_engine() -> Iterator[BridgedEngine]:
    require("/usr/sbin/dockerd", "docker.io")
    require("ip", "iproute2")
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root")
    serial = os.getpid() % 250 + 1
    bridge = f"regimg{serial}"
    _ip("link", "del", bridge, check=False)  # Left by a run that was killed.
    _ip("link", "add", bridge, "type", "bridge")
    # A short path: the socket path must stay under the 108-byte limit.
    root = Path(tempfile.mkdtemp(prefix="reg-img-", dir="/tmp"))
    engine = BridgedEngine(root, bridge=bridge, storage_driver=_storage_driver(root))
    try:
        _ip("addr", "add", f"10.232.{serial}.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        engine.start_bridged()
        yield engine
    finally:
        engine.stop()
        _ip("link", "del", bridge, check=False)


@pytest.fixture(scope="session")
def debian_base(bridged_engine: BridgedEngine) -> str:
    """Debian bookworm with python3 and venv, from apt's mirror, as a local image.

    Made once per session under one name (``BASE_IMAGE``), which every build
    of the image names; the root filesystem is kept in the user's cache folder
    (keyed by the mmdebstrap arguments), so a later run skips its minute of
    downloads and unpacking.
    """
    if bridged_engine.docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    mmdebstrap = require("mmdebstrap", "mmdebstrap")
    options = [
        "--variant=minbase",
        "--format=tar",
        "--include=python3,python3-venv",
        # What no one reads in a container; a smaller tree is a faster import and build.
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "bookworm",
    ]
    mirror = _debian_mirror()
    key = hashlib.sha256("\0".join([*options, mirror]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "registry-tests"
    rootfs = cache / f"debian-bookworm-python3-{key}.tar"
    if not rootfs.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        partial_rootfs = cache / f".{os.getpid()}-{rootfs.name}"
        try:
            _run([mmdebstrap, *options, str(partial_rootfs), mirror], "mmdebstrap", timeout=900)
            os.replace(partial_rootfs, rootfs)  # Whole or not at all: never a half tar.
        finally:
            partial_rootfs.unlink(missing_ok=True)
    _run(
        ["/usr/bin/docker", "-H", bridged_engine.host, "import", str(rootfs), BASE_IMAGE],
        "docker import",
        timeout=600,
    )
    return BASE_IMAGE


#: What the dependencies ask for only below this Python's patch level, which pip here
#: leaves out and bookworm's 3.11.2 needs: redis-py wants async-timeout before 3.11.3.
ONLY_FOR_OLDER_PATCHES = ["async-timeout>=4.0.3"]


@pytest.fixture(scope="session")
def wheel_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The project's dependencies (and its build backend) as wheels, served on loopback."""
    assert sys.version_info[:2] == BASE_PYTHON, (
        f"the wheels are made with this Python ({sys.version.split()[0]}); the image's is "
        f"bookworm's {'.'.join(map(str, BASE_PYTHON))}: run the tests with that one"
    )
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = [
        *project["build-system"]["requires"],
        *project["project"]["dependencies"],
        *ONLY_FOR_OLDER_PATCHES,
    ]
    wheels = tmp_path_factory.mktemp("wheels")
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheels), *wanted],
        "pip wheel",
        timeout=600,
    )

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(wheels)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def registry_image(bridged_engine: BridgedEngine, debian_base: str, wheel_index: str) -> str:
    """The top-level Dockerfile, built once per session on the Debian base with no hub."""
    bridged_engine.build(
        "--network",
        "host",  # The build's pip reaches the wheels on this machine's loopback.
        "--build-arg",
        f"BASE={debian_base}",
        "--build-arg",
        "PIP_NO_INDEX=1",
        "--build-arg",
        f"PIP_FIND_LINKS={wheel_index}",
        "-t",
        IMAGE,
        str(REPO),
    )
    return IMAGE


@pytest.fixture(scope="session")
def busybox(bridged_engine: BridgedEngine) -> str:
    reference = "e2e/busybox:latest"
    bridged_engine.import_image(reference, busybox_tar())
    return reference


@dataclass
class Container:
    engine: DockerEngine
    id: str
    port: int

    def url(self, path: str) -> str:
        return f"http://localhost:{self.port}{path}"

    def logs(self) -> str:
        result = self.engine.docker("logs", self.id, check=False)
        return result.stdout + result.stderr

    def state(self, template: str) -> str:
        return self.engine.docker("inspect", "-f", template, self.id).stdout.strip()

    def wait_ready(self) -> None:
        """Until /v2/ answers through the published port (the proxy accepts before the app)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url("/v2/"), timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the registry in the container does not answer:\n{self.logs()}")

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.state("{{.State.Health.Status}}") == "healthy":
                return
            time.sleep(0.2)
        health = self.state("{{json .State.Health}}")
        raise AssertionError(f"never healthy: {health}\n{self.logs()}")


@pytest.fixture
def containers(bridged_engine: BridgedEngine) -> Iterator[list[Container]]:
    """Containers a test runs (``docker container run -d ...``), removed with their volumes."""
    made: list[Container] = []
    yield made
    for container in made:
        bridged_engine.docker("rm", "-f", "-v", container.id, check=False)


def run_registry(
    engine: DockerEngine, made: list[Container], *options: str, port: int | None = None
) -> Container:
    port = port or _free_port()
    result = engine.docker("container", "run", "-d", "-p", f"{port}:5000", *options, IMAGE)
    container = Container(engine, result.stdout.strip(), port)
    made.append(container)
    container.wait_ready()
    return container


def upload_blob(port: int, data: bytes, repository: str = "w3") -> str:
    """A monolithic upload (POST, then PUT with the whole body): the blob's digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    started = httpx.post(f"http://localhost:{port}/v2/{repository}/blobs/uploads/")
    assert started.status_code == 202, started.text
    done = httpx.put(
        httpx.URL(started.headers["Location"]).copy_merge_params({"digest": digest}),
        content=data,
    )
    assert done.status_code == 201, done.text
    return digest


@dataclass
class Stop:
    """``docker stop -t 30`` run beside a test: SIGTERM now, SIGKILL only after 30 s."""

    container: Container
    result: subprocess.CompletedProcess[str] | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        def stop() -> None:
            self.result = self.container.engine.docker(
                "stop", "-t", "30", self.container.id, check=False
            )

        self.thread = threading.Thread(target=stop)
        self.thread.start()

    def join(self) -> None:
        """Until ``docker stop`` returns; the server exited by itself (0), not by SIGKILL (137)."""
        assert self.thread is not None
        self.thread.join(timeout=120)
        assert self.result is not None and self.result.returncode == 0, self.result
        exit_code = self.container.state("{{.State.ExitCode}}")
        assert exit_code == "0", f"exit code {exit_code}\n{self.container.logs()}"


def refused_after_sigterm(container: Container) -> None:
    """Until a new request is refused: the server got SIGTERM and stopped accepting.

    Through the published port the engine's proxy accepts, cannot reach the
    server, and closes. Refused means at once: a request left unanswered
    (a timeout) means the listening socket was still open with nobody accepting.
    """
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(container.url("/v2/"), timeout=2)
        except httpx.TimeoutException as error:
            raise AssertionError("a new connection waits unanswered while draining") from error
        except httpx.TransportError:
            return
        time.sleep(0.02)
    raise AssertionError("the registry still accepts new requests after SIGTERM")


def start_upload(container: Container, repository: str = "w3") -> str:
    """POST a new upload session: its location (path and query)."""
    started = httpx.post(container.url(f"/v2/{repository}/blobs/uploads/"))
    assert started.status_code == 202, started.text
    location = urlsplit(started.headers["Location"])
    return f"{location.path}?{location.query}" if location.query else location.path


def with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


def slow_request_across_stop(
    container: Container,
    method: str,
    target: str,
    data: bytes,
    *,
    headers: dict[str, str],
    before: int,
    pace_after: float,
) -> tuple[http.client.HTTPResponse, bytes, Stop]:
    """Send ``data`` in 64 KiB pieces; ``docker stop -t 30`` once ``before`` bytes are sent.

    After the stop (SIGTERM) and a refused new connection, the rest goes at one
    piece per ``pace_after`` seconds: the request is still being received while
    the server drains. Returns the response, its body and the stop (to join).
    """
    connection = http.client.HTTPConnection("localhost", container.port, timeout=90)
    connection.putrequest(method, target)
    for name, value in {
        "Content-Type": "application/octet-stream",
        "Content-Length": str(len(data)),
        **headers,
    }.items():
        connection.putheader(name, value)
    connection.endheaders()
    step = 64 * 1024
    for offset in range(0, before, step):
        connection.send(data[offset : offset + step])
    stop = Stop(container)
    stop.start()
    refused_after_sigterm(container)
    for offset in range(before, len(data), step):
        connection.send(data[offset : offset + step])
        time.sleep(pace_after)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body, stop


def test_image_is_configured_like_registry2(
    bridged_engine: BridgedEngine, registry_image: str
) -> None:
    config = json.loads(bridged_engine.docker("image", "inspect", registry_image).stdout)[0][
        "Config"
    ]
    assert config["User"] == f"{UID}:{UID}"
    assert "5000/tcp" in config["ExposedPorts"]
    assert "/var/lib/registry" in config["Volumes"]
    assert config["StopSignal"] == "SIGTERM"
    assert config["Entrypoint"] == ["/entrypoint.sh"]
    assert config["Cmd"] == ["/etc/docker/registry/config.yml"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert not [entry for entry in config["Env"] if entry.startswith("PIP_")], config["Env"]

    # A registry command goes through `registry`, as in registry:2's image; the
    # default config loads with no warning and is registry:2's image default.
    checked = bridged_engine.docker(
        "run", "--rm", registry_image, "check-config", "/etc/docker/registry/config.yml"
    )
    assert "warning" not in checked.stderr, checked.stderr
    merged = json.loads(checked.stdout)
    assert merged["storage"]["driver"] == "filesystem"
    assert merged["storage"]["parameters"]["rootdirectory"] == "/var/lib/registry"
    assert merged["storage"]["delete_enabled"] is False
    assert merged["http"]["addr"] == ":5000"
    assert merged["http"]["headers"] == {"X-Content-Type-Options": ["nosniff"]}
    assert merged["warnings"] == []


def curl(url: str) -> str:
    """``curl URL``, as the lab types it: the body."""
    return _run([require("curl", "curl"), "-sS", "--fail", url], f"curl {url}", timeout=60).stdout


def test_lab_in_the_container(
    bridged_engine: BridgedEngine,
    registry_image: str,
    busybox: str,
    containers: list[Container],
) -> None:
    docker = bridged_engine.docker
    # docker container run -d -p 5000:5000 registry:2, with this image and a free port.
    registry = run_registry(bridged_engine, containers)
    port = registry.port

    assert curl(f"http://localhost:{port}/v2/_catalog") == '{"repositories":[]}\n'

    image = f"localhost:{port}/w3:v1.0"
    docker("image", "tag", busybox, image)
    pushed = docker("image", "push", image)
    assert "v1.0: digest: sha256:" in pushed.stdout
    pushed_digest = pushed.stdout.split("digest: ")[1].split()[0]
    assert curl(f"http://localhost:{port}/v2/_catalog") == '{"repositories":["w3"]}\n'

    docker("image", "rm", image)
    pulled = docker("image", "pull", image)
    assert pushed_digest in pulled.stdout
    ran = docker("run", "--rm", "--network", "none", image, "/bin/busybox", "echo", "hello")
    assert ran.stdout.strip() == "hello"

    # The server (PID 1: the entry point execs it) runs as the image's user.
    assert docker("exec", registry.id, "id", "-u").stdout.strip() == UID
    status = docker("exec", registry.id, "cat", "/proc/1/status").stdout
    assert f"Uid:\t{UID}\t{UID}\t{UID}\t{UID}" in status, status
    command = docker("exec", registry.id, "cat", "/proc/1/cmdline").stdout.split("\0")
    assert command[1:4] == ["/opt/registry/bin/registry", "serve", CONFIG], command

    # The store is in the image's volume, in registry:2's layout, owned by that user.
    mounts = json.loads(registry.state("{{json .Mounts}}"))
    volume = next(mount for mount in mounts if mount["Destination"] == "/var/lib/registry")
    assert volume["Type"] == "volume", mounts
    v2 = Path(volume["Source"]) / "docker/registry/v2"
    assert (v2 / "repositories/w3/_manifests/tags/v1.0/current/link").is_file()
    algorithm, hexadecimal = pushed_digest.split(":")
    assert (v2 / "blobs" / algorithm / hexadecimal[:2] / hexadecimal / "data").is_file()
    owners = docker(
        "exec", registry.id, "find", "/var/lib/registry", "-printf", "%u:%g\n"
    ).stdout.split()
    assert owners and set(owners) == {"registry:registry"}, owners
    # Deletes are off, as in registry:2's image.
    refused = httpx.delete(f"http://localhost:{port}/v2/w3/manifests/{pushed_digest}")
    assert refused.status_code == 405
    assert refused.json()["errors"][0]["code"] == "UNSUPPORTED"

    # docker stop (SIGTERM) while a chunk of a chunked upload is arriving slowly: new
    # connections are refused at once, the PATCH in flight is stored whole (202)
    # within the default http.draintimeout (5 s), then the server exits by itself.
    data = os.urandom(6 * MiB)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    location = start_upload(registry)
    first = httpx.patch(
        registry.url(location),
        content=data[:MiB],
        headers={"Content-Type": "application/octet-stream", "Content-Range": f"0-{MiB - 1}"},
    )
    assert first.status_code == 202, first.text
    location = urlsplit(first.headers["Location"])._replace(scheme="", netloc="").geturl()
    response, body, stop = slow_request_across_stop(
        registry,
        "PATCH",
        location,
        data[MiB:],
        headers={"Content-Range": f"{MiB}-{len(data) - 1}"},
        before=MiB,
        pace_after=0.01,
    )
    assert response.status == 202, (response.status, body, registry.logs())
    assert response.getheader("Range") == f"0-{len(data) - 1}"
    stop.join()

    # The volume outlives a restart of the container, and so does the upload
    # session (it lives in storage): the upload is closed after the restart.
    docker("start", registry.id)
    registry.wait_ready()
    assert curl(f"http://localhost:{port}/v2/_catalog") == '{"repositories":["w3"]}\n'
    location = urlsplit(response.getheader("Location", ""))._replace(scheme="", netloc="").geturl()
    status_of_upload = httpx.get(registry.url(location))
    assert status_of_upload.status_code == 204
    assert status_of_upload.headers["Range"] == f"0-{len(data) - 1}"
    closed = httpx.put(registry.url(with_digest(location, digest)))
    assert closed.status_code == 201, closed.text
    blob = httpx.get(f"http://localhost:{port}/v2/w3/blobs/{digest}")
    assert blob.status_code == 200
    assert blob.content == data
    manifest = httpx.head(
        f"http://localhost:{port}/v2/w3/manifests/v1.0",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    assert manifest.headers["Docker-Content-Digest"] == pushed_digest
    docker("image", "rm", image)
    docker("image", "pull", image)


def test_environment_overrides_healthcheck_and_drain(
    bridged_engine: BridgedEngine, registry_image: str, containers: list[Container]
) -> None:
    registry = run_registry(
        bridged_engine,
        containers,
        "-e",
        "REGISTRY_STORAGE_DELETE_ENABLED=true",
        "-e",
        "REGISTRY_HTTP_DRAINTIMEOUT=30s",
        # The image's HEALTHCHECK command, probed every second instead of every 30 s.
        "--health-interval=1s",
    )
    registry.wait_healthy()
    last = json.loads(registry.state("{{json .State.Health}}"))["Log"][-1]
    assert last["ExitCode"] == 0, last

    # REGISTRY_STORAGE_DELETE_ENABLED=true: a blob can be deleted (off in the image's file).
    digest = upload_blob(registry.port, b"deleted through an environment override")
    deleted = httpx.delete(registry.url(f"/v2/w3/blobs/{digest}"))
    assert deleted.status_code == 202, deleted.text
    assert httpx.head(registry.url(f"/v2/w3/blobs/{digest}")).status_code == 404

    # REGISTRY_HTTP_DRAINTIMEOUT=30s with docker stop -t 30: a monolithic upload whose
    # last 3 MiB arrive over 7 s of pauses after SIGTERM, more than the default 5 s
    # drain allows, still gets its 201: the override took effect.
    data = os.urandom(4 * MiB)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    response, body, stop = slow_request_across_stop(
        registry,
        "PUT",
        with_digest(start_upload(registry), digest),
        data,
        headers={},
        before=MiB,
        pace_after=7 / (3 * MiB / (64 * 1024)),
    )
    assert response.status == 201, (response.status, body, registry.logs())
    assert response.getheader("Docker-Content-Digest") == digest
    stop.join()
    docker = bridged_engine.docker
    docker("start", registry.id)
    registry.wait_ready()
    assert httpx.get(registry.url(f"/v2/w3/blobs/{digest}")).content == data


SYSTEMD_UNIT = REPO / "contrib/systemd/registry.service"


def _unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file's settings by section, every value of a key in order (keys repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def _seconds(value: str) -> float:
    """A systemd time span of the forms the unit uses: ``90``, ``90s``, ``2min``."""
    for suffix, factor in (("min", 60.0), ("s", 1.0)):
        if value.endswith(suffix):
            return float(value.removesuffix(suffix)) * factor
    return float(value)


def test_systemd_unit_agrees_with_the_image_and_the_cli() -> None:
    """The unit serves the image's config with a real command; its paths are the config's."""
    service = _unit_settings(SYSTEMD_UNIT)["Service"]
    program, *arguments = shlex.split(service["ExecStart"][-1])
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert Path(program).name in scripts, (program, scripts)
    assert arguments == ["serve", CONFIG]
    installed = Path(sys.executable).parent / Path(program).name
    assert subprocess.run([installed, "serve", "--help"], capture_output=True).returncode == 0

    # The same file as in the image: contrib/docker/config.yml installed at CONFIG.
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"COPY contrib/docker/config.yml {CONFIG}" in dockerfile
    checked = subprocess.run(
        [installed, "check-config", REPO / "contrib/docker/config.yml"],
        capture_output=True,
        text=True,
        check=True,
    )
    config = json.loads(checked.stdout)
    root = config["storage"]["parameters"]["rootdirectory"]
    assert root == f"/var/lib/{service['StateDirectory'][-1]}"
    assert root in service["ReadWritePaths"][-1].split()
    # SIGTERM drains for http.draintimeout (5 s when unset); systemd waits longer.
    drain = config["http"]["draintimeout"] or 5.0
    assert service["KillSignal"] == ["SIGTERM"]
    assert service["KillMode"] == ["mixed"]  # The supervisor stops its workers itself.
    assert _seconds(service["TimeoutStopSec"][-1]) > drain + 10
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]

    # The image's user name (test_lab_in_the_container sees it own the store), made
    # on a host by the sysusers file beside the unit.
    assert service["User"] == ["registry"]
    sysusers = (REPO / "contrib/systemd/registry.sysusers.conf").read_text().split("\n")
    assert any(line.split()[:2] == ["u", "registry"] for line in sysusers if line.strip())
    for key, value in {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",  # The supervisor's run folder (metrics, health) is in TMPDIR.
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == [value], key


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """``systemd-analyze verify`` (no systemd running needed): no error, no warning."""
    analyze = require("systemd-analyze", "systemd")
    service = _unit_settings(SYSTEMD_UNIT)["Service"]
    program = shlex.split(service["ExecStart"][-1])[0]
    # verify checks that the program exists: the one installed with these tests.
    installed = Path(sys.executable).parent / Path(program).name
    unit = tmp_path / SYSTEMD_UNIT.name
    unit.write_text(SYSTEMD_UNIT.read_text().replace(program, str(installed)))
    verified = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, cwd=tmp_path
    )
    assert verified.returncode == 0, verified.stderr
    assert verified.stderr == "", verified.stderr  # An unknown or misspelt key only warns.
    # The hardening, as systemd rates it offline: exposure 2.0 or less of 10.
    security = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=20", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert security.returncode == 0, security.stdout[-3000:] + security.stderr
