"""The queue on disk: an append-only journal every worker writes, read by one sender.

Layout of the queue folder::

    journal/0000000000000001.log   segments, in order; records appended with O_APPEND
    cursors/<endpoint>             where each endpoint's delivery stands: segment, offset
    sender.lock                    flock: the one process that delivers

Writing is one ``write()`` of a whole record to a file opened with
``O_APPEND``, so the kernel puts records from every worker one after another,
in the order the writes finish: an event is in the journal before its request
is answered, so a client that sees a 201 and then acts (on any worker) gets a
later event. A record starts with a mark no record holds and ends with a
newline, so a write cut short by a killed worker is found and skipped, and the
records after it are read. An acknowledged event survives its worker being
killed (the page cache is the kernel's); with ``fsync`` it survives a power
cut too.

Segments: a writer holds a shared ``flock`` on its segment as long as it writes
there and moves to the next one once the segment is full (checked before each
write, and once a second, so an idle worker lets go too). The reader leaves a
segment only once a next one exists and it gets the exclusive lock, that is,
once no writer can still append to it; then the segment is read to its end and,
once every endpoint is past it, deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from .events import RECORD_START

log = logging.getLogger(__name__)

#: A segment is full at this size (a soft limit: writes in flight may pass it).
SEGMENT_BYTES = 64 * 1024 * 1024
#: What the reader takes from a segment at once.
READ_BYTES = 256 * 1024
#: Records parsed at once (and kept for the next reads).
READ_AHEAD = 512
_SUFFIX = ".log"


def _segment_name(sequence: int) -> str:
    return f"{sequence:016d}{_SUFFIX}"


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in the journal: a segment and a byte offset in it."""

    segment: int
    offset: int

    def __str__(self) -> str:
        return f"{self.segment} {self.offset}"


def _cursor_bytes(position: Position) -> bytes:
    return f"{position.segment:020d} {position.offset:020d}\n".encode()


class Journal:
    """The queue folder's paths, and what both writers and the reader need."""

    def __init__(
        self, directory: Path, *, fsync: bool = False, segment_bytes: int = SEGMENT_BYTES
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.segments = directory / "journal"
        self.cursors = directory / "cursors"
        self.lock_path = directory / "sender.lock"
        self.fsync = fsync

    def create(self) -> None:
        self.segments.mkdir(parents=True, exist_ok=True)
        self.cursors.mkdir(parents=True, exist_ok=True)

    def path(self, sequence: int) -> Path:
        return self.segments / _segment_name(sequence)

    def sequences(self) -> list[int]:
        found = []
        for name in os.listdir(self.segments):
            stem = name.removesuffix(_SUFFIX)
            if name.endswith(_SUFFIX) and stem.isdigit():
                found.append(int(stem))
        return sorted(found)

    def end(self) -> Position:
        """Where the next record will go (as far as anyone can tell now)."""
        sequences = self.sequences()
        if not sequences:
            return Position(1, 0)
        last = sequences[-1]
        try:
            return Position(last, self.path(last).stat().st_size)
        except FileNotFoundError:
            return Position(last, 0)

    # Cursors

    def cursor_path(self, name: str) -> Path:
        return self.cursors / quote(name, safe="")

    def load_cursor(self, name: str) -> Position | None:
        try:
            text = self.cursor_path(name).read_bytes().decode("ascii")
            segment, offset = text.split()
            return Position(int(segment), int(offset))
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError):
            log.error("notifications: cursor of %s is unreadable; starting at the end", name)
            return None

    def _write_temporary(self, name: str, position: Position) -> Path:
        temporary = self.cursors / f".{quote(name, safe='')}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, _cursor_bytes(position))
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return temporary

    def open_cursor(self, name: str) -> int:
        """The cursor file, open for :meth:`save_cursor` (made by :meth:`start_cursor`)."""
        return os.open(self.cursor_path(name), os.O_WRONLY)

    def save_cursor(self, fd: int, position: Position) -> None:
        """Overwrite the cursor in place: one write of a fixed size at offset 0, inside one
        disk sector and one page, so a crash leaves the old position or the new one (a
        rename each time would cost the disk a flush on ext4)."""
        os.pwrite(fd, _cursor_bytes(position), 0)
        if self.fsync:
            os.fdatasync(fd)

    def start_cursor(self, name: str, position: Position | None = None) -> None:
        """A new endpoint starts at the end: it gets the events from now on, never
        older ones. Done before this process emits anything, and never over a cursor
        another process made."""
        temporary = self._write_temporary(name, position or self.end())
        try:
            os.link(temporary, self.cursor_path(name))
        except FileExistsError:
            pass
        finally:
            temporary.unlink()

    def size(self) -> int:
        """Bytes the segments take."""
        total = 0
        for sequence in self.sequences():
            with contextlib.suppress(FileNotFoundError):
                total += self.path(sequence).stat().st_size
        return total

    def trim(self, limit: int, positions: Mapping[str, Position]) -> tuple[int, dict[str, int]]:
        """Delete the oldest segments until the journal fits in ``limit`` bytes.

        Never the newest segment, nor one a writer still holds. Returns the first
        segment kept (a reader before it goes on there) and, per reader in
        ``positions`` that had not read them, how many records were dropped.
        """
        sequences = self.sequences()
        sizes = {}
        for sequence in sequences:
            with contextlib.suppress(FileNotFoundError):
                sizes[sequence] = self.path(sequence).stat().st_size
        total = sum(sizes.values())
        floor = sequences[0] if sequences else 1
        dropped = dict.fromkeys(positions, 0)
        held: list[int] = []
        try:
            for sequence in sequences[:-1]:
                if total <= limit:
                    break
                try:
                    fd = os.open(self.path(sequence), os.O_RDONLY)
                except FileNotFoundError:
                    floor = sequence + 1  # Every reader is past it.
                    continue
                held.append(fd)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    break  # A writer may still append there.
                for name, position in positions.items():
                    if position.segment <= sequence:
                        start = position.offset if position.segment == sequence else 0
                        dropped[name] += _count_records(fd, start)
                os.unlink(self.path(sequence))
                total -= sizes.get(sequence, 0)
                floor = sequence + 1
        finally:
            for fd in held:
                os.close(fd)
        return floor, {name: count for name, count in dropped.items() if count}

    def delete_before(self, segment: int) -> None:
        """Delete the segments every endpoint has read past."""
        for sequence in self.sequences():
            if sequence >= segment:
                break
            with contextlib.suppress(FileNotFoundError):
                self.path(sequence).unlink()


