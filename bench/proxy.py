"""The pull-through cache against a direct pull from the upstream and against Debian's Go
registry (distribution 2.8.2) in proxy mode, in one run, as ratios.

    python bench/proxy.py [--layers 4] [--layer-mib 32] [--rounds 3 | --quick]
                          [--duration 5] [--workers 0] [--upstream-auth token|none]
                          [--upstream-link RATE] [--json FILE]

The upstream is a Go registry holding one image (``--layers`` layers of ``--layer-mib``
MiB of random data and a config, pushed here). With ``--upstream-auth token`` (the
default) it asks for a Bearer token as Docker Hub does: the tokens come from our
registry's token service (a fourth process), signed in to with a username and password
from an htpasswd file. Basic (htpasswd) is not an option: 2.8.2 in proxy mode follows
only a Bearer upstream. In front of it: ours with registry:2's ``proxy`` section and a
Go registry with the same section, each with storage of its own; both sign in with the
same username and password, kept in their config files (0600), never in arguments.

Measures, each round (median of ``--rounds``), every proxy on a fresh cache folder:

1. cold pull (every blob a miss) through ours, through the Go proxy, and directly from
   the upstream (token fetched as part of the pull): manifest by tag with httpx, then
   the config and the layers with curl, 3 at a time as docker does; MB/s of manifest
   and blobs over the whole pull; MB/s until the proxy's storage holds every blob
   (2.8.2 stores a miss with a second upstream transfer in the background, which goes
   on after its client is served; the run waits for it, and for the upstream to be
   idle, before the next measure); the proxy's CPU seconds over that time (direct:
   the upstream's);
2. warm pull (every blob a hit) of the same image through ours and the Go proxy;
3. 8 clients pulling the cold image at once (fresh caches again), MB/s of all their
   content; and how many blob GETs each proxy sent upstream (the upstream's access
   log): a single-flight proxy sends one per blob;
4. manifest GET by tag, wrk with 32 connections: through the Go proxy (2.8.2 asks
   upstream on every tag pull), ours with ``ttl: 0`` (asks with a HEAD every time, as
   registry:2) and ours with ``ttl: 10m`` (trusts the tag it stored).

Besides the table of medians, it prints each round's own cold-pull ratios (ours against
the others measured in that round, seconds apart) and their median: on a machine whose
load moves, steadier than the ratio of medians.

``--upstream-link 1gbit`` (any rate ``tc`` reads) puts the upstream behind a link of
that rate, as a hub is behind the internet: the run goes on in a network namespace of
its own (``unshare --net``, so as root), whose loopback shapes what the upstream's port
sends (an ``htb`` class); the direct pull and both proxies' upstream transfers share
that rate, what the proxies send their clients does not. No added latency (this
machine's kernel has no ``netem``).

Everything runs on this machine: clients, upstream, token service and proxies share
its cores. Every process started here dies with it (a parent-death signal) and is
stopped on exit and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.compare import PASSWORD, REPO, SERVICE, USER, access_config, wrk_rps
from bench.servers import Server, free_port, go, machine, ours, workdir
from tests.pushing import ACCEPT_MANIFESTS, push_image
from tests.services.ceph import _dying_with_parent

TAG = "latest"
CONNECTIONS = 32
CLIENTS = 8
PARALLEL = 3
#: Cold and warm pulls, in the order of the table: (measure, unit), and who takes part.
PULLS = {
    "cold_pull_MBps": "cold pull, MB/s",
    "cold_stored_MBps": "cold pull until the cache holds every blob, MB/s",
    "cold_pull_cpu_s": "CPU s of one cold pull (proxy; direct: upstream)",
    "warm_pull_MBps": "warm pull, MB/s",
    "cold_pull_x8_MBps": f"{CLIENTS} clients, cold, MB/s (all content)",
    "manifest_tag_rps": f"manifest GET by tag, c={CONNECTIONS}, req/s",
}
#: Columns: ours (ttl 0), ours with ttl 10m (only the tag GETs), the Go proxy, direct.
COLUMNS = ("ours", "ours ttl 10m", "go proxy", "direct")


#: Set in the environment of the run that :func:`own_network` started in a namespace.
NAMESPACED = "BENCH_PROXY_NAMESPACED"  # Not REGISTRY_*: both registries read those.


def own_network() -> None:
    """Run this benchmark again in a network namespace of its own, with loopback up."""
    if os.environ.get(NAMESPACED) == "1":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("tc") is None:
        raise SystemExit("--upstream-link needs root, unshare and tc (apt-get install iproute2)")
    sys.stdout.flush()
    command = ["unshare", "--net", sys.executable, *sys.argv]
    os.execvpe("unshare", command, {**os.environ, NAMESPACED: "1"})


def shape(port: int, rate: str) -> None:
    """What the loopback sends from ``port`` goes at ``rate`` at most; the rest unshaped
    (``htb`` sends unclassified packets directly)."""

    def tc(*words: str) -> None:
        subprocess.run(["tc", *words], check=True, capture_output=True)

    tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb")
    tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:1", "htb", "rate", rate)
    match = ["u32", "match", "ip", "sport", str(port), "0xffff", "flowid", "1:1"]
    tc("filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", *match)


class Upstream:
    """The Go registry holding the image, with its token service (or none)."""

    def __init__(self, folder: Path, mode: str) -> None:
        self.mode = mode
        self.folder = folder
        token_port = free_port()
        ours_auth, go_auth = access_config(mode, folder, token_port)
        self.go = _guarded(go(_mkdir(folder / "upstream"), access_log=True, extra=go_auth))
        self.token = (
            _guarded(ours(_mkdir(folder / "token"), 1, extra=ours_auth, port=token_port))
            if mode == "token"
            else None
        )

    @property
    def url(self) -> str:
        return self.go.url

    def servers(self) -> list[Server]:
        return [self.go, *([self.token] if self.token else [])]

    def authorization(self, scope: str = "pull") -> dict[str, str]:
        """What a client that signs in sends: a fresh token, as a ``docker pull`` gets."""
        if self.token is None:
            return {}
        reply = httpx.get(
            f"{self.token.url}/token",
            params={"service": SERVICE, "scope": f"repository:{REPO}:{scope}"},
            auth=(USER, PASSWORD),
        )
        reply.raise_for_status()
        return {"Authorization": f"Bearer {reply.json()['token']}"}

    def blob_gets(self) -> int:
        """Blob GETs the upstream answered with content so far (its access log)."""
        text = (self.go.workdir / "go.log").read_text(errors="replace")
        return len(re.findall(r'"GET /v2/[^ ]+/blobs/sha256:[0-9a-f]+ HTTP/[0-9.]+" 200 ', text))

    def manifest_requests(self) -> int:
        text = (self.go.workdir / "go.log").read_text(errors="replace")
        return len(re.findall(r'"(?:GET|HEAD) /v2/[^ ]+/manifests/[^ ]+ HTTP/[0-9.]+" 200 ', text))


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _guarded(server: Server) -> Server:
    """Config readable by its owner only (it may hold a password); dies with us."""
    for name in ("ours.yml", "go.yml"):
        with contextlib.suppress(FileNotFoundError):
            (server.workdir / name).chmod(0o600)
    server.command = _dying_with_parent(tuple(server.command))
    return server


def proxy(kind: str, folder: Path, upstream: Upstream, workers: int, ttl: str | int = 0) -> Server:
    """A proxy of ``kind`` on ``folder`` (its storage stays there: a second proxy on the
    same folder finds the cache of the first)."""
    section: dict[str, object] = {"remoteurl": upstream.url}
    if upstream.mode == "token":
        section |= {"username": USER, "password": PASSWORD}
    if kind == "ours":
        return _guarded(ours(folder, workers, extra={"proxy": {**section, "ttl": ttl}}))
    return _guarded(go(folder, extra={"proxy": section}))


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[None]:
    try:
        for server in servers:
            server.start()
        yield
    finally:
        for server in servers:
            server.stop()


def _fetch(url: str, size: int, header_file: Path | None) -> None:
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-L",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            *(["-H", f"@{header_file}"] if header_file else []),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    status, received = result.stdout.split()
    if status != "200" or int(received) != size:
        raise RuntimeError(f"curl got HTTP {status}, {received} of {size} bytes: {url}")


def pull(base: str, sign_in: Callable[[], dict[str, str]], folder: Path) -> tuple[float, int]:
    """Seconds and bytes of one pull of REPO:TAG as an engine does it: (token,) manifest
    by tag, then the config and the layers, PARALLEL at a time."""
    started = time.perf_counter()
    headers = {**ACCEPT_MANIFESTS, **sign_in()}
    header_file: Path | None = None
    if "Authorization" in headers:
        header_file = folder / f"auth-{os.getpid()}-{time.perf_counter_ns()}"
        header_file.touch(0o600)
        header_file.write_text(f"Authorization: {headers['Authorization']}\n")
    try:
        answer = httpx.get(f"{base}/v2/{REPO}/manifests/{TAG}", headers=headers, timeout=300)
        answer.raise_for_status()
        manifest = answer.json()
        blobs = [manifest["config"], *manifest["layers"]]
        with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
            futures = [
                pool.submit(_fetch, f"{base}/v2/{REPO}/blobs/{b['digest']}", b["size"], header_file)
                for b in blobs
            ]
            for future in futures:
                future.result()
        seconds = time.perf_counter() - started
    finally:
        if header_file is not None:
            header_file.unlink()
    return seconds, len(answer.content) + sum(b["size"] for b in blobs)


def pull_mbps(base: str, sign_in: Callable[[], dict[str, str]], folder: Path) -> float:
    seconds, size = pull(base, sign_in, folder)
    return size / seconds / 1e6


def pulls_mbps(
    base: str, sign_in: Callable[[], dict[str, str]], folder: Path, clients: int
) -> float:
    """MB/s of all content of ``clients`` pulls of the same image started at once."""
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        sizes = list(pool.map(lambda _: pull(base, sign_in, folder)[1], range(clients)))
    return sum(sizes) / (time.perf_counter() - started) / 1e6


def anonymous() -> dict[str, str]:
    return {}


def storage_root(server: Server) -> Path:
    """The proxy's storage folder (``bench/servers.py`` puts it there)."""
    return server.workdir / ("ours-data" if server.name == "ours" else "go-data")


