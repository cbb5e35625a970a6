"""``registry serve`` and its TLS files: made by ``--tls`` once, and refused clearly when bad.

``registry serve --tls`` with no certificate configured makes a CA and a
server certificate in ``./certs`` on its first start, prints how engines trust
it, and keeps the same certificate on the next start; the Docker commands it
prints, run as printed, let the Docker engine push. It runs inside a network
namespace of its own, so the machine's addresses (which the certificate names)
cannot change between the two starts because of other network namespaces.

A certificate setup that cannot work stops the start with a message naming
the config key and the file, an exit code, and no traceback.
"""

from __future__ import annotations

import re
import shlex
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.conftest import RegistryProcess
from tools.certs import ensure_server_certificate

from .conftest import DockerEngine
from .netns import NetworkNamespace
from .test_tls_engines import UNKNOWN_AUTHORITY, docker_certs_d

pytestmark = pytest.mark.e2e


@dataclass
class NamespacedRegistry(RegistryProcess):
    """A registry listening on every address of a namespace: ready once its address answers."""

    address: str = ""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection((self.address, self.port), timeout=5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"registry does not answer:\n{self.log()}") from None
                time.sleep(0.05)


@pytest.fixture
def namespaced_registry(tmp_path: Path) -> Iterator[Callable[..., NamespacedRegistry]]:
    started: list[NamespacedRegistry] = []

    def start(netns: NetworkNamespace, args: list[str]) -> NamespacedRegistry:
        workdir = tmp_path / f"registry-{len(started)}"
        workdir.mkdir()
        registry = NamespacedRegistry(
            workdir, args=args, use_config=False, wrap=netns.prefix(), address=netns.address
        )
        started.append(registry)
        return registry.start("0.0.0.0:0")

    yield start
    for registry in started:
        registry.stop()


def fingerprint(path: Path) -> bytes:
    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA256())


# Run inside the namespace: GET URL/v2/ trusting only CA, with hostname verification.
INSIDE_CLIENT = """
import ssl, sys, httpx
context = ssl.create_default_context(cafile=sys.argv[1])
answer = httpx.get(sys.argv[2] + "/v2/", verify=context)
print(answer.status_code, answer.text.strip())
"""


def docker_commands(log: str) -> list[str]:
    """The commands printed under ``# Docker engine`` (up to the blank line)."""
    lines = log[log.rindex("# Docker engine") :].splitlines()
    return lines[1 : lines.index("")]


def test_serve_tls_makes_a_certificate_once_and_prints_how_to_trust_it(
    namespaced_registry, netns: NetworkNamespace, docker_engine: DockerEngine, busybox_image: str
) -> None:
    registry = namespaced_registry(netns, ["--tls"])
    certs = registry.workdir / "certs"
    for name, mode in (("ca.crt", 0o644), ("server.crt", 0o644), ("server.key", 0o600)):
        assert stat.S_IMODE((certs / name).stat().st_mode) == mode, name
    assert stat.S_IMODE((certs / "ca.key").stat().st_mode) == 0o600
    port = registry.port
    first_log = registry.log()
    assert "TLS certificate certs/server.crt: created" in first_log
    # Every interface, no --tls-host: engines are told the machine's name, and the port bound.
    named = f"{socket.gethostname()}:{port}"
    assert docker_commands(first_log) == [
        f"mkdir -p /etc/docker/certs.d/{named}",
        f"cp certs/ca.crt /etc/docker/certs.d/{named}/ca.crt",
    ]
    assert f"cp certs/ca.crt /etc/containers/certs.d/{named}/ca.crt\n" in first_log
    assert f"cat > /etc/containerd/certs.d/{named}/hosts.toml <<'EOF'\n" in first_log
    assert "Traceback" not in first_log
    made = fingerprint(certs / "server.crt")

    # From outside, by the namespace's address: the certificate names it.
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    outside = httpx.get(f"https://{netns.address}:{port}/v2/", verify=context)
    assert outside.status_code == 200
    # Inside, by loopback address and by name.
    for url in (f"https://127.0.0.1:{port}", f"https://localhost:{port}"):
        inside = netns.run(sys.executable, "-c", INSIDE_CLIENT, str(certs / "ca.crt"), url)
        assert inside.stdout.strip() == "200 {}", inside.stdout + inside.stderr

    # Started again, now naming the address engines use: the same certificate (it names
    # the address already), and instructions for that address.
    registry.args = ["--tls", "--tls-host", netns.address]
    registry.restart()
    assert registry.port == port
    second_log = registry.log()[len(first_log) :]
    assert "TLS certificate certs/server.crt: unchanged" in second_log, second_log
    assert fingerprint(certs / "server.crt") == made
    entry = f"{netns.address}:{port}"
    commands = docker_commands(second_log)
    assert commands == [
        f"mkdir -p /etc/docker/certs.d/{entry}",
        f"cp certs/ca.crt /etc/docker/certs.d/{entry}/ca.crt",
    ]

    # The printed commands, run as printed (from the folder serve ran in), let the engine push.
    image = f"{entry}/serve/busybox:1"
    docker_engine.docker("image", "tag", busybox_image, image)
    try:
        refused = docker_engine.docker("image", "push", image, check=False)
        assert UNKNOWN_AUTHORITY in refused.stderr, refused.stderr
        with docker_certs_d(entry):
            for command in commands:
                subprocess.run(shlex.split(command), cwd=registry.workdir, check=True)
            pushed = docker_engine.docker("image", "push", image)
        assert "1: digest: sha256:" in pushed.stdout
    finally:
        docker_engine.docker("image", "rm", image)