def _count_records(fd: int, offset: int) -> int:
    count = 0
    while data := os.pread(fd, READ_BYTES, offset):
        count += data.count(RECORD_START)
        offset += len(data)
    return count


class JournalWriter:
    """One process's appender; cheap enough for every request (two system calls)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._fd = -1
        self._sequence = 0
        self.failures = 0

    def open(self) -> None:
        self.journal.create()
        self._switch()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # Releases the shared lock.
            self._fd = -1

    def _switch(self) -> None:
        """Move to the newest segment with room, making the next one when it is full.

        A segment is opened without ``O_CREAT`` (one the reader has passed and deleted
        since it was listed must not come back, behind every reader), and left when a
        next one exists, even with room: a writer of another configuration may have
        started it at a smaller size, and the reader may be past this one already.
        """
        while True:
            sequences = self.journal.sequences()
            if not sequences:
                self._create(1)
                continue
            sequence = sequences[-1]
            try:
                fd = os.open(self.journal.path(sequence), os.O_WRONLY | os.O_APPEND)
            except FileNotFoundError:
                continue  # Passed and deleted meanwhile: a later one exists.
            fcntl.flock(fd, fcntl.LOCK_SH)
            if self._usable(fd, sequence):
                break
            os.close(fd)
            if not self.journal.path(sequence + 1).exists():
                # Full: make the next one (several writers may race here; O_CREAT
                # makes them agree) and look again.
                self._create(sequence + 1)
        old = self._fd
        self._fd, self._sequence = fd, sequence
        if old >= 0:
            os.close(old)

    def _create(self, sequence: int) -> None:
        os.close(os.open(self.journal.path(sequence), os.O_WRONLY | os.O_CREAT, 0o644))

    def _usable(self, fd: int, sequence: int) -> bool:
        """Room left, still in the folder, and no next segment."""
        status = os.fstat(fd)
        return (
            status.st_size < self.journal.segment_bytes
            and status.st_nlink > 0
            and not self.journal.path(sequence + 1).exists()
        )

    def check(self) -> None:
        """Let go of a segment that is full or has a next one, even without writing (the
        reader waits for that)."""
        if self._fd >= 0 and not self._usable(self._fd, self._sequence):
            self._switch()

    def append(self, data: bytes, *, durable: bool = False) -> bool:
        """Append one record; False (and an error logged) if it could not be written.

        ``durable``: flushed to the disk before returning (when the journal fsyncs).
        """
        try:
            if os.lseek(self._fd, 0, os.SEEK_END) >= self.journal.segment_bytes:
                self._switch()
            # A short write (a full disk) leaves a torn record the reader skips; the
            # whole record is written again after it rather than its rest.
            for _ in range(3):
                if os.write(self._fd, data) == len(data):
                    break
            else:
                raise OSError("short writes")
            if durable and self.journal.fsync:
                os.fdatasync(self._fd)
        except OSError as error:
            self.failures += 1
            log.error("notifications: an event could not be queued (it is lost): %s", error)
            return False
        return True


@dataclass(frozen=True, slots=True)
class Entry:
    """A record read from the journal, and where the reader stands after it."""

    body: bytes
    after: Position


class JournalReader:
    """One endpoint's reader: records in journal order from its position on."""

    def __init__(self, journal: Journal, position: Position) -> None:
        self.journal = journal
        self.position = position
        self._fd = -1
        self._open_sequence = 0
        self._ahead: deque[Entry] = deque()
        """Records parsed beyond what was asked for, handed out next."""
        self.skipped = 0
        """Torn records skipped (writes cut short by a crash)."""

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _open(self, sequence: int) -> bool:
        if self._open_sequence == sequence and self._fd >= 0:
            return True
        self.close()
        try:
            self._fd = os.open(self.journal.path(sequence), os.O_RDONLY)
        except FileNotFoundError:
            return False
        self._open_sequence = sequence
        return True

    def read(self, limit: int) -> list[Entry]:
        """Up to ``limit`` whole records from :attr:`position` on; none when the journal
        has nothing more yet. The caller moves :attr:`position` past what it handled."""
        while self._ahead and self._ahead[0].after <= self.position:
            self._ahead.popleft()  # Handled already.
        if self._ahead:
            return [self._ahead.popleft() for _ in range(min(limit, len(self._ahead)))]
        entries = self._read(max(limit, READ_AHEAD))
        self._ahead.extend(entries[limit:])
        return entries[:limit]

    def _read(self, limit: int) -> list[Entry]:
        while True:
            position = self.position
            if not self._open(position.segment):
                later = [s for s in self.journal.sequences() if s > position.segment]
                if not later:
                    return []
                log.warning(
                    "notifications: segment %d is gone; going on at %d", position.segment, later[0]
                )
                self.position = Position(later[0], 0)
                continue
            entries = self._parse(position, limit, final=False)
            if entries:
                return entries
            if not self.journal.path(position.segment + 1).exists():
                return []
            # A next segment exists: this one is full. Once no writer holds it, read it
            # to the end (a record cut short there is torn: skipped) and go on.
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []
            try:
                entries = self._parse(self.position, limit, final=True)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            if entries:
                return entries
            self.position = Position(position.segment + 1, 0)

    def _parse(self, position: Position, limit: int, *, final: bool) -> list[Entry]:
        """Whole records from ``position`` on, skipping torn ones; ``final``: no writer
        can append any more, so a record cut short at the end is torn too."""
        entries: list[Entry] = []
        segment, offset = position.segment, position.offset
        size = READ_BYTES
        while len(entries) < limit:
            data = os.pread(self._fd, size, offset)
            at_end = len(data) < size
            start = 0
            while len(entries) < limit and start < len(data):
                mark = data.find(RECORD_START, start + 1)
                if data[start : start + 1] != RECORD_START:
                    # The rest of a torn record, or zeros a power cut left.
                    if mark < 0:
                        if final and at_end:
                            self._skip(segment, offset + start, len(data) - start)
                            start = len(data)
                        break
                    self._skip(segment, offset + start, mark - start)
                    start = mark
                    continue
                end = data.find(b"\n", start)
                if mark >= 0 and (end < 0 or mark < end):
                    # Another record follows before this one ended: appends are
                    # serialised, so this write was cut short.
                    self._skip(segment, offset + start, mark - start)
                    start = mark
                    continue
                if end < 0:
                    if final and at_end:
                        self._skip(segment, offset + start, len(data) - start)
                        start = len(data)
                    break  # Still being written, or longer than this read.
                entries.append(Entry(data[start + 1 : end], Position(segment, offset + end + 1)))
                start = end + 1
            offset += start
            if at_end:
                break
            if start == 0:
                size *= 2  # One record longer than the read.
        if not entries and offset != position.offset:
            self.position = Position(segment, offset)
        return entries

    def _skip(self, segment: int, offset: int, length: int) -> None:
        self.skipped += 1
        log.warning(
            "notifications: skipped %d bytes at %d in segment %d (a record cut short by a crash)",
            length,
            offset,
            segment,
        )
