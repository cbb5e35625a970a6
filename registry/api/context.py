"""What a handler needs besides the request: config and store, hung off the app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from quart import current_app, request

from ..auth import AccessControl
from ..config import Config
from ..storage import Store

if TYPE_CHECKING:
    from ..notifications import Notifier
    from ..proxy import PullThrough

EXTENSION = "registry"


@dataclass(frozen=True, slots=True)
class Services:
    config: Config
    store: Store
    access: AccessControl | None = None
    """Access control, when ``auth`` is configured."""
    notifier: Notifier | None = None
    """Notifications, when an endpoint is configured."""
    proxy: PullThrough | None = None
    """The pull-through cache, when ``proxy`` is configured."""


def services() -> Services:
    result: Services = current_app.extensions[EXTENSION]
    return result


def base_url() -> str:
    """Scheme and host that ``Location`` headers start with; empty for relative URLs.

    ``http.host`` wins; behind a proxy ``X-Forwarded-Proto``/``X-Forwarded-Host``
    say what the client used; otherwise the request's own scheme and Host.
    """
    http = services().config.http
    if http.relativeurls:
        return ""
    if http.host:
        return http.host
    headers = request.headers
    forwarded_proto = headers.get("X-Forwarded-Proto", "").split(",")[0].strip()
    forwarded_host = headers.get("X-Forwarded-Host", "").split(",")[0].strip()
    scheme = forwarded_proto or request.scheme
    host = forwarded_host or headers.get("Host", "")
    return f"{scheme}://{host}" if host else ""


def url(path: str) -> str:
    """An absolute (or, with ``http.relativeurls``, relative) URL of an API path."""
    return f"{base_url()}{services().config.http.prefix}{path}"
