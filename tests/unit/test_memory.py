"""A worker hands the memory a burst freed back to the system, and stops doing so
when it stops."""

from __future__ import annotations

import subprocess
import sys

#: Run in a process of its own: pytest's heap would blur the figures. A burst of
#: 64 KiB pieces (what the server reads off sockets), most freed and a few kept
#: between them, leaves the heap full of holes glibc does not give back by itself.
BURST = """
import asyncio

from registry.memory import limit_arenas, trim_until

limit_arenas()


def resident() -> int:
    with open("/proc/self/status") as file:
        line = next(line for line in file if line.startswith("VmRSS:"))
    return int(line.split()[1])


async def main() -> None:
    pieces = [bytes([n % 251]) * 65_000 for n in range(3000)]
    kept = pieces[::50]
    del pieces
    before = resident()
    stop = asyncio.Event()
    trimming = asyncio.ensure_future(trim_until(stop, interval=0.01))
    await asyncio.sleep(0.1)
    stop.set()
    await trimming
    print(before, resident(), len(kept))


asyncio.run(main())
"""


def test_freed_memory_goes_back_and_trimming_ends_with_the_worker() -> None:
    result = subprocess.run(
        [sys.executable, "-c", BURST], capture_output=True, text=True, check=True
    )
    before, after, _ = (int(value) for value in result.stdout.split())
    # About 190 MB was allocated and 98% of it freed: most of it is returned.
    assert before - after > 100_000, (before, after)