@dataclass(frozen=True)
class Files:
    """Certificate files for the refusals: a good pair, another pair, an expired pair, junk."""

    root: Path
    cert: Path
    key: Path
    other_key: Path
    expired_cert: Path
    expired_key: Path
    not_pem: Path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("bad-tls")
    good = ensure_server_certificate(root / "good", ["127.0.0.1"], include_default_hosts=False)
    other = ensure_server_certificate(root / "other", ["127.0.0.1"], include_default_hosts=False)
    expired = ensure_server_certificate(
        root / "expired",
        ["127.0.0.1"],
        include_default_hosts=False,
        days=30,
        now=datetime.now(UTC) - timedelta(days=90),
    )
    (root / "folder.key").mkdir()
    not_pem = root / "not-pem.key"
    not_pem.write_text("this is not a key\n")
    return Files(
        root,
        good.server_cert,
        good.server_key,
        other.server_key,
        expired.server_cert,
        expired.server_key,
        not_pem,
    )


#: (http.tls section, what the message must say), by case.
BAD: dict[str, Callable[[Files], tuple[dict[str, object], str]]] = {
    "certificate missing": lambda f: (
        {"certificate": str(f.root / "missing.crt"), "key": str(f.key)},
        f"http.tls.certificate: {f.root / 'missing.crt'}: no such file",
    ),
    "key is a folder": lambda f: (
        {"certificate": str(f.cert), "key": str(f.root / "folder.key")},
        f"http.tls.key: {f.root / 'folder.key'}: is a folder, not a file",
    ),
    "key not PEM": lambda f: (
        {"certificate": str(f.cert), "key": str(f.not_pem)},
        f"http.tls.key: {f.not_pem}: not a PEM private key",
    ),
    "certificate not PEM": lambda f: (
        {"certificate": str(f.not_pem), "key": str(f.key)},
        f"http.tls.certificate: {f.not_pem}: not a PEM certificate",
    ),
    "key of another certificate": lambda f: (
        {"certificate": str(f.cert), "key": str(f.other_key)},
        f"http.tls.key: {f.other_key}: private key does not match the certificate in {f.cert}",
    ),
    "certificate expired": lambda f: (
        {"certificate": str(f.expired_cert), "key": str(f.expired_key)},
        f"http.tls.certificate: {f.expired_cert}: certificate expired on ",
    ),
    "clientcas missing": lambda f: (
        {"certificate": str(f.cert), "key": str(f.key), "clientcas": [str(f.root / "no-ca.crt")]},
        f"http.tls.clientcas: {f.root / 'no-ca.crt'}: no such file",
    ),
    "clientcas not PEM": lambda f: (
        {"certificate": str(f.cert), "key": str(f.key), "clientcas": [str(f.not_pem)]},
        f"http.tls.clientcas: {f.not_pem}: not a PEM certificate",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_tls_setup_that_cannot_work_stops_the_start(case: str, files: Files, tmp_path) -> None:
    tls, expected = BAD[case](files)
    config = tmp_path / "config.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}},
                "http": {"tls": tls},
            }
        )
    )
    # The timeout only turns a registry that wrongly starts into a failure.
    command = [sys.executable, "-m", "registry", "serve", "--config", str(config)]
    result = subprocess.run(
        [*command, "--addr", "127.0.0.1:0", "--workers", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert expected in output, output
    assert re.search(r"ERROR registry\[\d+\]: ", output), output
    assert "Traceback" not in output, output
    assert "listening on" not in output, output
