"""The route table, the one place a URL is matched to a handler.

Repository names contain slashes, so routes match the path after ``/v2/``
with regular expressions (as distribution's route descriptors do) and the
name is checked against the grammar by the handler, giving ``NAME_INVALID``
rather than a bare 404 for a bad name.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from quart import Response, request

from ..auth.access import CATALOG, DELETE, PULL, PUSH, REPOSITORY, Access, Need
from ..auth.grant import grant_of
from ..errors import ErrorCode, RegistryError
from ..reference import InvalidReferenceError, validate_name
from . import base, blobs, catalog, manifests, referrers, tags, uploads
from .context import services
from .native import Native, Read
from .responses import respond

Handler = Callable[..., Awaitable[Response]] | Native

WRITE_METHODS = frozenset({"PUT", "POST", "PATCH", "DELETE"})
ALL_METHODS = ("GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS")


#: What a method needs besides an action on the named repository (access control).
LOGIN = "login"
"""Any signed-in caller: ``/v2/``, the check ``docker login`` makes."""
LIST = "catalog"
"""The catalog: ``registry:catalog:*``; the handler shows only what the caller may pull."""

#: The usual needs of a repository's route: reads pull, writes push, deletes delete.
REPOSITORY_NEEDS = {"GET": PULL, "HEAD": PULL, "PUT": PUSH, "POST": PUSH, "PATCH": PUSH}


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    pattern: re.Pattern[str]
    methods: Mapping[str, Handler]
    needs: Mapping[str, str]
    """Per method: the action on the repository in ``name``, or LOGIN or LIST."""


def _route(
    name: str, pattern: str, methods: Mapping[str, Handler], needs: Mapping[str, str]
) -> Route:
    assert needs.keys() >= methods.keys(), f"route {name}: every method names what it needs"
    return Route(name, re.compile(pattern, re.DOTALL), methods, needs)


# Order matters where patterns overlap: uploads before blobs.
ROUTES: tuple[Route, ...] = (
    _route("base", r"", {"GET": base.check, "HEAD": base.check}, {"GET": LOGIN, "HEAD": LOGIN}),
    _route("catalog", r"_catalog", {"GET": Native(catalog.read_catalog)}, {"GET": LIST}),
    _route("tags", r"(?P<name>.+)/tags/list", {"GET": Native(tags.read_tags)}, REPOSITORY_NEEDS),
    _route(
        "manifest",
        r"(?P<name>.+)/manifests/(?P<reference>[^/]+)",
        {
            "GET": Native(manifests.read_manifest),
            "HEAD": Native(manifests.read_manifest),
            "PUT": manifests.put_manifest,
            "DELETE": manifests.delete_manifest,
        },
        {**REPOSITORY_NEEDS, "DELETE": DELETE},
    ),
    # A mount's source repository is asked for too (see need_of); without pull there,
    # the handler opens an ordinary upload instead.
    _route(
        "blob-upload",
        r"(?P<name>.+)/blobs/uploads/?",
        {"POST": uploads.start_upload},
        REPOSITORY_NEEDS,
    ),
    _route(
        "blob-upload-chunk",
        r"(?P<name>.+)/blobs/uploads/(?P<upload_id>[^/]+)",
        {
            "GET": uploads.get_upload_status,
            "PATCH": uploads.patch_upload,
            "PUT": uploads.complete_upload,
            "DELETE": uploads.cancel_upload,
        },
        # An upload's status is part of a push, not a read of the repository.
        {"GET": PUSH, "PATCH": PUSH, "PUT": PUSH, "DELETE": PUSH},
    ),
    _route(
        "blob",
        r"(?P<name>.+)/blobs/(?P<digest>[^/]+)",
        {
            "GET": Native(blobs.read_blob),
            "HEAD": Native(blobs.read_blob),
            "DELETE": blobs.delete_blob,
        },
        {**REPOSITORY_NEEDS, "DELETE": DELETE},
    ),
    _route(
        "referrers",
        r"(?P<name>.+)/referrers/(?P<digest>[^/]+)",
        {"GET": referrers.list_referrers},
        REPOSITORY_NEEDS,
    ),
)


def match(path: str) -> tuple[Route, dict[str, Any]] | None:
    for route in ROUTES:
        found = route.pattern.fullmatch(path)
        if found is not None:
            return route, found.groupdict()
    return None


def _valid_name(name: str) -> bool:
    try:
        validate_name(name)
    except InvalidReferenceError:
        return False
    return True


def need_of(rest: str, method: str, query: bytes) -> Need | None:
    """What a request needs (access control); None where no route serves it (404, 405)."""
    found = match(rest)
    if found is None:
        return None
    route, arguments = found
    action = route.needs.get(method) if method in route.methods else None
    if action is None:
        return None
    if action == LOGIN:
        return Need(login=True)
    if action == LIST:
        return Need(required=(CATALOG,))
    name = arguments["name"]
    if not _valid_name(name):
        return Need(login=True)  # The handler answers NAME_INVALID, to signed-in callers only.
    # A push asks for pull too, as registry:2's challenge does (clients read blobs back
    # while pushing), without requiring it.
    optional: tuple[Access, ...] = (Access(REPOSITORY, name, PULL),) if action == PUSH else ()
    if route.name == "blob-upload" and b"from=" in query:
        source = parse_qs(query.decode("latin-1")).get("from", [""])[0]
        if _valid_name(source):
            optional += (Access(REPOSITORY, source, PULL),)
    return Need(required=(Access(REPOSITORY, name, action),), optional=optional)


async def dispatch(rest: str = "") -> Response:
    """Find the route for the path after ``/v2/``, apply the write guards, call the handler."""
    # werkzeug's router drops extra leading slashes ("//v2/..." is routed as "/v2/...");
    # the access guard and the native reads take the path as sent, and so does this.
    found = None if request.scope["path"].startswith("//") else match(rest)
    if found is None:
        raise RegistryError(ErrorCode.UNSUPPORTED, "no such API endpoint", status=404)
    route, arguments = found
    method = request.method
    handler = route.methods.get(method)
    if handler is None:
        allowed = ", ".join(sorted(route.methods))
        raise RegistryError(
            ErrorCode.UNSUPPORTED,
            f"method {method} not allowed here",
            detail={"allowed": sorted(route.methods)},
            headers={"Allow": allowed},
        )
    config = services().config
    if config.auth.enabled and grant_of(request.scope) is None:
        # Access control is on but the guard did not run: refuse rather than serve.
        raise RegistryError(ErrorCode.UNAUTHORIZED)
    proxy = services().proxy
    if method in WRITE_METHODS and proxy is not None and "name" in arguments:
        target = proxy.target(arguments["name"])
        if target is not None:
            raise RegistryError(
                ErrorCode.UNSUPPORTED,
                f"this repository is pulled through from {target.upstream.remoteurl}: "
                "pushes and deletes are not accepted",
            )
    if method in WRITE_METHODS and config.storage.readonly:
        raise RegistryError(
            ErrorCode.UNSUPPORTED,
            "the registry is in read-only mode (storage.maintenance.readonly)",
        )
    if isinstance(handler, Native):
        # Answered before Quart when served through NativeReads; here for the
        # Quart app on its own (tests, or another ASGI server in front).
        read = Read.of(
            method,
            ((k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()),
            request.scope["query_string"],
            grant_of(request.scope),
            config,
        )
        reply = await handler.handler(services().store, read, **arguments)
        return respond(reply.status, reply.headers, b"" if method == "HEAD" else reply.body)
    return await handler(**arguments)
