"""The app factory: the one place config, storage and the API are wired together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

from hypercorn.typing import ASGIFramework
from quart import Quart

from .api import register_api
from .api.context import EXTENSION, Services
from .api.native import NativeReads
from .api.routes import match, need_of
from .auth import build_access_control
from .auth.guard import AccessGuard
from .body import StreamedConnection, StreamedRequest
from .config import Config
from .middleware import RegistryMiddleware
from .storage import Store
from .storage.driver import StorageDriver
from .storage.driver.factory import create_driver
from .storage.purge import purge_uploads

log = logging.getLogger(__name__)


def create_app(
    config: Config, *, driver: StorageDriver | None = None, maintenance: bool = True
) -> Quart:
    """Build the Quart app; tests pass a driver, production gets one from config.

    ``maintenance``: this app runs upload purging (one worker of several does).
    """
    app = Quart(__name__)
    app.asgi_http_class = StreamedConnection
    app.request_class = StreamedRequest
    # Quart's defaults would break a registry: a 16 MiB body cap and 60 s timeouts.
    app.config.update(MAX_CONTENT_LENGTH=None, BODY_TIMEOUT=None, RESPONSE_TIMEOUT=None)
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    store = Store(driver or create_driver(config.storage.driver, config.storage.parameters))
    access = build_access_control(config)
    app.extensions[EXTENSION] = Services(config=config, store=store, access=access)
    register_api(app, config.http.prefix)
    if access is not None and access.issuer is not None and access.token_path is not None:
        app.add_url_rule(
            access.token_path,
            "token",
            access.issuer.handle,
            methods=["GET", "POST"],
            provide_automatic_options=False,
        )

    @app.while_serving
    async def lifespan() -> AsyncGenerator[None, None]:
        purging = config.storage.upload_purging
        task = None
        if maintenance and purging.enabled and not config.storage.readonly:
            task = asyncio.create_task(_purge_periodically(store, config))
        yield
        if task is not None:
            task.cancel()
        await store.close()

    return app


async def _purge_periodically(store: Store, config: Config) -> None:
    """registry:2's upload purging: now, then every ``interval``."""
    purging = config.storage.upload_purging
    while True:
        try:
            result = await purge_uploads(store.driver, purging.age, dry_run=purging.dryrun)
            if result.purged:
                verb = "would purge" if purging.dryrun else "purged"
                log.info(
                    "%s %d abandoned upload(s): %s",
                    verb,
                    len(result.purged),
                    ", ".join(result.purged),
                )
        except Exception:
            log.exception("upload purging failed; retrying at the next interval")
        await asyncio.sleep(purging.interval)


def create_asgi_app(
    config: Config, *, driver: StorageDriver | None = None, maintenance: bool = True
) -> ASGIFramework:
    """What the server runs: the Quart app, with native reads in front, access
    control in front of both, and the response headers and access log around all."""
    app = create_app(config, driver=driver, maintenance=maintenance)
    services: Services = app.extensions[EXTENSION]
    access = services.access
    inner: ASGIFramework = NativeReads(
        app, services.store, match, config.http.prefix, guarded=access is not None
    )
    if access is not None:
        inner = AccessGuard(inner, access.controller, need_of, config.http.prefix)
    return RegistryMiddleware(inner, config.http.headers, access_log_enabled=config.log.accesslog)
