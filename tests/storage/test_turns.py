"""A job's turn: run by one process of all those sharing the storage, once per interval.

Each test plays several instances as several :class:`Turns` on one storage (on S3 each
takes the lock object with its own owner token, as separate processes do).
"""

from __future__ import annotations

import asyncio

import pytest

from registry.storage.driver import StorageDriver
from registry.storage.turns import FOLDER, Turns


class Job:
    """Counts its runs; may be held open until released."""

    def __init__(self) -> None:
        self.runs = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self) -> None:
        self.runs += 1
        self.started.set()
        await self.release.wait()


async def test_instances_starting_together_run_a_job_once(driver: StorageDriver) -> None:
    job = Job()
    instances = [Turns(driver) for _ in range(3)]
    waits = await asyncio.gather(*(turns.run("purge", 3600, job) for turns in instances))
    assert job.runs == 1
    assert all(0 < wait <= 3600 for wait in waits)
    # Later, within the interval: nobody runs it again, and each knows how long to wait.
    waits = await asyncio.gather(*(turns.run("purge", 3600, job) for turns in instances))
    assert job.runs == 1
    assert all(3500 < wait <= 3600 for wait in waits)
    await driver.delete(FOLDER)


async def test_a_job_running_in_one_instance_is_not_started_by_another(
    driver: StorageDriver,
) -> None:
    job = Job()
    job.release.clear()
    first, second = Turns(driver), Turns(driver)
    running = asyncio.create_task(first.run("gc", 0, job))
    await job.started.wait()
    # Due (interval 0), but held: the other instance leaves it.
    assert await second.run("gc", 0, job) == 0
    assert job.runs == 1
    job.release.set()
    await running
    # Once the turn is given back, the next due run may happen anywhere.
    await second.run("gc", 0, job)
    assert job.runs == 2
    await driver.delete(FOLDER)


async def test_a_job_that_fails_gives_its_turn_back(driver: StorageDriver) -> None:
    turns = Turns(driver)

    async def failing() -> None:
        raise RuntimeError("the job broke")

    with pytest.raises(RuntimeError, match="the job broke"):
        await turns.run("catalog", 0, failing)
    job = Job()
    await Turns(driver).run("catalog", 0, job)
    assert job.runs == 1
    # It counts as run: a failing job is not retried in a tight loop by every instance.
    with pytest.raises(RuntimeError):
        await turns.run("catalog", 0, failing)
    assert await Turns(driver).run("catalog", 3600, job) > 3500
    assert job.runs == 1
    await driver.delete(FOLDER)


async def test_every_runs_a_job_once_per_interval_across_instances(
    driver: StorageDriver,
) -> None:
    job = Job()
    instances = [Turns(driver) for _ in range(3)]
    loops = [asyncio.create_task(turns.every("purge", 3600, job)) for turns in instances]
    await job.started.wait()
    for _ in range(20):  # Every loop has taken its look and gone to sleep.
        await asyncio.sleep(0.05)
    for loop in loops:
        loop.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    assert job.runs == 1
    await driver.delete(FOLDER)
