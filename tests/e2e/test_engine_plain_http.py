"""``registry engine`` against a real, private dockerd and a registry on a non-loopback address.

The registry serves plain HTTP from a network namespace, so the engine gets no localhost
exception: a push fails with Docker's classic message until ``registry engine insecure
add ... --reload`` puts the address (or a network holding it) in the engine's own
``daemon.json`` and makes the running dockerd re-read it (SIGHUP, same process). The
engine's files all live in a temporary folder; the system's ``/etc`` is never read or
written.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import RegistryProcess

from .conftest import DOCKER_CLIENT, DockerEngine, busybox_tar
from .needs import require
from .netns import NetworkNamespace

pytestmark = pytest.mark.e2e

PLAIN_HTTP_ERROR = "http: server gave HTTP response to HTTPS client"
NAMESPACES_NETWORK = "10.231.0.0/16"  # every address tests/e2e/netns.py hands out
BUSYBOX_IMAGE = "e2e/busybox:latest"


def registry_engine(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The ``registry engine`` command line, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    return subprocess.run(
        [sys.executable, "-m", "registry", "engine", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )


def engine_files(engine: DockerEngine) -> list[str]:
    """Options that point the tool at this engine's files, never the system's."""
    return [
        "--root",
        str(engine.root / "system"),
        "--daemon-json",
        str(engine.config_file),
        "--docker-host",
        engine.host,
        "--docker",
        DOCKER_CLIENT,
    ]


def reload_options(engine: DockerEngine) -> list[str]:
    return ["--reload", "--pidfile", str(engine.pidfile)]


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def engine_pid(engine: DockerEngine) -> int:
    assert engine.process is not None and engine.process.poll() is None, engine.log()[-3000:]
    pid = int(engine.pidfile.read_text().strip())
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd"
    return pid


def registry_config(engine: DockerEngine) -> dict[str, object]:
    config = json.loads(engine.docker("info", "--format", "{{json .RegistryConfig}}").stdout)
    assert isinstance(config, dict)
    return config


def insecure_registries_in_info(engine: DockerEngine) -> list[str]:
    """The ``Insecure Registries:`` section of plain ``docker info``, as a user reads it."""
    lines = engine.docker("info").stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "Insecure Registries:")
    entries = []
    for line in lines[start + 1 :]:
        if not line.startswith("  ") or line.rstrip().endswith(":"):
            break
        entries.append(line.strip())
    return entries


def push_fails_over_https(engine: DockerEngine, image: str) -> None:
    pushed = engine.docker("image", "push", image, check=False)
    assert pushed.returncode != 0, pushed.stdout
    assert PLAIN_HTTP_ERROR in pushed.stderr, pushed.stderr


def push_pull_run(engine: DockerEngine, image: str, words: str) -> str:
    """Push, forget, pull back and run ``image``; the digest the registry took."""
    pushed = engine.docker("image", "push", image)
    assert "digest: sha256:" in pushed.stdout, pushed.stdout
    digest = pushed.stdout.split("digest: ")[1].split()[0]
    engine.docker("image", "rm", image)
    assert engine.docker("image", "inspect", image, check=False).returncode != 0
    pulled = engine.docker("image", "pull", image)
    assert digest in pulled.stdout, pulled.stdout
    ran = engine.docker("run", "--rm", "--network", "none", image, "/bin/busybox", "echo", words)
    assert ran.stdout.strip() == words
    return digest


def fix_command(report: str) -> list[str]:
    """The command after ``fix:`` in a doctor report, split as a shell would."""
    fixes = [line.split("fix:", 1)[1] for line in report.splitlines() if "fix:" in line]
    assert len(fixes) == 1, report
    command = shlex.split(fixes[0])
    assert command[:2] == ["registry", "engine"], report
    return command[2:]


SYSTEM_PATHS = ("/etc/docker/daemon.json", "/etc/containerd", "/etc/containers", "/etc/ssh")


def system_state() -> dict[str, tuple[int, int]]:
    """Size and modification time of every file under the system paths the tool would use."""
    state = {}
    for top in map(Path, SYSTEM_PATHS):
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            stat = path.stat()
            state[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return state


@pytest.fixture(autouse=True)
def system_files_untouched() -> Iterator[None]:
    """Every path the tests use is a temporary one: the system's engine files stay as they were."""
    before = system_state()
    yield
    assert system_state() == before


