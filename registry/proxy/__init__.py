"""The pull-through cache: repositories read through from upstream registries.

registry:2's ``proxy.remoteurl`` sends every repository to one upstream;
``proxy.upstreams`` chooses one by the repository name's prefix, and names that
match none stay this registry's own (pushes accepted). Content pulled through is
stored in exactly the layout a push leaves, so a cached repository reads as a
pushed one, by this registry and by registry:2.
"""

from __future__ import annotations

from .app import PullThroughApp
from .cache import PullThrough

__all__ = ["PullThrough", "PullThroughApp"]