def stored(root: Path, digests: list[str]) -> bool:
    """Every blob is in the cache (registry:2's layout, which both write)."""
    blobs = root / "docker/registry/v2/blobs/sha256"
    return all((blobs / d[7:9] / d[7:] / "data").is_file() for d in digests)


def settle(upstream: Upstream, root: Path | None, digests: list[str], started: float) -> float:
    """Wait until the cache holds every blob and the upstream has been idle for half a
    second; the seconds from ``started`` until every blob was stored. 2.8.2 answers a
    miss with one upstream transfer and stores the blob with a second one in the
    background, which goes on after its client has its bytes: the next measure must not
    pay for it, and the upstream requests counted must include it."""
    deadline = time.monotonic() + 120
    while root is not None and not stored(root, digests):
        if time.monotonic() > deadline:
            raise RuntimeError(f"blobs not stored in {root} after 120 s")
        time.sleep(0.01)
    done = time.perf_counter() - started
    log = upstream.go.workdir / "go.log"
    size, quiet_since = log.stat().st_size, time.monotonic()
    while time.monotonic() - quiet_since < 0.5 and time.monotonic() < deadline:
        time.sleep(0.05)
        if log.stat().st_size != size:
            size, quiet_since = log.stat().st_size, time.monotonic()
    return done