@pytest.fixture
def private_engine() -> Iterator[DockerEngine]:
    """A dockerd of this test's own: its daemon.json, pid file and socket in a new folder."""
    require("/usr/sbin/dockerd", "docker.io")
    require(DOCKER_CLIENT, "docker.io")
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root")
    # A short path: the socket path must stay under the 108-byte limit.
    engine = DockerEngine(Path(tempfile.mkdtemp(prefix="reg-engine-", dir="/tmp")))
    try:
        engine.start({"debug": False})
        engine.import_image(BUSYBOX_IMAGE, busybox_tar())
        yield engine
    finally:
        engine.stop()


def test_insecure_add_lets_the_engine_push_over_plain_http_without_a_restart(
    registry_factory: Callable[..., RegistryProcess],
    netns: NetworkNamespace,
    private_engine: DockerEngine,
) -> None:
    registry = registry_factory(addr=f"{netns.address}:0", wrap=netns.prefix())
    entry = f"{netns.address}:{registry.port}"
    assert registry.url == f"http://{entry}"
    image = f"{entry}/e2e/plain:1"
    private_engine.docker("image", "tag", BUSYBOX_IMAGE, image)
    pid = engine_pid(private_engine)

    push_fails_over_https(private_engine, image)
    assert entry not in insecure_registries_in_info(private_engine)

    added = registry_engine(
        "insecure", "add", entry, *engine_files(private_engine), *reload_options(private_engine)
    )
    assert added.returncode == 0, output(added) + private_engine.log()[-3000:]
    assert f"added {entry} to insecure-registries" in added.stdout
    assert f"sent SIGHUP to dockerd (pid {pid} from {private_engine.pidfile})" in added.stdout
    assert f"docker info lists {entry} as insecure" in added.stdout
    assert json.loads(private_engine.config_file.read_text()) == {
        "debug": False,
        "insecure-registries": [entry],
    }
    assert engine_pid(private_engine) == pid, "the engine was restarted, not reloaded"
    assert entry in insecure_registries_in_info(private_engine)
    index = registry_config(private_engine)["IndexConfigs"]
    assert isinstance(index, dict) and index[entry]["Secure"] is False

    digest = push_pull_run(private_engine, image, "pushed over plain HTTP")
    assert '"PUT /v2/e2e/plain/manifests/1 HTTP/1.1" 201' in registry.log()
    assert engine_pid(private_engine) == pid

    removed = registry_engine(
        "insecure",
        "remove",
        entry,
        *engine_files(private_engine),
        *reload_options(private_engine),
    )
    assert removed.returncode == 0, output(removed)
    assert f"docker info no longer lists {entry} as insecure" in removed.stdout
    # An empty list, not a missing key: dockerd keeps its old list when the key is absent.
    assert json.loads(private_engine.config_file.read_text()) == {
        "debug": False,
        "insecure-registries": [],
    }
    assert entry not in insecure_registries_in_info(private_engine)
    push_fails_over_https(private_engine, image)
    pulled = private_engine.docker("image", "pull", f"{entry}/e2e/plain@{digest}", check=False)
    assert pulled.returncode != 0 and PLAIN_HTTP_ERROR in pulled.stderr, pulled.stderr
    assert engine_pid(private_engine) == pid


