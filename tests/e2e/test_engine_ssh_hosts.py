"""``registry engine --ssh`` configures a remote engine host that then pushes to the registry.

Two network namespaces stand for two machines: the registry serves from the first, and
the second is the remote engine host, running a real ``sshd`` (Debian's openssh-server,
its own config, host key and authorized key, all in a temporary folder) and a real
``dockerd``. The host routes between them (IPv4 forwarding, restored afterwards). Every
change on the engine host is made by ``registry engine ... --ssh root@HOST`` run here.

The engine host's dockerd runs in a mount namespace of its own where a temporary folder
is mounted on ``/etc/docker``: it reads ``/etc/docker/certs.d`` (a path dockerd does not
let anyone change) from there, and ``trust --docker-certs-dir`` writes that same folder,
so a certificate installed over ssh is one the engine really uses, and the system's
``/etc/docker`` is never written.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import RegistryProcess

from .conftest import DOCKER_CLIENT, DockerEngine, busybox_tar
from .needs import require
from .netns import NetworkNamespace, network_namespace
from .test_engine_plain_http import (
    BUSYBOX_IMAGE,
    PLAIN_HTTP_ERROR,
    engine_pid,
    output,
    push_fails_over_https,
    push_pull_run,
    registry_config,
    registry_engine,
    system_files_untouched,  # noqa: F401  (autouse: the system's files stay as they were)
)

pytestmark = pytest.mark.e2e

SSHD = "/usr/sbin/sshd"
UNKNOWN_AUTHORITY = "x509: certificate signed by unknown authority"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
DEADLINE = 120.0  # seconds: a bound for something that never comes, not a speed test

LISTEN_ONCE = (
    "import socket, sys\n"
    "server = socket.create_server((sys.argv[1], 0))\n"
    "print(server.getsockname()[1], flush=True)\n"
    "server.accept()[0].close()\n"
)
CONNECT = (
    "import socket, sys\n"
    "socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30).close()\n"
)


# --------------------------------------------------------------------------- network


def host_interface(address: str) -> str:
    """The host's interface holding ``address`` (a namespace's veth end)."""
    shown = subprocess.run(
        ["ip", "-o", "-4", "addr", "show", "to", address],
        capture_output=True,
        text=True,
        check=True,
    )
    return shown.stdout.split()[1]


def reaches(source: NetworkNamespace, target: NetworkNamespace) -> None:
    """A TCP connection from ``source`` to a one-shot listener in ``target``."""
    with subprocess.Popen(
        [*target.prefix(), sys.executable, "-c", LISTEN_ONCE, target.address],
        stdout=subprocess.PIPE,
        text=True,
    ) as listener:
        try:
            assert listener.stdout is not None
            port = listener.stdout.readline().strip()
            assert port.isdigit(), f"the listener in {target.name} did not start"
            connected = source.run(sys.executable, "-c", CONNECT, target.address, port, check=False)
            assert connected.returncode == 0, (
                f"{source.name} ({source.address}) cannot reach {target.address}:{port}:\n"
                f"{connected.stderr}"
            )
            listener.wait(timeout=DEADLINE)
        finally:
            if listener.poll() is None:
                listener.kill()


def forwarding_filtered(iptables: str | None) -> bool:
    """Whether the host's FORWARD chain has a rule or policy that could drop packets."""
    if iptables is None:
        return False
    listing = subprocess.run([iptables, "-S", "FORWARD"], capture_output=True, text=True)
    return listing.returncode == 0 and listing.stdout.split("\n") != ["-P FORWARD ACCEPT", ""]


