"""Upstreams for the pull-through cache: Debian's Go registry with htpasswd (Basic), and
this registry with its token service (Bearer), each on a free port."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx
import pytest

from registry.proxy.claims import Claims
from registry.reference import Digest
from tests.access import USERS, BearerAuth, token_config, write_htpasswd
from tests.conftest import RegistryProcess
from tests.go_registry import GoRegistry
from tests.pushing import ACCEPT_MANIFESTS

UPSTREAM_USER = "admin"
UPSTREAM_PASSWORD = USERS["admin"]


class _SignedInGoRegistry(GoRegistry):
    """The Go registry, up once ``/v2/`` answers at all (401 with auth on)."""

    def start(self) -> GoRegistry:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "serve", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 60  # As GoRegistry.start waits.
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/v2/").status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not start:\n{self.log.read_text()}")


class BasicUpstream:
    """The Go registry with htpasswd auth: it answers ``WWW-Authenticate: Basic``."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        htpasswd = write_htpasswd(folder / "htpasswd")
        auth = {"htpasswd": {"realm": "upstream", "path": str(htpasswd)}}
        self.go = _SignedInGoRegistry(folder / "data", folder, {"auth": auth})

    @property
    def url(self) -> str:
        return self.go.url

    def start(self) -> BasicUpstream:
        try:
            self.go.start()
        except BaseException:
            self.go.stop()
            raise
        return self

    def stop(self) -> None:
        self.go.stop()

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            auth=httpx.BasicAuth(UPSTREAM_USER, UPSTREAM_PASSWORD),
            headers=ACCEPT_MANIFESTS,
            timeout=60,
        )

    def requests(self, needle: str) -> list[str]:
        """Access-log lines of requests whose line holds ``needle``."""
        return [line for line in self.go.log.read_text().splitlines() if needle in line]


@pytest.fixture
def basic_upstream(tmp_path: Path) -> Iterator[BasicUpstream]:
    upstream = BasicUpstream(tmp_path / "basic-upstream").start()
    yield upstream
    upstream.stop()


@pytest.fixture
def bearer_upstream(
    registry_factory: Callable[..., RegistryProcess], tmp_path: Path
) -> RegistryProcess:
    """This registry with its token service: it answers ``WWW-Authenticate: Bearer``."""
    folder = tmp_path / "bearer-upstream"
    folder.mkdir()
    return registry_factory(token_config(folder))


def bearer_client(upstream: RegistryProcess) -> httpx.Client:
    return httpx.Client(
        base_url=upstream.url,
        auth=BearerAuth(UPSTREAM_USER, UPSTREAM_PASSWORD),
        headers=ACCEPT_MANIFESTS,
        timeout=60,
    )


def proxy_section(url: str, **extra: object) -> dict[str, object]:
    """registry:2's ``proxy`` section for an upstream signed in to as the admin."""
    return {
        "proxy": {
            "remoteurl": url,
            "username": UPSTREAM_USER,
            "password": UPSTREAM_PASSWORD,
            **extra,
        }
    }


def client_of(registry: RegistryProcess, **options: object) -> httpx.Client:
    return httpx.Client(
        base_url=registry.url,
        headers=ACCEPT_MANIFESTS,
        timeout=60,
        **options,  # type: ignore[arg-type]
    )


def wait_stored(registry: RegistryProcess, repo: str, digests: Iterable[str]) -> None:
    """Wait until blobs pulled through are stored: the store finishes behind the client
    that asked, which has every byte (verified) a moment before the blob is linked."""
    v2 = registry.root / "docker/registry/v2"
    links = [v2 / "repositories" / repo / "_layers" / d.replace(":", "/") / "link" for d in digests]
    uploads = v2 / "repositories" / repo / "_uploads"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(link.exists() for link in links) and not (
            uploads.exists() and any(uploads.iterdir())
        ):
            return
        time.sleep(0.02)
    raise AssertionError(f"not stored after 60 s: {[str(x) for x in links if not x.exists()]}")


def spool_files(registry: RegistryProcess) -> list[str]:
    """Files the registry's workers hold open that have no name any more (a spool's),
    once none is left or after 10 s (a spool closes its file once its last read or
    write in a thread has returned)."""
    deadline = time.monotonic() + 10
    while (held := _unnamed_files(registry)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return held


def _unnamed_files(registry: RegistryProcess) -> list[str]:
    assert registry.process is not None
    pid = registry.process.pid
    workers = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    held = []
    for worker in workers:
        for fd in Path(f"/proc/{worker}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue  # Closed meanwhile.
            if target.endswith("(deleted)"):
                held.append(target)
    return held


async def waiter_goes_on_after_release(holder: Claims, waiter: Claims, digest: Digest) -> None:
    """``waiter`` waits for ``digest`` while ``holder`` holds its claim, and not after."""
    claim = await holder.try_claim(digest)
    assert claim is not None
    waiting = asyncio.create_task(waiter.wait(digest))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await claim.release()
    await asyncio.wait_for(waiting, timeout=30)
