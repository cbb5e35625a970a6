"""``stat`` answers in Redis (``storage.cache.blobdescriptor: redis``): one cache for every
worker and instance on the same storage, so a delete through one is seen by all at once.

Imported only when configured: it loads redis-py.

**Keys.** ``<ns>`` is ``registry:<16 hex>``, a hash of the storage's identity (driver,
endpoint, bucket and root directory, or the filesystem folder), so registries on
different storage can share one Redis without mixing their answers::

    <ns>:f:<path>   an answer "<size> <mtime> <generations>", or a tombstone "x<random>"
    <ns>:g          the generation of everything in the namespace
    <ns>:g:<name>   the generation of a repository name, and of those nested in it

A lookup reads an answer and the generations it depends on (the namespace's, and
each leading part of its repository's name: ``a``, ``a/b``) in one ``MGET``. An
answer recorded under other generations than the current ones is stale: a miss.

**Invalidation is one command, whatever it covers**, with no key sets and no
``SCAN``: one file (a blob's data, a link: every delete the registry itself makes)
gets a tombstone; a repository's folder, or one inside it, gets a new random
generation; anything wider (``blobs``, ``repositories``, the root) a new namespace
generation. We chose generations over per-repository sets of keys: sets need
pruning, cost a round trip to read before a delete, and grow with the storage.

**TTL on every key**: answers and tombstones ``ttl`` (10 minutes by default),
generations twice that, so an answer never outlives the generation it recorded
(were a generation key to expire and be made again, it gets a new random value).

**Fills are compare-and-set** (a Lua script): an answer read from storage after a
lookup is stored only if the key still holds what that lookup saw. A delete's
tombstone (or a generation changed since the lookup) therefore turns away a fill
whose storage read came before the delete, on any instance.

**What can still go stale** (until the TTL ends it; a cached answer is positive
only, so "stale" means a deleted blob or link still found, never one hidden):

* an instance writes or deletes while it cannot reach Redis: it replays those
  invalidations as soon as Redis answers it again, but other instances that
  still reach Redis meanwhile, or all of them if this one exits first, may serve
  the old answer until its TTL;
* something that is not this registry (registry:2 on the same bucket, ``rm``)
  changes the storage;
* a fill that stalls for longer than the TTL between its lookup and its write.

**Redis down or slow**: every call has short timeouts (``redis.dialtimeout``,
``readtimeout``, ``writetimeout``); on any error the cache answers "miss", so the
driver asks the storage, logs one warning for the outage (not one per request), and
tries Redis again after ``backoff`` seconds, one caller at a time, on the first
of ``redis.addrs`` that answers. The registry keeps working, slower.

That handling is :class:`RedisConnection`'s, one per process, which the catalog in
Redis (``redis_catalog.py``) shares with this cache: one pool, one warning per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..config import ConfigError, RedisConfig, RedisTLS
from . import paths
from .driver import FileInfo
from .driver.cached import CachedDriver, Miss, repository_of, scope_of

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

log = logging.getLogger(__name__)

#: Answers live this long (seconds) unless invalidated.
TTL = 600.0
#: After a failure, Redis is left alone this long (seconds).
BACKOFF = 5.0
#: Invalidations kept for replay while Redis cannot be reached; beyond, all is invalidated.
MAX_PENDING = 10_000

#: KEYS[1]: the answer; ARGV: what the lookup saw ('' for nothing), the answer, the TTL (ms).
_FILL = """
local current = redis.call('GET', KEYS[1])
if current == false then current = '' end
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

FAILURES = (RedisError, OSError, TimeoutError)


def namespace_for(identity: str) -> str:
    """The key prefix of one storage (``filesystem:/srv/registry``, ``s3:host/bucket/root``)."""
    return "registry:" + hashlib.sha256(identity.encode()).hexdigest()[:16]


