"""How the request rate scales: against connections, and against our worker count.

    python bench/scaling.py [--connections 1,8,32,128] [--workers 1,2,4] [--duration 5]

Manifest GET by tag (the request a pull is made of) with wrk, on our registry
with each worker count and on Debian's Go registry (2.8.2, one process using
every core), at each number of connections. Printed as requests/s with the
ratio to the Go registry at the same connections. wrk runs on the same cores
as the servers, so beyond the core count more workers compete with it.
(The catalog against the number of repositories: ``bench/catalog.py``.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.compare import wrk_rps
from bench.servers import Server, go, ours, workdir
from tests.pushing import push_image

REPO = "bench/scaling"


def rates(server: Server, connections: list[int], duration: int) -> dict[int, float]:
    with httpx.Client(base_url=server.url) as client:
        push_image(client, REPO, "latest")
    url = f"{server.url}/v2/{REPO}/manifests/latest"
    return {conns: wrk_rps(url, conns, duration, {}) for conns in connections}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", default="1,8,32,128")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    connections = [int(c) for c in args.connections.split(",")]
    results: dict[str, dict[int, float]] = {}
    folder = workdir()
    try:
        for workers in [int(w) for w in args.workers.split(",")]:
            sub = folder / f"ours-{workers}"
            sub.mkdir()
            server = ours(sub, workers).start()
            try:
                results[f"ours, {workers} worker(s)"] = rates(server, connections, args.duration)
            finally:
                server.stop()
        server = go(folder).start()
        try:
            results["go 2.8.2"] = rates(server, connections, args.duration)
        finally:
            server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    go_rates = results["go 2.8.2"]
    print("\nmanifest GET by tag, requests/s (ratio to go 2.8.2 at the same connections)")
    print(f"{'server':<22}" + "".join(f"{f'c={c}':>18}" for c in connections))
    for name, figures in results.items():
        cells = "".join(
            f"{figures[c]:>10.0f} ({figures[c] / go_rates[c]:4.2f})" for c in connections
        )
        print(f"{name:<22}{cells}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
