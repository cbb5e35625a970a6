"""What the suite cannot see of the S3 driver, on a real Ceph RADOS Gateway: registry:2's
key layout, multipart uploads and copies, the append lock, error mapping, clients per loop.

Each test's drivers keep to a root directory of their own; teardown deletes it and
finds nothing left, in-progress multipart uploads included.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import threading
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from registry.storage.driver import (
    CHUNK_SIZE,
    BusyError,
    PathNotFoundError,
    StorageDriverError,
)
from registry.storage.driver.s3 import LOCK_SUFFIX, MIN_PART, S3Driver, S3Error
from tests.services.ceph import TEST_BUCKET, CephS3

from .conftest import TEST_ROOTS, make_s3, s3_leftovers

MIB = 1024 * 1024
Make = Callable[..., S3Driver]


@pytest.fixture
async def s3(ceph_s3: CephS3, tmp_path: Path) -> AsyncIterator[Make]:
    """Drivers on the gateway; with ``same_root_as``, a second "process" on another's root."""
    made: list[S3Driver] = []

    def make(same_root_as: S3Driver | None = None, **settings: Any) -> S3Driver:
        if same_root_as is not None:
            settings.setdefault("rootdirectory", same_root_as.prefix)
        driver = make_s3(tmp_path, ceph_s3, **settings)
        assert isinstance(driver, S3Driver)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        for root in TEST_ROOTS:
            with contextlib.suppress(PathNotFoundError):
                await driver.delete(root)
    for driver in made:
        assert await s3_leftovers(driver) == [], "the driver did not clean up"
        await driver.close()


def spy(driver: S3Driver) -> list[str]:
    """The S3 operations the driver calls from now on, in order."""
    calls: list[str] = []
    original = driver._call

    async def call(operation: str, path: str, **params: Any) -> dict[str, Any]:
        calls.append(operation)
        return await original(operation, path, **params)

    driver._call = call  # type: ignore[method-assign]
    return calls


async def raw_keys(driver: S3Driver) -> list[str]:
    client = await driver._client()
    page = await client.list_objects_v2(Bucket=driver.bucket, Prefix=driver.key("/"))
    return sorted(item["Key"] for item in page.get("Contents", []))


async def uploads_in_progress(driver: S3Driver) -> list[dict[str, Any]]:
    client = await driver._client()
    page = await client.list_multipart_uploads(Bucket=driver.bucket, Prefix=driver.key("/"))
    return list(page.get("Uploads", []))


# The gateway


