"""Which upstream a repository comes from, and its name there."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..config import ProxyUpstream

#: Docker Hub's registry hosts: one-component names there live under ``library/``.
DOCKER_HUB_HOSTS = frozenset(
    {"registry-1.docker.io", "index.docker.io", "docker.io", "registry.hub.docker.com"}
)
DOCKER_HUB_PREFIX = "docker.io"


@dataclass(frozen=True, slots=True)
class Target:
    """A repository's upstream and its name there."""

    upstream: ProxyUpstream
    remote: str


def is_docker_hub(upstream: ProxyUpstream) -> bool:
    host = (urlsplit(upstream.remoteurl).hostname or "").lower()
    return upstream.prefix == DOCKER_HUB_PREFIX or host in DOCKER_HUB_HOSTS


def route(upstreams: Sequence[ProxyUpstream], name: str) -> Target | None:
    """The upstream for ``name``: the longest matching prefix (``upstreams`` is sorted so),
    whole components only; None when the repository is this registry's own.

    As Docker does, ``alpine`` on Docker Hub is ``library/alpine``.
    """
    for upstream in upstreams:
        prefix = upstream.prefix
        if not prefix:
            remote = name
        elif name.startswith(prefix + "/"):
            remote = name[len(prefix) + 1 :]
        else:
            continue
        if "/" not in remote and is_docker_hub(upstream):
            remote = f"library/{remote}"
        return Target(upstream, remote)
    return None
