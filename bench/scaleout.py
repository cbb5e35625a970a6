"""Push and pull on a real S3 store (Ceph RADOS Gateway), one instance and three behind
haproxy, ours against Debian's Go registry (distribution 2.8.2), in one run, as ratios.

    python bench/scaleout.py [--size-mib 64] [--rounds 3 | --quick] [--duration 5]
                             [--workers 0] [--no-redirect] [--copy-threshold BYTES]
                             [--json FILE]

One Ceph cluster (mon, osd on a sparse file, radosgw: ``tests/services/ceph.py``),
one bucket; ours keeps to root ``/ours``, the Go registry to ``/go``. Each runs as
three instances on its root, every instance with ``storage.cache.blobdescriptor:
redis`` on a Redis of its own kind (two ``redis-server``, so neither reads the
other's answers); the three Go instances share one ``http.secret`` (their upload
state is signed with it). Each kind has a haproxy in front of its three instances,
round-robin per request (``tests/services/haproxy.py``), so the POST, the PATCHes
and the PUT of one upload land on different instances. "x1" measures instance 0
directly, "x3" through haproxy.

Measures, for each of ours x1, go x1, ours x3, go x3 in turn (interleaved, the
median of ``--rounds``): monolithic push of a new ``--size-mib`` blob (POST, then
one PUT with curl) MB/s; chunked push of another (PATCHes of 16 MiB with httpx)
MB/s; pull of that blob MB/s (curl following the 307 to the gateway's presigned
URL, as clients do; the best of 3 in a row); 8 images of 5 x 4 MiB layers pushed
at once (``bench/compare.py``'s concurrent push) MB/s; manifest GET by tag and by
digest requests/s (wrk, 32 connections). For each measure also the cores busy
(CPU seconds / wall seconds) of the registry instances, of the Ceph daemons and of
haproxy: what the rest of the 2 cores is left for the clients shows where the
bottleneck is. Everything runs on this machine: clients, registries, haproxy,
Redis and Ceph share its cores.

Every process started here dies with it (a parent-death signal) and is stopped
on exit and on Ctrl-C; configurations, with their keys, are files (0600) in a
``registry-bench-*`` folder, never arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.compare import (
    CHUNK_MIB,
    DOWNLOADS,
    REPO,
    chunked_upload_mbps,
    concurrent_push_mbps,
    curl_seconds,
    make_blob,
    upload_mbps,
    wrk_rps,
)
from bench.servers import Server, cpu_seconds_of, go, machine, ours, workdir
from tests.pushing import push_image
from tests.services.ceph import BINARIES, PACKAGES, CephS3, _dying_with_parent
from tests.services.haproxy import Haproxy
from tests.services.redis import RedisServer

BUCKET = "registry-bench"
KINDS = ("ours", "go")
INSTANCES = 3
CONNECTIONS = 32
#: Measures, in the order of the table, with their units.
MEASURES = {
    "push_MBps": "monolithic push (POST+PUT), MB/s",
    "chunked_push_MBps": f"chunked push ({CHUNK_MIB} MiB PATCHes), MB/s",
    "pull_MBps": "pull (redirect followed), MB/s",
    "concurrent_push_MBps": "8 concurrent pushes, MB/s",
    "manifest_get_tag_rps": f"manifest GET by tag, c={CONNECTIONS}, req/s",
    "manifest_get_digest_rps": f"manifest GET by digest, c={CONNECTIONS}, req/s",
}
#: Process groups whose busy cores are reported per measure.
GROUPS = ("registry", "ceph", "haproxy")


class Gateway(CephS3):
    """The tests' Ceph with a larger (sparse) OSD file: a full run writes about 7 GB,
    uploads and their copies into place, and the gateway frees overwritten data only
    after a minute; 10 GiB would come close to the OSD's full ratio."""

    SIZE = "bluestore block size = 10737418240"

    def _config(self, fsid: str) -> str:
        text = super()._config(fsid)
        assert self.SIZE in text, "tests/services/ceph.py changed its OSD size line"
        return text.replace(self.SIZE, f"bluestore block size = {40 * 2**30}")


@dataclass
class Deployment:
    """Three instances of one kind on one root, and the haproxy in front of them."""

    kind: str
    instances: list[Server]
    front: Haproxy

    def target(self, count: int) -> Server:
        """What the clients talk to: instance 0, or (count 3) haproxy, as a
        :class:`Server` without a process (the measures only need its URL)."""
        if count == 1:
            return self.instances[0]
        return Server(f"{self.kind}-haproxy", [], self.front.port, self.front.base)

    def pids(self) -> list[int]:
        return [server.process.pid for server in self.instances if server.process]

    def front_pids(self) -> list[int]:
        return [self.front.process.pid] if self.front.process else []