async def test_the_gateway_honours_conditional_puts(s3: Make) -> None:
    """The append lock rests on these: Debian's RGW (Ceph 16) must keep them."""
    driver = s3()
    client = await driver._client()
    key = driver.key("/suite/conditional")
    first = await client.put_object(Bucket=driver.bucket, Key=key, Body=b"1", IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        await client.put_object(Bucket=driver.bucket, Key=key, Body=b"2", IfNoneMatch="*")
    assert raised.value.response["Error"]["Code"] == "PreconditionFailed"
    with pytest.raises(botocore.exceptions.ClientError):
        await client.put_object(Bucket=driver.bucket, Key=key, Body=b"3", IfMatch='"0000"')
    # RGW compares If-Match with its bare ETag (the driver tries both forms).
    bare = first["ETag"].strip('"')
    await client.put_object(Bucket=driver.bucket, Key=key, Body=b"4", IfMatch=bare)
    assert await driver.get_content("/suite/conditional") == b"4"

    race = driver.key("/suite/race")

    async def create(index: int) -> bool:
        try:
            await client.put_object(
                Bucket=driver.bucket, Key=race, Body=str(index).encode(), IfNoneMatch="*"
            )
        except botocore.exceptions.ClientError:
            return False
        return True

    assert sum(await asyncio.gather(*(create(index) for index in range(12)))) == 1


# Layout


async def test_keys_are_registry2s(s3: Make, ceph_s3: CephS3) -> None:
    driver = s3()
    path = "/docker/registry/v2/blobs/sha256/ab/abcdef/data"
    await driver.put_content(path, b"blob")
    root = driver.prefix.lstrip("/")
    assert await raw_keys(driver) == [f"{root}/docker/registry/v2/blobs/sha256/ab/abcdef/data"]


@pytest.mark.parametrize(
    ("rootdirectory", "prefix"),
    [("", ""), ("/", ""), ("/nested/root/", "nested/root/"), ("plain", "plain/")],
)
async def test_the_root_directory_prefixes_keys_without_a_leading_slash(
    ceph_s3: CephS3, rootdirectory: str, prefix: str
) -> None:
    """As registry:2's s3Path: ``(rootdirectory minus its last "/") + path``, then no
    leading "/" (an empty root: keys start at ``docker/``). A bucket of its own."""
    bucket = f"layout-{uuid.uuid4().hex[:10]}"
    with contextlib.closing(ceph_s3.client()) as client:
        client.create_bucket(Bucket=bucket)
    driver = S3Driver(**ceph_s3.driver_parameters(bucket, rootdirectory))
    try:
        await driver.put_content("/docker/registry/v2/repositories/a/_layers/link", b"x")
        raw = await driver._client()
        listed = await raw.list_objects_v2(Bucket=bucket)
        assert [item["Key"] for item in listed["Contents"]] == [
            f"{prefix}docker/registry/v2/repositories/a/_layers/link"
        ]
        assert await driver.list("/docker/registry/v2/repositories") == ["a"]
        await driver.delete("/docker")
        assert "Contents" not in await raw.list_objects_v2(Bucket=bucket)
    finally:
        await driver.close()
        with contextlib.closing(ceph_s3.client()) as client:
            client.delete_bucket(Bucket=bucket)


# Writers: multipart uploads


async def test_a_big_stream_goes_in_parts_of_chunksize(s3: Make) -> None:
    driver = s3()
    path = "/suite/big"
    data = os.urandom(12 * MIB + 3)
    calls = spy(driver)
    writer = await driver.writer(path)
    held = 0
    for start in range(0, len(data), MIB):
        await writer.write(data[start : start + MIB])
        held = max(held, writer._pending_size)  # type: ignore[attr-defined]
    assert held < MIN_PART + MIB  # Memory: a part at most, plus the piece that filled it.
    uploads = await uploads_in_progress(driver)
    assert [upload["Key"] for upload in uploads] == [driver.key(path)]
    await writer.commit()
    assert await uploads_in_progress(driver) == []
    assert calls.count("upload_part") == 3  # 5 MiB, 5 MiB, and the rest at commit.
    assert calls[-1] == "complete_multipart_upload"
    assert (await driver.stat(path)).size == len(data)
    await writer.close()
    assert await driver.get_content(path) == data


async def test_appending_to_a_big_file_copies_it_server_side(s3: Make) -> None:
    driver = s3()
    path = "/suite/append/big"
    start = os.urandom(6 * MIB)
    await driver.put_content(path, start)
    writer = await driver.writer(path, append=True)
    calls = spy(driver)
    await writer.write(b"and a tail")
    await writer.commit()
    await writer.close()
    assert "upload_part_copy" in calls
    assert "get_object" not in calls  # Nothing read back.
    assert await driver.get_content(path) == start + b"and a tail"


async def test_appending_to_a_small_file_reads_it_back(s3: Make) -> None:
    driver = s3()
    path = "/suite/append/small"
    await driver.put_content(path, b"small start,")
    writer = await driver.writer(path, append=True)
    calls = spy(driver)
    await writer.write(b"more")
    await writer.commit()
    await writer.close()
    assert calls == ["get_object", "put_object", "delete_object"]  # Read, rewrite, unlock.
    assert await driver.get_content(path) == b"small start,more"


@pytest.mark.parametrize("size", [0, 1000, 6 * MIB], ids=["empty", "small", "big"])
async def test_rollback_after_commit_brings_back_the_file_as_opened(
    s3: Make, size: int
) -> None:
    """The registry commits a chunk, then checks the digest; on a mismatch it rolls back."""
    driver = s3()
    path = "/suite/append/rolled"
    start = os.urandom(size)
    await driver.put_content(path, start)
    writer = await driver.writer(path, append=True)
    await writer.write(os.urandom(MIN_PART + 100))
    await writer.commit()
    assert (await driver.stat(path)).size == size + MIN_PART + 100
    await writer.write(b"uncommitted")
    await writer.rollback()
    assert writer.size == size
    await writer.close()
    assert await driver.get_content(path) == start
    assert await uploads_in_progress(driver) == []


async def test_a_new_files_rollback_leaves_it_empty(s3: Make) -> None:
    driver = s3()
    path = "/suite/new/rolled"
    await driver.put_content(path, b"old contents")
    writer = await driver.writer(path)
    await writer.write(b"new")
    await writer.commit()
    await writer.rollback()
    await writer.close()
    assert await driver.get_content(path) == b""


async def test_a_failed_commit_leaves_no_upload_behind(
    s3: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = s3()
    path = "/suite/failing"
    await driver.put_content(path, b"kept")

    async def broken(*args: object) -> None:
        raise S3Error("s3 complete_multipart_upload failed: InternalError (HTTP 500)")

    writer = await driver.writer(path, append=True)
    await writer.write(os.urandom(MIN_PART + 1))  # One part sent.
    assert len(await uploads_in_progress(driver)) == 1
    monkeypatch.setattr(driver, "_complete", broken)
    with pytest.raises(S3Error):
        await writer.commit()
    assert await uploads_in_progress(driver) == []
    with pytest.raises(StorageDriverError, match="roll back or cancel"):
        await writer.write(b"more")  # What the file holds is not known any more.
    await writer.rollback()
    await writer.write(b"+again")
    monkeypatch.undo()
    await writer.close()
    assert await driver.get_content(path) == b"kept+again"


async def test_cancel_aborts_and_deletes(s3: Make) -> None:
    driver = s3()
    path = "/suite/cancelled"
    writer = await driver.writer(path)
    await writer.write(os.urandom(MIN_PART + 1))
    assert len(await uploads_in_progress(driver)) == 1
    await writer.cancel()
    assert await uploads_in_progress(driver) == []
    with pytest.raises(PathNotFoundError):
        await driver.stat(path)


async def test_deleting_a_folder_aborts_writes_left_unfinished_in_it(s3: Make) -> None:
    """An instance killed mid-upload leaves its multipart upload; purging the session's
    folder must not leave its parts stored (and billed) for ever."""
    driver = s3()
    crashed = s3(same_root_as=driver)  # Another process, which then dies without a word.
    await driver.put_content("/suite/_uploads/abc/startedat", b"2026-01-01T00:00:00Z")
    await driver.put_content("/suite/_uploads/abc/data", b"")
    writer = await crashed.writer("/suite/_uploads/abc/data", append=True)
    await writer.write(os.urandom(MIN_PART + 1))
    assert len(await uploads_in_progress(driver)) == 1
    await driver.put_content("/suite/_uploads/other/data", b"kept")
    other = await driver.writer("/suite/_uploads/other/data", append=True)
    await other.write(os.urandom(MIN_PART + 1))

    calls = spy(driver)
    await driver.delete("/suite/_uploads/abc")
    assert [upload["Key"] for upload in await uploads_in_progress(driver)] == [
        driver.key("/suite/_uploads/other/data")
    ]
    assert await raw_keys(driver) == [
        driver.key("/suite/_uploads/other/data"),
        driver.key("/suite/_uploads/other/data") + ".lock~",
    ]
    # Deleting one file costs no look for unfinished uploads.
    calls.clear()
    await driver.delete("/suite/_uploads/other/data")
    assert "list_multipart_uploads" not in calls
    await other.cancel()
    await writer.cancel()  # Only to stop its lock's renewal: its upload is gone already.


# Reads


async def test_reads_stream_in_chunks(s3: Make) -> None:
    driver = s3()
    path = "/suite/read"
    data = os.urandom(3 * CHUNK_SIZE + 5)
    await driver.put_content(path, data)
    chunks = [chunk async for chunk in driver.read(path)]
    assert [len(chunk) for chunk in chunks] == [CHUNK_SIZE] * 3 + [5]
    assert b"".join(chunks) == data
    # A reader that stops early lets the response go (no warning about it, ever).
    reader = driver.read(path, 10)
    assert await anext(reader) == data[10 : 10 + CHUNK_SIZE]
    await reader.aclose()  # type: ignore[attr-defined]


# Moves, deletes, listings


async def test_a_big_move_is_a_bounded_multipart_copy(s3: Make) -> None:
    driver = s3(multipartcopymaxconcurrency=2)
    data = os.urandom(16 * MIB + 1)
    await driver.put_content("/suite/source", data)
    running = peak = 0
    original = driver._call

    async def call(operation: str, path: str, **params: Any) -> dict[str, Any]:
        nonlocal running, peak
        if operation == "upload_part_copy":
            running += 1
            peak = max(peak, running)
        try:
            return await original(operation, path, **params)
        finally:
            if operation == "upload_part_copy":
                running -= 1

    driver._call = call  # type: ignore[method-assign]
    calls = spy(driver)
    await driver.move("/suite/source", "/suite/destination")
    assert calls.count("upload_part_copy") == 3  # 16 MiB in 5 MiB pieces (the last larger).
    assert peak == 2
    assert "copy_object" not in calls
    assert await driver.get_content("/suite/destination") == data
    with pytest.raises(PathNotFoundError):
        await driver.stat("/suite/source")


async def test_a_small_move_is_one_copy(s3: Make) -> None:
    driver = s3()
    await driver.put_content("/suite/a", b"moved")
    calls = spy(driver)
    await driver.move("/suite/a", "/suite/b")
    assert calls == ["head_object", "copy_object", "delete_object"]
    assert await driver.get_content("/suite/b") == b"moved"


async def test_listing_tags_is_one_request(s3: Make) -> None:
    driver = s3()
    for tag in ("a", "b", "c"):
        await driver.put_content(f"/suite/tags/{tag}/current/link", b"x")
        await driver.put_content(f"/suite/tags/{tag}/index/sha256/ab/link", b"x")
    await driver.put_content("/suite/tags/d/index/sha256/ab/link", b"x")
    calls = spy(driver)
    assert await driver.list_holding("/suite/tags", "current/link") == ["a", "b", "c"]
    assert calls == ["list_objects_v2"]


async def test_deleting_over_a_thousand_objects(s3: Make) -> None:
    driver = s3()
    semaphore = asyncio.Semaphore(16)

    async def put(index: int) -> None:
        async with semaphore:
            await driver.put_content(f"/suite/many/{index // 100}/{index}", b"")

    await asyncio.gather(*(put(index) for index in range(1001)))
    calls = spy(driver)
    await driver.delete("/suite/many")
    assert calls.count("delete_objects") == 2  # Batches of 1000.
    assert calls.count("list_objects_v2") == 3  # The file itself, then two pages.
    with pytest.raises(PathNotFoundError):
        await driver.list("/suite/many")


# Errors


async def test_a_missing_key_is_path_not_found(s3: Make) -> None:
    driver = s3()
    for call in (
        lambda: driver.get_content("/suite/nothing"),
        lambda: driver.stat("/suite/nothing"),
        lambda: driver.list("/suite/nothing"),
        lambda: driver.delete("/suite/nothing"),
        lambda: driver.move("/suite/nothing", "/suite/else"),
        lambda: driver.writer("/suite/nothing", append=True),
    ):
        with pytest.raises(PathNotFoundError) as raised:
            await call()
        assert raised.value.path == "/suite/nothing"


async def test_a_missing_bucket_is_not_a_missing_path(ceph_s3: CephS3) -> None:
    driver = S3Driver(**ceph_s3.driver_parameters("no-such-bucket"))
    try:
        with pytest.raises(S3Error, match=r"s3 bucket 'no-such-bucket' does not exist"):
            await driver.stat("/docker")
    finally:
        await driver.close()


@pytest.mark.parametrize("wrong", ["secretkey", "accesskey"])
async def test_bad_credentials_are_named_and_never_shown(ceph_s3: CephS3, wrong: str) -> None:
    parameters = ceph_s3.driver_parameters(TEST_BUCKET, "/suite-credentials")
    parameters[wrong] = "W" * 40 if wrong == "secretkey" else "NOSUCHACCESSKEY00000"
    driver = S3Driver(**parameters)
    try:
        with pytest.raises(S3Error) as raised:
            await driver.get_content("/suite/x")
    finally:
        await driver.close()
    message = str(raised.value)
    assert raised.value.code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "403")
    assert "W" * 40 not in message and ceph_s3.secret_key not in message
    assert "403" in message or "SignatureDoesNotMatch" in message


# The append lock


async def test_one_appender_across_processes(s3: Make) -> None:
    one = s3()
    other = s3(same_root_as=one)  # Another process, on the same bucket and root.
    path = "/suite/upload/data"
    await one.put_content(path, b"start")
    holder = await one.writer(path, append=True)
    with pytest.raises(BusyError):
        await other.writer(path, append=True)
    # The lock is an object beside the file, which listings leave out.
    assert one.key(path) + LOCK_SUFFIX in await raw_keys(one)
    assert await other.list("/suite/upload") == ["data"]
    await holder.write(b"+one")
    await holder.close()
    assert one.key(path) + LOCK_SUFFIX not in await raw_keys(one)
    second = await other.writer(path, append=True)
    await second.write(b"+two")
    await second.close()
    assert await one.get_content(path) == b"start+one+two"


async def test_a_crashed_appenders_lock_is_taken_over_after_its_lease(s3: Make) -> None:
    driver = s3(lock_lease=1.0)
    path = "/suite/upload/data"
    await driver.put_content(path, b"start")
    client = await driver._client()
    lock_key = driver.key(path) + LOCK_SUFFIX
    crashed = json.dumps({"owner": "crashed", "at": 0, "lease": 1.0}).encode()
    await client.put_object(Bucket=driver.bucket, Key=lock_key, Body=crashed)
    with pytest.raises(BusyError):
        await driver.writer(path, append=True)
    await asyncio.sleep(3.2)  # Stale: older than the lease and the clock's step.
    writer = await driver.writer(path, append=True)
    owner = await client.get_object(Bucket=driver.bucket, Key=lock_key)
    assert json.loads(await owner["Body"].read())["owner"] != "crashed"
    await writer.write(b"+resumed")
    await writer.close()
    assert await driver.get_content(path) == b"start+resumed"


async def test_of_several_taking_over_a_stale_lock_one_wins(s3: Make) -> None:
    first = s3(lock_lease=1.0)
    others = [s3(same_root_as=first, lock_lease=1.0) for _ in range(5)]
    path = "/suite/upload/data"
    await first.put_content(path, b"start")
    client = await first._client()
    await client.put_object(
        Bucket=first.bucket, Key=first.key(path) + LOCK_SUFFIX, Body=b'{"owner": "crashed"}'
    )
    await asyncio.sleep(3.2)

    async def take(driver: S3Driver) -> Any:
        try:
            return await driver.writer(path, append=True)
        except BusyError:
            return None

    writers = [writer for writer in await asyncio.gather(*map(take, others)) if writer]
    assert len(writers) == 1
    await writers[0].close()


async def test_an_open_appender_keeps_its_lock_past_the_lease(s3: Make) -> None:
    holder_driver = s3(lock_lease=1.0)
    other = s3(same_root_as=holder_driver, lock_lease=1.0)
    path = "/suite/upload/data"
    await holder_driver.put_content(path, b"start")
    holder = await holder_driver.writer(path, append=True)
    await asyncio.sleep(2.5)  # Renewed every third of the lease meanwhile.
    with pytest.raises(BusyError):
        await other.writer(path, append=True)
    await holder.write(b"+still mine")
    await holder.close()
    assert await holder_driver.get_content(path) == b"start+still mine"


async def test_an_appender_that_lost_its_lock_stops_and_leaves_the_new_one(s3: Make) -> None:
    stalled_driver = s3(lock_lease=1.0)
    other = s3(same_root_as=stalled_driver, lock_lease=1.0)
    path = "/suite/upload/data"
    await stalled_driver.put_content(path, b"start")
    stalled = await stalled_driver.writer(path, append=True)
    stalled._lock._renewal.cancel()  # type: ignore[attr-defined]  # As if the process froze.
    await asyncio.sleep(3.2)
    taker = await other.writer(path, append=True)
    with pytest.raises(BusyError):
        await stalled.write(b"late")
    await stalled.close()  # Neither writes nor unlocks: the lock is the taker's now.
    assert stalled_driver.key(path) + LOCK_SUFFIX in await raw_keys(stalled_driver)
    await taker.write(b"+taker")
    await taker.close()
    assert await other.get_content(path) == b"start+taker"


# Clients: one per event loop


def test_a_driver_made_before_any_loop_serves_several_loops(
    ceph_s3: CephS3, tmp_path: Path
) -> None:
    """The app builds its store before the loop runs; tests and tools run loops one after
    another or side by side in threads. Every client is closed with its loop: no warning."""
    driver = make_s3(tmp_path, ceph_s3)
    assert isinstance(driver, S3Driver)

    async def use(name: str) -> None:
        await driver.put_content(f"/suite/{name}", name.encode())
        assert await driver.get_content(f"/suite/{name}") == name.encode()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(use("first"))
        thread = threading.Thread(target=asyncio.run, args=(use("thread"),))
        thread.start()
        thread.join()

        async def last() -> None:
            await use("last")
            assert await driver.list("/suite") == ["first", "last", "thread"]
            await driver.delete("/suite")
            assert await s3_leftovers(driver) == []
            await driver.close()

        asyncio.run(last())
        gc.collect()
    assert [str(warning.message) for warning in caught] == []
