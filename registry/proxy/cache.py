"""One worker's pull-through cache: the upstreams, their clients, the transfers running."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from ..config import ProxyConfig
from .blobs import BlobPuller
from .client import UpstreamClient
from .observer import Observer, ignore
from .routing import Target, route

#: How long an upstream may take: to connect, and between two pieces of an answer.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
#: Redirects followed (Docker Hub sends blobs to its CDN: one).
MAX_REDIRECTS = 5


@dataclass
class PullThrough:
    config: ProxyConfig
    clients: dict[str, UpstreamClient] = field(init=False)
    """By prefix ("" for registry:2's ``proxy.remoteurl``)."""
    blobs: BlobPuller = field(default_factory=BlobPuller)
    observe: Observer = ignore
    http: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
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
