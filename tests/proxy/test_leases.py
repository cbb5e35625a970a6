"""Claims shared by instances on one storage through a real Redis (``redis-server``):
each instance has its own claims folder, as behind a balancer, and the same namespace."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from registry.proxy.claims import Claims
from registry.proxy.leases import Leases
from registry.reference import Digest
from registry.storage.redis_cache import RedisConnection
from tests.proxy.conftest import waiter_goes_on_after_release
from tests.services.ports import free_port
from tests.services.redis import RedisServer, require_redis

DIGEST = Digest("sha256", "c" * 64)

#: An instance: its own folder, Leases on its own connection (``lease`` seconds).
Instance = Callable[..., Awaitable[Claims]]


@pytest.fixture
async def instance(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Instance]:
    namespace = f"registry:{secrets.token_hex(8)}"
    connections: list[RedisConnection] = []

    async def start(
        lease: float = 30.0, addr: str | None = None, server: RedisServer = redis_server
    ) -> Claims:
        # Short timeouts: a test that pauses Redis sees the connection fail soon.
        connection = RedisConnection(
            [addr or server.addr], password=server.password, backoff=0.2, timeout=0.2,
            dial_timeout=0.2,
        )  # fmt: skip
        connections.append(connection)
        folder = tmp_path / f"instance-{len(connections)}"
        return Claims(str(folder), Leases(connection, namespace, lease))

    yield start
    for connection in connections:
        await connection.close()


def lease_key(claims: Claims) -> str:
    assert claims.leases is not None
    return f"{claims.leases.namespace}:proxy-claim:{DIGEST}"


async def test_one_transfer_across_instances(instance: Instance, redis_server: RedisServer) -> None:
    first, second = await instance(), await instance()
    claim = await first.try_claim(DIGEST)
    assert claim is not None
    assert await second.try_claim(DIGEST) is None
    assert os.listdir(second.folder) == []  # Its file claim was let go again.
    with redis_server.client() as redis:
        assert 0 < redis.pttl(lease_key(first)) <= 30_000
        await claim.release()
        assert not redis.exists(lease_key(first))
    again = await second.try_claim(DIGEST)
    assert again is not None
    await again.release()


async def test_a_waiter_on_another_instance_goes_on_once_the_lease_is_released(
    instance: Instance,
) -> None:
    await waiter_goes_on_after_release(await instance(), await instance(), DIGEST)


async def test_a_held_lease_is_renewed_while_its_transfer_runs(
    instance: Instance, redis_server: RedisServer
) -> None:
    holder, other = await instance(lease=0.6), await instance(lease=0.6)
    claim = await holder.try_claim(DIGEST)
    assert claim is not None
    await asyncio.sleep(1.5)  # Over twice the lease.
    assert await other.try_claim(DIGEST) is None
    await claim.release()
    with redis_server.client() as redis:
        assert not redis.exists(lease_key(holder))


async def test_a_lease_is_renewed_after_redis_paused_and_came_back(
    instance: Instance, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stops answering for longer than the connection waits (the renewal in that
    moment fails, and the connection drops its client), then answers again before the
    lease ran out: the next renewal, on the connection's new client, keeps it."""
    paused = RedisServer(tmp_path / "paused-redis", require_redis()).start()  # Ours alone.
    try:
        holder = await instance(lease=3.0, server=paused)
        other = await instance(lease=3.0, server=paused)
        claim = await holder.try_claim(DIGEST)
        assert claim is not None
        paused.freeze()
        try:
            with caplog.at_level(logging.WARNING):
                await asyncio.sleep(1.8)  # Over the renewal at 1 s and its 0.6 s deadline.
        finally:
            paused.thaw()
        assert "the registry reads storage instead" in caplog.text  # The pause was seen.
        await asyncio.sleep(1.7)  # Past the lease's first end (3 s), and a renewal at 2 s.
        assert await other.try_claim(DIGEST) is None
        await claim.release()
        with paused.client() as redis:
            assert not redis.exists(lease_key(holder))
    finally:
        paused.stop()


async def test_the_lease_of_an_instance_that_died_runs_out(
    instance: Instance, redis_server: RedisServer
) -> None:
    dead, other = await instance(lease=0.5), await instance(lease=0.5)
    claim = await dead.try_claim(DIGEST)
    assert claim is not None and claim.lease is not None and claim.lease.renewing is not None
    claim.lease.renewing.cancel()  # The instance is gone: nobody renews or releases it.
    claim.release_file()
    assert await other.try_claim(DIGEST) is None
    await asyncio.wait_for(other.wait(DIGEST), timeout=30)
    taken = await other.try_claim(DIGEST)
    assert taken is not None
    await taken.release()


async def test_without_redis_a_claim_is_this_instances_own(
    instance: Instance, caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"  # Nothing listens there.
    first, second = await instance(addr=nowhere), await instance(addr=nowhere)
    with caplog.at_level(logging.WARNING):
        claim = await first.try_claim(DIGEST)
        assert claim is not None  # Not refused: this instance goes on alone.
        assert await first.try_claim(DIGEST) is None  # Its own workers still wait.
        other = await second.try_claim(DIGEST)
        assert other is not None  # Another instance cannot know: fetches it too.
        await asyncio.wait_for(second.wait(Digest("sha256", "d" * 64)), timeout=30)
        await claim.release()
        await other.release()
    assert "the registry reads storage instead" in caplog.text
