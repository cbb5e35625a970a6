"""Crash points: the server killed at each of the renames a push makes, one after the other.

Every file the store writes reaches its name by a rename (a blob from its
upload session, a link or a manifest from a temporary), so the renames are
the moments where what a reader sees changes. A reference push under
``strace`` lists them; then, for each one, the push is made again on a copy of
the same storage with ``strace`` killing the server (SIGKILL) as it enters
that rename, the server is started again, and the invariants are checked as
after a random kill (tests/faults/test_crash.py): what answers is whole, the
cut session resumes or is unknown, the client's retry succeeds.

``FAULT_CRASH_POINTS=all``: a bigger push (an index, a moving tag, every
upload method), and the server also killed at each ``mkdir``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import RegistryProcess
from tests.e2e.needs import require
from tests.faults.clients import ACCEPT, Blob, Image, Job, Layer, Ledger, Pusher
from tests.faults.durability import attach_strace, serving_pid
from tests.faults.invariants import StoreChecker
from tests.pushing import DOCKER_LIST, DOCKER_MANIFEST, OCI_MANIFEST

Factory = Callable[..., RegistryProcess]
FULL = os.environ.get("FAULT_CRASH_POINTS") == "all"
CALLS = ("rename", "mkdir") if FULL else ("rename",)
SOURCE = "crash/b"
SHARED = Blob.of(b"a layer another repository holds: mounted" * 1000)
REPO = "crash/a"


@pytest.fixture(autouse=True, scope="module")
def _needs_strace() -> None:
    require("strace", "strace")  # A failure in CI (E2E_REQUIRED=1), else a skip.


def _job() -> Job:
    rng = random.Random(7)
    layer = Blob.of(rng.randbytes(300_000))
    config = Blob.of(b'{"architecture": "amd64", "os": "linux"}')
    image = Image(
        config, (Layer(SHARED, "mount"), Layer(layer, "chunked", 100_000, True)), OCI_MANIFEST
    )
    if not FULL:
        return Job(REPO, "v1", (image,))
    other = Image(
        Blob.of(b'{"architecture": "arm64", "os": "linux"}'),
        (Layer(Blob.of(rng.randbytes(50_000)), "put"), Layer(layer, "monolithic")),
        OCI_MANIFEST,
    )
    docker = Image(
        Blob.of(b'{"architecture": "s390x", "os": "linux"}'),
        (Layer(Blob.of(rng.randbytes(20_000)), "chunked", 7_000),),
        DOCKER_MANIFEST,
    )
    return Job(REPO, "v1", (image, other, docker), DOCKER_LIST, also_shared_tag=True)


def _config(root: Path) -> dict[str, object]:
    return {
        "storage": {
            "filesystem": {"rootdirectory": str(root)},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "log": {"accesslog": {"disabled": True}},
    }


@dataclass(frozen=True)
class CrashPoint:
    call: str
    nth: int
    """Killed entering the nth such call of the server's main thread."""
    path: str
    """What that call would have made (a rename's target), below the storage root."""

    def __str__(self) -> str:
        return f"{self.call} #{self.nth} -> {self.path}"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Storage where another repository holds the blob the push mounts."""
    workdir = tmp_path_factory.mktemp("crash-points-template")
    server = RegistryProcess(workdir, _config(workdir / "storage")).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            Pusher(0, 0, Ledger(), []).push_blob(client, SOURCE, Layer(SHARED, "monolithic"))
    finally:
        server.stop()
    yield workdir / "storage"


def _storage(template: Path, where: Path) -> Path:
    shutil.copytree(template, where)
    return where


def _pusher() -> Pusher:
    ledger = Ledger()
    ledger.holders[SHARED.digest] = {SOURCE}
    pusher = Pusher(0, 0, ledger, [])
    pusher.job = _job()
    return pusher


@pytest.fixture(scope="module")
def crash_points(template: Path, tmp_path_factory: pytest.TempPathFactory) -> list[CrashPoint]:
    """Every rename (and, in full mode, mkdir) of the push, from a run that is not cut."""
    workdir = tmp_path_factory.mktemp("crash-points-reference")
    root = _storage(template, workdir / "storage")
    trace = workdir / "strace.txt"
    server = RegistryProcess(workdir, _config(root)).start()
    tracer = attach_strace(server, CALLS, "-f", "-o", str(trace))
    main = serving_pid(server)
    try:
        pusher = _pusher()
        assert pusher.job is not None
        with httpx.Client(base_url=server.url, timeout=60) as client:
            pusher.push(client, pusher.job)
    finally:
        tracer.terminate()  # Detaches: the server goes on.
        tracer.wait(timeout=60)
        server.stop()
    points = []
    counts = dict.fromkeys(CALLS, 0)
    for line in trace.read_text().splitlines():
        found = re.match(r'(\d+)\s+(\w+)\("([^"]*)"(?:, "([^"]*)")?', line)
        if found is None or found.group(2) not in CALLS:
            continue
        tid, call, first, second = found.groups()
        # strace counts calls per thread: the store's must all be in the event loop's thread.
        assert int(tid) == main, f"{call} in thread {tid}, not the main thread {main}: {line}"
        counts[call] += 1
        target = second if call == "rename" else first
        if target.startswith(str(root)) and "= -1" not in line:
            points.append(CrashPoint(call, counts[call], target[len(str(root)) :]))
    assert points, trace.read_text()
    print(f"\n{len(points)} crash points")
    return points


def _cut_push(factory: Factory, root: Path, point: CrashPoint) -> tuple[RegistryProcess, Pusher]:
    """The push, with the server killed as it enters ``point``; then the server started again."""
    server = factory(_config(root), workers=1)
    address = server.url.split("://", 1)[1]
    inject = f"inject={point.call}:signal=SIGKILL:when={point.nth}"
    tracer = attach_strace(server, CALLS, "-e", inject, "-o", "/dev/null")
    try:
        pusher = _pusher()
        assert pusher.job is not None
        with (
            httpx.Client(base_url=server.url, timeout=60) as client,
            pytest.raises(httpx.TransportError),
        ):
            pusher.push(client, pusher.job)
        assert server.process is not None
        server.process.wait(timeout=60)
    finally:
        if tracer.poll() is None and server.process is not None and server.process.poll() is None:
            tracer.terminate()  # Not cut: detach, the fixture stops the server.
        tracer.wait(timeout=60)  # Else it ends with the server it traced.
    server.start(addr=address)
    return server, pusher


def _check(server: RegistryProcess, root: Path, pusher: Pusher) -> list[str]:
    checker = StoreChecker(root, pusher.ledger)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        violations = checker.check_acknowledged(client) + checker.check_store(client)
        try:
            pusher.recover(client)
        except (AssertionError, httpx.HTTPError) as error:
            violations.append(f"the client's retry: {error!r}")
        checker.verified.clear()
        violations += checker.check_acknowledged(client) + checker.check_store(client)
        job = _job()
        tagged = client.head(f"/v2/{job.repo}/manifests/{job.tag}", headers={"Accept": ACCEPT})
        if tagged.headers.get("Docker-Content-Digest") is None:
            violations.append(f"after the retry, {job.tag} answers {tagged.status_code}")
    return violations


def test_the_server_killed_at_every_rename_of_a_push(
    registry_factory: Factory, crash_points: list[CrashPoint], template: Path, tmp_path: Path
) -> None:
    violations = []
    for number, point in enumerate(crash_points):
        root = _storage(template, tmp_path / f"storage-{number}")
        server, pusher = _cut_push(registry_factory, root, point)
        violations += [f"killed at {point}: {found}" for found in _check(server, root, pusher)]
        server.stop()
        shutil.rmtree(root)
    print(f"{len(crash_points)} crash points")
    assert not violations, "\n".join(violations)


def test_a_tag_cut_between_its_links_is_not_listed(
    registry_factory: Factory, crash_points: list[CrashPoint], template: Path, tmp_path: Path
) -> None:
    current = f"/_manifests/tags/{_job().tag}/current/link"
    point = next(point for point in crash_points if point.path.endswith(current))
    root = _storage(template, tmp_path / "storage")
    server, _ = _cut_push(registry_factory, root, point)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        listed = client.get(f"/v2/{REPO}/tags/list").json()["tags"] or []
        answer = client.head(f"/v2/{REPO}/manifests/{_job().tag}", headers={"Accept": ACCEPT})
    assert _job().tag not in listed or answer.status_code == 200, (
        f"tags/list lists {listed}; HEAD {_job().tag} answers {answer.status_code}"
    )
