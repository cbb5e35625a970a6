"""Time to first byte of the web pages with 10,000 repositories and 10,000 tags in one.

    python bench/ui.py [--repositories 10000] [--tags 10000] [--rounds 20] [--workers 0]

The tree is written straight to disk in registry:2's layout (``bench/catalog.py``'s
repositories, plus ``big/tags`` with ``--tags`` tags on one manifest). Our registry
serves it; each page is asked for once cold (the first request after the start: the
repository summaries are not cached yet) and then ``--rounds`` times warm (median).
registry:2 has no pages; as a yardstick, Debian's Go registry (2.8.2) serving the same
folder answers the API calls that list the same things (``_catalog?n=50``, the big
repository's ``tags/list``), timed the same way, printed beside them; and both answer
that repository's whole ``tags/list`` (the API itself, not a page).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.catalog import V2, name_of, write_tree
from bench.servers import go, machine, ours, workdir

BIG = "big/tags"


def add_tags(root: Path, count: int) -> list[str]:
    """``count`` tags in ``BIG`` on the manifest every repository of the tree holds."""
    template = root / V2 / "repositories" / name_of(0)
    repo = root / V2 / "repositories" / BIG
    shutil.copytree(template, repo)
    current = (template / "_manifests" / "tags" / "latest" / "current" / "link").read_bytes()
    digest = current.decode().split(":", 1)[1]
    tags = [f"t{index:05d}" for index in range(count)]
    for tag in tags:
        folder = repo / "_manifests" / "tags" / tag
        os.makedirs(folder / "current")
        (folder / "current" / "link").write_bytes(current)
        os.makedirs(folder / "index" / "sha256" / digest)
        (folder / "index" / "sha256" / digest / "link").write_bytes(current)
    # As a repository whose last tag came a minute ago (the filesystem driver checks
    # every tag again while the tags folder changed in the last 10 seconds).
    past = time.time() - 60
    os.utime(repo / "_manifests" / "tags", (past, past))
    return tags


def ttfb(client: httpx.Client, url: str) -> float:
    """Seconds from sending the request to its first byte of body."""
    started = time.perf_counter()
    first = None
    with client.stream("GET", url) as response:
        for _ in response.iter_raw():
            if first is None:
                first = time.perf_counter() - started
        assert response.status_code == 200, (url, response.status_code)
    assert first is not None, url
    return first


def measure(client: httpx.Client, url: str, rounds: int) -> tuple[float, float]:
    cold = ttfb(client, url)
    warm = statistics.median(ttfb(client, url) for _ in range(rounds))
    return cold, warm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repositories", type=int, default=10_000)
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="our workers")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    folder = workdir()
    results: dict[str, dict[str, float]] = {}
    try:
        started = time.monotonic()
        names = write_tree(folder / "tree", args.repositories)
        tags = add_tags(folder / "tree", args.tags)
        print(
            f"{args.repositories} repositories and {args.tags} tags written in "
            f"{time.monotonic() - started:.1f}s on {machine()}",
            flush=True,
        )
        storage = {"filesystem": {"rootdirectory": str(folder / "tree")}}
        middle = names[len(names) // 2]
        pages = {
            "repositories, first page": "/ui/",
            "repositories, middle page": f"/ui/?last={middle}",
            "search (one match)": f"/ui/?q={name_of(args.repositories // 3).split('/')[1]}",
            "big repository, first page": f"/ui/repository?name={BIG}",
            "big repository, last page": f"/ui/repository?name={BIG}&last={tags[-30]}",
            "image by tag": f"/ui/image?name={BIG}&tag={tags[len(tags) // 2]}",
            "API: tags/list, every tag": f"/v2/{BIG}/tags/list",
        }
        yardsticks = {
            "repositories, first page": "/v2/_catalog?n=50",
            "repositories, middle page": f"/v2/_catalog?n=50&last={middle}",
            "big repository, first page": f"/v2/{BIG}/tags/list?n=50",
            "API: tags/list, every tag": f"/v2/{BIG}/tags/list",
        }
        # One worker by default: every request then meets the same caches, as a
        # team member clicking through does (several workers: cold once per worker).
        mine = ours(folder, args.workers, extra={"storage": storage}).start()
        theirs = go(folder, extra={"storage": storage}).start()
        try:
            with httpx.Client(timeout=600) as client:
                # The catalog's index is built on the first catalog read: not a page cost.
                client.get(f"{mine.url}/v2/_catalog?n=1")
                for label, path in pages.items():
                    cold, warm = measure(client, mine.url + path, args.rounds)
                    row = {"ours_cold_ms": cold * 1000, "ours_warm_ms": warm * 1000}
                    if label in yardsticks:
                        _, go_warm = measure(client, theirs.url + yardsticks[label], args.rounds)
                        row["go_api_ms"] = go_warm * 1000
                    results[label] = row
                    print(_row(label, row), flush=True)
                storage_page = f"{mine.url}/ui/storage"
                cold, warm = measure(client, storage_page, 3)
                results["storage (every repository)"] = {
                    "ours_cold_ms": cold * 1000,
                    "ours_warm_ms": warm * 1000,
                }
                print(_row("storage (every repository)", results["storage (every repository)"]))
        finally:
            mine.stop()
            theirs.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n{'page':<30}{'cold ms':>10}{'warm ms':>10}{'go API ms':>11}")
    for label, row in results.items():
        print(_row(label, row))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def _row(label: str, row: dict[str, float]) -> str:
    go_api = f"{row['go_api_ms']:>11.1f}" if "go_api_ms" in row else f"{'':>11}"
    return f"{label:<30}{row['ours_cold_ms']:>10.1f}{row['ours_warm_ms']:>10.1f}{go_api}"


if __name__ == "__main__":
    raise SystemExit(main())
