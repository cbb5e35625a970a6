"""The app factory: the one place config, storage and the API are wired together."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from hypercorn.typing import ASGIFramework
from quart import Quart

from .api import register_api
from .api.context import EXTENSION, Services
from .api.native import NativeReads
from .api.routes import match, need_of
from .auth import build_access_control
from .body import StreamedConnection, StreamedRequest
from .config import Config
from .debug import DebugApp, run_folder
from .health import HealthChecker, HealthGate, HealthState, checks_of
from .middleware import RegistryMiddleware
from .namespaces import NamespaceRouting
from .notifications import Notifier, NotifyingApp
from .storage import Store
from .storage.catalog_index import REINDEX_SECONDS
from .storage.driver import StorageDriver
from .storage.driver.cached import CachedDriver
from .storage.driver.factory import create_driver, with_cache
from .storage.gc import GC_EXTENSION, OnlineCollector
from .storage.purge import purge_uploads
from .storage.turns import Turns

if TYPE_CHECKING:
    from .metrics import Recorder
    from .proxy.expiry import Expiry

log = logging.getLogger(__name__)

#: Where an app keeps its :class:`Background` (``app.extensions``).
BACKGROUND_EXTENSION = "registry.background"


@dataclass
class Background:
    """The work one worker does for all (purging, collecting, health checks, delivering
    events). A reload retires the worker: its requests in flight still finish there,
    which may take long, but this work moves to the new workers at once."""

    notifier: Notifier | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    retired: bool = False

    def start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        if self.retired:
            task.cancel()
        self.tasks.append(task)
        return task

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def retire(self) -> None:
        """Called by the worker's SIGUSR2 handler, in the event loop."""
        self.retired = True
        for task in self.tasks:
            task.cancel()
        if self.notifier is not None:
            self.notifier.retire()


class Apps(NamedTuple):
    """What a worker serves: the public app, the debug listener's, and how to retire."""

    public: ASGIFramework
    debug: ASGIFramework
    retire: Callable[[], None]


def create_app(
    config: Config, *, driver: StorageDriver | None = None, maintenance: bool = True
) -> Quart:
    """Build the Quart app; tests pass a driver, production gets one from config.

    ``maintenance``: this app runs upload purging and garbage collection (one worker
    of several does).
    """
    app = Quart(__name__, static_folder=None)  # Only the pages have files (ui/static).
    app.asgi_http_class = StreamedConnection
    app.request_class = StreamedRequest
    # Quart's defaults would break a registry: a 16 MiB body cap and 60 s timeouts.
    app.config.update(MAX_CONTENT_LENGTH=None, BODY_TIMEOUT=None, RESPONSE_TIMEOUT=None)
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    # storage.cache: the driver's stat answers cached (after the metrics' timing, so
    # those count only what reaches the storage).
    base = driver or create_driver(config.storage.driver, config.storage.parameters)
    store = Store(with_cache(base, config), config)
    access = build_access_control(config)
    notifier = Notifier(config) if config.notifications.enabled else None
    proxy = None
    if config.proxy.enabled:
        from .proxy import PullThrough  # httpx: only where a proxy is configured.

        folder = run_folder()
        claims = os.path.join(folder, "proxy-claims") if folder is not None else None
        leases = None
        if config.storage.cache.blobdescriptor == "redis":
            from .proxy.leases import leases_for  # redis-py: only where it is configured.

            leases = leases_for(store.driver)
        proxy = PullThrough(config.proxy, claims, leases)
    app.extensions[EXTENSION] = Services(
        config=config, store=store, access=access, notifier=notifier, proxy=proxy
    )
    background = Background(notifier)
    app.extensions[BACKGROUND_EXTENSION] = background
    register_api(app, config.http.prefix)
    if config.ui.enabled:
        from .ui import register_ui  # Jinja and the templates: only where the pages are on.

        secret = config.http.secret
        register_ui(app, app.extensions[EXTENSION], secret.reveal().encode() if secret else None)
    gc = config.storage.gc
    collector = None
    if maintenance and gc.enabled and not config.storage.readonly:
        collector = OnlineCollector(
            # It must see the storage as it is (and not fill the cache with every file).
            store.driver.invalidating_only()
            if isinstance(store.driver, CachedDriver)
            else store.driver,
            interval=gc.interval,
            grace=gc.grace,
            delete_untagged=gc.deleteuntagged,
        )
        app.extensions[GC_EXTENSION] = collector  # Its last_result, for metrics.
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
        if maintenance:
            # Each job runs in one worker of each instance, and by taking its turn
            # (registry.storage.turns), in one instance of the deployment at a time.
            turns = Turns(base)
            purging = config.storage.upload_purging
            if purging.enabled and not config.storage.readonly:
                background.start(turns.every("purge", purging.interval, _purger(store, config)))
            if collector is not None:
                background.start(turns.every("gc", gc.interval, collector.run_once))
            background.start(turns.every("catalog", REINDEX_SECONDS, _reindexer(store)))
            if proxy is not None and not config.storage.readonly:
                from .proxy.expiry import Expiry

                expiry = Expiry(store, config.proxy.upstreams)
                if expiry.enabled:
                    background.start(turns.every("proxy-expiry", expiry.interval, _expirer(expiry)))
        if notifier is not None:
            await notifier.start()
        yield
        await background.stop()  # Before the store closes.
        if notifier is not None:
            await notifier.stop()
        if proxy is not None:
            await proxy.close()
        await store.close()

    return app


