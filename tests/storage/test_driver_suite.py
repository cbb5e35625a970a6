"""The driver contract, once for every driver (distribution's ``DriverSuite``, by name).

Paths live below ``/suite``; the ``driver`` fixture deletes it afterwards and
checks that nothing at all is left behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import threading

import pytest

from registry.storage.driver import (
    CHUNK_SIZE,
    BusyError,
    InvalidOffsetError,
    InvalidPathError,
    PathNotFoundError,
    StorageDriver,
)

from .conftest import DriverCase, stored

ROOT = "/suite"
MIB = 1024 * 1024

FILENAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"


def random_name(length: int = 12, rng: random.Random | None = None) -> str:
    rng = rng or random.Random()
    chars = [rng.choice(FILENAME_CHARS) for _ in range(length)]
    for i in range(1, length - 1):
        if chars[i - 1] not in "._-" and rng.randrange(4) == 0:
            chars[i] = rng.choice("._-")
    return "".join(chars)


def random_path(depth: int = 3) -> str:
    return ROOT + "".join("/" + random_name() for _ in range(depth))


async def files_in(case: DriverCase, driver: StorageDriver) -> list[str]:
    """Every file the backend holds, temporary files included."""
    return [path for path in await stored(case, driver) if not path.endswith("/")]


async def read_all(
    driver: StorageDriver, path: str, offset: int = 0, length: int | None = None
) -> bytes:
    return b"".join([chunk async for chunk in driver.read(path, offset, length)])


async def write_stream(driver: StorageDriver, path: str, data: bytes, chunk: int = 64 * 1024):
    writer = await driver.writer(path)
    for start in range(0, len(data), chunk):
        await writer.write(data[start : start + chunk])
    await writer.commit()
    await writer.close()
    return writer


CONTENTS = {
    "empty": b"",
    "one byte": b"a",
    "unicode": "\u00df".encode(),
    "non utf8": b"\x80\x80\x80\x80",
    "small": os.urandom(32),
    "chunk minus one": os.urandom(CHUNK_SIZE - 1),
    "one MiB": os.urandom(CHUNK_SIZE),
    "chunk plus one": os.urandom(CHUNK_SIZE + 1),
}


# Paths


VALID_PATHS = [
    "/a",
    "/2",
    "/aa",
    "/a.a",
    "/0-9/abcdefg",
    "/abcdefg/z.75",
    "/abc/1.2.3.4.5-6_zyx/123.z/4",
    "/docker/docker-registry",
    "/123.abc",
    "/abc./abc",
    "/.abc",
    "/a--b",
    "/a-.b",
    "/_.abc",
    "/Docker/docker-registry",
    "/Abc/Cba",
    "/..a",
    "/a..",
    "/...",
    "/data.tmp-0",
]


@pytest.mark.parametrize("path", VALID_PATHS)
async def test_valid_paths(driver: StorageDriver, path: str) -> None:
    contents = os.urandom(64)
    await driver.put_content(ROOT + path, contents)
    assert await driver.get_content(ROOT + path) == contents
    assert await read_all(driver, ROOT + path) == contents


INVALID_PATHS = [
    "",
    "/",
    "a",
    "abc",
    "123.abc",
    "//bcd",
    "/abc_123/",
    "/a/../b",
    "/a/..",
    "/..",
    "/.",
    "/a//b",
    "/a/./b",
    "/a b",
    "/a/b/",
    "/a\tb",
    "/a\nb",
    "/a\n",
    "/a\x00b",
    "\\a",
    "/a\\b",
    "/a:b",
    "/a/b?c",
    "/\u00e4",
    "/a/\u00df",
    "/\u0430",  # Cyrillic a
    "/\uff41",  # fullwidth a
    "/a\u200b",
    "/\u0661",  # Arabic-Indic one: a digit to str.isdigit, not to the grammar
]


@pytest.mark.parametrize("path", INVALID_PATHS)
async def test_invalid_paths(driver: StorageDriver, driver_case: DriverCase, path: str) -> None:
    valid = f"{ROOT}/valid"
    await driver.put_content(valid, b"x")
    calls = {
        "put_content": lambda: driver.put_content(path, b"contents"),
        "get_content": lambda: driver.get_content(path),
        "writer": lambda: driver.writer(path),
        "writer append": lambda: driver.writer(path, append=True),
        "stat": lambda: driver.stat(path),
        "list": lambda: driver.list(path),
        "move from": lambda: driver.move(path, f"{ROOT}/target"),
        "move to": lambda: driver.move(valid, path),
        "delete": lambda: driver.delete(path),
        "read": lambda: read_all(driver, path),
        "read at offset": lambda: read_all(driver, path, 1, 1),
    }
    for name, call in calls.items():
        with pytest.raises(InvalidPathError) as raised:
            await call()
        assert raised.value.path == path, name
    assert await driver.get_content(valid) == b"x"
    assert await files_in(driver_case, driver) == [valid]


# Write and read: whole files


@pytest.mark.parametrize("contents", CONTENTS.values(), ids=CONTENTS.keys())
async def test_write_read(driver: StorageDriver, contents: bytes) -> None:
    path = random_path()
    await driver.put_content(path, contents)
    assert await driver.get_content(path) == contents
    assert (await driver.stat(path)).size == len(contents)


async def test_truncate(driver: StorageDriver) -> None:
    path = random_path()
    await driver.put_content(path, os.urandom(MIB))
    smaller = os.urandom(1024)
    await driver.put_content(path, smaller)
    assert await driver.get_content(path) == smaller
    assert (await driver.stat(path)).size == 1024


async def test_put_content_multiple_times(driver: StorageDriver) -> None:
    path = random_path()
    for size in (4096, 2048, 0, 5000):
        contents = os.urandom(size)
        await driver.put_content(path, contents)
        assert await driver.get_content(path) == contents


async def test_read_nonexistent(driver: StorageDriver) -> None:
    path = random_path()
    with pytest.raises(PathNotFoundError) as raised:
        await driver.get_content(path)
    assert raised.value.path == path
    await driver.put_content(f"{ROOT}/folder/file", b"x")
    with pytest.raises(PathNotFoundError):
        await driver.get_content(f"{ROOT}/folder")
    with pytest.raises(PathNotFoundError):
        await driver.get_content(f"{ROOT}/folder/file/below")


async def test_put_content_creates_parents(driver: StorageDriver) -> None:
    path = f"{ROOT}/a/b/c/d/e"
    await driver.put_content(path, b"deep")
    assert await driver.get_content(path) == b"deep"
    for parent in (f"{ROOT}/a", f"{ROOT}/a/b/c/d"):
        assert (await driver.stat(parent)).is_dir


async def test_put_content_leaves_no_temporary_files(
    driver: StorageDriver, driver_case: DriverCase
) -> None:
    folder = f"{ROOT}/folder"
    for i in range(20):
        await driver.put_content(f"{folder}/link", str(i).encode() * 100)
    assert await driver.list(folder) == ["link"]
    assert await files_in(driver_case, driver) == [f"{folder}/link"]


async def test_put_content_replace_is_atomic(driver: StorageDriver) -> None:
    """A reader sees the old bytes or the new ones, never a mix or a short file.

    The writer runs in a thread of its own, so it really overlaps the reads
    (the filesystem driver writes small files inline, without awaiting).
    """
    path = f"{ROOT}/big"
    size = 4 * MIB
    versions = [bytes([i]) * size for i in range(4)]
    await driver.put_content(path, versions[0])
    done = threading.Event()
    errors: list[BaseException] = []

    async def rewrite() -> None:
        for round_ in range(24):
            await driver.put_content(path, versions[(round_ + 1) % len(versions)])

    def writer_thread() -> None:
        try:
            asyncio.run(rewrite())
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            done.set()

    thread = threading.Thread(target=writer_thread)
    thread.start()
    reads = 0
    try:
        while not done.is_set() or reads < 8:
            whole = await driver.get_content(path)
            streamed = await read_all(driver, path)
            for seen in (whole, streamed):
                assert len(seen) == size
                assert seen == bytes([seen[0]]) * size
            reads += 1
            await asyncio.sleep(0)
    finally:
        thread.join()
    assert not errors
    assert await driver.list(ROOT) == ["big"]


# Write and read: streams


@pytest.mark.parametrize("contents", CONTENTS.values(), ids=CONTENTS.keys())
async def test_write_read_streams(driver: StorageDriver, contents: bytes) -> None:
    path = random_path()
    writer = await write_stream(driver, path, contents)
    assert writer.size == len(contents)
    assert await read_all(driver, path) == contents
    assert await driver.get_content(path) == contents


@pytest.mark.parametrize("chunk", [1000, 64 * 1024, MIB, 3 * MIB])
async def test_write_read_large_streams(driver: StorageDriver, chunk: int) -> None:
    path = random_path()
    contents = os.urandom(6 * MIB + 7)
    writer = await write_stream(driver, path, contents, chunk)
    assert writer.size == len(contents)
    assert (await driver.stat(path)).size == len(contents)
    digest = hashlib.sha256()
    async for part in driver.read(path):
        assert len(part) > 0
        digest.update(part)
    assert digest.digest() == hashlib.sha256(contents).digest()


async def test_read_nonexistent_stream(driver: StorageDriver) -> None:
    path = random_path()
    with pytest.raises(PathNotFoundError):
        await read_all(driver, path)
    with pytest.raises(PathNotFoundError):
        await read_all(driver, path, 64)
    await driver.put_content(f"{ROOT}/folder/file", b"x")
    with pytest.raises(PathNotFoundError):
        await read_all(driver, f"{ROOT}/folder")


async def test_reader_with_offset(driver: StorageDriver) -> None:
    path = random_path()
    chunks = [os.urandom(32) for _ in range(3)]
    contents = b"".join(chunks)
    await driver.put_content(path, contents)
    assert await read_all(driver, path) == contents
    assert await read_all(driver, path, 32) == chunks[1] + chunks[2]
    assert await read_all(driver, path, 64) == chunks[2]
    assert await read_all(driver, path, 95) == contents[95:]
    assert len(await read_all(driver, path, 95)) == 1
    # At the end: nothing, not an error.
    assert await read_all(driver, path, 96) == b""
    with pytest.raises(InvalidOffsetError) as raised:
        await read_all(driver, path, 97)
    assert raised.value.offset == 97
    assert raised.value.path == path
    with pytest.raises(InvalidOffsetError) as raised:
        await read_all(driver, path, -1)
    assert raised.value.offset == -1
    assert raised.value.path == path


async def test_reader_with_offset_on_empty_file(driver: StorageDriver) -> None:
    path = random_path()
    await driver.put_content(path, b"")
    assert await read_all(driver, path, 0) == b""
    with pytest.raises(InvalidOffsetError):
        await read_all(driver, path, 1)


async def test_reader_with_offset_and_length(driver: StorageDriver) -> None:
    path = random_path()
    contents = os.urandom(2 * CHUNK_SIZE + 100)
    await driver.put_content(path, contents)
    cases = [
        (0, 0),
        (0, 1),
        (5, 10),
        (0, CHUNK_SIZE),
        (CHUNK_SIZE - 3, 6),
        (CHUNK_SIZE - 1, CHUNK_SIZE + 2),
        (10, len(contents) - 10),
        (10, len(contents)),  # longer than what is left: up to the end
        (len(contents) - 1, 5),
        (len(contents), 0),
        (len(contents), 10),
    ]
    for offset, length in cases:
        assert await read_all(driver, path, offset, length) == contents[offset : offset + length], (
            offset,
            length,
        )
    with pytest.raises(InvalidOffsetError):
        await read_all(driver, path, 0, -1)
    with pytest.raises(InvalidOffsetError):
        await read_all(driver, path, len(contents) + 1, 1)


async def test_concurrent_stream_reads(driver: StorageDriver) -> None:
    path = random_path()
    contents = os.urandom(10 * MIB)
    await driver.put_content(path, contents)
    rng = random.Random(7)
    offsets = [rng.randrange(len(contents)) for _ in range(10)] + [0, len(contents)]
    results = await asyncio.gather(*(read_all(driver, path, offset) for offset in offsets))
    for offset, result in zip(offsets, results, strict=True):
        assert result == contents[offset:]


# Writers


@pytest.mark.parametrize("chunk_size", [32, 2 * MIB + 1])
async def test_continue_stream_append(driver: StorageDriver, chunk_size: int) -> None:
    path = random_path()
    chunks = [os.urandom(chunk_size) for _ in range(3)]
    full = b"".join(chunks)

    writer = await driver.writer(path)
    await writer.write(chunks[0])
    await writer.close()
    assert writer.size == chunk_size

    writer = await driver.writer(path, append=True)
    assert writer.size == chunk_size
    await writer.write(chunks[1])
    await writer.close()
    assert writer.size == 2 * chunk_size

    writer = await driver.writer(path, append=True)
    assert writer.size == 2 * chunk_size
    await writer.write(full[writer.size :])
    await writer.commit()
    await writer.close()
    assert writer.size == len(full)
    assert await driver.get_content(path) == full
    assert (await driver.stat(path)).size == len(full)


async def test_write_zero_byte_stream_then_append(driver: StorageDriver) -> None:
    path = random_path()
    writer = await driver.writer(path)
    await writer.commit()
    await writer.close()
    assert writer.size == 0
    assert await driver.get_content(path) == b""
    assert (await driver.stat(path)).size == 0
    writer = await driver.writer(path, append=True)
    assert writer.size == 0
    await writer.write(b"appended")
    await writer.commit()
    await writer.close()
    assert await driver.get_content(path) == b"appended"


async def test_write_zero_byte_content_then_append(driver: StorageDriver) -> None:
    path = random_path()
    await driver.put_content(path, b"")
    writer = await driver.writer(path, append=True)
    assert writer.size == 0
    await writer.write(b"appended")
    await writer.commit()
    await writer.close()
    assert await driver.get_content(path) == b"appended"


async def test_append_to_missing_file_is_path_not_found(driver: StorageDriver) -> None:
    """Appending continues a file; it never brings back one deleted meanwhile."""
    path = random_path()
    with pytest.raises(PathNotFoundError):
        await driver.writer(path, append=True)
    with pytest.raises(PathNotFoundError):
        await driver.stat(path)


async def test_writer_without_append_truncates(driver: StorageDriver) -> None:
    path = random_path()
    await driver.put_content(path, b"old contents")
    writer = await driver.writer(path)
    assert writer.size == 0
    await writer.write(b"new")
    await writer.commit()
    await writer.close()
    assert await driver.get_content(path) == b"new"


async def test_writer_size(driver: StorageDriver) -> None:
    path = random_path()
    await driver.put_content(path, b"12345")
    writer = await driver.writer(path, append=True)
    sizes = [writer.size]
    for data in (b"a", b"", b"bcd", os.urandom(CHUNK_SIZE + 3)):
        await writer.write(data)
        sizes.append(writer.size)
    await writer.commit()
    await writer.close()
    assert sizes == [5, 6, 6, 9, 9 + CHUNK_SIZE + 3]
    assert writer.size == sizes[-1]
    assert (await driver.stat(path)).size == sizes[-1]


async def test_writer_commit(driver: StorageDriver) -> None:
    path = random_path()
    writer = await driver.writer(path)
    await writer.write(b"first ")
    await writer.write(b"second")
    await writer.commit()
    # Committed bytes are visible before the writer is closed.
    assert await driver.get_content(path) == b"first second"
    assert (await driver.stat(path)).size == 12
    await writer.close()
    assert await driver.get_content(path) == b"first second"


async def test_writer_close_keeps_what_was_written(driver: StorageDriver) -> None:
    """Upload sessions rely on it: a broken chunk keeps what reached the file."""
    path = random_path()
    writer = await driver.writer(path)
    await writer.write(b"partial")
    await writer.close()
    assert await driver.get_content(path) == b"partial"


async def test_writer_cancel(driver: StorageDriver) -> None:
    path = random_path()
    writer = await driver.writer(path)
    await writer.write(b"doomed")
    await writer.cancel()
    with pytest.raises(PathNotFoundError):
        await driver.get_content(path)
    with pytest.raises(PathNotFoundError):
        await driver.stat(path)


async def test_writer_cancel_of_append_drops_the_file(driver: StorageDriver) -> None:
    path = random_path()
    await driver.put_content(path, b"existing")
    writer = await driver.writer(path, append=True)
    await writer.write(b" and more")
    await writer.cancel()
    with pytest.raises(PathNotFoundError):
        await driver.get_content(path)


async def test_concurrent_file_streams(driver: StorageDriver) -> None:
    streams = 8
    contents = {f"{ROOT}/streams/{i}/data": os.urandom((i + 1) * 300_000) for i in range(streams)}

    async def stream(path: str, data: bytes) -> None:
        writer = await driver.writer(path)
        for start in range(0, len(data), 100_000):
            await writer.write(data[start : start + 100_000])
            await asyncio.sleep(0)
        await writer.commit()
        await writer.close()
        assert writer.size == len(data)

    await asyncio.gather(*(stream(path, data) for path, data in contents.items()))
    for path, data in contents.items():
        assert await read_all(driver, path) == data
    assert await driver.list(f"{ROOT}/streams") == [str(i) for i in range(streams)]


async def test_concurrent_appends_to_different_files_in_threads(driver: StorageDriver) -> None:
    """Writers driven from several threads (several event loops) do not mix their bytes."""
    contents = {f"{ROOT}/threads/{i}": os.urandom(MIB + i) for i in range(6)}

    async def write(path: str, data: bytes) -> None:
        for start in range(0, len(data), 50_000):
            writer = await driver.writer(path, append=start > 0)
            assert writer.size == start
            await writer.write(data[start : start + 50_000])
            await writer.commit()
            await writer.close()

    threads = [
        threading.Thread(target=asyncio.run, args=(write(path, data),))
        for path, data in contents.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for path, data in contents.items():
        assert await driver.get_content(path) == data


# Stat


async def test_stat_call(driver: StorageDriver) -> None:
    folder = random_path(2)
    path = f"{folder}/{random_name()}"
    for missing in (folder, path):
        with pytest.raises(PathNotFoundError) as raised:
            await driver.stat(missing)
        assert raised.value.path == missing

    contents = os.urandom(4096)
    await driver.put_content(path, contents)
    info = await driver.stat(path)
    assert info.path == path
    assert info.size == 4096
    assert not info.is_dir
    assert info.modified > 0

    await driver.put_content(path, os.urandom(100))
    later = await driver.stat(path)
    assert later.size == 100
    assert later.modified >= info.modified

    # A directory: size 0; its time is not part of the contract.
    info = await driver.stat(folder)
    assert info.path == folder
    assert info.size == 0
    assert info.is_dir
    top = await driver.stat(ROOT)
    assert top.is_dir
    assert top.path == ROOT


async def test_stat_of_an_empty_file(driver: StorageDriver) -> None:
    path = random_path()
    await driver.put_content(path, b"")
    info = await driver.stat(path)
    assert info.size == 0
    assert not info.is_dir


# List


async def test_list(driver: StorageDriver) -> None:
    root = f"{ROOT}/{random_name()}"
    missing = f"{root}/nonexistent"
    with pytest.raises(PathNotFoundError) as raised:
        await driver.list(missing)
    assert raised.value.path == missing

    parent = f"{root}/{random_name()}"
    rng = random.Random(11)
    names = {random_name(rng.randrange(8, 16), rng) for _ in range(50)}
    # Names that look like what drivers use for their own bookkeeping are still names.
    names |= {".hidden", "data.tmp-0", "x.tmp-abc", ".link.tmp-0123456789ab", "_uploads"}
    for name in names:
        await driver.put_content(f"{parent}/{name}", os.urandom(32))

    assert await driver.list(ROOT) == [root.rsplit("/", 1)[1]]
    assert await driver.list(root) == [parent.rsplit("/", 1)[1]]
    assert await driver.list(parent) == sorted(names)


async def test_list_only_direct_children(driver: StorageDriver) -> None:
    for path in ("a/1", "a/2/x", "a/2/y/z", "a/3/deep/deeper/file", "ab/1", "a.b"):
        await driver.put_content(f"{ROOT}/{path}", b"x")
    assert await driver.list(ROOT) == ["a", "a.b", "ab"]
    assert await driver.list(f"{ROOT}/a") == ["1", "2", "3"]
    assert await driver.list(f"{ROOT}/a/2") == ["x", "y"]
    assert await driver.list(f"{ROOT}/a/3/deep") == ["deeper"]


async def test_list_holding(driver: StorageDriver) -> None:
    """The children holding a file at a relative path (how tags are listed): a child
    with the folder but not the file, or the file elsewhere, is not one."""
    for path in ("t/a/current/link", "t/b/current/link", "t/c/index/x", "t/d/current/other"):
        await driver.put_content(f"{ROOT}/{path}", b"x")
    await driver.put_content(f"{ROOT}/t/e", b"a file, not a folder")
    assert await driver.list_holding(f"{ROOT}/t", "current/link") == ["a", "b"]
    assert await driver.list_holding(f"{ROOT}/t", "index/x") == ["c"]
    with pytest.raises(PathNotFoundError):
        await driver.list_holding(f"{ROOT}/missing", "current/link")
    with pytest.raises(InvalidPathError):
        await driver.list_holding(f"{ROOT}/../t", "current/link")


async def test_list_of_a_file(driver: StorageDriver) -> None:
    path = f"{ROOT}/file"
    await driver.put_content(path, b"x")
    with pytest.raises(PathNotFoundError):
        await driver.list(path)


async def test_list_is_sorted_by_code_point(driver: StorageDriver) -> None:
    names = ["b", "B", "a", "A", "_", "-", ".x", "0", "z9", "z10"]
    for name in names:
        await driver.put_content(f"{ROOT}/sorted/{name}", b"")
    assert await driver.list(f"{ROOT}/sorted") == sorted(names)


# Move


async def test_move(driver: StorageDriver) -> None:
    contents = os.urandom(32)
    source = random_path()
    destination = random_path()
    await driver.put_content(source, contents)
    await driver.move(source, destination)
    assert await driver.get_content(destination) == contents
    with pytest.raises(PathNotFoundError):
        await driver.get_content(source)


async def test_move_overwrite(driver: StorageDriver) -> None:
    source = random_path()
    destination = random_path()
    source_contents = os.urandom(32)
    await driver.put_content(source, source_contents)
    await driver.put_content(destination, os.urandom(64))
    await driver.move(source, destination)
    assert await driver.get_content(destination) == source_contents
    assert (await driver.stat(destination)).size == 32
    with pytest.raises(PathNotFoundError):
        await driver.get_content(source)


async def test_move_nonexistent(driver: StorageDriver) -> None:
    contents = os.urandom(32)
    source = f"{ROOT}/source/missing"
    destination = f"{ROOT}/destination/file"
    await driver.put_content(destination, contents)
    with pytest.raises(PathNotFoundError) as raised:
        await driver.move(source, destination)
    assert raised.value.path == source
    assert await driver.get_content(destination) == contents


async def test_move_nonexistent_leaves_no_trace(driver: StorageDriver) -> None:
    await driver.put_content(f"{ROOT}/present", b"x")
    with pytest.raises(PathNotFoundError):
        await driver.move(f"{ROOT}/missing", f"{ROOT}/new/parents/file")
    assert await driver.list(ROOT) == ["present"]
    with pytest.raises(PathNotFoundError):
        await driver.stat(f"{ROOT}/new")


async def test_move_invalid(driver: StorageDriver) -> None:
    await driver.put_content(f"{ROOT}/notadir", b"x")
    with pytest.raises(PathNotFoundError):
        await driver.move(f"{ROOT}/notadir/foo", f"{ROOT}/notadir/bar")
    assert await driver.get_content(f"{ROOT}/notadir") == b"x"


async def test_move_creates_parents(driver: StorageDriver) -> None:
    source = f"{ROOT}/uploads/data"
    destination = f"{ROOT}/blobs/ab/abcdef/data"
    await driver.put_content(source, b"blob")
    await driver.move(source, destination)
    assert await driver.get_content(destination) == b"blob"
    assert await driver.list(f"{ROOT}/blobs/ab") == ["abcdef"]


async def test_move_onto_itself(driver: StorageDriver) -> None:
    path = random_path()
    await driver.put_content(path, b"stays")
    await driver.move(path, path)
    assert await driver.get_content(path) == b"stays"


async def test_move_large_file(driver: StorageDriver) -> None:
    source = random_path()
    destination = random_path()
    contents = os.urandom(3 * MIB + 1)
    await write_stream(driver, source, contents, MIB)
    await driver.move(source, destination)
    assert await read_all(driver, destination) == contents


# Delete


async def test_delete(driver: StorageDriver) -> None:
    path = random_path()
    await driver.put_content(path, os.urandom(32))
    await driver.delete(path)
    with pytest.raises(PathNotFoundError):
        await driver.get_content(path)
    with pytest.raises(PathNotFoundError):
        await driver.stat(path)


async def test_delete_nonexistent(driver: StorageDriver) -> None:
    path = random_path()
    with pytest.raises(PathNotFoundError) as raised:
        await driver.delete(path)
    assert raised.value.path == path


async def test_delete_folder(driver: StorageDriver) -> None:
    folder = random_path(2)
    files = [f"{folder}/{name}" for name in ("one", "two", "three")]
    for path in files:
        await driver.put_content(path, os.urandom(32))
    await driver.delete(files[0])
    with pytest.raises(PathNotFoundError):
        await driver.get_content(files[0])
    for path in files[1:]:
        assert len(await driver.get_content(path)) == 32
    await driver.delete(folder)
    for path in files:
        with pytest.raises(PathNotFoundError):
            await driver.get_content(path)
    with pytest.raises(PathNotFoundError):
        await driver.stat(folder)


async def test_delete_whole_tree(driver: StorageDriver) -> None:
    tree = f"{ROOT}/tree"
    paths = [f"{tree}/a", f"{tree}/b/c", f"{tree}/b/d/e/f", f"{tree}/g/h/i/j/k/l"]
    for path in paths:
        await driver.put_content(path, b"x")
    writer = await driver.writer(f"{tree}/b/stream")
    await writer.write(os.urandom(MIB))
    await writer.commit()
    await writer.close()
    await driver.put_content(f"{ROOT}/kept", b"kept")
    await driver.delete(tree)
    for path in [*paths, tree, f"{tree}/b", f"{tree}/g/h"]:
        with pytest.raises(PathNotFoundError):
            await driver.stat(path)
    assert await driver.list(ROOT) == ["kept"]


async def test_delete_only_deletes_subpaths(driver: StorageDriver) -> None:
    """Deleting /a/b must not touch /a/bc (object stores have no folders)."""
    base = f"{ROOT}/a"
    await driver.put_content(f"{base}/b", b"file b")
    await driver.put_content(f"{base}/bc", b"file bc")
    await driver.put_content(f"{base}/b.c", b"file b.c")
    await driver.put_content(f"{base}/dir/x", b"dir x")
    await driver.put_content(f"{base}/dirsuffix/x", b"dirsuffix x")
    await driver.put_content(f"{base}/dir-suffix/x", b"dir-suffix x")

    await driver.delete(f"{base}/b")
    with pytest.raises(PathNotFoundError):
        await driver.get_content(f"{base}/b")
    assert await driver.get_content(f"{base}/bc") == b"file bc"
    assert await driver.get_content(f"{base}/b.c") == b"file b.c"

    await driver.delete(f"{base}/dir")
    with pytest.raises(PathNotFoundError):
        await driver.get_content(f"{base}/dir/x")
    assert await driver.get_content(f"{base}/dirsuffix/x") == b"dirsuffix x"
    assert await driver.get_content(f"{base}/dir-suffix/x") == b"dir-suffix x"


async def test_delete_does_not_touch_parent(driver: StorageDriver) -> None:
    await driver.put_content(f"{ROOT}/parent/child/file", b"x")
    await driver.put_content(f"{ROOT}/parent/sibling", b"y")
    await driver.delete(f"{ROOT}/parent/child")
    assert await driver.list(f"{ROOT}/parent") == ["sibling"]


# Writing several pieces at once


@pytest.mark.parametrize(
    "pieces",
    [
        [],
        [b""],
        [b"a"],
        [b"one", b"", b"two", b"", b""],
        [os.urandom(CHUNK_SIZE), os.urandom(3), os.urandom(CHUNK_SIZE + 1)],
        [bytes([i % 256]) * (i % 7) for i in range(3000)],  # more pieces than IOV_MAX
        [os.urandom(100) for _ in range(20_000)],
    ],
    ids=["none", "empty", "one", "with empties", "large", "many tiny", "many small"],
)
async def test_write_parts(driver: StorageDriver, pieces: list[bytes]) -> None:
    path = random_path()
    writer = await driver.writer(path)
    await writer.write(b"head:")
    await writer.write_parts(pieces)
    await writer.write(b":tail")
    await writer.commit()
    await writer.close()
    expected = b"head:" + b"".join(pieces) + b":tail"
    assert writer.size == len(expected)
    assert await driver.get_content(path) == expected


async def test_write_parts_appends(driver: StorageDriver) -> None:
    path = random_path()
    await driver.put_content(path, b"existing,")
    writer = await driver.writer(path, append=True)
    await writer.write_parts([b"first,", b"second,"])
    assert writer.size == len(b"existing,first,second,")
    await writer.write_parts([b"third"])
    await writer.commit()
    await writer.close()
    assert await driver.get_content(path) == b"existing,first,second,third"


async def test_write_parts_after_short_writes(
    driver: StorageDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A system call that writes less than asked (a full pipe, a signal) loses nothing."""
    real_writev = os.writev

    def short_writev(descriptor: int, buffers: list[memoryview]) -> int:
        # At most 5 bytes, possibly ending inside a piece.
        head, taken = [], 0
        for buffer in buffers:
            head.append(buffer[: 5 - taken])
            taken += len(head[-1])
            if taken == 5:
                break
        return real_writev(descriptor, head)

    monkeypatch.setattr(os, "writev", short_writev)
    pieces = [b"abc", b"defgh", b"", b"ijklmnopq", b"r", os.urandom(50)]
    path = random_path()
    writer = await driver.writer(path)
    await writer.write_parts(pieces)
    await writer.commit()
    await writer.close()
    assert await driver.get_content(path) == b"".join(pieces)


