"""The Docker engine, skopeo and podman against the registry over HTTPS on a real network address.

The registry runs in a network namespace, on the namespace's own address, so
the engine treats it as the remote registry it would be in production: no
localhost exception, and no ``insecure-registries`` entry. Its certificates
come from our own toolkit, run as a user runs it::

    registry certs init --dir D
    registry certs server --dir D --host ADDR
    registry certs client builder --dir D                 # mutual TLS only
    registry certs bundle ADDR:PORT --dir D [--client builder]

and the engine trusts the registry through the bundle, copied as it is to
``/etc/docker/certs.d/ADDR:PORT/``: the only place outside temporary folders
these tests write to, removed afterwards even when a test fails. dockerd reads
that folder at every push and pull, so no restart is needed. skopeo and podman
take the same bundle folder as their ``--cert-dir``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import RegistryProcess
from tests.services.locks import machine_lock

from .conftest import DockerEngine, busybox_tar
from .needs import require
from .netns import NetworkNamespace, network_namespace

pytestmark = pytest.mark.e2e

DOCKER_CERTS_D = Path("/etc/docker/certs.d")
UNKNOWN_AUTHORITY = "x509: certificate signed by unknown authority"
CERTIFICATE_REQUIRED = "remote error: tls: certificate required"
CLIENT = "builder"


def registry_certs(*args: str) -> subprocess.CompletedProcess[str]:
    """``registry certs ARGS`` as a user types it."""
    result = subprocess.run(
        [sys.executable, "-m", "registry", "certs", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"registry certs {' '.join(args)}:\n{result.stdout}{result.stderr}"
    )
    return result


@contextlib.contextmanager
def docker_certs_d(entry: str) -> Iterator[Path]:
    """``/etc/docker/certs.d/ENTRY``, for the test to fill; removed afterwards, even on failure.

    Only that folder is removed (with ``/etc/docker/certs.d`` itself, and
    ``/etc/docker``, when they did not exist before and are empty again).
    """
    target = DOCKER_CERTS_D / entry
    # One test process at a time: another's folders would not be ours to remove.
    with machine_lock(str(DOCKER_CERTS_D)):
        assert not target.exists(), f"{target} exists: it is not ours to replace"
        made = [folder for folder in (DOCKER_CERTS_D.parent, DOCKER_CERTS_D) if not folder.exists()]
        try:
            yield target
        finally:
            shutil.rmtree(target, ignore_errors=True)
            for folder in reversed(made):
                with contextlib.suppress(OSError):
                    folder.rmdir()


@contextlib.contextmanager
def docker_trusts(bundle: Path) -> Iterator[Path]:
    """The bundle ``certs.d/HOST:PORT`` copied as it is to ``/etc/docker/certs.d/HOST:PORT``."""
    with docker_certs_d(bundle.name) as target:
        shutil.copytree(bundle, target)
        yield target


@dataclass
class Site:
    """A registry served over HTTPS from a network namespace, and the toolkit's folder."""

    netns: NetworkNamespace
    certs: Path
    registry: RegistryProcess

    @property
    def entry(self) -> str:
        """``ADDR:PORT``, as engines name the registry and its certs.d folder."""
        return f"{self.netns.address}:{self.registry.port}"

    def bundle(self, *client: str) -> Path:
        """``registry certs bundle ADDR:PORT [--client NAME]``: the folder it writes."""
        options = ["--client", client[0]] if client else []
        registry_certs("bundle", self.entry, "--dir", str(self.certs), *options)
        folder = self.certs / "certs.d" / self.entry
        assert (folder / "ca.crt").read_bytes() == (self.certs / "ca.crt").read_bytes()
        return folder


@pytest.fixture(scope="module")
def namespace() -> Iterator[NetworkNamespace]:
    with network_namespace() as netns:
        yield netns


