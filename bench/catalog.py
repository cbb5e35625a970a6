"""The catalog against the number of repositories, ours and Debian's Go registry (2.8.2).

    python bench/catalog.py [--counts 1000,10000,100000] [--duration 5] [--connections 1,32]

For each count a tree is written straight to disk in registry:2's layout (one
manifest shared by every repository, a tag each, names ``teamNN/appNNNNNN``),
both registries serve that same folder, and wrk asks for ``_catalog?n=100``:
the first page, and a page from the middle (``last=`` the middle name).
registry:2 walks the whole tree for every page, so its rate falls as the tree
grows; ours reads an index, so it should not. Printed as requests/s and ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.compare import wrk_rps
from bench.servers import go, ours, workdir

V2 = "docker/registry/v2"


def name_of(index: int) -> str:
    return f"team{index % 50:02}/app{index:06}"


def write_tree(root: Path, count: int) -> list[str]:
    """``count`` repositories sharing one manifest, as registry:2 lays them out."""
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    config_digest = hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{config_digest}",
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()
    digest = hashlib.sha256(manifest).hexdigest()
    for data, hex_digest in ((config, config_digest), (manifest, digest)):
        folder = root / V2 / "blobs" / "sha256" / hex_digest[:2] / hex_digest
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "data").write_bytes(data)
    link = f"sha256:{digest}".encode()
    names = [name_of(index) for index in range(count)]
    for name in names:
        repo = root / V2 / "repositories" / name
        layers = repo / "_layers" / "sha256" / config_digest
        revision = repo / "_manifests" / "revisions" / "sha256" / digest
        current = repo / "_manifests" / "tags" / "latest" / "current"
        index = repo / "_manifests" / "tags" / "latest" / "index" / "sha256" / digest
        for folder, content in (
            (layers, f"sha256:{config_digest}".encode()),
            (revision, link),
            (current, link),
            (index, link),
        ):
            os.makedirs(folder, exist_ok=True)
            (folder / "link").write_bytes(content)
    return sorted(names)


def _row(key: str, figures: dict[str, float]) -> str:
    mine, theirs = figures["ours"], figures["go"]
    # At 100,000 repositories registry:2 may answer no page within a wrk run at all.
    ratio = f"{mine / theirs:>10.2f}" if theirs else f"{'none':>10}"
    return f"{key:<24}{mine:>12.1f}{theirs:>12.1f}{ratio}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1000,10000,100000")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", default="1,32")
    parser.add_argument("--workers", type=int, default=0, help="our workers (0: one per CPU)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    counts = [int(count) for count in args.counts.split(",")]
    connections = [int(c) for c in args.connections.split(",")]
    results: dict[str, dict[str, float]] = {}
    for count in counts:
        folder = workdir()
        try:
            started = time.monotonic()
            names = write_tree(folder / "tree", count)
            print(f"{count} repositories written in {time.monotonic() - started:.1f}s", flush=True)
            storage = {
                "filesystem": {"rootdirectory": str(folder / "tree")},
                "delete": {"enabled": True},
            }
            servers = [
                ours(folder, args.workers, extra={"storage": storage}).start(),
                go(folder, extra={"storage": storage}).start(),
            ]
            try:
                middle = names[len(names) // 2]
                pages = {"first": "", "middle": f"&last={middle}"}
                for server in servers:
                    # The first request of each process builds what it needs (ours: its
                    # walk of the tree); a page then must be the same from both.
                    for _ in range(8):
                        page = httpx.get(f"{server.url}/v2/_catalog?n=100", timeout=600)
                        assert page.json()["repositories"] == names[:100], server.name
                for label, query in pages.items():
                    for conns in connections:
                        key = f"{count}_{label}_c{conns}"
                        results[key] = {}
                        for server in servers:
                            url = f"{server.url}/v2/_catalog?n=100{query}"
                            results[key][server.name] = wrk_rps(url, conns, args.duration, {})
                        print(_row(key, results[key]), flush=True)
            finally:
                for server in servers:
                    server.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"\n{'repositories_page_conns':<24}{'ours':>12}{'go 2.8.2':>12}{'ours/go':>10}")
    for key, figures in results.items():
        print(_row(key, figures))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