def check_tls_files(tls: RedisTLS) -> None:
    """Refuse at start, naming the key, TLS files that cannot be read or do not fit."""
    files = [("redis.tls.certificate", tls.certificate), ("redis.tls.key", tls.key)]
    files += [("redis.tls.clientcas", path) for path in tls.clientcas]
    for key, path in files:
        if path is not None and not os.access(path, os.R_OK):
            reason = "no such file" if not os.path.exists(path) else "cannot be read"
            raise ConfigError(f"{key}: {path}: {reason}")
    context = ssl.create_default_context()
    if tls.certificate is not None and tls.key is not None:
        try:
            context.load_cert_chain(tls.certificate, tls.key)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(
                f"redis.tls.certificate: cannot load {tls.certificate} with {tls.key}: {error}"
            ) from None
    for path in tls.clientcas:
        try:
            context.load_verify_locations(path)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"redis.tls.clientcas: {path}: {error}") from None


def _host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "localhost", int(port)


def _token() -> str:
    return secrets.token_hex(6)


def shared_cache(driver: object) -> RedisStatCache | None:
    """The Redis stat cache among ``driver``'s wrappers, if any: its connection and
    namespace serve the catalog and the pull-through cache's leases too (one pool, one
    warning per outage)."""
    inner = driver
    while True:
        if isinstance(inner, CachedDriver) and isinstance(inner.cache, RedisStatCache):
            return inner.cache
        if not hasattr(inner, "inner"):
            return None
        inner = inner.inner


class ConnectionOptions(TypedDict, total=False):
    """How to reach Redis, beside its addresses (see :class:`RedisConnection`)."""

    password: str | None
    username: str | None
    db: int
    dial_timeout: float
    timeout: float
    max_connections: int
    tls: RedisTLS | None
    backoff: float


def options_of(config: RedisConfig) -> ConnectionOptions:
    """The ``redis`` section's settings, as :class:`RedisConnection` takes them."""
    return {
        "password": config.password.reveal() if config.password is not None else None,
        "username": config.username,
        "db": config.db,
        "dial_timeout": config.dialtimeout,
        "timeout": max(config.readtimeout, config.writetimeout),
        "max_connections": config.pool.maxactive,
        "tls": config.tls,
    }


#: Work a user of the connection must do on a client before anyone uses it: what it
#: could not write while Redis was away.
OnConnect = Callable[[Redis], Awaitable[None]]