@contextmanager
def routed(first: NetworkNamespace, second: NetworkNamespace) -> Iterator[None]:
    """The host forwards between the two namespaces; everything it changed is put back."""
    previous = IP_FORWARD.read_text().strip()
    iptables = shutil.which("iptables")
    added: list[list[str]] = []
    try:
        if previous != "1":
            IP_FORWARD.write_text("1\n")
        if iptables is not None and forwarding_filtered(iptables):
            # Let exactly these two veths through, ahead of whatever the host has.
            a, b = host_interface(first.host_address), host_interface(second.host_address)
            for rule in (
                ["FORWARD", "-i", a, "-o", b, "-j", "ACCEPT"],
                ["FORWARD", "-i", b, "-o", a, "-j", "ACCEPT"],
            ):
                subprocess.run([iptables, "-I", *rule], check=True, capture_output=True)
                added.append(rule)
        reaches(first, second)
        reaches(second, first)
        yield
    finally:
        for rule in reversed(added):
            assert iptables is not None
            subprocess.run([iptables, "-D", *rule], capture_output=True, check=False)
        if previous != "1":
            IP_FORWARD.write_text(previous + "\n")


# --------------------------------------------------------------------------- engine host


class EngineHostDocker(DockerEngine):
    """dockerd in a network namespace and a mount namespace where ``/etc/docker`` is ours."""

    @property
    def etc_docker(self) -> Path:
        return self.root / "etc-docker"

    @property
    def certs_dir(self) -> Path:
        """``/etc/docker/certs.d`` as this dockerd sees it."""
        return self.etc_docker / "certs.d"

    def start(
        self,
        daemon_json: dict[str, object] | None = None,
        *,
        netns: str | None = None,
        wrap: Sequence[str] = (),
    ) -> None:
        assert netns is not None
        self.certs_dir.mkdir(parents=True)
        # sh mounts the folder on /etc/docker in a mount namespace of its own,
        # then becomes dockerd; if the mount fails, dockerd never starts.
        private_etc = [
            *["unshare", "--mount", "--propagation", "private"],
            *["sh", "-c", 'mount --bind "$0" /etc/docker && exec "$@"', str(self.etc_docker)],
        ]
        super().start(daemon_json, netns=netns, wrap=[*wrap, *private_etc])

    def sees(self, path: str) -> bytes | None:
        """A file as this dockerd sees it (in its own mount namespace), or None."""
        shown = subprocess.run(
            ["nsenter", "-t", str(engine_pid(self)), "-m", "cat", path],
            capture_output=True,
            check=False,
        )
        return shown.stdout if shown.returncode == 0 else None


@dataclass
class EngineHost:
    """The remote engine host: sshd and dockerd in the second namespace."""

    namespace: NetworkNamespace
    ssh_dir: Path
    engine: EngineHostDocker

    @property
    def target(self) -> str:
        return f"root@{self.namespace.address}"

    def ssh_options(self) -> list[str]:
        return [
            "--ssh-command",
            "ssh -F /dev/null",
            f"--ssh-option=-oIdentityFile={self.ssh_dir / 'client'}",
            "--ssh-option=-oIdentitiesOnly=yes",
            f"--ssh-option=-oUserKnownHostsFile={self.ssh_dir / 'known_hosts'}",
            "--ssh-option=-oStrictHostKeyChecking=yes",
            "--ssh-option=-oBatchMode=yes",
        ]

    def files(self) -> list[str]:
        """The engine's files as paths on the engine host: never the system's."""
        return [
            "--root",
            str(self.engine.root / "system"),
            "--daemon-json",
            str(self.engine.config_file),
            "--docker-certs-dir",
            str(self.engine.certs_dir),
            "--docker-host",
            self.engine.host,
            "--docker",
            DOCKER_CLIENT,
        ]

    def reload(self) -> list[str]:
        return ["--reload", "--pidfile", str(self.engine.pidfile)]


def keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )


