"""What ``storage.filesystem.fsync`` costs: the same pushes with it off and on, as ratios.

    python bench/fsync.py [--size-mib 64] [--count 200] [--concurrency 8] [--rounds 3]
                          [--workers 0]

Two registries run side by side (log level warn, access logs off), one with
``fsync: true``, each on its own folder of the same disk; the rounds
alternate between them and the best of ``--rounds`` counts. Every push
stores new content (a blob already stored is not written again, so not
synced either). Measured:

* a monolithic blob push (``POST ?digest=``, curl) of ``--size-mib`` MiB, MB/s;
* small blob pushes (4 KiB, ``POST ?digest=``) one after the other, per second;
* manifest pushes by tag, one after the other and from ``--concurrency``
  clients at once, per second (each stores the manifest, its revision link
  and the tag's two links: four synced files).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import Server, ours, workdir
from tests.pushing import OCI_MANIFEST, image_manifest, push_blob

REPO = "bench/fsync"
CONFIG = b'{"architecture": "amd64", "os": "linux"}'
LAYER = b"one small layer every manifest names"


def _server(folder: Path, workers: int, fsync: bool) -> Server:
    name = "fsync-on" if fsync else "fsync-off"
    (folder / name).mkdir()
    storage = {"filesystem": {"rootdirectory": str(folder / name / "data"), "fsync": fsync}}
    server = ours(folder / name, workers=workers, extra={"storage": storage})
    server.name = name
    return server


def _blob_file(path: Path, size: int, nonce: int) -> str:
    """A file of ``size`` bytes no round has pushed before; its digest."""
    block = bytearray(os.urandom(1024 * 1024))
    digest = hashlib.sha256()
    with path.open("wb") as file:
        for index in range(size // len(block)):
            block[:16] = nonce.to_bytes(8, "big") + index.to_bytes(8, "big")
            digest.update(block)
            file.write(block)
        # On disk before the timed push: its write-back must not compete with the server's.
        file.flush()
        os.fsync(file.fileno())
    return "sha256:" + digest.hexdigest()


def big_blob(server: Server, folder: Path, size: int, nonce: int) -> float:
    """MB/s of one monolithic push of new content."""
    path = folder / "blob.bin"
    digest = _blob_file(path, size, nonce)
    url = f"{server.url}/v2/{REPO}/blobs/uploads/?digest={digest}"
    result = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", "-X", "POST",
         "-H", "Content-Type: application/octet-stream", "--data-binary", f"@{path}", url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    status, seconds = result.stdout.split()
    assert status == "201", result
    return size / float(seconds) / 1e6


def small_blobs(server: Server, count: int, nonce: int) -> float:
    """Small blob pushes per second, one client."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        started = time.perf_counter()
        for index in range(count):
            data = f"small blob {nonce} {index} ".encode() * 200  # About 4 KiB.
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            url = f"/v2/{REPO}/blobs/uploads/"
            done = client.post(url, params={"digest": digest}, content=data)
            assert done.status_code == 201, done.text
        return count / (time.perf_counter() - started)


def manifests(server: Server, count: int, nonce: int, concurrency: int) -> float:
    """Manifest pushes by tag per second, from ``concurrency`` clients at once."""
    barrier = threading.Barrier(concurrency + 1)
    failures: list[str] = []

    def push(client_number: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            bodies = [
                image_manifest(
                    CONFIG, [LAYER], annotations={"n": f"{nonce}-{client_number}-{index}"}
                )
                for index in range(count // concurrency)
            ]
            barrier.wait()
            for index, body in enumerate(bodies):
                response = client.put(
                    f"/v2/{REPO}/manifests/t{nonce}-{client_number}-{index}",
                    content=body,
                    headers={"Content-Type": OCI_MANIFEST},
                )
                if response.status_code != 201:
                    failures.append(response.text)

    threads = [threading.Thread(target=push, args=(number,)) for number in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    assert not failures, failures[:3]
    return (count // concurrency) * concurrency / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args(argv)
    folder = workdir()
    servers = [_server(folder, args.workers, fsync) for fsync in (False, True)]
    measures: dict[str, Callable[[Server, int], float]] = {
        f"blob push {args.size_mib} MiB, MB/s": lambda server, nonce: big_blob(
            server, folder, args.size_mib * 1024 * 1024, nonce
        ),
        "small blob pushes/s": lambda server, nonce: small_blobs(server, args.count, nonce),
        "manifest pushes/s, 1 client": lambda server, nonce: manifests(
            server, args.count, nonce, 1
        ),
        f"manifest pushes/s, {args.concurrency} clients": lambda server, nonce: manifests(
            server, args.count, nonce, args.concurrency
        ),
    }
    best: dict[tuple[str, str], float] = {}
    try:
        for server in servers:
            server.start()
            with httpx.Client(base_url=server.url, timeout=60) as client:
                push_blob(client, REPO, CONFIG)
                push_blob(client, REPO, LAYER)
        nonce = 0
        for _ in range(args.rounds):
            for label, measure in measures.items():
                for server in servers:
                    nonce += 1
                    value = measure(server, nonce)
                    key = (label, server.name)
                    best[key] = max(best.get(key, 0.0), value)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(folder)
    where = tempfile.gettempdir()
    print(f"best of {args.rounds} rounds, {os.cpu_count()} CPUs, storage in {where}")
    print(f"{'':36} {'fsync off':>10} {'fsync on':>10} {'on/off':>8}")
    for label in measures:
        off, on = best[(label, "fsync-off")], best[(label, "fsync-on")]
        print(f"{label:36} {off:10.1f} {on:10.1f} {on / off:8.2f}")
    print(json.dumps({f"{label} [{name}]": round(v, 1) for (label, name), v in best.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
