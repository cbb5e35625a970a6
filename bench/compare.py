"""Side by side with Debian's Go registry (distribution 2.8.2), in one run, as ratios.

    python bench/compare.py [--size-mib 256] [--duration 5] [--rounds 3] [--workers 0]
                            [--auth none|htpasswd|token]

Measures, for each registry in turn (interleaved, best of ``--rounds``):
blob upload MB/s (monolithic PUT of a ``--size-mib`` blob with curl; chunked,
in 16 MiB PATCHes with httpx), blob download MB/s (curl, best of 3 in a row),
8 images of 5 x 4 MiB layers pushed at once (httpx in 8 processes) with the
servers' CPU time per MB, manifest GET by tag, tags/list (51 tags) and manifest
PUT requests/s with wrk at concurrency 1 and 32 with the servers' CPU time per
request (the catalog: ``bench/catalog.py``); and the peak memory
of each server over the whole run, sampled every 20 ms, as the RSS and the PSS
(shared pages split between processes: what the machine is charged) summed
over its processes. Both
registries run with log level warn and access logs off (on with
``--access-log``, written to a file as a service would). The
clients (curl, wrk) share the machine's cores with the servers, equally.

``--auth htpasswd``: both check Basic credentials (one bcrypt htpasswd file,
cost 10) on every request. ``--auth token``: both check a bearer token that
our built-in token service issued (ES256, libtrust ``kid``), the Go registry
through the same ``rootcertbundle``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import Sampler, Server, free_port, go, ours, workdir
from registry.auth import htpasswd
from tests.access import basic
from tests.pushing import push_image

ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def make_blob(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    block = os.urandom(1024 * 1024)
    with path.open("wb") as file:
        for index in range(size // len(block)):
            chunk = index.to_bytes(8, "big") + block[8:]
            digest.update(chunk)
            file.write(chunk)
    return "sha256:" + digest.hexdigest()


def curl_seconds(args: list[str]) -> float:
    result = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    status, seconds = result.stdout.split()
    if status not in ("200", "201"):
        raise RuntimeError(f"curl got HTTP {status}: {args}")
    return float(seconds)


def upload_mbps(
    server: Server, blob: Path, digest: str, repo: str, headers: dict[str, str]
) -> float:
    started = httpx.post(f"{server.url}/v2/{repo}/blobs/uploads/", headers=headers)
    location = started.headers["Location"]
    if location.startswith("/"):
        location = server.url + location
    separator = "&" if "?" in location else "?"
    seconds = curl_seconds(
        [
            "-T",
            str(blob),
            "-H",
            "Content-Type: application/octet-stream",
            *_curl_headers(headers),
            f"{location}{separator}digest={digest}",
        ]
    )
    return blob.stat().st_size / seconds / 1e6


def _curl_headers(headers: dict[str, str]) -> list[str]:
    return [item for name, value in headers.items() for item in ("-H", f"{name}: {value}")]


def chunked_upload_mbps(
    server: Server, blob: Path, digest: str, repo: str, headers: dict[str, str]
) -> float:
    """POST, then PATCHes of CHUNK_MIB with Content-Range, then the closing PUT: the
    way docker and containerd push a layer (in one PATCH) and skopeo or oras in several."""
    chunk = CHUNK_MIB * 1024 * 1024
    with httpx.Client(base_url=server.url, headers=headers, timeout=300) as client:
        started = time.perf_counter()
        location = client.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
        offset = 0
        with blob.open("rb") as file:
            while data := file.read(chunk):
                answer = client.patch(
                    location,
                    content=data,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + len(data) - 1}",
                    },
                )
                answer.raise_for_status()
                location = answer.headers["Location"]
                offset += len(data)
        separator = "&" if "?" in location else "?"
        client.put(f"{location}{separator}digest={digest}").raise_for_status()
        elapsed = time.perf_counter() - started
    return offset / elapsed / 1e6


def download_mbps(
    server: Server, digest: str, size: int, repo: str, headers: dict[str, str]
) -> float:
    """The best of DOWNLOADS in a row: one 256 MiB download lasts a fifth of a second,
    short enough for a scheduling hiccup on a shared machine to halve it."""
    url = f"{server.url}/v2/{repo}/blobs/{digest}"
    return max(
        size / curl_seconds([*_curl_headers(headers), url]) / 1e6 for _ in range(DOWNLOADS)
    )


def wrk_rps(
    url: str,
    connections: int,
    duration: int,
    headers: dict[str, str],
    script: Path | None = None,
) -> float:
    """Requests/s of GETs, or of what a wrk Lua ``script`` sends instead."""
    threads = 1 if connections == 1 else 2
    result = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "-H",
            f"Accept: {ACCEPT}",
            *_curl_headers(headers),
            *(["-s", str(script)] if script else []),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} errors from {url}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    assert found, result.stdout
    return float(found.group(1))


REPO = "bench/image"
#: Tags of REPO besides ``latest``, for the tags/list measure.
TAGS = 50
#: PATCH size of the chunked upload.
CHUNK_MIB = 16
#: Downloads in a row, the best of which counts.
DOWNLOADS = 3


def put_script(folder: Path, manifest: bytes) -> Path:
    """A wrk script that PUTs the manifest (to one tag, again and again)."""
    path = folder / "put-manifest.lua"
    path.write_text(
        f'wrk.method = "PUT"\n'
        f"wrk.body = {json.dumps(manifest.decode())}\n"
        f'wrk.headers["Content-Type"] = "{ACCEPT}"\n'
    )
    return path
USER, PASSWORD = "bench", "bench-password"
SERVICE = "registry-bench"


def access_config(
    mode: str, folder: Path, port: int
) -> tuple[dict[str, object], dict[str, object]]:
    """(ours, go) config sections for ``--auth``; both trust the same files."""
    if mode == "none":
        return {}, {}
    users = folder / "htpasswd"
    htpasswd.write(
        users, htpasswd.Htpasswd((), {}).with_user(USER, htpasswd.hash_password(PASSWORD))
    )
    if mode == "htpasswd":
        section = {"auth": {"htpasswd": {"realm": "bench", "path": str(users)}}}
        return section, section
    from tools.certs import ensure_token_key

    files = ensure_token_key(folder / "certs")
    token = {
        "realm": f"http://127.0.0.1:{port}/token",
        "service": SERVICE,
        "issuer": "registry-bench-issuer",
        "rootcertbundle": str(files.cert),
    }
    ours_section = {
        "auth": {"token": token},
        "access": {"tokenservice": {"key": str(files.key), "htpasswd": str(users)}},
    }
    return ours_section, {"auth": {"token": token}}


def credentials(mode: str, ours_url: str) -> dict[str, str]:
    """The Authorization header every request carries."""
    if mode == "none":
        return {}
    if mode == "htpasswd":
        return {"Authorization": basic(USER, PASSWORD)}
    reply = httpx.get(
        f"{ours_url}/token",
        params={"service": SERVICE, "scope": f"repository:{REPO}:pull,push"},
        auth=(USER, PASSWORD),
    )
    reply.raise_for_status()
    return {"Authorization": f"Bearer {reply.json()['token']}"}


#: Concurrent pushes: this many clients, each pushing LAYERS layers of LAYER_MIB MiB
#: (new content each round) and a manifest referring to them.
PUSHERS, LAYERS, LAYER_MIB = 8, 5, 4
#: Layer content of one concurrent push, in MB (each layer is LAYER_MIB MiB and a salt).
PUSHED_MB = PUSHERS * LAYERS * (LAYER_MIB * 1024 * 1024 + 8) / 1e6


def _layers(salt: bytes, pusher: int) -> list[bytes]:
    return [salt + bytes([pusher, n]) * (LAYER_MIB * 1024 * 1024 // 2) for n in range(LAYERS)]


def _push_one(url: str, headers: dict[str, str], salt: bytes, pusher: int) -> None:
    layers = _layers(salt, pusher)
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
        push_image(client, f"{REPO}-{pusher}", "concurrent", layers=layers)


def concurrent_push_mbps(server: Server, headers: dict[str, str]) -> float:
    """MB/s of layer content over PUSHERS images pushed at once, as ``docker push``
    of several images does: monolithic POST+PUT per layer, then the manifest. Each
    client is a process of its own, so the clients' GIL is not what is measured."""
    salt = os.urandom(8)
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(PUSHERS, mp_context=context) as pool:
        pool.submit(int).result()  # The processes are up before the clock starts.
        started = time.perf_counter()
        futures = [
            pool.submit(_push_one, server.url, headers, salt, pusher) for pusher in range(PUSHERS)
        ]
        for future in futures:
            future.result()
        elapsed = time.perf_counter() - started
    return PUSHED_MB / elapsed


