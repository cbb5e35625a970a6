"""The web pages: server-rendered, a little plain JavaScript, nothing fetched from elsewhere.

Every page is read-only except the delete and sign-in/out forms, which are
POSTs carrying the session's CSRF token. Every response carries a strict
Content-Security-Policy: scripts and styles only from this registry's own files.
"""

from __future__ import annotations

import bisect
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from quart import Blueprint, Quart, Response, g, render_template, request
from werkzeug.exceptions import HTTPException

from ..api.context import Services
from ..errors import RegistryError
from ..notifications import emit
from ..reference import TAG_RE, Digest, InvalidReferenceError, validate_name
from ..storage.driver import StorageDriverError
from ..storage.errors import ManifestUnknownError, RepositoryUnknownError
from .inventory import Inventory
from .viewers import COOKIE, SESSION_SECONDS, Session, Sessions, Viewers

log = logging.getLogger(__name__)

#: Rows on one page of repositories or tags.
PAGE_SIZE = 50
#: Longest search text and paging marker read from a query, and largest form body.
MAX_QUERY = 256
MAX_FORM = 16 * 1024

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_HOST_RE = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?")


class PageError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Page:
    """Paging state for a list: the rows shown and the marker of the next page."""

    rows: list[Any]
    next_last: str | None


def register_ui(app: Quart, services: Services, secret: bytes | None) -> None:
    """Mount the pages under ``{prefix}/ui/``; ``GET {prefix}/`` leads there."""
    config = services.config
    prefix = config.http.prefix
    base = f"{prefix}/ui"
    ui = Blueprint(
        "ui",
        __name__,
        url_prefix=base,
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )
    inventory = Inventory(services.store)
    viewers = Viewers(services.access)
    sessions = Sessions(secret or secrets.token_bytes(32))

    def viewer() -> str | None:
        session: Session = g.ui_session
        return session.user

    def pull_host() -> str:
        if config.http.host:
            return urlsplit(config.http.host).netloc or config.http.host
        headers = request.headers
        host = headers.get("X-Forwarded-Host", "").split(",")[0].strip() or headers.get("Host", "")
        return host if _HOST_RE.fullmatch(host) else "localhost"

    def no_delete(name: str) -> str | None:
        """Why nobody may delete in ``name`` here (the API's own refusals), or None."""
        if not config.storage.delete_enabled:
            return "Deleting is off (storage.delete.enabled: false)."
        if config.storage.readonly:
            return "The registry is read-only (storage.maintenance.readonly)."
        if config.proxy.enabled:
            from ..proxy.routing import route

            target = route(config.proxy.upstreams, name)
            if target is not None:
                return (
                    f"This repository is pulled through from {target.upstream.remoteurl}: "
                    "it is not deleted here."
                )
        return None

    def may_delete(name: str) -> bool:
        return no_delete(name) is None and "delete" in viewers.actions(viewer(), name)

    def visible(name: str) -> bool:
        return viewers.may_pull(viewer(), name)

    def checked_name(value: str | None) -> str:
        if not value:
            raise PageError(404, "No repository named.")
        try:
            name = validate_name(value)
        except InvalidReferenceError:
            raise PageError(404, "No such repository.") from None
        if not visible(name):
            # Not allowed and not there look alike: names are not revealed.
            raise PageError(404, "No such repository, or you may not pull it.")
        return name

    def query(key: str) -> str:
        return request.args.get(key, "")[:MAX_QUERY]

    async def render(template: str, status: int = 200, **context: Any) -> Response:
        html = await render_template(
            f"ui/{template}",
            base=base,
            user=viewer(),
            csrf=g.ui_session.csrf,
            sign_in_available=viewers.enabled and viewers.can_sign_in,
            auth_enabled=viewers.enabled,
            **context,
        )
        return Response(html, status=status, content_type="text/html; charset=utf-8")

    @ui.before_request
    async def load_session() -> None:
        session = sessions.loads(request.cookies.get(COOKIE))
        if session is None or not viewers.known(session.user):
            session = Session.new()
            g.ui_session_changed = True
        else:
            g.ui_session_changed = False
        g.ui_session = session

    @ui.after_request
    async def finish(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if getattr(g, "ui_session_changed", False):
            secure = request.scheme == "https" or request.headers.get(
                "X-Forwarded-Proto", ""
            ).startswith("https")
            response.set_cookie(
                COOKIE,
                sessions.dumps(g.ui_session),
                max_age=SESSION_SECONDS,
                path=f"{base}/",
                httponly=True,
                secure=secure,
                samesite="Strict",
            )
        return response

    @ui.errorhandler(PageError)
    async def page_error(error: PageError) -> Response:
        return await render("error.html", error.status, message=error.message)

    @ui.errorhandler(StorageDriverError)
    async def storage_error(error: StorageDriverError) -> Response:
        log.warning("ui: storage unavailable: %s", error)
        return await render("error.html", 503, message="Storage is unavailable; try again.")

    @ui.errorhandler(RegistryError)
    async def registry_error(error: RegistryError) -> Response:
        return await render("error.html", error.status, message=error.message)

    @ui.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        return await render("error.html", error.code or 500, message=error.description or "")

    def check_csrf(form: dict[str, str]) -> None:
        given = form.get("csrf", "")
        origin = request.headers.get("Origin")
        if origin not in (None, "null") and urlsplit(origin).netloc != request.headers.get(
            "Host", ""
        ):
            raise PageError(403, "This form was sent from another site.")
        if not hmac.compare_digest(given.encode(), g.ui_session.csrf.encode()):
            raise PageError(403, "This form has expired; reload the page and try again.")

    async def form() -> dict[str, str]:
        # Browsers always send a length for a form; none (chunked) could be any size.
        if request.content_length is None:
            raise PageError(411, "A form needs a Content-Length.")
        if request.content_length > MAX_FORM:
            raise PageError(413, "Form too large.")
        data = await request.form
        return {key: data.get(key, "")[: MAX_QUERY * 4] for key in data}

    @ui.get("/")
    async def repositories() -> Response:
        search = query("q").strip()
        last = query("last") or None
        needle = search.lower()

        def keep(name: str) -> bool:
            return needle in name and visible(name)

        names, more = await services.store.catalog.page(last, PAGE_SIZE, keep)
        summaries = await inventory.summaries(names)
        next_last = names[-1] if more and names else None
        return await render(
            "repositories.html",
            page=Page(summaries, next_last),
            search=search,
            first_url=_with(base + "/", q=search) if last else None,
            next_url=_with(base + "/", q=search, last=next_last) if next_last else None,
        )

    @ui.get("/repository")
    async def repository() -> Response:
        name = checked_name(request.args.get("name"))
        last = query("last") or None
        try:
            tags = await inventory.tags(name)
        except RepositoryUnknownError:
            raise PageError(404, "No such repository, or you may not pull it.") from None
        start = 0
        if last is not None:
            start = bisect.bisect_right(tags, last)
        shown = tags[start : start + PAGE_SIZE]
        more = start + PAGE_SIZE < len(tags)
        rows = await inventory.tag_rows(name, shown)
        summary = await inventory.summary(name)
        next_last = shown[-1] if more and shown else None
        return await render(
            "repository.html",
            name=name,
            rows=rows,
            total=len(tags),
            summary=summary,
            host=pull_host(),
            may_delete=may_delete(name),
            first_url=_with(f"{base}/repository", name=name) if last else None,
            next_url=_with(f"{base}/repository", name=name, last=next_last) if next_last else None,
            deleted=query("deleted"),
        )

    @ui.get("/image")
    async def image() -> Response:
        name = checked_name(request.args.get("name"))
        reference = query("tag")
        digest_text = query("digest")
        tag = None
        try:
            if digest_text:
                digest = Digest.parse(digest_text)
            elif reference and TAG_RE.fullmatch(reference):
                digest = await services.store.repository(name).manifests.resolve(reference)
                tag = reference
            else:
                raise PageError(404, "No tag or digest named.")
            shown = await inventory.image(name, digest)
        except (ValueError, ManifestUnknownError, RepositoryUnknownError):
            raise PageError(404, "No such image in this repository.") from None
        children = await inventory.gather(
            inventory.image_or_none(name, child.digest) for child in shown.children
        )
        referrers = await inventory.referrers(name, digest)
        size = await inventory.image_size(name, shown)
        # By digest: the tags pointing at it, among the first thousand (a page, not a scan).
        tags = [tag] if tag is not None else await inventory.tags_of(name, digest, 1000)
        return await render(
            "image.html",
            name=name,
            image=shown,
            tag=tag,
            tags=tags,
            size=size,
            children=list(zip(shown.children, children, strict=True)),
            referrers=referrers,
            host=pull_host(),
            may_delete=may_delete(name),
        )

    @ui.get("/storage")
    async def storage() -> Response:
        names, _ = await services.store.catalog.page(None, 1_000_000, visible)
        usage = await inventory.usage(names)
        return await render("storage.html", usage=usage)

    def delete_target(values: dict[str, str]) -> tuple[str, str | None, Digest | None]:
        name = checked_name(values.get("name"))
        refusal = no_delete(name)
        if refusal is not None:
            raise PageError(405, refusal)
        if "delete" not in viewers.actions(viewer(), name):
            raise PageError(403, "You may not delete in this repository.")
        tag = values.get("tag") or None
        digest = None
        if tag is not None and not TAG_RE.fullmatch(tag):
            raise PageError(404, "No such tag.")
        if tag is None:
            try:
                digest = Digest.parse(values.get("digest", ""))
            except ValueError:
                raise PageError(404, "No such manifest.") from None
        return name, tag, digest

    @ui.get("/delete")
    async def confirm_delete() -> Response:
        name, tag, digest = delete_target(dict(request.args))
        # Every tag the delete takes with it.
        tagged = await inventory.tags_of(name, digest) if digest is not None else []
        return await render(
            "delete.html", name=name, tag=tag, digest=digest and str(digest), tagged=tagged
        )

    @ui.post("/delete")
    async def delete() -> Response:
        values = await form()
        check_csrf(values)
        name, tag, digest = delete_target(values)
        manifests = services.store.repository(name).manifests
        try:
            if digest is not None:
                tags = await emit.tags_of(manifests, digest)
                await manifests.delete(digest)
                emit.manifest_deleted(name, digest, tags)
                what = str(digest)
            else:
                assert tag is not None
                await manifests.delete_tag(tag)
                emit.tag_deleted(name, tag)
                what = tag
        except (ManifestUnknownError, RepositoryUnknownError):
            raise PageError(404, "Already gone: nothing was deleted.") from None
        inventory.forget(name)
        log.info("ui: %s deleted %s from %s", viewer() or "anonymous", what, name)
        return _redirect(_with(f"{base}/repository", name=name, deleted=what), 303)

    @ui.get("/signin")
    async def sign_in_form() -> Response:
        return await render("signin.html", next=_local(query("next"), base))

    @ui.post("/signin")
    async def sign_in() -> Response:
        values = await form()
        check_csrf(values)
        target = _local(values.get("next", ""), base)
        if not viewers.can_sign_in:
            raise PageError(404, "This registry has no sign-in of its own.")
        user, password = values.get("user", ""), values.get("password", "")
        address = request.remote_addr or "-"
        try:
            right = await viewers.sign_in(address, user, password)
        except RegistryError as error:
            return await render("signin.html", error.status, next=target, error=error.message)
        if not right:
            return await render(
                "signin.html", 401, next=target, error="Wrong user name or password."
            )
        g.ui_session = Session.new(user)  # A new CSRF token with every sign-in.
        g.ui_session_changed = True
        return _redirect(target, 303)

    @ui.post("/signout")
    async def sign_out() -> Response:
        check_csrf(await form())
        g.ui_session = Session.new()
        g.ui_session_changed = True
        return _redirect(f"{base}/", 303)

    ui.add_app_template_filter(_size, "size")
    ui.add_app_template_filter(_when, "when")
    ui.add_app_template_filter(_short, "short")
    ui.add_app_template_global(_with, "with_query")
    app.register_blueprint(ui)

    @app.after_serving
    async def close_inventory() -> None:
        await inventory.close()

    async def root() -> Response:
        return _redirect(f"{base}/", 302)

    app.add_url_rule(f"{prefix}/", "ui-root", root, methods=["GET"])


def _redirect(location: str, status: int) -> Response:
    return Response("", status=status, headers={"Location": location})


def _local(target: str, base: str) -> str:
    """A redirect target on these pages only (never another site)."""
    if target.startswith(base + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return base + "/"


def _with(path: str, **values: str | None) -> str:
    present = {key: value for key, value in values.items() if value}
    return f"{path}?{urlencode(present)}" if present else path


def _size(value: int | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{value} B"


def _when(value: float | str | None) -> str:
    """A time as UTC text: from seconds since the epoch, or an RFC 3339 string."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value[:40]
    else:
        moment = datetime.fromtimestamp(value, UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _short(digest: object) -> str:
    text = str(digest)
    algorithm, _, hex_part = text.partition(":")
    return f"{algorithm}:{hex_part[:12]}" if hex_part else text[:19]
