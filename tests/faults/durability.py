"""A power cut, modelled: after it, only what was synced is there.

We cannot cut the power, so we check the order of the calls that make a file
survive one, read either from a recorder around the ``os`` functions (in a
test process) or from ``strace`` (a real server). A file stored at ``path``
survives if

* it was renamed there from a temporary whose data was synced after its last
  write and before the rename (else the new name may show an empty file);
* its directory was synced after the rename (else the name may be lost);
* every directory created on its way was made durable in its parent (synced
  after the ``mkdir``).

Directories that existed before the recording are taken as durable.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.api.raw_http import process_tree
from tests.conftest import RegistryProcess

SYNCS = ("fsync", "fdatasync")


@dataclass(frozen=True)
class Event:
    call: str
    """mkdir, rename, fsync, fdatasync, write, or answer (a response sent)."""
    path: str
    target: str = ""
    """rename: where to."""


@dataclass
class Trace:
    events: list[Event] = field(default_factory=list)

    def count(self, *calls: str) -> int:
        return sum(1 for event in self.events if event.call in calls)

    def durable(self, path: str, before: int | None = None) -> list[str]:
        """Why ``path`` would not survive a power cut after event ``before`` (none: it would)."""
        events = self.events[:before]
        renames = [i for i, e in enumerate(events) if e.call == "rename" and e.target == path]
        if not renames:
            return [f"{path}: never renamed into place"]
        moved = renames[-1]
        source = events[moved].path
        problems = []
        last_write = max(
            (i for i, e in enumerate(events[:moved]) if e.call == "write" and e.path == source),
            default=-1,
        )
        if not any(e.call in SYNCS and e.path == source for e in events[last_write + 1 : moved]):
            problems.append(f"{path}: the data of {source} not synced before its rename")
        if not self._synced_after(events, os.path.dirname(path), moved):
            problems.append(f"{path}: its directory not synced after the rename")
        for i, event in enumerate(events):
            if (
                event.call == "mkdir"
                and _contains(event.path, path)
                and not self._synced_after(events, os.path.dirname(event.path), i)
            ):
                problems.append(f"{path}: new directory {event.path} not synced in its parent")
        return problems

    @staticmethod
    def _synced_after(events: list[Event], directory: str, index: int) -> bool:
        return any(e.call == "fsync" and e.path == directory for e in events[index + 1 :])


def _contains(directory: str, path: str) -> bool:
    return path.startswith(directory.rstrip("/") + "/")


# Recording in this process: the real calls, each noted on the way


def _fd_path(descriptor: int) -> str:
    return os.readlink(f"/proc/self/fd/{descriptor}")


@contextmanager
def recorded() -> Iterator[Trace]:
    """Note every mkdir, rename, sync and writev of this process (any thread) while inside."""
    trace = Trace()
    lock = threading.Lock()

    with pytest.MonkeyPatch.context() as patch:

        def wrap(name: str, describe: Callable[..., Event]) -> None:
            real = getattr(os, name)

            def recording(*args: Any, **kwargs: Any) -> Any:
                event = describe(*args)  # A descriptor's path, read while it is open.
                result = real(*args, **kwargs)
                with lock:
                    trace.events.append(event)
                return result

            patch.setattr(os, name, recording)

        wrap("mkdir", lambda path, *_: Event("mkdir", os.fspath(path)))
        wrap("replace", lambda src, dst, *_: Event("rename", os.fspath(src), os.fspath(dst)))
        wrap("rename", lambda src, dst, *_: Event("rename", os.fspath(src), os.fspath(dst)))
        wrap("fsync", lambda fd: Event("fsync", _fd_path(fd)))
        wrap("fdatasync", lambda fd: Event("fdatasync", _fd_path(fd)))
        wrap("writev", lambda fd, *_: Event("write", _fd_path(fd)))
        yield trace


# strace on a real server


def _tracer(pid: int) -> int:
    with open(f"/proc/{pid}/status") as file:
        return int(next(line for line in file if line.startswith("TracerPid:")).split()[1])


def serving_pid(server: RegistryProcess) -> int:
    """The one worker of a one-worker server: the process that does the storage calls
    (the supervisor above it forks it and only watches)."""
    assert server.process is not None
    workers = process_tree(server.process.pid)[1:]
    assert len(workers) == 1, f"one worker expected, found processes {workers}"
    return workers[0]


def attach_strace(
    server: RegistryProcess, calls: Sequence[str], *options: str
) -> subprocess.Popen[bytes]:
    """strace on the running server, once it answers (a traced start is slow).

    Attached, not started by strace: strace ends when the server does, and
    ``terminate()`` detaches it, leaving the server to its fixture.
    """
    httpx.get(f"{server.url}/v2/", timeout=60)
    pid = serving_pid(server)
    command = ["strace", "-qq", "-p", str(pid), "-e", f"trace={','.join(calls)}", *options]
    tracer = subprocess.Popen(command)
    deadline = time.monotonic() + 30
    while _tracer(pid) != tracer.pid:
        assert tracer.poll() is None and time.monotonic() < deadline, "strace cannot attach"
        time.sleep(0.01)
    return tracer


_LINE = re.compile(r"^(?:\[pid\s+)?\d+\]?\s+(\w+)\((.*)$")
_FD = re.compile(r"^\d+<(.*?)>")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def parse_strace(text: str) -> Trace:
    """Events from ``strace -f -yy -s 64`` lines (calls that failed are left out)."""
    trace = Trace()
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None or re.search(r"= -1 ", line):
            continue
        call, args = match.groups()
        strings = _STRING.findall(args)
        descriptor = _FD.match(args)
        if call in ("mkdir", "mkdirat") and strings:
            trace.events.append(Event("mkdir", strings[0]))
        elif call in ("rename", "renameat", "renameat2") and len(strings) >= 2:
            trace.events.append(Event("rename", strings[0], strings[1]))
        elif call in SYNCS and descriptor:
            trace.events.append(Event(call, descriptor.group(1)))
        elif call in ("write", "writev", "sendmsg", "sendto") and descriptor:
            where = descriptor.group(1)
            if where.startswith("TCP:"):
                status = re.search(r"HTTP/1\.1 (\d{3})", args)
                if status:
                    trace.events.append(Event("answer", status.group(1)))
            else:
                trace.events.append(Event("write", where))
    return trace