class RedisConnection:
    """One process's way to Redis, shared by the stat cache and the catalog: a client of
    the first of ``addrs`` that answers, short timeouts, and after a failure ``backoff``
    seconds in which :meth:`client` answers None (one caller then tries again), with one
    warning per outage. Never raises for Redis's troubles: its users fall back to storage."""

    def __init__(
        self,
        addrs: Sequence[str],
        *,
        password: str | None = None,
        username: str | None = None,
        db: int = 0,
        dial_timeout: float = 1.0,
        timeout: float = 0.5,
        max_connections: int = 0,
        tls: RedisTLS | None = None,
        backoff: float = BACKOFF,
    ) -> None:
        if not addrs:
            raise ValueError("no Redis address")
        self.addrs = tuple(addrs)
        self.backoff = backoff
        self._options: dict[str, Any] = {
            "db": db,
            "username": username,
            "password": password,
            "socket_connect_timeout": dial_timeout,
            "socket_timeout": timeout,
            # A pooled connection Redis closed while idle is reopened once; anything
            # else fails at once, and the breaker below takes over.
            "retry": Retry(NoBackoff(), 1, (RedisConnectionError,)),
            # RESP2, as every Redis speaks it (redis-py 8 asks for RESP3 with HELLO, which
            # Redis 5, still behind some registry:2 setups, does not know).
            "protocol": 2,
        }
        if tls is not None and tls.enabled:
            self._options["connection_class"] = SSLConnection
            self._options["ssl_certfile"] = tls.certificate
            self._options["ssl_keyfile"] = tls.key
            if tls.clientcas:
                self._options["ssl_ca_data"] = "\n".join(
                    Path(path).read_text(encoding="ascii") for path in tls.clientcas
                )
        self._max_connections = max_connections
        #: A guard over the socket timeouts (a connection, a command, one retry).
        self.deadline = dial_timeout + 2 * timeout
        #: The address in use (or last used).
        self.addr = ""
        self._client: Redis | None = None
        self._on_connect: list[OnConnect] = []
        self._retry_at = 0.0
        #: Set while a caller connects; others may wait for it (``client(wait=True)``).
        self._probe: asyncio.Event | None = None
        self._warned = False
        self._closed = False

    @classmethod
    def from_config(cls, config: RedisConfig) -> RedisConnection:
        """The connection the ``redis`` section describes."""
        return cls(config.addrs, **options_of(config))

    @property
    def closed(self) -> bool:
        return self._closed

    def on_connect(self, work: OnConnect) -> None:
        """Run ``work`` on each new client before it is handed out; if it fails, the
        client is dropped as if Redis had failed."""
        self._on_connect.append(work)

    async def client(self, *, wait: bool = False) -> Redis | None:
        """The client to use now; None: answer from storage (Redis down, or being retried
        by another caller, or this connection closed). ``wait``: while another caller
        connects, wait for its outcome rather than answer None at once (for work that
        should not go on alone while Redis may well be there: a lease)."""
        if self._client is not None:
            return self._client
        if self._probe is not None:
            if wait:
                await self._probe.wait()
                return self._client
            return None
        if self._closed or time.monotonic() < self._retry_at:
            return None
        probe = self._probe = asyncio.Event()
        client = None
        try:
            client = await self._connect()
            for work in self._on_connect:
                await work(client)
        except FAILURES as error:
            if client is not None:
                await self._discard(client)
            await self.failed(error, None)
            return None
        else:
            self._client = client
        finally:
            self._probe = None
            probe.set()
        if self._warned:
            self._warned = False
            log.info("redis cache: %s answers again; it is used again", self.addr)
        return client

    async def failed(self, error: BaseException, client: Redis | None) -> None:
        """``client`` failed: leave Redis alone for ``backoff`` seconds; one warning per
        outage."""
        if client is not None and client is not self._client:
            return  # A late failure of a client already dropped.
        self._retry_at = time.monotonic() + self.backoff
        if not self._warned:
            self._warned = True
            where = self.addr if client is not None else ", ".join(self.addrs)
            log.warning(
                "redis cache: %s: %s; the registry reads storage instead (slower), Redis "
                "is tried again every %g s",
                where,
                _describe(error),
                self.backoff,
            )
        if client is not None:
            self._client = None
            await self._discard(client)

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await self._discard(client)

    async def _connect(self) -> Redis:
        """A client of the first address that answers a PING."""
        failure: BaseException | None = None
        for addr in self.addrs:
            host, port = _host_port(addr)
            pool_class = BlockingConnectionPool if self._max_connections else ConnectionPool
            limits: dict[str, Any] = (
                {"max_connections": self._max_connections, "timeout": self.deadline}
                if self._max_connections
                else {}
            )
            pool = pool_class(host=host, port=port, **limits, **self._options)
            client = Redis.from_pool(pool)
            try:
                async with asyncio.timeout(self.deadline):
                    await client.ping()
            except FAILURES as error:
                failure = error
                await self._discard(client)
                continue
            self.addr = addr
            return client
        assert failure is not None
        raise failure

    async def _discard(self, client: Redis) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.deadline):
                await client.aclose()


