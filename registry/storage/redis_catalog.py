"""The catalog in Redis (``storage.cache.blobdescriptor: redis``): one sorted set that
every worker of every instance on the same storage reads and writes, so a page of
``n`` names costs about ``n`` whatever the number of repositories, on any driver.

Imported only when configured: it loads redis-py.

**Keys.** One key, in the stat cache's namespace (``<ns>``, a hash of the storage's
identity: see ``redis_cache.py``)::

    <ns>:catalog    a sorted set, every score 0, so it is ordered by name (bytes):
                    each repository name, and markers, which start with "!" and so
                    sort before any name (names start with [a-z0-9]):
      "!ready"                       the set holds every repository of the tree
      "!fill:<unix time>:<random>"   a walk that will fill the set is under way

**Pages**: ``ZRANGEBYLEX <ns>:catalog (<last> + LIMIT 0 <n+1>`` (again while access
control leaves names out: a caller who may see few names costs a scan of the set),
the first in one ``MULTI`` with ``ZSCORE "!ready"``. Without the marker (a new
deployment; Redis restarted without its data, flushed, or the key evicted or
expired) a page is registry:2's walk of the tree, always complete, and that walk
fills the set (see reindex): the next page reads Redis.

**A push** adds its name (``ZADD``) before the manifest PUT is answered: every
instance lists it from then on. Deleting the last manifest leaves ``_manifests``,
so the name stays, as registry:2 lists it.

**Reindex** (maintenance calls it periodically, once per deployment; a page that
finds no "!ready" does it too, one at a time per process, other pages waiting for
it and then reading the set): add a "!fill" marker, read the set (a snapshot),
walk the tree, add what the walk found, and for each name of the snapshot the
walk did not find check ``_manifests`` again, ``ZREM`` it, and check once more
(a push between the check and the removal puts it back).
A name created during the walk is not in the snapshot, so never removed. Last, a
script turns the "!fill" marker into "!ready" and sets the TTL, only if the marker
is still there: the key was not lost since before the walk began, so no name
added meanwhile can be missing. A walk that fails leaves its marker; markers older
than a day are removed by the next reindex.

**TTL** of 7 days, set again by every reindex. A deployment reindexes far more
often; a storage no registry serves any more leaves nothing behind for long. The
markers live in the set itself, so a flush, an expiry or an eviction takes the
names and "!ready" together: never a ready set with names missing.

**Redis down or failing**: pages come from the walk (correct, slower) and the
connection's handling applies (``RedisConnection``, shared with the stat cache:
short timeouts, backoff, one warning per outage). A name whose ``ZADD`` failed is
kept in the process and added as soon as Redis answers again, before anything
else uses it; beyond MAX_PENDING names, every marker is removed instead, so the
next page walks and fills the set anew (and a fill under way elsewhere cannot
mark it ready).

**What can go stale** (a name missing or one too many in the set):

* repositories that another program (registry:2 on the same storage, a restore,
  ``rm``) made or removed: until the next reindex;
* a push through an instance that cannot reach Redis while others can: they do
  not list it until that instance reaches Redis again, or, if it exits first,
  until the next reindex;
* after a failover to a Redis replica that had not received the last writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from redis.asyncio import Redis

from . import paths
from .blobs import exists
from .catalog import repositories
from .catalog_index import Keep, choose
from .driver import StorageDriver
from .driver.factory import storage_identity
from .redis_cache import FAILURES, RedisConnection, namespace_for, shared_cache

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from ..config import Config

log = logging.getLogger(__name__)

#: How long the set lives after the last reindex (seconds).
TTL = 7 * 24 * 3600.0
#: Names kept for replay while Redis cannot be reached; beyond, the set is filled anew.
MAX_PENDING = 10_000
#: A "!fill" marker this old (seconds) was left by a walk that failed.
ABANDONED = 24 * 3600
#: Names per Redis command when reading or writing many.
BATCH = 1000

MARK = "!"
READY = "!ready"
FILL = "!fill:"

#: KEYS[1]: the set; ARGV: this fill's marker, the ready marker, the TTL (ms).
_FINISH = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], 0, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

T = TypeVar("T")


class _UnavailableError(Exception):
    """Redis cannot be used now (already reported to the connection)."""


class RedisCatalog:
    """The catalog as a sorted set in Redis; see the module's docstring."""

    def __init__(
        self,
        driver: StorageDriver,
        connection: RedisConnection,
        namespace: str,
        *,
        owned: bool = False,
        ttl: float = TTL,
    ) -> None:
        self.driver = driver
        self.connection = connection
        self.key = f"{namespace}:catalog"
        self._owned = owned
        self._ttl_ms = max(1, round(ttl * 1000))
        self._pending: set[str] = set()
        self._overflowed = False
        self._walking = asyncio.Lock()
        self._script: AsyncScript | None = None
        connection.on_connect(self._replay)

    @classmethod
    def for_driver(cls, driver: StorageDriver, config: Config) -> RedisCatalog:
        """The catalog of ``driver``'s storage, on the stat cache's connection where the
        driver has one (one pool, one warning per outage), else on one of its own."""
        cache = shared_cache(driver)
        if cache is not None:
            return cls(driver, cache.connection, cache.namespace)
        identity = storage_identity(config.storage.driver, config.storage.parameters)
        connection = RedisConnection.from_config(config.redis)
        return cls(driver, connection, namespace_for(identity), owned=True)

    # --- reading ---

    async def page(self, last: str | None, limit: int, keep: Keep) -> tuple[list[str], bool]:
        try:
            found = await self._page(last, limit, keep)
        except _UnavailableError:
            return choose(await repositories(self.driver), last, limit, keep)
        if found is not None:
            return found
        if self._walking.locked():
            # This process walks already: its answer, once in the set, serves this page.
            async with self._walking:
                pass
            with contextlib.suppress(_UnavailableError):
                found = await self._page(last, limit, keep)
            if found is not None:
                return found
            return choose(await repositories(self.driver), last, limit, keep)
        return choose(await self._reindex(), last, limit, keep)

    async def _page(
        self, last: str | None, limit: int, keep: Keep
    ) -> tuple[list[str], bool] | None:
        """The page from the set; None when the set is not ready."""
        low = b"(" + last.encode("utf-8", "surrogatepass") if last else b"-"
        batch = min(max(limit + 1, 100), BATCH)

        async def first(client: Redis) -> tuple[object, list[bytes]]:
            async with client.pipeline(transaction=True) as pipe:
                pipe.zscore(self.key, READY)
                pipe.zrangebylex(self.key, low, "+", start=0, num=batch)
                ready, members = await pipe.execute()
            return ready, members

        ready, members = await self._redis(first)
        if ready is None:
            return None
        chosen: list[str] = []
        while True:
            for member in members:
                name = member.decode("utf-8", "replace")
                if name.startswith(MARK) or not keep(name):
                    continue
                if len(chosen) == limit:
                    return chosen, True
                chosen.append(name)
            if len(members) < batch:
                return chosen, False
            low = b"(" + members[-1]
            members = await self._range(low, batch)

    # --- writing ---

    async def created(self, name: str) -> None:
        try:
            await self._add([name])
        except _UnavailableError:
            self._remember(name)

    async def reindex(self) -> None:
        """Walk the tree: the set gets what it finds, loses what is gone, and is ready."""
        await self._reindex()

    async def _reindex(self) -> list[str]:
        """The walk's names (sorted), put in the set as far as Redis lets us."""
        async with self._walking:
            marker = f"{FILL}{int(time.time())}:{secrets.token_hex(6)}"
            try:
                await self._redis(lambda client: client.zadd(self.key, {marker: 0}))
                before: set[str] | None = await self._members()
            except _UnavailableError:
                before = None
            try:
                walked = await repositories(self.driver)
            except Exception:
                if before is not None:
                    await self._quietly(lambda client: client.zrem(self.key, marker))
                raise
            if before is not None:
                # Should Redis fail, the set is not ready: the next page or reindex fills it.
                with contextlib.suppress(_UnavailableError):
                    await self._fill(marker, before, walked)
            return walked

    async def _members(self) -> set[str]:
        """Everything in the set, a batch at a time."""
        found: set[str] = set()
        low = b"-"
        while True:
            members = await self._range(low, BATCH)
            found.update(member.decode("utf-8", "replace") for member in members)
            if len(members) < BATCH:
                return found
            low = b"(" + members[-1]

    async def _fill(self, marker: str, before: set[str], walked: list[str]) -> None:
        names = {name for name in before if not name.startswith(MARK)}
        found = set(walked)
        missing = sorted(found - names)
        for start in range(0, len(missing), BATCH):
            await self._add(missing[start : start + BATCH])
        removed = [name for name in sorted(names - found) if await self._forget(name)]
        abandoned = [name for name in before if _abandoned(name)]
        if abandoned:
            await self._redis(lambda client: client.zrem(self.key, *abandoned))
        finished = await self._redis(
            lambda client: self._finish(client)(
                keys=[self.key], args=[marker, READY, self._ttl_ms], client=client
            )
        )
        if missing or removed:
            log.info(
                "catalog: %d repositories added to Redis from the tree, %d removed",
                len(missing),
                len(removed),
            )
        if not finished:
            log.info("catalog: Redis lost the set during the walk; the next walk fills it")

    async def _forget(self, name: str) -> bool:
        """Remove ``name`` unless its ``_manifests`` is there; checked again after the
        removal, so a push that made it meanwhile keeps it listed."""
        if await exists(self.driver, paths.manifests(name)):
            return False
        await self._redis(lambda client: client.zrem(self.key, name))
        if await exists(self.driver, paths.manifests(name)):
            await self._add([name])
            return False
        return True

    async def close(self) -> None:
        if self._owned:
            await self.connection.close()

    # --- reaching Redis ---

    async def _redis(self, command: Callable[[Redis], Awaitable[T]]) -> T:
        """``command`` on the connection's client, within its deadline."""
        client = await self.connection.client()
        if client is None:
            raise _UnavailableError
        try:
            async with asyncio.timeout(self.connection.deadline):
                return await command(client)
        except FAILURES as error:
            await self.connection.failed(error, client)
            raise _UnavailableError from error

    async def _range(self, low: bytes, count: int) -> list[bytes]:
        """Up to ``count`` members after ``low`` (a ZRANGEBYLEX bound)."""
        members = await self._redis(
            lambda client: client.zrangebylex(self.key, low, "+", start=0, num=count)
        )
        return [member if isinstance(member, bytes) else member.encode() for member in members]

    async def _add(self, names: list[str]) -> None:
        await self._redis(lambda client: client.zadd(self.key, dict.fromkeys(names, 0)))

    async def _quietly(self, command: Callable[[Redis], Awaitable[object]]) -> None:
        with contextlib.suppress(_UnavailableError):
            await self._redis(command)

    def _finish(self, client: Redis) -> AsyncScript:
        if self._script is None:
            self._script = client.register_script(_FINISH)
        return self._script

    # --- while Redis is away ---

    def _remember(self, name: str) -> None:
        if self.connection.closed or self._overflowed:
            return
        self._pending.add(name)
        if len(self._pending) > MAX_PENDING:
            self._pending.clear()
            self._overflowed = True

    async def _replay(self, client: Redis) -> None:
        """Names created while Redis was out of reach; too many: every marker goes, so
        the set is filled anew from a walk."""
        if self._overflowed:
            async with asyncio.timeout(self.connection.deadline):
                await client.zremrangebylex(self.key, "[" + MARK, "(" + chr(ord(MARK) + 1))
            self._overflowed = False
        while self._pending:
            batch = sorted(self._pending)[:BATCH]
            async with asyncio.timeout(self.connection.deadline):
                await client.zadd(self.key, dict.fromkeys(batch, 0))
            self._pending.difference_update(batch)


def _abandoned(member: str) -> bool:
    """A "!fill" marker older than ABANDONED seconds."""
    if not member.startswith(FILL):
        return False
    try:
        started = int(member[len(FILL) :].split(":", 1)[0])
    except ValueError:
        return True
    return time.time() - started > ABANDONED
