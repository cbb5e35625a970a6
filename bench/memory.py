"""Bounded memory: push and pull a 1 GiB blob (monolithic, then in chunks) and watch the server.

    python bench/memory.py [--size-mib 1024] [--chunk-mib 64] [--workers 0]

Samples the resident memory of the server's whole process tree (parent and
workers) every 20 ms and reports the peak per phase, as the sum of RSS (which
counts pages the forked workers share once per process) and of PSS (which
splits shared pages between them: the memory really used).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import Sampler, ours, workdir
from tests.pushing import with_query

MIB = 1024 * 1024


def chunks(size: int, seed: bytes) -> Iterator[bytes]:
    """Deterministic content, made 1 MiB at a time: the client never holds the blob either."""
    block = hashlib.sha256(seed).digest() * (MIB // 32)
    for index in range(size // MIB):
        yield index.to_bytes(8, "big") + block[8:]


def digest_of(size: int, seed: bytes) -> str:
    digest = hashlib.sha256()
    for chunk in chunks(size, seed):
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def push_monolithic(client: httpx.Client, repo: str, size: int, seed: bytes) -> str:
    digest = digest_of(size, seed)
    location = client.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
    done = client.put(with_query(location, digest=digest), content=chunks(size, seed))
    assert done.status_code == 201, done.text
    return digest


def push_chunked(client: httpx.Client, repo: str, size: int, seed: bytes, chunk: int) -> str:
    digest = digest_of(size, seed)
    location = client.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
    source = chunks(size, seed)
    offset = 0
    while offset < size:
        length = min(chunk, size - offset)

        def part(count: int = length // MIB) -> Iterator[bytes]:
            for _ in range(count):
                yield next(source)

        headers = {
            "Content-Range": f"{offset}-{offset + length - 1}",
            "Content-Length": str(length),
        }
        response = client.patch(location, content=part(), headers=headers)
        assert response.status_code == 202, response.text
        location = response.headers["Location"]
        offset += length
    done = client.put(with_query(location, digest=digest))
    assert done.status_code == 201, done.text
    return digest


def pull(client: httpx.Client, repo: str, digest: str) -> None:
    hasher = hashlib.sha256()
    with client.stream("GET", f"/v2/{repo}/blobs/{digest}") as response:
        assert response.status_code == 200
        for data in response.iter_bytes(MIB):
            hasher.update(data)
    assert "sha256:" + hasher.hexdigest() == digest, "pulled bytes differ"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--chunk-mib", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="server workers (0: one per CPU)")
    args = parser.parse_args()
    size = args.size_mib * MIB
    folder = workdir()
    server = ours(folder, workers=args.workers).start()
    sampler = Sampler(server)
    sampler.start()
    time.sleep(0.5)
    idle = sampler.reset(server.name)
    report = [("idle", *idle)]
    try:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            started = time.perf_counter()
            first = push_monolithic(client, "memory/blob", size, b"monolithic")
            report.append((f"push {args.size_mib} MiB monolithic", *sampler.reset(server.name)))
            pull(client, "memory/blob", first)
            report.append((f"pull {args.size_mib} MiB", *sampler.reset(server.name)))
            second = push_chunked(client, "memory/blob", size, b"chunked", args.chunk_mib * MIB)
            phase = f"push {args.size_mib} MiB in {args.chunk_mib} MiB chunks"
            report.append((phase, *sampler.reset(server.name)))
            pull(client, "memory/blob", second)
            report.append((f"pull {args.size_mib} MiB", *sampler.reset(server.name)))
            elapsed = time.perf_counter() - started
    finally:
        sampler.running = False
        server.stop()
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        os.rmdir(folder)
    workers = args.workers or os.cpu_count()
    print(
        f"server: {workers} worker(s) + supervisor; peaks over each phase ({elapsed:.1f}s in all)"
    )
    print(f"{'phase':<36}{'RSS sum MiB':>14}{'PSS sum MiB':>14}")
    for phase, rss, pss in report:
        print(f"{phase:<36}{rss / MIB:>14.1f}{pss / MIB:>14.1f}")
    peak = max(pss for _, _, pss in report)
    verdict = "under" if peak < 100 * 1000 * 1000 else "OVER"
    print(f"peak PSS {peak / MIB:.1f} MiB ({verdict} 100 MB charged)")
    return 0 if peak < 100 * 1000 * 1000 else 1


if __name__ == "__main__":
    raise SystemExit(main())