class RedisStatCache:
    """A :class:`~registry.storage.driver.cached.StatCache` in Redis; never raises for
    Redis's troubles (see the module's docstring). Its :attr:`connection` may serve the
    catalog too (``redis_catalog.py``)."""

    def __init__(
        self,
        addrs: Sequence[str],
        namespace: str,
        *,
        ttl: float = TTL,
        **options: Unpack[ConnectionOptions],
    ) -> None:
        self.connection = RedisConnection(addrs, **options)
        self.connection.on_connect(self._replay)
        self.namespace = namespace
        self.ttl = ttl
        self._ttl_ms = max(1, round(ttl * 1000))
        self._script: AsyncScript | None = None
        self._pending: list[tuple[str, str, int]] = []

    @classmethod
    def from_config(cls, config: RedisConfig, namespace: str) -> RedisStatCache:
        """The cache the ``redis`` section describes."""
        return cls(config.addrs, namespace, **options_of(config))

    # --- keys and values ---

    def _entry(self, path: str) -> str:
        return f"{self.namespace}:f:{path.removeprefix(paths.ROOT)}"

    def _generations(self, path: str) -> list[str]:
        keys = [f"{self.namespace}:g"]
        name = repository_of(path)
        if name is not None:
            parts = name.split("/")
            keys += [f"{self.namespace}:g:{'/'.join(parts[: i + 1])}" for i in range(len(parts))]
        return keys

    @staticmethod
    def _decode(path: str, raw: str, generations: str) -> FileInfo | None:
        if not raw or raw.startswith("x"):
            return None
        try:
            size, modified, recorded = raw.split(" ", 2)
            info = FileInfo(path, int(size), float(modified), False)
        except ValueError:
            return None
        return info if recorded == generations else None

    # --- the StatCache protocol ---

    async def get(self, path: str) -> FileInfo | Miss:
        client = await self.connection.client()
        if client is None:
            return Miss(path)
        try:
            async with asyncio.timeout(self.connection.deadline):
                values = await client.mget([self._entry(path), *self._generations(path)])
        except FAILURES as error:
            await self.connection.failed(error, client)
            return Miss(path)
        raw, *generations = (
            value.decode() if isinstance(value, bytes) else (value or "") for value in values
        )
        current = ",".join(generations)
        info = self._decode(path, raw, current)
        return info if info is not None else Miss(path, (raw, current))

    async def set(self, miss: Miss, info: FileInfo) -> None:
        if not isinstance(miss.seen, tuple):
            return  # The lookup did not reach Redis: nothing to compare with.
        seen, generations = miss.seen
        client = await self.connection.client()
        if client is None:
            return
        if self._script is None:
            self._script = client.register_script(_FILL)
        value = f"{info.size} {info.modified!r} {generations}"
        try:
            async with asyncio.timeout(self.connection.deadline):
                await self._script(
                    keys=[self._entry(miss.path)], args=[seen, value, self._ttl_ms], client=client
                )
        except FAILURES as error:
            await self.connection.failed(error, client)

    async def delete(self, path: str) -> None:
        scope = scope_of(path)
        if scope is None:
            return
        if scope.leaf is not None:
            operation = (self._entry(scope.leaf), "x" + _token(), self._ttl_ms)
        elif scope.names is not None:
            operation = (f"{self.namespace}:g:{scope.names}", _token(), 2 * self._ttl_ms)
        else:
            operation = (f"{self.namespace}:g", _token(), 2 * self._ttl_ms)
        client = await self.connection.client()
        if client is None:
            self._remember(operation)
            return
        try:
            async with asyncio.timeout(self.connection.deadline):
                await client.set(operation[0], operation[1], px=operation[2])
        except FAILURES as error:
            self._remember(operation)
            await self.connection.failed(error, client)

    async def close(self) -> None:
        await self.connection.close()

    # --- while Redis is away ---

    async def _replay(self, client: Redis) -> None:
        """Invalidations made while Redis was out of reach, oldest first."""
        while self._pending:
            batch = self._pending[:1000]
            async with (
                asyncio.timeout(self.connection.deadline),
                client.pipeline(transaction=False) as pipe,
            ):
                for key, value, ttl_ms in batch:
                    pipe.set(key, value, px=ttl_ms)
                await pipe.execute()
            del self._pending[: len(batch)]

    def _remember(self, operation: tuple[str, str, int]) -> None:
        if self.connection.closed:
            return
        self._pending.append(operation)
        if len(self._pending) > MAX_PENDING:
            # Too many to replay one by one: forget everything this storage has cached.
            self._pending = [(f"{self.namespace}:g", _token(), 2 * self._ttl_ms)]


def _describe(error: BaseException) -> str:
    """An error in a few words (redis-py's never hold the password)."""
    text = str(error).strip().rstrip(".")
    if text:
        return text
    return "no answer in time" if isinstance(error, TimeoutError) else type(error).__name__