def measure(
    server: Server, blob: Path, digest: str, duration: int, headers: dict[str, str]
) -> dict[str, float]:
    with httpx.Client(base_url=server.url, headers=headers) as client:
        _, manifest = push_image(client, REPO, "latest")
        for n in range(TAGS):
            client.put(
                f"/v2/{REPO}/manifests/v{n}",
                content=manifest,
                headers={"Content-Type": ACCEPT},
            ).raise_for_status()
    size = blob.stat().st_size
    manifest_url = f"{server.url}/v2/{REPO}/manifests/latest"
    tags_url = f"{server.url}/v2/{REPO}/tags/list"
    put_url = f"{server.url}/v2/{REPO}/manifests/put"
    cpu = server.cpu_seconds()
    pushed = concurrent_push_mbps(server, headers)
    spent = server.cpu_seconds() - cpu
    result = {
        "concurrent_push_MBps": pushed,
        # Server CPU (user and system, every process) per MB of layers pushed: on a
        # small machine the eight clients take most of the cores, so MB/s alone hides it.
        "concurrent_push_cpu_ms_per_MB": spent / (PUSHED_MB) * 1e3,
        "upload_MBps": upload_mbps(server, blob, digest, REPO, headers),
        "chunked_upload_MBps": chunked_upload_mbps(server, blob, digest, REPO, headers),
        "download_MBps": download_mbps(server, digest, size, REPO, headers),
    }
    script = put_script(blob.parent, manifest)
    for name, url, lua in (
        ("manifest_get", manifest_url, None),
        ("tags_list", tags_url, None),
        ("manifest_put", put_url, script),
    ):
        for connections in (1, 32):
            cpu = server.cpu_seconds()
            rate = wrk_rps(url, connections, duration, headers, lua)
            spent = server.cpu_seconds() - cpu
            result[f"{name}_rps_c{connections}"] = rate
            # Server CPU (every process, user and system) per request: where time goes.
            result[f"{name}_cpu_us_c{connections}"] = spent / (rate * duration) * 1e6
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="our workers (0: one per CPU)")
    parser.add_argument("--access-log", action="store_true", help="both log every request")
    parser.add_argument(
        "--auth",
        choices=("none", "htpasswd", "token"),
        default="none",
        help="both registries check credentials on every request",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    for tool in ("curl", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install {tool}")
    folder = workdir()
    try:
        blob = folder / "blob"
        digest = make_blob(blob, args.size_mib * 1024 * 1024)
        port = free_port()
        ours_extra, go_extra = access_config(args.auth, folder, port)
        servers = [
            ours(folder, args.workers, args.access_log, ours_extra, port).start(),
            go(folder, access_log=args.access_log, extra=go_extra).start(),
        ]
        headers = credentials(args.auth, servers[0].url)
        best: dict[str, dict[str, float]] = {server.name: {} for server in servers}
        sampler = Sampler(*servers)
        sampler.start()
        try:
            for round_number in range(args.rounds):
                for server in servers:
                    figures = measure(server, blob, digest, args.duration, headers)
                    print(
                        f"round {round_number + 1} {server.name}: {json.dumps(figures)}", flush=True
                    )
                    for key, value in figures.items():
                        pick = min if "_cpu_" in key else max  # Less CPU is better.
                        known = best[server.name].get(key)
                        best[server.name][key] = value if known is None else pick(known, value)
        finally:
            sampler.running = False
            for server in servers:
                server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"\nbest of {args.rounds} rounds, {args.size_mib} MiB blob, wrk {args.duration}s, "
        f"auth {args.auth}:"
    )
    print(f"{'measure':<24}{'ours':>12}{'go 2.8.2':>12}{'ours/go':>10}")
    for key in best["ours"]:
        mine, theirs = best["ours"][key], best["go"][key]
        print(f"{key:<24}{mine:>12.1f}{theirs:>12.1f}{mine / theirs:>10.2f}")
    for label, peaks in (("peak_RSS_MiB", sampler.peak_rss), ("peak_PSS_MiB", sampler.peak_pss)):
        mine, theirs = peaks["ours"] / 2**20, peaks["go"] / 2**20
        print(f"{label:<24}{mine:>12.1f}{theirs:>12.1f}{mine / theirs:>10.2f}")
    if args.json:
        memory = {"peak_rss": sampler.peak_rss, "peak_pss": sampler.peak_pss}
        args.json.write_text(
            json.dumps({"best": best, **memory, "args": vars(args)}, default=str, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