def _private(path: Path, change: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Make a config file readable by its owner only, after changing it if asked."""
    if change is not None:
        settings = yaml.safe_load(path.read_text())
        change(settings)
        path.write_text(yaml.safe_dump(settings))
    path.chmod(0o600)


def _instance(
    kind: str,
    folder: Path,
    storage: dict[str, object],
    redis: RedisServer,
    workers: int,
    secret: str,
) -> Server:
    folder.mkdir()
    extra: dict[str, object] = {
        "storage": storage,
        "redis": {"addr": redis.addr, "password": redis.password},
    }
    if kind == "ours":
        server = ours(folder, workers, extra=extra)
        _private(folder / "ours.yml")
    else:
        server = go(folder, extra=extra)

        def shared_secret(settings: dict[str, Any]) -> None:
            # Upload state (the _state query) is signed with it: every instance the
            # PATCHes of one upload reach must know the same.
            settings["http"]["secret"] = secret

        _private(folder / "go.yml", shared_secret)
    server.command = _dying_with_parent(tuple(server.command))
    return server


def _storage(
    gateway: CephS3, kind: str, redirect: bool, copy_threshold: int | None
) -> dict[str, object]:
    parameters = gateway.driver_parameters(BUCKET, f"/{kind}")
    if copy_threshold is not None:
        parameters["multipartcopythresholdsize"] = copy_threshold
    if kind == "go":
        parameters.pop("forcepathstyle")  # 2.8.2 has no such key; by path anyway.
    return {
        "s3": parameters,
        "delete": {"enabled": True},
        "redirect": {"disable": not redirect},
        "cache": {"blobdescriptor": "redis"},
    }


def pull_mbps(target: Server, digest: str, size: int) -> float:
    """The best of DOWNLOADS in a row, redirects followed (curl -L)."""
    url = f"{target.url}/v2/{REPO}/blobs/{digest}"
    return max(size / curl_seconds(["-L", url]) / 1e6 for _ in range(DOWNLOADS))


def busy(groups: dict[str, list[int]], work: Callable[[], float]) -> tuple[float, dict[str, float]]:
    """``work()``'s result, and the cores each group of processes kept busy meanwhile."""
    before = {name: cpu_seconds_of(*pids) for name, pids in groups.items()}
    started = time.perf_counter()
    value = work()
    wall = time.perf_counter() - started
    return value, {
        name: (cpu_seconds_of(*pids) - before[name]) / wall for name, pids in groups.items()
    }


def measure(
    target: Server, groups: dict[str, list[int]], folder: Path, size: int, duration: int
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Every measure once against ``target``; each push sends content never sent before."""
    figures: dict[str, float] = {}
    cores: dict[str, dict[str, float]] = {}

    def run(name: str, work: Callable[[], float]) -> None:
        figures[name], cores[name] = busy(groups, work)

    blob = folder / "blob"
    digest = make_blob(blob, size)
    run("push_MBps", lambda: upload_mbps(target, blob, digest, REPO, {}))
    digest = make_blob(blob, size)
    run("chunked_push_MBps", lambda: chunked_upload_mbps(target, blob, digest, REPO, {}))
    run("pull_MBps", lambda: pull_mbps(target, digest, size))
    run("concurrent_push_MBps", lambda: concurrent_push_mbps(target, {}))
    with httpx.Client(base_url=target.url, timeout=60) as client:
        manifest_digest, _ = push_image(client, REPO, "latest")
    for name, reference in (
        ("manifest_get_tag_rps", "latest"),
        ("manifest_get_digest_rps", manifest_digest),
    ):
        url = f"{target.url}/v2/{REPO}/manifests/{reference}"
        run(name, functools.partial(wrk_rps, url, CONNECTIONS, duration, {}))
    return figures, cores


@contextlib.contextmanager
def deployments(
    folder: Path, workers: int, redirect: bool, copy_threshold: int | None = None
) -> Iterator[tuple[Gateway, dict[str, Deployment]]]:
    """The gateway with its bucket, and both kinds deployed; everything stopped after."""
    with contextlib.ExitStack() as stack:
        gateway = Gateway(folder / "ceph")
        stack.callback(gateway.stop)
        gateway.start()
        with contextlib.closing(gateway.client()) as client:
            client.create_bucket(Bucket=BUCKET)
        secret = secrets.token_hex(32)
        deployed: dict[str, Deployment] = {}
        for kind in KINDS:
            redis = RedisServer(folder / f"{kind}-redis")
            stack.callback(redis.stop)
            redis.start()
            instances = []
            for index in range(INSTANCES):
                server = _instance(
                    kind,
                    folder / f"{kind}-{index}",
                    _storage(gateway, kind, redirect, copy_threshold),
                    redis,
                    workers,
                    secret,
                )
                stack.callback(server.stop)
                instances.append(server.start())
            front = Haproxy(folder / f"{kind}-haproxy", [f"127.0.0.1:{s.port}" for s in instances])
            stack.callback(front.stop)
            front.start()
            deployed[kind] = Deployment(kind, instances, front)
        yield gateway, deployed


def logs(folder: Path) -> str:
    """The end of every registry instance's log: what a failure left there."""
    found = []
    for path in sorted(folder.glob("*-[0-9]/*.log")):
        text = path.read_text(errors="replace").strip()
        if text:
            found.append(f"--- {path.relative_to(folder)}\n{text[-3000:]}")
    return "\n".join(found)


def table(medians: dict[str, dict[str, float]]) -> list[str]:
    lines = [
        "| measure | ours x1 | go x1 | ours/go x1 | ours x3 | go x3 | ours/go x3 "
        "| ours x3/x1 | go x3/x1 |",
        "|---|" + "---:|" * 8,
    ]
    for key, label in MEASURES.items():
        cells = []
        for count in (1, 3):
            mine, theirs = medians[f"ours x{count}"][key], medians[f"go x{count}"][key]
            cells += [f"{mine:,.0f}", f"{theirs:,.0f}", f"{mine / theirs:.2f}"]
        for kind in KINDS:
            cells.append(f"{medians[f'{kind} x3'][key] / medians[f'{kind} x1'][key]:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def cores_table(cores: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    labels = list(cores)
    lines = [
        "| cores busy: " + " / ".join(GROUPS) + " | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for key, label in MEASURES.items():
        cells = [" / ".join(f"{cores[e][key][g]:.2f}" for g in GROUPS) for e in labels]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _version(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).strip().splitlines()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=64, help="blob size of the pushes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--workers", type=int, default=0, help="our workers per instance")
    parser.add_argument(
        "--no-redirect",
        action="store_true",
        help="storage.redirect.disable on both: blob GETs stream through the registry",
    )
    parser.add_argument(
        "--copy-threshold",
        type=int,
        help="storage.s3.multipartcopythresholdsize on both (bytes; default: the drivers' 32 MiB)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    for tool in ("curl", "wrk", "haproxy", "redis-server", "docker-registry", *BINARIES):
        if shutil.which(tool) is None:
            raise SystemExit(
                f"{tool} not found: apt-get install curl wrk haproxy redis-server "
                f"docker-registry {PACKAGES} python3-rados"
            )
    # The Go registry's S3 driver crashes at start with it (docs: DESIGN.md).
    os.environ.pop("AWS_CA_BUNDLE", None)
    # SIGTERM unwinds like Ctrl-C: every process started here is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    size = args.size_mib * 2**20
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} at start")
    print(f"gateway: {_version(['radosgw', '--version'])}")
    print(f"go: {_version(['docker-registry', '--version'])}", flush=True)
    started = time.monotonic()
    results: dict[str, dict[str, list[float]]] = {}
    busy_cores: dict[str, dict[str, list[dict[str, float]]]] = {}
    folder = workdir()
    try:
        with deployments(folder, args.workers, not args.no_redirect, args.copy_threshold) as (
            gateway,
            deployed,
        ):
            print(f"up in {time.monotonic() - started:.0f} s", flush=True)
            ceph = [process.pid for process in gateway.processes.values()]
            for round_number in range(rounds):
                for count in (1, 3):
                    for kind, deployment in deployed.items():
                        label = f"{kind} x{count}"
                        groups = {
                            "registry": deployment.pids(),
                            "ceph": ceph,
                            "haproxy": deployment.front_pids() if count == 3 else [],
                        }
                        try:
                            figures, cores = measure(
                                deployment.target(count), groups, folder, size, args.duration
                            )
                        except Exception:
                            print(f"{label} failed; instance logs:\n{logs(folder)}", flush=True)
                            raise
                        print(
                            f"round {round_number + 1} {label}: {json.dumps(figures)}", flush=True
                        )
                        for key, value in figures.items():
                            results.setdefault(label, {}).setdefault(key, []).append(value)
                            busy_cores.setdefault(label, {}).setdefault(key, []).append(cores[key])
            print(f"instance logs (warnings and errors):\n{logs(folder) or '(empty)'}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    medians = {
        label: {key: statistics.median(values) for key, values in figures.items()}
        for label, figures in results.items()
    }
    median_cores = {
        label: {
            key: {g: statistics.median(c[g] for c in samples) for g in GROUPS}
            for key, samples in measures.items()
        }
        for label, measures in busy_cores.items()
    }
    print(
        f"\nmedian of {rounds} round(s), {args.size_mib} MiB blobs, wrk {args.duration}s, "
        f"redirect {'off' if args.no_redirect else 'on'}, our workers per instance "
        f"{args.workers or os.cpu_count()}, copy threshold "
        f"{args.copy_threshold or 'default'}, {time.monotonic() - started:.0f} s in all\n"
    )
    print("\n".join(table(medians)))
    print()
    print("\n".join(cores_table(median_cores)))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "median": medians,
                    "rounds": results,
                    "cores_busy": median_cores,
                    "args": vars(args),
                },
                default=str,
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
