"""Clients that push while the server may die under them, and a ledger of what it promised.

Each :class:`Pusher` pushes images and indexes the ways real clients do
(monolithic ``POST ?digest=``, ``POST`` + ``PUT``, chunked ``PATCH``es,
cross-repository mounts, manifests by tag and by digest, a shared tag that
moves). Whatever the registry acknowledged goes into the :class:`Ledger`; a
push cut short by the server's death stays the pusher's ``job``, and an upload
session it had open its ``session``, for :meth:`Pusher.recover` to resume and
retry as a client would.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests.pushing import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    digest_of,
    image_index,
    image_manifest,
    with_query,
)

REPOSITORIES = ("crash/a", "crash/b", "crash/c")
#: Every pusher moves this tag now and then: it always names one of the manifests put to it.
SHARED_TAG = "latest"
OCTETS = {"Content-Type": "application/octet-stream"}
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
#: Blobs any pusher may use, in any repository: concurrent pushes of one digest, and mounts.
SHARED_BLOBS = 6


class InvariantError(AssertionError):
    """The registry broke a promise; the message says which, and what it answered."""


def expect(response: httpx.Response, *statuses: int, what: str) -> httpx.Response:
    if response.status_code not in statuses:
        request = response.request
        raise InvariantError(
            f"{what}: {request.method} {request.url.path} answered "
            f"{response.status_code} {response.text[:300]!r}"
        )
    return response


def error_code(response: httpx.Response) -> str | None:
    try:
        return str(response.json()["errors"][0]["code"])
    except (ValueError, LookupError, TypeError):
        return None


@dataclass(frozen=True)
class Blob:
    data: bytes
    digest: str

    @classmethod
    def of(cls, data: bytes) -> Blob:
        return cls(data, digest_of(data))


@dataclass(frozen=True)
class Layer:
    blob: Blob
    method: str
    """monolithic (POST ?digest=), put (POST, PUT with the body), chunked, or mount."""
    chunk: int = 0
    """chunked: bytes per PATCH."""
    last_in_put: bool = False
    """chunked: the last chunk goes with the closing PUT."""


@dataclass(frozen=True)
class Image:
    config: Blob
    layers: tuple[Layer, ...]
    media_type: str

    @property
    def manifest(self) -> bytes:
        return image_manifest(
            self.config.data, [layer.blob.data for layer in self.layers], media_type=self.media_type
        )


@dataclass(frozen=True)
class Job:
    """One push: an image under ``tag``, or children by digest and an index under ``tag``."""

    repo: str
    tag: str
    images: tuple[Image, ...]
    index_type: str | None = None
    also_shared_tag: bool = False

    @property
    def top(self) -> tuple[bytes, str]:
        """The manifest the tag names, and its media type."""
        if self.index_type is None:
            return self.images[0].manifest, self.images[0].media_type
        children = [(image.media_type, image.manifest) for image in self.images]
        return image_index(children, media_type=self.index_type), self.index_type


@dataclass
class Session:
    """An upload session a client opened and has not seen completed."""

    repo: str
    upload_id: str
    location: str
    blob: Blob
    chunk: int


@dataclass
class Ledger:
    """What the registry acknowledged, shared by every pusher (under ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    fresh: list[tuple[str, str, str]] = field(default_factory=list)
    """Acknowledged since the last check: (blob|manifest|tag, repository, digest or tag)."""
    tag_digests: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    """Every digest a tag was ever put with, acknowledged or not."""
    holders: dict[str, set[str]] = field(default_factory=dict)
    """Repositories where a blob was acknowledged: where a mount may come from."""
    sessions: dict[str, Session] = field(default_factory=dict)
    """Open sessions by upload id: those the checker leaves to their client."""
    violations: list[str] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)

    def acknowledged(self, kind: str, repo: str, reference: str) -> None:
        with self.lock:
            self.fresh.append((kind, repo, reference))
            if kind == "blob":
                self.holders.setdefault(reference, set()).add(repo)

    def will_tag(self, repo: str, tag: str, digest: str) -> None:
        with self.lock:
            self.tag_digests.setdefault((repo, tag), set()).add(digest)

    def take_fresh(self) -> list[tuple[str, str, str]]:
        with self.lock:
            fresh, self.fresh = self.fresh, []
            return fresh

    def violation(self, message: str) -> None:
        with self.lock:
            self.violations.append(message)

    def count(self, what: str, amount: int = 1) -> None:
        with self.lock:
            self.stats[what] += amount


def shared_blobs(seed: int) -> list[Blob]:
    rng = random.Random(f"{seed}/shared")
    return [Blob.of(rng.randbytes(rng.randint(1000, 2 * 1024 * 1024))) for _ in range(SHARED_BLOBS)]