# One appender at a time; a writer can take back what it wrote


async def test_one_appender_at_a_time(driver: StorageDriver) -> None:
    path = "/suite/append/locked"
    await driver.put_content(path, b"start")
    first = await driver.writer(path, append=True)
    with pytest.raises(BusyError):
        await driver.writer(path, append=True)
    await first.write(b"+one")
    await first.commit()
    await first.close()
    second = await driver.writer(path, append=True)  # Free again once closed.
    await second.write(b"+two")
    await second.commit()
    await second.close()
    assert await driver.get_content(path) == b"start+one+two"


async def test_rollback_takes_back_what_the_writer_wrote(driver: StorageDriver) -> None:
    path = "/suite/append/rollback"
    await driver.put_content(path, b"kept")
    writer = await driver.writer(path, append=True)
    await writer.write(b"x" * 3 * CHUNK_SIZE)
    await writer.write_parts([b"y" * 10, b"z" * 10])
    await writer.rollback()
    assert writer.size == 4
    await writer.close()
    assert await driver.get_content(path) == b"kept"
    assert (await driver.stat(path)).size == 4


async def test_an_appender_of_a_moved_file_never_writes_into_it(driver: StorageDriver) -> None:
    """Moved away (an upload committed into a blob) while another writer waited: that
    writer gets PathNotFoundError, never the moved file."""
    path, moved = "/suite/append/session", "/suite/append/blob"
    await driver.put_content(path, b"committed bytes")
    holder = await driver.writer(path, append=True)
    await driver.move(path, moved)
    await holder.close()
    with pytest.raises(PathNotFoundError):
        await driver.writer(path, append=True)
    assert await driver.get_content(moved) == b"committed bytes"
