"""The ASGI layer in front of the native reads: what a repository pulled through needs.

Access control runs before it (a caller who may not pull never causes an upstream
request); after it, reads of a proxied repository make the content current in
storage and the native reads serve it with every rule they apply (``Accept``,
``If-None-Match``, ranges). Only what storage cannot answer yet is answered here:
a blob streamed while it is pulled through, a HEAD of a blob not pulled yet, and
the tag list, which comes from upstream as registry:2's does. Writes to a proxied
repository are refused, as registry:2 refuses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

from ..api.errors import to_registry_error
from ..api.manifests import DEFAULT_ARCHITECTURE, DEFAULT_OS, accepted
from ..api.native import READ_METHODS, Matcher, Read, Reply, error_reply, send_reply
from ..api.tags import page_reply, tags_page_size
from ..auth.grant import grant_of
from ..config import Config
from ..errors import ErrorCode, RegistryError
from ..manifests import DOCKER_MANIFEST_LIST
from ..middleware import CACHE_SCOPE_KEY
from ..notifications import emit
from ..reference import DIGEST_RE, TAG_RE, Digest, InvalidReferenceError, is_digest, validate_name
from ..storage import Repository, Store
from ..storage.catalog import page
from ..storage.errors import BlobUnknownError
from .blobs import Transfer
from .cache import PullThrough
from .client import UpstreamClient
from .errors import UpstreamError, UpstreamNotFoundError, client_error
from .expiry import PullStamps
from .manifests import HIT, MISS, STALE, pull_manifest, pull_platform_child
from .routing import Target
from .spool import BrokenTransferError, Spool

log = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"PUT", "POST", "PATCH", "DELETE"})
#: Longest ``last`` passed on to an upstream's tag list (a tag is at most 128).
MAX_LAST = 256


def _blob_headers(digest: Digest, size: int) -> dict[str, str]:
    return {
        "Content-Type": "application/octet-stream",
        "Content-Length": str(size),
        "Docker-Content-Digest": str(digest),
        "ETag": f'"{digest}"',
    }


def _log_failure(what: str, error: UpstreamError) -> None:
    """Content the upstream does not have is ordinary; anything else an operator should see
    (refused credentials, an unreachable or misbehaving upstream)."""
    level = logging.INFO if isinstance(error, UpstreamNotFoundError) else logging.WARNING
    log.log(level, "proxy: %s: %s", what, error)


def _valid_name(name: str) -> bool:
    try:
        validate_name(name)
    except InvalidReferenceError:
        return False
    return True


class PullThroughApp:
    def __init__(
        self,
        app: Any,
        proxy: PullThrough,
        store: Store,
        match: Matcher,
        *,
        prefix: str = "",
        guarded: bool = False,
        config: Config | None = None,
    ) -> None:
        self.app = app
        self.proxy = proxy
        self.store = store
        self.match = match
        self.start = f"{prefix}/v2/"
        self.guarded = guarded
        self.config = config or Config()
        self.stamps = PullStamps(store.driver)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.start):
            found = self.match(scope["path"][len(self.start) :])
            if found is not None and "name" in found[1] and _valid_name(found[1]["name"]):
                route, arguments = found
                target = self.proxy.target(arguments["name"])
                # Without the guard's grant the inner app refuses: nothing goes upstream.
                if target is not None and not (self.guarded and grant_of(scope) is None):
                    await self._proxied(scope, receive, send, route, arguments, target)
                    return
        await self.app(scope, receive, send)

    async def _proxied(
        self,
        scope: HTTPScope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        route: Any,
        arguments: dict[str, str],
        target: Target,
    ) -> None:
        method = scope["method"]
        if method in WRITE_METHODS and method in route.methods:
            error = RegistryError(
                ErrorCode.UNSUPPORTED,
                f"this repository is pulled through from {target.upstream.remoteurl}: "
                "pushes and deletes are not accepted",
            )
            await send_reply(error_reply(error, method), receive, send, method)
            return
        if method not in READ_METHODS or route.name not in ("manifest", "blob", "tags"):
            await self.app(scope, receive, send)
            return
        repo = self.store.repository(arguments["name"])
        client = self.proxy.client(target)
        read = Read.of(
            method, scope["headers"], scope["query_string"], grant_of(scope), self.config
        )
        try:
            if route.name == "manifest":
                served = await self._manifest(scope, repo, client, target, read, arguments)
            elif route.name == "blob":
                served = await self._blob(
                    scope, receive, send, repo, client, target, read, arguments
                )
            else:
                served = await self._tags(scope, receive, send, repo, client, target, read)
        except Exception as error:
            reply = error_reply(to_registry_error(error), method)
            await send_reply(reply, receive, send, method)
            return
        if not served:
            await self.app(scope, receive, send)

    def _mark(self, scope: HTTPScope, outcome: str, kind: str) -> None:
        """For the access log and the metrics (stale content served is a hit there)."""
        scope[CACHE_SCOPE_KEY] = outcome  # type: ignore[literal-required]
        observe = self.proxy.observe
        observe("requests", kind, 1)
        observe("misses" if outcome == MISS else "hits", kind, 1)

    async def _manifest(
        self,
        scope: HTTPScope,
        repo: Repository,
        client: UpstreamClient,
        target: Target,
        read: Read,
        arguments: dict[str, str],
    ) -> bool:
        """Make the manifest current in storage; the native read then serves it."""
        reference = arguments["reference"]
        if TAG_RE.fullmatch(reference) is None and DIGEST_RE.fullmatch(reference) is None:
            return False
        try:
            if is_digest(reference):
                Digest.parse(reference)
        except InvalidReferenceError:
            return False
        try:
            observe = self.proxy.observe
            outcome = await pull_manifest(
                repo, client, target.remote, reference, target.upstream.ttl, observe
            )
            if not is_digest(reference) and DOCKER_MANIFEST_LIST not in accepted(read):
                await pull_platform_child(
                    repo,
                    client,
                    target.remote,
                    reference,
                    DEFAULT_OS,
                    DEFAULT_ARCHITECTURE,
                    observe,
                )
        except UpstreamError as error:
            _log_failure(f"{repo.name}:{reference}", error)
            raise client_error(error, ErrorCode.MANIFEST_UNKNOWN) from None
        self._mark(scope, outcome, "manifest")
        await self.stamps.pulled(repo.name, target.upstream.expire)
        return False

    async def _blob(
        self,
        scope: HTTPScope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        repo: Repository,
        client: UpstreamClient,
        target: Target,
        read: Read,
        arguments: dict[str, str],
    ) -> bool:
        try:
            digest = Digest.parse(arguments["digest"])
        except InvalidReferenceError:
            return False
        if await repo.blobs.is_linked(digest):
            self._mark(scope, HIT, "blob")
            return False
        self._mark(scope, MISS, "blob")
        try:
            while True:
                elsewhere = await self._stored_elsewhere(digest)
                if read.method == "HEAD" or elsewhere:
                    size = await client.blob_size(target.remote, digest)
                    if elsewhere:
                        await repo.blobs.link(digest)  # Upstream has it here: no transfer.
                        return False
                    emit.blob_pulled(repo.name, digest, size)  # As the native read would.
                    reply = Reply(200, _blob_headers(digest, size))
                    await send_reply(reply, receive, send, "HEAD")
                    return True
                transfer = self.proxy.blobs.running(repo, digest)
                if transfer is not None:
                    break
                claim = await self.proxy.claims.try_claim(digest)
                if claim is None:
                    # Another worker (or repository) fetches it: wait, then look again.
                    await self.proxy.claims.wait(digest)
                    if await repo.blobs.is_linked(digest):
                        return False
                    continue
                if await self._stored_elsewhere(digest):  # Stored just before the claim.
                    await claim.release()
                    continue
                # A range waits for the stored copy; a whole GET is streamed as it comes.
                streamed = read.header(b"range") is None
                transfer = self.proxy.blobs.start(
                    repo, client, target.remote, digest, listen=streamed, claim=claim
                )
                if transfer.spool is not None:
                    await self._stream(receive, send, repo, transfer, digest, transfer.spool)
                    return True
                break
            await asyncio.shield(transfer.done)
        except UpstreamError as error:
            _log_failure(f"{repo.name}@{digest}", error)
            raise client_error(error, ErrorCode.BLOB_UNKNOWN) from None
        return False  # Stored now: served from storage, ranges and all.

    async def _stored_elsewhere(self, digest: Digest) -> bool:
        try:
            await self.store.blobs.stat(digest)
        except BlobUnknownError:
            return False
        return True

    @staticmethod
    async def _stream(
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        repo: Repository,
        transfer: Transfer,
        digest: Digest,
        spool: Spool,
    ) -> None:
        """The blob as it comes from upstream; cut short if the transfer fails."""
        try:
            size = await asyncio.shield(transfer.size)
            emit.blob_pulled(repo.name, digest, size)
            reply = Reply(200, _blob_headers(digest, size), spool.pieces())
            # Once the answer began, ending it short of its length tells the client.
            with contextlib.suppress(BrokenTransferError):
                await send_reply(reply, receive, send)
        finally:
            spool.close()  # Whatever it still holds goes; the transfer goes on.

    async def _tags(
        self,
        scope: HTTPScope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        repo: Repository,
        client: UpstreamClient,
        target: Target,
        read: Read,
    ) -> bool:
        """The upstream's tags (as registry:2 answers); this registry's when it fails."""
        n = tags_page_size(read.arg("n"), self.config.tags_maxtags)
        last = read.arg("last")
        params = {"n": str(n)} if n is not None else {}
        if last:
            if len(last) > MAX_LAST:
                return False
            params["last"] = last
        try:
            tags, more = await client.tags(target.remote, params)
        except UpstreamError as error:
            log.info("proxy: %s: tags from storage: %s", repo.name, error)
            scope[CACHE_SCOPE_KEY] = STALE  # type: ignore[literal-required]
            return False
        # An upstream that ignores ``n`` and ``last`` (registry:2 2.8 does) is paged here.
        tags, beyond = page(sorted(tags), last, n)
        more = more or beyond
        scope[CACHE_SCOPE_KEY] = MISS  # type: ignore[literal-required]
        path = f"/v2/{repo.name}/tags/list"
        reply = page_reply(read, path, "tags", {"name": repo.name}, tags, more, n or len(tags))
        await send_reply(reply, receive, send, read.method)
        return True