class Pusher:
    """One client: its own connection pool, its own deterministic stream of jobs."""

    def __init__(self, number: int, seed: int, ledger: Ledger, shared: list[Blob]) -> None:
        self.number = number
        self.rng = random.Random(f"{seed}/pusher/{number}")
        self.ledger = ledger
        self.shared = shared
        self.serial = 0
        self.job: Job | None = None
        """The push in flight: not acknowledged whole."""
        self.session: Session | None = None

    # What to push

    def _size(self) -> int:
        pick = self.rng.random()
        if pick < 0.6:
            return self.rng.randint(1, 16 * 1024)
        if pick < 0.9:
            return self.rng.randint(16 * 1024, 512 * 1024)
        return self.rng.randint(512 * 1024, 4 * 1024 * 1024)

    def _layer(self) -> Layer:
        rng = self.rng
        shared = rng.random() < 0.3
        blob = rng.choice(self.shared) if shared else Blob.of(rng.randbytes(self._size()))
        methods = ["monolithic", "put", "chunked", "chunked"] + (["mount"] * 2 if shared else [])
        method = rng.choice(methods)
        chunk = max(1, len(blob.data) // rng.randint(1, 6)) if rng.random() < 0.5 else 256 * 1024
        return Layer(blob, method, chunk, rng.random() < 0.5)

    def _image(self, media_type: str) -> Image:
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "nonce": self.rng.getrandbits(64)}
        ).encode()
        layers = tuple(self._layer() for _ in range(self.rng.randint(1, 3)))
        return Image(Blob.of(config), layers, media_type)

    def new_job(self) -> Job:
        rng = self.rng
        self.serial += 1
        tag = f"p{self.number}-{self.serial}"
        docker = rng.random() < 0.3
        if rng.random() < 0.25:
            child = DOCKER_MANIFEST if docker else OCI_MANIFEST
            images = tuple(self._image(child) for _ in range(rng.randint(2, 3)))
            index_type: str | None = DOCKER_LIST if docker else OCI_INDEX
        else:
            images = (self._image(DOCKER_MANIFEST if docker else OCI_MANIFEST),)
            index_type = None
        return Job(rng.choice(REPOSITORIES), tag, images, index_type, rng.random() < 0.2)

    # Pushing

    def push(self, client: httpx.Client, job: Job) -> None:
        """The whole push; every answer must be the one the spec gives."""
        for image in job.images:
            self.push_blob(client, job.repo, Layer(image.config, "monolithic"))
            for layer in image.layers:
                self.push_blob(client, job.repo, layer)
            if job.index_type is not None:
                manifest = image.manifest
                self.put_manifest(client, job.repo, digest_of(manifest), manifest, image.media_type)
        manifest, media_type = job.top
        self.put_manifest(client, job.repo, job.tag, manifest, media_type)
        if job.also_shared_tag:
            self.put_manifest(client, job.repo, SHARED_TAG, manifest, media_type)

    def put_manifest(
        self, client: httpx.Client, repo: str, reference: str, manifest: bytes, media_type: str
    ) -> None:
        digest = digest_of(manifest)
        tagged = not reference.startswith("sha256:")
        if tagged:
            self.ledger.will_tag(repo, reference, digest)
        response = client.put(
            f"/v2/{repo}/manifests/{reference}",
            content=manifest,
            headers={"Content-Type": media_type},
        )
        expect(response, 201, what=f"manifest {repo}:{reference}")
        if response.headers.get("Docker-Content-Digest") != digest:
            raise InvariantError(f"manifest {repo}:{reference}: digest in {response.headers}")
        self.ledger.acknowledged("manifest", repo, digest)
        if tagged:
            self.ledger.acknowledged("tag", repo, reference)

    def push_blob(self, client: httpx.Client, repo: str, layer: Layer) -> None:
        blob = layer.blob
        method = layer.method
        if method == "mount":
            with self.ledger.lock:
                sources = sorted(self.ledger.holders.get(blob.digest, set()) - {repo})
            if sources:
                source = self.rng.choice(sources)
                mounted = client.post(
                    f"/v2/{repo}/blobs/uploads/", params={"mount": blob.digest, "from": source}
                )
                # The source acknowledged the blob: it must be mountable from there.
                expect(mounted, 201, what=f"mount of {blob.digest} from {source}")
                self._created(mounted, repo, blob)
                self.ledger.count("mounts")
                return
            method = "chunked"
        if method == "monolithic":
            done = client.post(
                f"/v2/{repo}/blobs/uploads/",
                params={"digest": blob.digest},
                content=blob.data,
                headers=OCTETS,
            )
            self._created(expect(done, 201, what="monolithic push"), repo, blob)
            return
        started = expect(client.post(f"/v2/{repo}/blobs/uploads/"), 202, what="upload start")
        upload_id = started.headers["Docker-Upload-UUID"]
        location = started.headers["Location"]
        session = Session(repo, upload_id, location, blob, layer.chunk or len(blob.data))
        self.session = session
        with self.ledger.lock:
            self.ledger.sessions[upload_id] = session
        body = blob.data
        offset = 0
        if method == "chunked":
            end = len(body)
            if layer.last_in_put and len(body) > layer.chunk:
                end = len(body) - layer.chunk
            while offset < end:
                piece = body[offset : min(end, offset + layer.chunk)]
                response = client.patch(
                    location,
                    content=piece,
                    headers={**OCTETS, "Content-Range": f"{offset}-{offset + len(piece) - 1}"},
                )
                expect(response, 202, what="chunk")
                offset += len(piece)
                location = response.headers["Location"]
                session.location = location
        rest = body[offset:]
        headers = dict(OCTETS)
        if rest and offset:
            headers["Content-Range"] = f"{offset}-{len(body) - 1}"
        done = client.put(with_query(location, digest=blob.digest), content=rest, headers=headers)
        self._created(expect(done, 201, what=f"upload completion ({method})"), repo, blob)
        self._session_over(upload_id)

    def _created(self, response: httpx.Response, repo: str, blob: Blob) -> None:
        if response.headers.get("Docker-Content-Digest") != blob.digest:
            raise InvariantError(f"blob {blob.digest}: digest header {response.headers}")
        self.ledger.acknowledged("blob", repo, blob.digest)

    def _session_over(self, upload_id: str) -> None:
        self.session = None
        with self.ledger.lock:
            self.ledger.sessions.pop(upload_id, None)

    # Dying servers

    def run(self, base_url: str, stop: threading.Event, *, resilient: bool = False) -> None:
        """Push until ``stop``, or until the server dies (or, ``resilient``, recover and go on)."""
        try:
            with httpx.Client(base_url=base_url, timeout=60) as client:
                while not stop.is_set():
                    try:
                        if self.job is not None or self.session is not None:
                            self.recover(client)
                            continue
                        self.job = self.new_job()
                        self.push(client, self.job)
                        self.job = None
                    except httpx.TransportError:
                        self.ledger.count("requests cut by a kill")
                        if not resilient:
                            return
        except InvariantError as violation:
            self.ledger.violation(f"pusher {self.number}: {violation}")
            self.job = self.session = None
        except Exception as error:  # Reported as a failure, not lost in a thread.
            self.ledger.violation(f"pusher {self.number}: {error!r}")
            self.job = self.session = None

    def recover(self, client: httpx.Client) -> None:
        """As a client after an error: resume the open session, then push the job again."""
        if self.session is not None:
            self.resume(client, self.session)
            self._session_over(self.session.upload_id)
        if self.job is not None:
            self.ledger.count("pushes retried")
            self.push(client, self.job)
            self.job = None

    def resume(self, client: httpx.Client, session: Session) -> None:
        """GET the session's status, send the rest from its offset, complete: or a clean 404."""
        status = client.get(session.location)
        if status.status_code == 404:
            if error_code(status) != "BLOB_UPLOAD_UNKNOWN":
                raise InvariantError(f"session {session.upload_id}: 404, not BLOB_UPLOAD_UNKNOWN")
            self.ledger.count("sessions refused after a kill")
            return
        expect(status, 204, what=f"status of session {session.upload_id}")
        data = session.blob.data
        end = int(status.headers["Range"].rpartition("-")[2])
        # registry:2's Range cannot tell 0 bytes from 1 ("0-0"): try both.
        candidates = [0, 1] if end == 0 else [end + 1]
        location = status.headers["Location"]
        for offset in candidates:
            if offset > len(data):
                raise InvariantError(f"session {session.upload_id}: {offset} > {len(data)} bytes")
            rest = data[offset:]
            if rest:
                response = client.patch(
                    location,
                    content=rest,
                    headers={**OCTETS, "Content-Range": f"{offset}-{len(data) - 1}"},
                )
                if response.status_code == 416 and offset != candidates[-1]:
                    continue
                expect(response, 202, what=f"resumed chunk of session {session.upload_id}")
                location = response.headers["Location"]
            done = client.put(with_query(location, digest=session.blob.digest))
            expect(done, 201, what=f"completion of resumed session {session.upload_id}")
            self._created(done, session.repo, session.blob)
            self.ledger.count("sessions resumed after a kill")
            if offset % session.chunk:
                self.ledger.count("sessions resumed from inside a chunk")
            return
