"""One worker's pull-through cache: the upstreams, their clients, the transfers running."""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpcore
import httpx

from ..config import ProxyConfig
from .blobs import BlobPuller
from .claims import Claims
from .client import UpstreamClient
from .observer import Observer, ignore
from .routing import Target, route

if TYPE_CHECKING:  # redis-py: only where Redis is configured.
    from .leases import Leases

#: How long an upstream may take: to connect, and between two pieces of an answer.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
#: Redirects followed (Docker Hub sends blobs to its CDN: one).
MAX_REDIRECTS = 5
#: Most bytes httpcore takes from a socket at a time. Its default, 64 KiB, costs a blob
#: pulled through half as much CPU again: every read goes through anyio and h11, and
#: the 256 KiB uvloop hands over at once is cut and copied on the way. A read returns
#: what has arrived, so a larger limit holds no more memory than the data itself.
UPSTREAM_READ = 1024 * 1024


#: What httpx imports on a client's first request (anyio's asyncio backend: 50-100 ms).
NETWORK_MODULES = ("anyio.abc", "anyio.streams.tls", "anyio._backends._asyncio")


def _load_network_code() -> None:
    """Imported with the worker, not in its first pull through, on a client's time (the
    backend's module is anyio's own business: if it moves, it is loaded when used)."""
    for module in NETWORK_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def _read_larger_pieces() -> None:
    """httpcore has no per-client setting for it: the class attribute applies to every
    HTTP/1.1 connection of this worker's clients, which only ever gain from it."""
    connection = httpcore.AsyncHTTP11Connection
    connection.READ_NUM_BYTES = max(connection.READ_NUM_BYTES, UPSTREAM_READ)


@dataclass
class PullThrough:
    config: ProxyConfig
    claims_folder: str | None = None
    """Where this server's workers claim the blobs they fetch (None: this process only)."""
    leases: Leases | None = None
    """Claims shared with other instances on the same storage (Redis), if configured."""
    clients: dict[str, UpstreamClient] = field(init=False)
    """By prefix ("" for registry:2's ``proxy.remoteurl``)."""
    blobs: BlobPuller = field(default_factory=BlobPuller)
    observe: Observer = ignore
    http: httpx.AsyncClient = field(init=False)
    claims: Claims = field(init=False)

    def __post_init__(self) -> None:
        _read_larger_pieces()
        _load_network_code()
        self.claims = Claims(self.claims_folder, self.leases)
        # httpx strips Authorization on a redirect to another host (Docker Hub's CDN).
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            headers={"User-Agent": "registry-pull-through"},
        )
        self.clients = {
            upstream.prefix: UpstreamClient(upstream, self.http)
            for upstream in self.config.upstreams
        }

    def report_to(self, observe: Observer) -> None:
        """Count hits, misses and bytes pulled in the metrics."""
        self.observe = observe
        self.blobs.observe = observe

    def target(self, name: str) -> Target | None:
        """The upstream ``name`` is pulled through from; None: a repository of our own."""
        return route(self.config.upstreams, name)

    def client(self, target: Target) -> UpstreamClient:
        return self.clients[target.upstream.prefix]

    async def close(self) -> None:
        await self.blobs.close()
        await self.http.aclose()
        self.claims.close()