@contextmanager
def sshd_in(namespace: NetworkNamespace) -> Iterator[Path]:
    """A real sshd on port 22 of the namespace, for root with a key made here."""
    sshd = require(SSHD, "openssh-server")
    require("ssh", "openssh-client")
    folder = Path(tempfile.mkdtemp(prefix="reg-sshd-", dir="/tmp"))
    process = None
    try:
        keygen(folder / "host_key")
        keygen(folder / "client")
        shutil.copyfile(folder / "client.pub", folder / "authorized_keys")
        kind, key = (folder / "host_key.pub").read_text().split()[:2]
        (folder / "known_hosts").write_text(f"{namespace.address} {kind} {key}\n")
        (folder / "sshd_config").write_text(
            f"Port 22\nListenAddress {namespace.address}\nHostKey {folder / 'host_key'}\n"
            f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {folder / 'authorized_keys'}\n"
            "StrictModes no\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation folder
        with (folder / "sshd.log").open("wb") as log:
            process = subprocess.Popen(
                [*namespace.prefix(), sshd, "-D", "-e", "-f", str(folder / "sshd_config")],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + DEADLINE
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"sshd exited:\n{(folder / 'sshd.log').read_text()}")
            try:
                socket.create_connection((namespace.address, 22), timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("sshd does not listen") from None
                time.sleep(0.1)
        yield folder
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def registry_namespace() -> Iterator[NetworkNamespace]:
    with network_namespace() as namespace:
        yield namespace


@pytest.fixture(scope="module")
def engine_host(registry_namespace: NetworkNamespace) -> Iterator[EngineHost]:
    require("/usr/sbin/dockerd", "docker.io")
    require(DOCKER_CLIENT, "docker.io")
    require("unshare", "util-linux")
    require("nsenter", "util-linux")
    if os.geteuid() != 0:
        pytest.skip("dockerd, sshd and network namespaces need root")
    with ExitStack() as stack:
        namespace = stack.enter_context(network_namespace())
        stack.enter_context(routed(registry_namespace, namespace))
        ssh_dir = stack.enter_context(sshd_in(namespace))
        engine = EngineHostDocker(Path(tempfile.mkdtemp(prefix="reg-host-", dir="/tmp")))
        stack.callback(engine.stop)
        engine.start({"debug": False}, netns=namespace.name)
        engine.import_image(BUSYBOX_IMAGE, busybox_tar())
        yield EngineHost(namespace, ssh_dir, engine)


def serve(
    registry_factory: Callable[..., RegistryProcess],
    namespace: NetworkNamespace,
    host: EngineHost,
    **options: object,
) -> RegistryProcess:
    """A registry in ``namespace``, checked reachable from the engine host."""
    registry = registry_factory(addr=f"{namespace.address}:0", wrap=namespace.prefix(), **options)
    port = str(registry.port)
    probe = host.namespace.run(sys.executable, "-c", CONNECT, namespace.address, port, check=False)
    assert probe.returncode == 0, f"the engine host cannot reach the registry:\n{probe.stderr}"
    return registry


# --------------------------------------------------------------------------- tests


def test_insecure_add_over_ssh_lets_the_remote_engine_push(
    registry_factory: Callable[..., RegistryProcess],
    registry_namespace: NetworkNamespace,
    engine_host: EngineHost,
) -> None:
    registry = serve(registry_factory, registry_namespace, engine_host)
    entry = f"{registry_namespace.address}:{registry.port}"
    engine = engine_host.engine
    image = f"{entry}/e2e/remote:1"
    engine.docker("image", "tag", BUSYBOX_IMAGE, image)
    pid = engine_pid(engine)
    push_fails_over_https(engine, image)

    target = engine_host.target
    added = registry_engine(
        "insecure",
        "add",
        entry,
        "--ssh",
        target,
        *engine_host.ssh_options(),
        *engine_host.files(),
        *engine_host.reload(),
    )
    assert added.returncode == 0, output(added) + engine.log()[-3000:]
    assert f"[{target}] changed {engine.config_file}: added {entry} to insecure-registries" in (
        added.stdout
    )
    assert f"[{target}] sent SIGHUP to dockerd (pid {pid} from {engine.pidfile})" in added.stdout
    assert f"[{target}] docker info lists {entry} as insecure" in added.stdout
    assert added.stdout.endswith(f"{target}: ok\n"), added.stdout
    assert json.loads(engine.config_file.read_text()) == {
        "debug": False,
        "insecure-registries": [entry],
    }
    assert engine_pid(engine) == pid, "the engine was restarted, not reloaded"
    index = registry_config(engine)["IndexConfigs"]
    assert isinstance(index, dict) and index[entry]["Secure"] is False

    listed = registry_engine(
        "insecure", "list", "--ssh", target, *engine_host.ssh_options(), *engine_host.files()
    )
    assert listed.returncode == 0, output(listed)
    assert listed.stdout == f"[{target}] {entry}\n{target}: ok\n"

    push_pull_run(engine, image, "pushed from the engine host")
    assert '"PUT /v2/e2e/remote/manifests/1 HTTP/1.1" 201' in registry.log()

    # A host with no sshd first in the list: reported, and the other host is still done.
    nobody = f"root@{registry_namespace.address}:22"
    removed = registry_engine(
        "insecure",
        "remove",
        entry,
        "--ssh",
        nobody,
        "--ssh",
        target,
        *engine_host.ssh_options(),
        *engine_host.files(),
        *engine_host.reload(),
    )
    assert removed.returncode == 1, output(removed)
    assert f"[{nobody}] ssh: connect to host {registry_namespace.address} port 22" in (
        removed.stderr
    )
    assert f"[{target}] docker info no longer lists {entry} as insecure" in removed.stdout
    summary = removed.stdout.splitlines()[-2:]
    assert summary == [
        f"{nobody}: failed: ssh could not connect or run the command (exit 255)",
        f"{target}: ok",
    ], removed.stdout
    assert json.loads(engine.config_file.read_text()) == {
        "debug": False,
        "insecure-registries": [],
    }
    push_fails_over_https(engine, image)
    assert engine_pid(engine) == pid


def test_trust_over_ssh_installs_the_ca_the_remote_engine_verifies_with(
    registry_factory: Callable[..., RegistryProcess],
    registry_namespace: NetworkNamespace,
    engine_host: EngineHost,
    tmp_path: Path,
) -> None:
    tls_dir = tmp_path / "tls"
    registry = serve(
        registry_factory,
        registry_namespace,
        engine_host,
        args=["--tls", "--tls-dir", str(tls_dir), "--tls-host", registry_namespace.address],
    )
    entry = f"{registry_namespace.address}:{registry.port}"
    assert registry.url == f"https://{entry}"
    ca = tls_dir / "ca.crt"
    engine = engine_host.engine
    image = f"{entry}/e2e/trusted:1"
    engine.docker("image", "tag", BUSYBOX_IMAGE, image)
    refused = engine.docker("image", "push", image, check=False)
    assert refused.returncode != 0 and UNKNOWN_AUTHORITY in refused.stderr, refused.stderr

    target = engine_host.target
    trusted = registry_engine(
        "trust",
        entry,
        "--ca",
        str(ca),
        "--ssh",
        target,
        *engine_host.ssh_options(),
        *engine_host.files(),
    )
    assert trusted.returncode == 0, output(trusted)
    installed = engine.certs_dir / entry / "ca.crt"
    assert f"[{target}] created {installed}" in trusted.stdout, trusted.stdout
    assert trusted.stdout.endswith(f"{target}: ok\n"), trusted.stdout
    assert installed.read_bytes() == ca.read_bytes()
    assert installed.stat().st_mode & 0o777 == 0o644
    assert engine.sees(f"/etc/docker/certs.d/{entry}/ca.crt") == ca.read_bytes()

    # dockerd reads certs.d at every push and pull: no reload.
    push_pull_run(engine, image, "pushed over verified TLS")
    assert '"PUT /v2/e2e/trusted/manifests/1 HTTP/1.1" 201' in registry.log()

    removed = registry_engine(
        "trust",
        entry,
        "--remove",
        "--ssh",
        target,
        *engine_host.ssh_options(),
        *engine_host.files(),
    )
    assert removed.returncode == 0, output(removed)
    assert not installed.exists()
    assert engine.sees(f"/etc/docker/certs.d/{entry}/ca.crt") is None
    refused = engine.docker("image", "pull", image, check=False)
    assert refused.returncode != 0 and UNKNOWN_AUTHORITY in refused.stderr, refused.stderr
    assert PLAIN_HTTP_ERROR not in refused.stderr
