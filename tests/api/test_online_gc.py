"""The online collector (``storage.maintenance.gc``): it runs in one worker while clients
push and pull, takes what is garbage, and never what a push is using.

The stress test pushes (new layers, re-pushes of old layers that may be garbage
already, cross-repository mounts, indexes, referrers), moves and deletes tags
and images, and pulls, against a collector running continuously with a grace
delay of two seconds, for ``GC_STRESS_SECONDS`` (120 by default; each run
prints its seed, ``GC_STRESS_SEED`` replays it). Every image pushed and kept
must pull back whole with the right digests, during the run and after; once the
clients stop, the store must hold exactly the blobs the kept images reach.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import RegistryProcess
from tests.pushing import (
    ACCEPT_MANIFESTS,
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    image_index,
    image_manifest,
    push_image,
    with_query,
)

Factory = Callable[..., RegistryProcess]
PROJECT = Path(__file__).resolve().parents[2]
V2 = "docker/registry/v2"
GRACE = 2.0


def gc_config(**gc: object) -> dict[str, object]:
    return {
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {
            "delete": {"enabled": True},
            "maintenance": {
                "gc": {
                    "enabled": True,
                    "interval": "100ms",
                    "grace": f"{GRACE}s",
                    "deleteuntagged": True,
                    **gc,
                }
            },
        },
    }


def _files(folder: Path) -> list[Path]:
    """Every file below ``folder``, read while the collector deletes in it: os.walk
    passes over a folder that went between its listing and its reading."""
    return [Path(top, name) for top, _, names in os.walk(folder) for name in names]


def stored_blobs(registry: RegistryProcess) -> set[str]:
    """Digests of the blob data in the store (hidden content is not in it)."""
    base = registry.root / V2 / "blobs" / "sha256"
    return {f"sha256:{path.parent.name}" for path in _files(base) if path.name == "data"}


def explain(registry: RegistryProcess, digests: set[str]) -> list[str]:
    """For a failure message: each blob left behind, its age, and every link naming it
    (which repository's layer, manifest revision, tag or referrer) and the log lines
    that mention it, so an intermittent miss can be read after the fact."""
    now = time.time()
    lines = []
    repositories = registry.root / V2 / "repositories"
    for digest in sorted(digests)[:5]:
        hex_part = digest.split(":", 1)[1]
        data = registry.root / V2 / "blobs" / "sha256" / hex_part[:2] / hex_part / "data"
        with contextlib.suppress(OSError):
            lines.append(
                f"{digest}: {data.stat().st_size} bytes, {now - data.stat().st_mtime:.1f}s old"
            )
        for link in _files(repositories):
            if link.name == "link" and (hex_part in str(link) or link.read_text() == digest):
                lines.append(f"  named by {link.relative_to(repositories)}")
        lines += [f"  log: {line}" for line in registry.log().splitlines() if hex_part in line][-5:]
    return lines


def hidden_files(registry: RegistryProcess) -> list[Path]:
    return _files(registry.root / V2 / "_gc")


def last_collection(registry: RegistryProcess) -> float:
    """When the collector last finished a collection: its turn's stamp, written after
    each one (registry.storage.turns)."""
    try:
        return float(json.loads((registry.root / V2 / "_maintenance" / "gc").read_text())["at"])
    except (OSError, ValueError, KeyError):
        return 0.0


def within_collections(
    registry: RegistryProcess, condition: Callable[[], bool], collections: int
) -> bool:
    """Whether ``condition`` holds before ``collections`` more collections have finished
    once everything stored until now is older than the grace delay.

    Counted in collections, not seconds: on a loaded machine one takes a long time, and
    what the collector must do is in a number of them (the first may have begun while
    the garbage was young; the next hides it and deletes it at its second look). A
    collector that stops is a failure too."""
    old_enough = time.time() + GRACE
    finished: set[float] = set()
    while len(finished) < collections:
        if condition():
            return True
        assert registry.process is not None and registry.process.poll() is None, registry.log()
        last = last_collection(registry)
        if last > old_enough:
            finished.add(last)
        time.sleep(0.1)
    return condition()


def collector_pids(registry: RegistryProcess) -> set[str]:
    return set(re.findall(r"registry\.storage\.gc\[(\d+)\]: garbage collection", registry.log()))


def test_a_deleted_image_is_collected_and_a_kept_one_untouched(
    registry_factory: Factory,
) -> None:
    registry = registry_factory(gc_config(), workers=2)
    with httpx.Client(base_url=registry.url, headers=ACCEPT_MANIFESTS, timeout=30) as client:
        kept, _ = push_image(client, "app", "kept", layers=[b"shared", b"kept only"])
        gone, manifest = push_image(client, "app", "gone", layers=[b"shared", b"gone only"])
        config = json.loads(manifest)["config"]["digest"]
        assert client.delete(f"/v2/app/manifests/{gone}").status_code == 202
        garbage = {gone, config, digest_of(b"gone only")}
        assert within_collections(registry, lambda: not garbage & stored_blobs(registry), 3), (
            registry.log()
        )
        assert within_collections(registry, lambda: not hidden_files(registry), 3)
        for digest in (digest_of(b"shared"), digest_of(b"kept only")):
            assert client.get(f"/v2/app/blobs/{digest}").status_code == 200
        assert client.get("/v2/app/manifests/kept").headers["Docker-Content-Digest"] == kept
    assert len(collector_pids(registry)) == 1, registry.log()


def test_an_invalid_grace_stops_the_start() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "registry", "check-config"],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")},
            "REGISTRY_STORAGE_MAINTENANCE_GC_ENABLED": "true",
            "REGISTRY_STORAGE_MAINTENANCE_GC_GRACE": "0s",
        },
        timeout=60,
    )
    assert shown.returncode == 2
    assert "storage.maintenance.gc.grace: must be more than 0" in shown.stderr


# The stress test


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    repo: str
    tag: str
    digest: str
    manifest: bytes
    media_type: str
    blobs: dict[str, bytes]
    """Everything it reaches by digest: config, layers; an index's children and theirs."""
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    """Child manifests and referrers, by digest: (media type, bytes)."""


class BlobUnknownError(Exception):
    """The manifest was refused: a blob it names was taken meanwhile; push again."""


@dataclass
class Stats:
    pushes: int = 0
    retries: int = 0
    reused_layers: int = 0
    mounts: int = 0
    pulls: int = 0
    deleted: int = 0
    failures: list[str] = field(default_factory=list)


class World:
    """What the clients pushed and kept, shared by their threads."""

    def __init__(self, seed: int) -> None:
        self.lock = threading.Lock()
        self.alive: dict[tuple[str, str], Image] = {}
        self.layers: list[tuple[str, bytes]] = []
        self.seed = seed
        self.stats = Stats()
        self.stop = threading.Event()

    def expected_blobs(self) -> set[str]:
        expected = set()
        for image in self.alive.values():
            expected |= {image.digest, *image.blobs, *image.manifests}
        return expected


def ensure_blob(
    client: httpx.Client, repo: str, data: bytes, mount_from: str | None, stats: Stats
) -> None:
    """As docker pushes a layer: a mount if it can, else HEAD, and upload only if missing."""
    digest = sha256(data)
    if mount_from is not None:
        started = client.post(f"/v2/{repo}/blobs/uploads/?mount={digest}&from={mount_from}")
        if started.status_code == 201:
            stats.mounts += 1
            return
        assert started.status_code == 202, started.text
        location = started.headers["Location"]
    else:
        if client.head(f"/v2/{repo}/blobs/{digest}").status_code == 200:
            return
        started = client.post(f"/v2/{repo}/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = started.headers["Location"]
    done = client.put(with_query(location, digest=digest), content=data)
    assert done.status_code == 201, done.text


def put_manifest(
    client: httpx.Client, repo: str, reference: str, data: bytes, media_type: str
) -> None:
    response = client.put(
        f"/v2/{repo}/manifests/{reference}", content=data, headers={"Content-Type": media_type}
    )
    if response.status_code == 400 and "MANIFEST_BLOB_UNKNOWN" in response.text:
        raise BlobUnknownError(response.text)
    assert response.status_code == 201, response.text


def pull(client: httpx.Client, image: Image) -> list[str]:
    """What does not come back whole (empty: the image pulls)."""
    problems = []
    wanted = {image.digest: (image.media_type, image.manifest), **image.manifests}
    for digest, (media_type, data) in wanted.items():
        got = client.get(f"/v2/{image.repo}/manifests/{digest}", headers={"Accept": media_type})
        if got.status_code != 200 or got.content != data:
            problems.append(f"manifest {image.repo}@{digest}: {got.status_code}")
    for digest, data in image.blobs.items():
        got = client.get(f"/v2/{image.repo}/blobs/{digest}")
        if got.status_code != 200 or sha256(got.content) != digest or got.content != data:
            problems.append(f"blob {image.repo}@{digest}: {got.status_code}")
    return problems


class Pusher:
    def __init__(self, world: World, url: str, number: int) -> None:
        self.world = world
        self.random = random.Random(world.seed * 100 + number)
        self.repo = f"stress/pusher-{number}"
        self.client = httpx.Client(base_url=url, headers=ACCEPT_MANIFESTS, timeout=60)
        self.serial = 0
        self.tags: list[str] = []

    def run(self) -> None:
        try:
            while not self.world.stop.is_set():
                self.step()
        except BaseException as error:  # Told to the test, which fails.
            self.world.stats.failures.append(f"{self.repo}: {error!r}")
            raise
        finally:
            self.client.close()

    def step(self) -> None:
        roll = self.random.random()
        if roll < 0.15 and self.tags:
            self.delete_image()
        elif roll < 0.2 and self.tags:
            self.delete_tag()
        elif roll < 0.3:
            self.push_with_retries(self.push_index)
        elif roll < 0.45 and self.tags:
            self.push_with_retries(self.push_referrer)
        else:
            self.push_with_retries(self.push_image)

    def fresh(self, what: str) -> bytes:
        self.serial += 1
        size = self.random.choice((200, 2_000, 70_000))
        return f"{self.repo} {what} {self.serial} ".encode() + self.random.randbytes(size)

    def layers(self) -> list[tuple[bytes, str | None]]:
        """One or two new layers, and often one pushed before (garbage by now, maybe)."""
        chosen: list[tuple[bytes, str | None]] = [
            (self.fresh("layer"), None) for _ in range(self.random.randint(1, 2))
        ]
        with self.world.lock:
            earlier = self.random.choice(self.world.layers) if self.world.layers else None
        if earlier is not None and self.random.random() < 0.6:
            source, data = earlier
            mount = source if source != self.repo and self.random.random() < 0.5 else None
            chosen.insert(0, (data, mount))
            self.world.stats.reused_layers += 1
        return chosen

    def push_with_retries(self, push: Callable[[], Image | None]) -> None:
        for _ in range(10):
            try:
                image = push()
            except BlobUnknownError:
                # A blob we found a moment ago was taken as garbage meanwhile: as docker
                # push fails and is run again, push again (it uploads what is missing).
                self.world.stats.retries += 1
                continue
            if image is not None:
                self.check_pulls(image)
            return
        raise AssertionError("ten pushes in a row refused")

    def check_pulls(self, image: Image) -> None:
        problems = pull(self.client, image)
        self.world.stats.pulls += 1
        if problems:
            self.world.stats.failures.append(f"just pushed {image.tag}: {problems}")

    def image_parts(self, layers: list[tuple[bytes, str | None]]) -> tuple[bytes, dict[str, bytes]]:
        config = json.dumps({"repo": self.repo, "serial": self.serial}).encode()
        self.serial += 1
        for data, mount in [(config, None), *layers]:
            ensure_blob(self.client, self.repo, data, mount, self.world.stats)
        blobs = {sha256(config): config, **{sha256(data): data for data, _ in layers}}
        return config, blobs

    def keep(self, image: Image, layers: list[bytes]) -> None:
        with self.world.lock:
            self.world.alive[(self.repo, image.tag)] = image
            self.world.layers += [(self.repo, data) for data in layers]
        if image.tag not in self.tags:
            self.tags.append(image.tag)
        self.world.stats.pushes += 1

    def push_image(self) -> Image:
        layers = self.layers()
        config, blobs = self.image_parts(layers)
        manifest = image_manifest(config, [data for data, _ in layers])
        tag = f"t{self.serial}"
        moved = None
        if self.tags and self.random.random() < 0.3:
            # A tag moved on: the image it named is untagged now, garbage. Forgotten
            # first, so that pullers do not count it as lost.
            tag = self.random.choice(self.tags)
            with self.world.lock:
                moved = self.world.alive.pop((self.repo, tag))
            self.tags.remove(tag)
        try:
            put_manifest(self.client, self.repo, tag, manifest, OCI_MANIFEST)
        except BlobUnknownError:
            if moved is not None:  # Refused: the tag still names what it named before.
                with self.world.lock:
                    self.world.alive[(self.repo, tag)] = moved
                self.tags.append(tag)
            raise
        image = Image(self.repo, tag, sha256(manifest), manifest, OCI_MANIFEST, blobs)
        self.keep(image, [data for data, _ in layers])
        return image

    def push_index(self) -> Image:
        children: list[tuple[str, bytes]] = []
        blobs: dict[str, bytes] = {}
        manifests: dict[str, tuple[str, bytes]] = {}
        kept_layers = []
        for _ in range(2):
            layers = self.layers()
            config, parts = self.image_parts(layers)
            child = image_manifest(config, [data for data, _ in layers])
            put_manifest(self.client, self.repo, sha256(child), child, OCI_MANIFEST)
            children.append((OCI_MANIFEST, child))
            blobs |= parts
            manifests[sha256(child)] = (OCI_MANIFEST, child)
            kept_layers += [data for data, _ in layers]
        index = image_index(children)
        tag = f"multi{self.serial}"
        put_manifest(self.client, self.repo, tag, index, OCI_INDEX)
        image = Image(self.repo, tag, sha256(index), index, OCI_INDEX, blobs, manifests)
        self.keep(image, kept_layers)
        return image

    def push_referrer(self) -> Image | None:
        """A signature of a kept image, pushed by digest: it stays as long as its subject."""
        with self.world.lock:
            subject = self.world.alive.get((self.repo, self.random.choice(self.tags)))
        if subject is None or subject.media_type != OCI_MANIFEST:
            return None
        signature = self.fresh("signature")
        config, blobs = self.image_parts([(signature, None)])
        referrer = image_manifest(
            config,
            [signature],
            artifact_type="application/vnd.example.signature",
            subject=descriptor(OCI_MANIFEST, subject.manifest),
        )
        put_manifest(self.client, self.repo, sha256(referrer), referrer, OCI_MANIFEST)
        with self.world.lock:
            if self.world.alive.get((self.repo, subject.tag)) is not subject:
                return None  # Our own thread only moves our tags: not reached.
            # New dictionaries: a puller may be reading the old ones.
            subject.blobs = {**subject.blobs, **blobs}
            subject.manifests = {**subject.manifests, sha256(referrer): (OCI_MANIFEST, referrer)}
        return subject

    def delete_image(self) -> None:
        tag = self.random.choice(self.tags)
        with self.world.lock:
            image = self.world.alive.pop((self.repo, tag))
        self.tags.remove(tag)
        response = self.client.delete(f"/v2/{self.repo}/manifests/{image.digest}")
        assert response.status_code == 202, response.text
        # Other tags naming the same manifest lose it too (as registry:2 deletes them).
        with self.world.lock:
            for other in [t for t in self.tags if self.world.alive[(self.repo, t)].digest
                          == image.digest]:  # fmt: skip
                del self.world.alive[(self.repo, other)]
                self.tags.remove(other)
        self.world.stats.deleted += 1

    def delete_tag(self) -> None:
        tag = self.random.choice(self.tags)
        with self.world.lock:
            del self.world.alive[(self.repo, tag)]
        self.tags.remove(tag)
        response = self.client.delete(f"/v2/{self.repo}/manifests/{tag}")
        assert response.status_code == 202, response.text
        self.world.stats.deleted += 1


class Puller:
    def __init__(self, world: World, url: str, number: int) -> None:
        self.world = world
        self.random = random.Random(world.seed * 1000 + number)
        self.client = httpx.Client(base_url=url, timeout=60)

    def run(self) -> None:
        try:
            while not self.world.stop.is_set():
                with self.world.lock:
                    images = list(self.world.alive.items())
                if not images:
                    time.sleep(0.05)
                    continue
                key, image = self.random.choice(images)
                problems = pull(self.client, image)
                self.world.stats.pulls += 1
                with self.world.lock:
                    # Deleted (or moved on) by its pusher meanwhile: that is no failure.
                    still = self.world.alive.get(key) is image and not self.world.stop.is_set()
                if problems and still:
                    self.world.stats.failures.append(f"pulling {key}: {problems}")
        finally:
            self.client.close()


def test_stress_collection_while_clients_push_and_pull(registry_factory: Factory) -> None:
    seconds = float(os.environ.get("GC_STRESS_SECONDS", "120"))
    seed = int(os.environ.get("GC_STRESS_SEED", str(random.randrange(1 << 30))))
    print(f"GC stress: {seconds:.0f}s, GC_STRESS_SEED={seed}")
    registry = registry_factory(gc_config(), workers=2)
    world = World(seed)
    clients = [Pusher(world, registry.url, n) for n in range(4)]
    clients += [Puller(world, registry.url, n) for n in range(2)]  # type: ignore[list-item]
    threads = [threading.Thread(target=client.run, daemon=True) for client in clients]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not world.stats.failures:
        time.sleep(0.5)
    world.stop.set()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive()
    stats = world.stats
    print(f"GC stress: {stats}")
    assert not stats.failures, f"seed {seed}: {stats.failures[:5]}"
    assert stats.pushes > 50 and stats.reused_layers > 10 and stats.deleted > 10, stats

    # Quiet now: every kept image pulls whole, and garbage goes within a few grace delays.
    with httpx.Client(base_url=registry.url, timeout=60) as client:
        for image in world.alive.values():
            assert pull(client, image) == [], f"seed {seed}: {image.repo}:{image.tag}"
    expected = world.expected_blobs()
    # One collection hides the garbage and deletes it at its second look; three leave
    # room for one begun while it was young, and one more.
    collected = within_collections(
        registry, lambda: stored_blobs(registry) == expected and not hidden_files(registry), 3
    )
    extra, missing = stored_blobs(registry) - expected, expected - stored_blobs(registry)
    summary = f"seed {seed}: {len(extra)} not collected, {len(missing)} missing"
    assert collected, "\n".join([summary, *explain(registry, extra | missing)])
    log = registry.log()
    deleted = sum(int(n) for n in re.findall(r"deleted (\d+) blobs", log))
    restored = sum(int(n) for n in re.findall(r"(\d+) put back", log))
    print(f"GC stress: collector deleted {deleted} blobs, put back {restored}")
    assert deleted > 50
    assert len(collector_pids(registry)) == 1
    assert "Traceback" not in log and "garbage collection failed" not in log