def _purger(store: Store, config: Config) -> Callable[[], Awaitable[None]]:
    """registry:2's upload purging, one pass; its failures logged, never raised."""
    purging = config.storage.upload_purging

    async def purge() -> None:
        try:
            result = await purge_uploads(store.driver, purging.age, dry_run=purging.dryrun)
        except Exception:
            log.exception("upload purging failed; retrying at the next interval")
            return
        if result.purged:
            verb = "would purge" if purging.dryrun else "purged"
            log.info(
                "%s %d abandoned upload(s): %s", verb, len(result.purged), ", ".join(result.purged)
            )

    return purge


def _expirer(expiry: Expiry) -> Callable[[], Awaitable[None]]:
    """The pull-through cache's expiry, one pass; its failures logged, never raised."""

    async def expire() -> None:
        try:
            await expiry.run()
        except Exception:
            log.exception("proxy: expiring cached repositories failed; retrying later")

    return expire


def _reindexer(store: Store) -> Callable[[], Awaitable[None]]:
    """The catalog's walk for what another program wrote; its failures logged."""

    async def reindex() -> None:
        try:
            await store.catalog.reindex()
        except Exception:
            log.exception("catalog: walking the tree failed; retrying at the next interval")

    return reindex


def create_asgi_app(
    config: Config, *, driver: StorageDriver | None = None, maintenance: bool = True
) -> ASGIFramework:
    """What the server runs: the Quart app, with native reads in front, access
    control in front of both, and the response headers and access log around all."""
    return create_asgi_apps(config, driver=driver, maintenance=maintenance).public


def create_asgi_apps(
    config: Config, *, driver: StorageDriver | None = None, maintenance: bool = True
) -> Apps:
    """The public app (see :func:`create_asgi_app`) and the debug listener's, sharing
    this worker's metrics and health; ``maintenance`` runs the health checks too."""
    recorder = None
    if config.http.debug.metrics:
        from .metrics import Recorder  # prometheus-client: only where metrics are on.

        recorder = Recorder(config.storage.driver)
    if driver is None and recorder is not None:
        parameters = config.storage.parameters
        driver = create_driver(config.storage.driver, parameters, observe=recorder.observe_storage)
    app = create_app(config, driver=driver, maintenance=maintenance)
    services: Services = app.extensions[EXTENSION]
    background: Background = app.extensions[BACKGROUND_EXTENSION]
    access = services.access
    inner: ASGIFramework = NativeReads(
        app, services.store, match, config.http.prefix, guarded=access is not None, config=config
    )
    if services.proxy is not None:
        from .proxy import PullThroughApp

        if recorder is not None:
            services.proxy.report_to(recorder.observe_proxy)

        inner = PullThroughApp(
            inner,
            services.proxy,
            services.store,
            match,
            prefix=config.http.prefix,
            guarded=access is not None,
            config=config,
        )
    if services.notifier is not None:
        inner = NotifyingApp(inner, services.notifier)
    if access is not None:
        from .auth.guard import AccessGuard  # With its token and password libraries: on use.

        inner = AccessGuard(inner, access.controller, need_of, config.http.prefix)
    prefixes = [upstream.prefix for upstream in config.proxy.upstreams if upstream.prefix]
    if prefixes:
        # Before access control: containerd's ?ns= names the upstream a mirror read is for.
        inner = NamespaceRouting(inner, prefixes, config.http.prefix)
    health = HealthState(run_folder(), configured=config.health.enabled)
    if config.health.enabled:
        inner = HealthGate(inner, health)
    app.while_serving(
        functools.partial(
            _observed,
            config,
            services,
            health,
            recorder,
            background if maintenance else None,
        )
    )
    public = RegistryMiddleware(
        inner,
        config.http.headers,
        access_log_enabled=config.log.accesslog,
        metrics=recorder,
        prefix=config.http.prefix,
    )
    return Apps(public, DebugApp(config, health, recorder), background.retire)


async def _observed(
    config: Config,
    services: Services,
    health: HealthState,
    recorder: Recorder | None,
    checking: Background | None,
) -> AsyncGenerator[None, None]:
    """While serving: metrics flushed, health results read and, in one worker (the one
    given ``checking``), checked."""
    tasks = []
    if recorder is not None:
        tasks.append(asyncio.create_task(_flush_periodically(recorder)))
    if config.health.enabled:
        tasks.append(asyncio.create_task(health.watch()))
        if checking is not None:
            checks = checks_of(config.health, services.store.driver, config.storage.driver)
            tasks.append(checking.start(HealthChecker(checks, health).run()))
    health.serving = True
    yield
    health.serving = False
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if recorder is not None:
        recorder.flush()


async def _flush_periodically(recorder: Recorder) -> None:
    from .metrics import FLUSH_SECONDS

    while True:
        await asyncio.sleep(FLUSH_SECONDS)
        try:
            recorder.flush()
        except Exception:
            log.exception("metrics: flush failed; retrying")