@pytest.fixture(scope="module")
def certs(namespace: NetworkNamespace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tls-engines") / "certs"
    registry_certs("init", "--dir", str(folder))
    server = registry_certs("server", "--dir", str(folder), "--host", namespace.address)
    assert namespace.address in server.stdout, server.stdout
    return folder


def start_site(
    namespace: NetworkNamespace, certs: Path, workdir: Path, *, mutual: bool
) -> RegistryProcess:
    tls: dict[str, object] = {
        "certificate": str(certs / "server.crt"),
        "key": str(certs / "server.key"),
    }
    if mutual:
        tls["clientcas"] = [str(certs / "ca.crt")]
    registry = RegistryProcess(workdir, {"http": {"tls": tls}}, wrap=namespace.prefix())
    return registry.start(f"{namespace.address}:0")


@pytest.fixture(scope="module")
def site(
    namespace: NetworkNamespace, certs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    registry = start_site(namespace, certs, tmp_path_factory.mktemp("https"), mutual=False)
    yield Site(namespace, certs, registry)
    registry.stop()


@pytest.fixture(scope="module")
def mutual_site(
    namespace: NetworkNamespace, certs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    registry = start_site(namespace, certs, tmp_path_factory.mktemp("mutual"), mutual=True)
    yield Site(namespace, certs, registry)
    registry.stop()


def ca_only(site: Site, parent: Path) -> Path:
    """A ``HOST:PORT`` folder with the bundle's ``ca.crt`` alone (no client pair)."""
    folder = parent / "ca-only" / site.entry
    folder.mkdir(parents=True)
    shutil.copy(site.bundle() / "ca.crt", folder / "ca.crt")
    return folder


def refused_for_want_of_a_client_certificate(stderr: str, site: Site) -> bool:
    """The server certificate is trusted, and the connection is cut off at the handshake.

    Python's event loops close the connection without sending the TLS alert, so
    Go clients report EOF where registry:2 makes them say "remote error: tls:
    certificate required". With TLS 1.3 the client's side of the handshake ends
    before the server checks the certificate, so the close races the client's
    first request: a reset when it lands on the request, "server closed idle
    connection" when it lands before it. Each is the handshake's failure.
    """
    if UNKNOWN_AUTHORITY in stderr or f"https://{site.entry}/v2/" not in stderr:
        return False
    return (
        stderr.rstrip().endswith(("EOF", 'EOF"'))
        or "connection reset by peer" in stderr
        or "http: server closed idle connection" in stderr
        or CERTIFICATE_REQUIRED in stderr
    )


def unique_image(engine: DockerEngine, reference: str) -> str:
    """An image of its own (busybox plus a random file); the file's content is returned."""
    token = secrets.token_hex(16)
    engine.import_image(reference, busybox_tar({"tls-token": token.encode()}))
    return token


def push_pull_run(engine: DockerEngine, site: Site, reference: str, token: str) -> str:
    """Push, forget the image, pull it back, run it; the pushed digest."""
    pushed = engine.docker("image", "push", reference)
    digest = pushed.stdout.split("digest: ")[1].split()[0]
    engine.docker("image", "rm", reference)
    assert engine.docker("image", "inspect", reference, check=False).returncode != 0
    pulled = engine.docker("image", "pull", reference)
    assert f"Digest: {digest}" in pulled.stdout, pulled.stdout
    ran = engine.docker(
        "run", "--rm", "--network", "none", reference, "/bin/busybox", "cat", "/tls-token"
    )
    assert ran.stdout == token
    repository, tag = reference.split("/", 1)[1].rsplit(":", 1)
    log = site.registry.log()
    assert f'"PUT /v2/{repository}/manifests/{tag} HTTP/1.1" 201' in log
    return digest


def test_docker_pushes_over_https_once_the_ca_bundle_is_in_certs_d(
    docker_engine: DockerEngine, site: Site
) -> None:
    reference = f"{site.entry}/tls/busybox:1"
    token = unique_image(docker_engine, reference)

    refused = docker_engine.docker("image", "push", reference, check=False)
    assert refused.returncode != 0
    assert UNKNOWN_AUTHORITY in refused.stderr, refused.stderr

    bundle = site.bundle()
    assert sorted(path.name for path in bundle.iterdir()) == ["ca.crt"]
    with docker_trusts(bundle) as trusted:
        assert (trusted / "ca.crt").read_bytes() == (site.certs / "ca.crt").read_bytes()
        push_pull_run(docker_engine, site, reference, token)
    assert not trusted.exists()

    # Read at every request: without the folder, the engine refuses again.
    again = docker_engine.docker("image", "push", reference, check=False)
    assert again.returncode != 0
    assert UNKNOWN_AUTHORITY in again.stderr, again.stderr
    docker_engine.docker("image", "rm", reference)


def test_docker_with_mutual_tls_needs_the_client_pair(
    docker_engine: DockerEngine, mutual_site: Site, tmp_path: Path
) -> None:
    reference = f"{mutual_site.entry}/tls/mutual:1"
    token = unique_image(docker_engine, reference)

    with docker_trusts(ca_only(mutual_site, tmp_path)):
        refused = docker_engine.docker("image", "push", reference, check=False)
    assert refused.returncode != 0, refused.stdout
    assert refused_for_want_of_a_client_certificate(refused.stderr, mutual_site), refused.stderr
    assert '"GET /v2/' not in mutual_site.registry.log(), "no request got through"

    registry_certs("client", CLIENT, "--dir", str(mutual_site.certs))
    bundle = mutual_site.bundle(CLIENT)
    assert sorted(path.name for path in bundle.iterdir()) == ["ca.crt", "client.cert", "client.key"]
    assert (bundle / "client.key").stat().st_mode & 0o777 == 0o600
    with docker_trusts(bundle):
        push_pull_run(docker_engine, mutual_site, reference, token)
    docker_engine.docker("image", "rm", reference)


# --- skopeo and podman: the bundle folder as --cert-dir ------------------------------


@dataclass(frozen=True)
class Archive:
    """``docker save`` of an image of its own: what skopeo and podman push."""

    path: Path
    token: str

    @property
    def transport(self) -> str:
        return f"docker-archive:{self.path}"


@pytest.fixture(scope="module")
def archive(docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory) -> Archive:
    reference = "e2e/tls-archive:1"
    token = unique_image(docker_engine, reference)
    path = tmp_path_factory.mktemp("archive") / "image.tar"
    docker_engine.docker("image", "save", "-o", str(path), reference)
    docker_engine.docker("image", "rm", reference)
    return Archive(path, token)


@dataclass
class Containers:
    """skopeo and podman with configuration and storage of their own, never the system's.

    No registries.conf entries (so nothing is insecure or mirrored), a policy that
    accepts unsigned images, and podman's root storage (vfs) in a temporary folder.
    """

    root: Path

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "registries.conf").write_text("")
        (self.root / "containers.conf").write_text("")
        (self.root / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{self.root / "storage"}"\n'
            f'runroot = "{self.root / "run"}"\n'
        )
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))

    @property
    def policy(self) -> Path:
        return self.root / "policy.json"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CONTAINERS_REGISTRIES_CONF": str(self.root / "registries.conf"),
            "CONTAINERS_CONF": str(self.root / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(self.root / "storage.conf"),
        }

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            command, capture_output=True, text=True, env=self.env(), timeout=600
        )
        if check:
            assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}{result.stderr}"
        return result

    def skopeo(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        skopeo = require("skopeo", "skopeo")
        return self.run(skopeo, "--policy", str(self.policy), *args, check=check)

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        podman = require("podman", "podman")
        return self.run(
            podman,
            "--root", str(self.root / "storage"),
            "--runroot", str(self.root / "run"),
            "--storage-driver", "vfs",
            "--tmpdir", str(self.root / "tmp"),
            "--events-backend", "none",
            "--cgroup-manager", "cgroupfs",
            *args,
            check=check,
        )  # fmt: skip


@pytest.fixture
def containers() -> Iterator[Containers]:
    # A short path: podman refuses a runroot longer than 50 characters.
    root = Path(tempfile.mkdtemp(prefix="reg-tls-", dir="/tmp"))
    yield Containers(root)
    shutil.rmtree(root, ignore_errors=True)


def test_skopeo_copies_and_inspects_with_the_bundle_as_cert_dir(
    site: Site, archive: Archive, containers: Containers, tmp_path: Path
) -> None:
    destination = f"docker://{site.entry}/tls/skopeo:1"
    refused = containers.skopeo("copy", archive.transport, destination, check=False)
    assert refused.returncode != 0
    assert UNKNOWN_AUTHORITY in refused.stderr, refused.stderr

    bundle = site.bundle()
    digest_file = tmp_path / "digest"
    containers.skopeo(
        "copy", "--dest-cert-dir", str(bundle), "--digestfile", str(digest_file),
        archive.transport, destination,
    )  # fmt: skip
    digest = digest_file.read_text().strip()
    assert digest.startswith("sha256:")

    inspected = json.loads(
        containers.skopeo("inspect", "--cert-dir", str(bundle), destination).stdout
    )
    assert inspected["Digest"] == digest
    assert inspected["Name"] == f"{site.entry}/tls/skopeo"
    assert inspected["RepoTags"] == ["1"]
    assert len(inspected["Layers"]) == 1
    not_trusted = containers.skopeo("inspect", destination, check=False)
    assert UNKNOWN_AUTHORITY in not_trusted.stderr, not_trusted.stderr


def test_skopeo_with_mutual_tls_sends_the_client_pair_of_the_bundle(
    mutual_site: Site, archive: Archive, containers: Containers, tmp_path: Path
) -> None:
    destination = f"docker://{mutual_site.entry}/tls/skopeo-mutual:1"
    refused = containers.skopeo(
        "copy", "--dest-cert-dir", str(ca_only(mutual_site, tmp_path)),
        archive.transport, destination, check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert refused_for_want_of_a_client_certificate(refused.stderr, mutual_site), refused.stderr

    registry_certs("client", CLIENT, "--dir", str(mutual_site.certs))
    bundle = mutual_site.bundle(CLIENT)
    digest_file = tmp_path / "digest"
    containers.skopeo(
        "copy", "--dest-cert-dir", str(bundle), "--digestfile", str(digest_file),
        archive.transport, destination,
    )  # fmt: skip
    inspected = json.loads(
        containers.skopeo("inspect", "--cert-dir", str(bundle), destination).stdout
    )
    assert inspected["Digest"] == digest_file.read_text().strip()


def test_podman_pushes_and_pulls_with_the_bundle_as_cert_dir(
    site: Site, archive: Archive, containers: Containers, tmp_path: Path
) -> None:
    policy = ["--signature-policy", str(containers.policy)]
    loaded = containers.podman("pull", *policy, archive.transport).stdout.split()[-1]
    target = f"{site.entry}/tls/podman:1"
    containers.podman("tag", loaded, target)

    refused = containers.podman("push", *policy, target, check=False)
    assert refused.returncode != 0
    assert UNKNOWN_AUTHORITY in refused.stderr, refused.stderr

    bundle = site.bundle()
    digest_file = tmp_path / "digest"
    containers.podman(
        "push", *policy, "--cert-dir", str(bundle), "--digestfile", str(digest_file), target
    )
    containers.podman("rmi", "--force", loaded)
    assert containers.podman("image", "exists", target, check=False).returncode != 0

    pulled = containers.podman("pull", *policy, "--cert-dir", str(bundle), target)
    image_id = pulled.stdout.split()[-1]
    digest = containers.podman("image", "inspect", "--format", "{{.Digest}}", image_id).stdout
    assert digest.strip() == digest_file.read_text().strip()
