"""Claims across instances on shared storage: a lease in Redis per blob fetched.

A worker's file claim (:mod:`.claims`) covers the workers of one server. Instances
behind a balancer on the same storage (with ``storage.cache.blobdescriptor: redis``,
registry:2's way to share a cache) each have their own run folder, so without more
each would fetch a layer that all of them are asked for at once. With Redis in the
config, a file claim is followed by a lease: redis-py's :class:`~redis.asyncio.lock.Lock`
(``SET NX PX`` with a random token; renewed and released only by its holder, through
Redis scripts) on ``<namespace>:proxy-claim:<digest>``, the namespace being the
storage's (``redis_cache.namespace_for``), so only instances sharing storage share leases.

A lease lasts :data:`LEASE` seconds and is renewed every third of that while its
transfer runs: an instance that dies holding one keeps the others waiting at most that
long, then the next takes it. Redis out of reach is not an error: the claim stays this
server's own (at most one transfer per instance, as without Redis), and the
connection logs the outage once, as for the stat cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockNotOwnedError

from ..reference import Digest
from ..storage.driver import StorageDriver
from ..storage.redis_cache import FAILURES, RedisConnection, shared_cache

log = logging.getLogger(__name__)

#: Seconds a lease lasts unless renewed (renewed every third of it while held).
LEASE = 30.0

T = TypeVar("T")


def leases_for(driver: StorageDriver) -> Leases | None:
    """Leases on the connection of ``driver``'s Redis cache; None without one."""
    cache = shared_cache(driver)
    return None if cache is None else Leases(cache.connection, cache.namespace)


class _UnavailableError(Exception):
    """Redis cannot be asked now (the connection has logged why)."""


@dataclass
class Lease:
    """A held lease; ``lock`` None when Redis was out of reach (nothing to release)."""

    lock: Lock | None
    renewing: asyncio.Task[None] | None = field(default=None, repr=False)


class Leases:
    """The leases of one storage's instances, in the Redis they share."""

    def __init__(self, connection: RedisConnection, namespace: str, lease: float = LEASE) -> None:
        self.connection = connection
        self.namespace = namespace
        self.lease = lease

    def _key(self, digest: Digest) -> str:
        return f"{self.namespace}:proxy-claim:{digest}"

    async def take(self, digest: Digest) -> Lease | None:
        """The lease, or None if another instance holds it (never waits). Redis out of
        reach: a lease that shares nothing (the caller goes on alone)."""
        try:
            client = await self._client()
            lock = Lock(
                client,
                self._key(digest),
                timeout=self.lease,
                blocking=False,
                thread_local=False,
                raise_on_release_error=False,
            )
            if not await self._ask(lambda _: lock.acquire(), client):
                return None
        except _UnavailableError:
            return Lease(None)
        held = Lease(lock)
        held.renewing = asyncio.create_task(self._renew(lock, digest))
        return held

    async def held(self, digest: Digest) -> bool:
        """Whether an instance holds ``digest``'s lease (False when Redis cannot say)."""
        try:
            return bool(await self._ask(lambda client: client.exists(self._key(digest))))
        except _UnavailableError:
            return False

    async def release(self, lease: Lease) -> None:
        if lease.renewing is not None:
            lease.renewing.cancel()
            lease.renewing = None
        lock, lease.lock = lease.lock, None
        if lock is None:
            return
        with contextlib.suppress(_UnavailableError):  # It expires on its own then.
            await self._ask(lambda client: _on(lock, client).release())

    async def _renew(self, lock: Lock, digest: Digest) -> None:
        """Every third of the lease, while the transfer runs."""
        while True:
            await asyncio.sleep(self.lease / 3)
            renewed: bool
            try:
                renewed = await self._ask(lambda client: _on(lock, client).reacquire())
            except _UnavailableError:
                continue  # Tried again at the next turn; it may have expired by then.
            except LockNotOwnedError:  # It expired, and may be another's now.
                renewed = False
            if not renewed:
                log.warning(
                    "proxy: the lease on %s ran out before its transfer ended; another "
                    "instance may fetch it too",
                    digest,
                )
                return

    async def _client(self) -> Redis:
        client = await self.connection.client(wait=True)
        if client is None:
            raise _UnavailableError
        return client

    async def _ask(
        self, command: Callable[[Redis], Awaitable[T]], client: Redis | None = None
    ) -> T:
        """``command`` on ``client`` (by default the connection's client now) within the
        connection's deadline; a failure of Redis itself is reported to the connection
        (its backoff and one warning)."""
        if client is None:
            client = await self._client()
        try:
            async with asyncio.timeout(self.connection.deadline):
                return await command(client)
        except LockNotOwnedError:
            raise  # An answer, not a failure of Redis.
        except FAILURES as error:
            await self.connection.failed(error, client)
            raise _UnavailableError from error


def _on(lock: Lock, client: Redis) -> Lock:
    """``lock`` on the connection's client now: after an outage the connection has closed
    the lock's client and made another (redis-py would quietly reopen the closed one,
    outside the connection's timeouts, backoff and shutdown)."""
    lock.redis = client
    return lock
