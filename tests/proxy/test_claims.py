"""Claims on a blob's transfer, as two workers of one server see them (two ``Claims`` on
one folder; a forked process for a worker that dies)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from registry.proxy.claims import Claims
from registry.reference import Digest
from tests.proxy.conftest import waiter_goes_on_after_release

DIGEST = Digest("sha256", "a" * 64)
OTHER = Digest("sha256", "b" * 64)


async def test_one_claim_per_digest_across_workers(tmp_path: Path) -> None:
    first, second = Claims(str(tmp_path)), Claims(str(tmp_path))
    claim = await first.try_claim(DIGEST)
    assert claim is not None
    assert await second.try_claim(DIGEST) is None
    assert await first.try_claim(DIGEST) is None  # Even the same worker's second request waits.
    other = await second.try_claim(OTHER)
    assert other is not None
    await claim.release()
    assert os.listdir(tmp_path) == [f"sha256-{OTHER.hex}"]  # A released claim leaves no file.
    again = await second.try_claim(DIGEST)
    assert again is not None
    await again.release()
    await other.release()
    await claim.release()  # Twice is harmless.
    assert os.listdir(tmp_path) == []


async def test_a_waiter_goes_on_once_the_claim_is_released(tmp_path: Path) -> None:
    holder, waiter = Claims(str(tmp_path)), Claims(str(tmp_path))
    await waiter_goes_on_after_release(holder, waiter, DIGEST)
    assert await waiter.try_claim(DIGEST) is not None


def test_a_worker_that_dies_frees_its_claim(tmp_path: Path) -> None:
    ready_read, ready_write = os.pipe()
    child = os.fork()
    if child == 0:  # The worker: claims, says so, and is killed holding it.
        os.close(ready_read)
        held = asyncio.run(Claims(str(tmp_path)).try_claim(DIGEST))
        os.write(ready_write, b"1" if held is not None else b"0")
        signal.pause()
        os._exit(0)
    os.close(ready_write)
    try:
        assert os.read(ready_read, 1) == b"1"
        assert asyncio.run(Claims(str(tmp_path)).try_claim(DIGEST)) is None
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(ready_read)
    # Its file stays (nobody removed it), but nobody holds it: the next claim is granted.
    claim = asyncio.run(Claims(str(tmp_path)).try_claim(DIGEST))
    assert claim is not None
    asyncio.run(claim.release())


def test_a_process_of_its_own_has_a_folder_of_its_own() -> None:
    claims = Claims(None)
    assert os.path.isdir(claims.folder)
    claim = asyncio.run(claims.try_claim(DIGEST))
    assert claim is not None
    asyncio.run(claim.release())
    claims.close()
    assert not os.path.exists(claims.folder)