def cold(
    column: str,
    server: Server,
    upstream: Upstream,
    digests: list[str],
    folder: Path,
    clients: int,
) -> tuple[float, float, float, int]:
    """A cold pull by ``clients`` at once: (MB/s of the clients, MB/s until the cache
    holds every blob, CPU seconds of the server, upstream blob GETs)."""
    direct = column == "direct"
    sign_in = upstream.authorization if direct else anonymous
    before, cpu = upstream.blob_gets(), server.cpu_seconds()
    started = time.perf_counter()
    if clients == 1:
        seconds, size = pull(server.url, sign_in, folder)
        mbps = size / seconds / 1e6
    else:
        mbps = pulls_mbps(server.url, sign_in, folder, clients)
        size = 0
    until_stored = settle(upstream, None if direct else storage_root(server), digests, started)
    return (
        mbps,
        size / until_stored / 1e6,
        server.cpu_seconds() - cpu,
        upstream.blob_gets() - before,
    )


def one_round(
    number: int,
    folder: Path,
    upstream: Upstream,
    digests: list[str],
    workers: int,
    duration: int,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    """Every measure once; (figures by column, upstream requests by proxy)."""
    figures: dict[str, dict[str, float]] = {column: {} for column in COLUMNS}
    upstream_requests: dict[str, dict[str, int]] = {"ours": {}, "go proxy": {}}
    base = folder / f"round-{number}"
    first = {"ours": proxy("ours", _mkdir(base / "ours"), upstream, workers)}
    first["go proxy"] = proxy("go", _mkdir(base / "go"), upstream, workers)
    # Each round starts with another: the first pull of a round finds the most idle
    # machine (the wrk runs of the round before have ended just now).
    shift = number % 3
    with running(*first.values()):
        order = [*first.items(), ("direct", upstream.go)]
        for column, server in order[shift:] + order[:shift]:
            mbps, until_stored, cpu, gets = cold(column, server, upstream, digests, folder, 1)
            figures[column] |= {"cold_pull_MBps": mbps, "cold_pull_cpu_s": cpu}
            if column != "direct":
                figures[column]["cold_stored_MBps"] = until_stored
                upstream_requests[column]["cold_blob_gets"] = gets
        for column, server in first.items():
            before = upstream.blob_gets()
            figures[column]["warm_pull_MBps"] = pull_mbps(server.url, anonymous, folder)
            settle(upstream, None, digests, 0)
            upstream_requests[column]["warm_blob_gets"] = upstream.blob_gets() - before
        for column, server in first.items():
            before = upstream.manifest_requests()
            url = f"{server.url}/v2/{REPO}/manifests/{TAG}"
            figures[column]["manifest_tag_rps"] = wrk_rps(url, CONNECTIONS, duration, {})
            upstream_requests[column]["wrk_manifest_requests"] = (
                upstream.manifest_requests() - before
            )
    # The same cache, read by ours trusting its tags for 10 minutes.
    trusting = proxy("ours", base / "ours", upstream, workers, ttl="10m")
    with running(trusting):
        pull_mbps(trusting.url, anonymous, folder)  # The tag's age restarts now.
        before = upstream.manifest_requests()
        url = f"{trusting.url}/v2/{REPO}/manifests/{TAG}"
        figures["ours ttl 10m"]["manifest_tag_rps"] = wrk_rps(url, CONNECTIONS, duration, {})
        upstream_requests["ours"]["wrk_ttl_10m_manifest_requests"] = (
            upstream.manifest_requests() - before
        )
    second = {"ours": proxy("ours", _mkdir(base / "ours-x8"), upstream, workers)}
    second["go proxy"] = proxy("go", _mkdir(base / "go-x8"), upstream, workers)
    with running(*second.values()):
        order = [*second.items(), ("direct", upstream.go)]
        for column, server in order[shift:] + order[:shift]:
            mbps, _, _, gets = cold(column, server, upstream, digests, folder, CLIENTS)
            figures[column]["cold_pull_x8_MBps"] = mbps
            if column != "direct":
                upstream_requests[column]["x8_blob_gets"] = gets
    return figures, upstream_requests


def logs(folder: Path) -> str:
    """Warnings and errors the proxies logged (the upstream's access log left out)."""
    found = []
    for path in sorted(folder.glob("round-*/*/*.log")):
        lines = path.read_text(errors="replace").splitlines()
        # 2.8.2's warnings at every start (no http.secret, no repository remover).
        text = "\n".join(x for x in lines if not re.search("No HTTP secret|RempositoryRemover", x))
        if text.strip():
            found.append(f"--- {path.relative_to(folder)}\n{text[-2000:]}")
    return "\n".join(found)


def table(medians: dict[str, dict[str, float]]) -> list[str]:
    lines = [
        "| measure | ours | ours ttl 10m | go proxy | direct | ours/go | ours/direct |",
        "|---|" + "---:|" * 6,
    ]

    def cell(column: str, key: str) -> str:
        value = medians[column].get(key)
        if value is None:
            return ""
        return f"{value:.2f}" if key.endswith("_s") else f"{value:,.0f}"

    def ratio(mine: float | None, theirs: float | None) -> str:
        return "" if mine is None or theirs is None else f"{mine / theirs:.2f}"

    for key, label in PULLS.items():
        cells = [cell(column, key) for column in COLUMNS]
        mine = medians["ours"].get(key)
        if key == "manifest_tag_rps":
            versus_go = f"{ratio(mine, medians['go proxy'].get(key))} (ttl 10m: "
            versus_go += f"{ratio(medians['ours ttl 10m'].get(key), medians['go proxy'][key])})"
        else:
            versus_go = ratio(mine, medians["go proxy"].get(key))
        cells += [versus_go, ratio(mine, medians["direct"].get(key))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def round_ratios(results: dict[str, dict[str, list[float]]]) -> dict[str, list[float]]:
    """Cold-pull ratios of each round, ours against the others measured in that round,
    seconds apart: steadier than the ratio of medians on a machine whose load moves."""
    ours, go_proxy, direct = (results[column] for column in ("ours", "go proxy", "direct"))

    def each(mine: list[float], theirs: list[float]) -> list[float]:
        return [a / b for a, b in zip(mine, theirs, strict=True)]

    return {
        "ours/direct": each(ours["cold_pull_MBps"], direct["cold_pull_MBps"]),
        "ours/go": each(ours["cold_pull_MBps"], go_proxy["cold_pull_MBps"]),
        "ours/go until stored": each(ours["cold_stored_MBps"], go_proxy["cold_stored_MBps"]),
        "ours/direct, 8 clients": each(ours["cold_pull_x8_MBps"], direct["cold_pull_x8_MBps"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--layer-mib", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round, wrk 2 s")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--workers", type=int, default=0, help="our workers (0: one per CPU)")
    parser.add_argument("--upstream-auth", choices=("token", "none"), default="token")
    parser.add_argument(
        "--upstream-link", metavar="RATE", help="the upstream behind a link of RATE (tc's units)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.upstream_link:
        own_network()
    rounds, duration = (1, 2) if args.quick else (args.rounds, args.duration)
    for tool in ("curl", "wrk", "docker-registry"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install curl wrk docker-registry")
    # SIGTERM unwinds like Ctrl-C: every process started here is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} at start", flush=True)
    started = time.monotonic()
    results: dict[str, dict[str, list[float]]] = {column: {} for column in COLUMNS}
    requests: dict[str, dict[str, list[int]]] = {}
    folder = workdir()
    try:
        upstream = Upstream(folder, args.upstream_auth)
        with running(*upstream.servers()):
            if args.upstream_link:
                shape(upstream.go.port, args.upstream_link)
            layers = [os.urandom(args.layer_mib * 2**20) for _ in range(args.layers)]
            with httpx.Client(
                base_url=upstream.url, headers=upstream.authorization("pull,push"), timeout=300
            ) as client:
                _, manifest = push_image(client, REPO, TAG, layers=layers)
            del layers
            document = json.loads(manifest)
            digests = [b["digest"] for b in (document["config"], *document["layers"])]
            for number in range(rounds):
                try:
                    figures, counts = one_round(
                        number, folder, upstream, digests, args.workers, duration
                    )
                except Exception:
                    print(f"round {number + 1} failed; logs:\n{logs(folder)}", flush=True)
                    raise
                print(f"round {number + 1}: {json.dumps(figures)} {json.dumps(counts)}", flush=True)
                for column, values in figures.items():
                    for key, value in values.items():
                        results[column].setdefault(key, []).append(value)
                for column, values in counts.items():
                    for key, count in values.items():
                        requests.setdefault(column, {}).setdefault(key, []).append(count)
            print(f"proxy logs (warnings and errors):\n{logs(folder) or '(empty)'}")
        load = os.getloadavg()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    medians = {
        column: {key: statistics.median(values) for key, values in figures.items()}
        for column, figures in results.items()
    }
    print(
        f"\nmedian of {rounds} round(s); image: {args.layers} x {args.layer_mib} MiB layers "
        f"+ config; upstream auth {args.upstream_auth}; upstream link "
        f"{args.upstream_link or 'loopback, unshaped'}; our workers "
        f"{args.workers or os.cpu_count()}; wrk {duration} s; load average at the end "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; {time.monotonic() - started:.0f} s\n"
    )
    print("\n".join(table(medians)))
    ratios = round_ratios(results)
    print("\ncold pull ratios, each round's own (median):")
    for name, values in ratios.items():
        each = ", ".join(f"{value:.2f}" for value in values)
        print(f"  {name}: {each} ({statistics.median(values):.2f})")
    print(f"\nupstream requests per round (each round's counts): {json.dumps(requests)}")
    if args.json:
        report: dict[str, Any] = {
            "machine": machine(),
            "median": medians,
            "rounds": results,
            "round_ratios": ratios,
            "upstream_requests": requests,
            "args": vars(args),
        }
        args.json.write_text(json.dumps(report, default=str, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