def test_a_network_in_insecure_registries_covers_the_registry_address(
    registry_factory: Callable[..., RegistryProcess],
    netns: NetworkNamespace,
    private_engine: DockerEngine,
    tmp_path: Path,
) -> None:
    registry = registry_factory(addr=f"{netns.address}:0", wrap=netns.prefix())
    entry = f"{netns.address}:{registry.port}"
    image = f"{entry}/e2e/network:1"
    private_engine.docker("image", "tag", BUSYBOX_IMAGE, image)
    pid = engine_pid(private_engine)
    push_fails_over_https(private_engine, image)

    added = registry_engine(
        "insecure",
        "add",
        NAMESPACES_NETWORK,
        *engine_files(private_engine),
        *reload_options(private_engine),
    )
    assert added.returncode == 0, output(added) + private_engine.log()[-3000:]
    assert f"docker info lists {NAMESPACES_NETWORK} as insecure" in added.stdout
    assert engine_pid(private_engine) == pid
    cidrs = registry_config(private_engine)["InsecureRegistryCIDRs"]
    assert isinstance(cidrs, list) and NAMESPACES_NETWORK in cidrs
    assert NAMESPACES_NETWORK in insecure_registries_in_info(private_engine)

    push_pull_run(private_engine, image, "pushed to a network declared insecure")

    doctor = registry_engine("doctor", entry, *engine_files(private_engine), cwd=tmp_path)
    assert doctor.returncode == 0, output(doctor)
    assert f"declares {NAMESPACES_NETWORK} insecure, which holds {netns.address}" in doctor.stdout
    assert doctor.stdout.rstrip().endswith("0 problems found"), doctor.stdout

    removed = registry_engine(
        "insecure",
        "remove",
        NAMESPACES_NETWORK,
        *engine_files(private_engine),
        *reload_options(private_engine),
    )
    assert removed.returncode == 0, output(removed)
    assert f"docker info no longer lists {NAMESPACES_NETWORK} as insecure" in removed.stdout
    push_fails_over_https(private_engine, image)
    assert engine_pid(private_engine) == pid


def test_doctor_names_the_plain_http_problem_and_the_command_that_fixes_it(
    registry_factory: Callable[..., RegistryProcess],
    netns: NetworkNamespace,
    private_engine: DockerEngine,
    tmp_path: Path,
) -> None:
    registry = registry_factory(addr=f"{netns.address}:0", wrap=netns.prefix())
    entry = f"{netns.address}:{registry.port}"
    files = engine_files(private_engine)

    def doctor() -> subprocess.CompletedProcess[str]:
        return registry_engine("doctor", entry, *files, cwd=tmp_path)

    before = doctor()
    assert before.returncode == 1, output(before)
    assert f"ok   GET http://{entry}/v2/ answers 200" in before.stdout
    assert f'Docker says: "{PLAIN_HTTP_ERROR}"' in before.stdout
    assert f"fix: registry engine insecure add {entry} --reload" in before.stdout
    assert before.stdout.rstrip().endswith("1 problem found"), before.stdout
    fix = fix_command(before.stdout)

    # The file alone is not enough: the running engine has not read it yet.
    written = registry_engine("insecure", "add", entry, *files)
    assert written.returncode == 0, output(written)
    assert "dockerd reads this on reload" in written.stdout
    image = f"{entry}/e2e/doctor:1"
    private_engine.docker("image", "tag", BUSYBOX_IMAGE, image)
    push_fails_over_https(private_engine, image)
    stale = doctor()
    assert stale.returncode == 1, output(stale)
    assert "the running dockerd does not (not reloaded yet)" in stale.stdout
    assert f"fix: registry engine insecure add {entry} --reload" in stale.stdout

    # The command doctor printed, with this engine's files, fixes it.
    fixed = registry_engine(*fix, *files, "--pidfile", str(private_engine.pidfile))
    assert fixed.returncode == 0, output(fixed)
    assert f"docker info lists {entry} as insecure" in fixed.stdout

    after = doctor()
    assert after.returncode == 0, output(after)
    assert f"the running dockerd treats {entry} as insecure" in after.stdout
    assert "FAIL" not in after.stdout
    assert after.stdout.rstrip().endswith("0 problems found"), after.stdout
    push_pull_run(private_engine, image, "doctor found nothing wrong")
