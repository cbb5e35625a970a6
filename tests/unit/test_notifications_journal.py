"""The queue on disk: concurrent writers, torn records, segments, killed writers."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

from registry.notifications.events import RECORD_START
from registry.notifications.journal import Journal, JournalReader, JournalWriter, Position


def _record(writer: int, number: int, pad: int = 0) -> bytes:
    return RECORD_START + f"{writer}\t{number}\t{'x' * pad}".encode() + b"\n"


def _write_many(directory: str, writer: int, count: int, segment_bytes: int) -> None:
    journal_writer = JournalWriter(Journal(Path(directory), segment_bytes=segment_bytes))
    journal_writer.open()
    for number in range(count):
        assert journal_writer.append(_record(writer, number, pad=number % 300))
    journal_writer.close()


def _read_all(journal: Journal, position: Position | None = None) -> list[tuple[int, int]]:
    reader = JournalReader(journal, position or Position(1, 0))
    found = []
    while True:
        entries = reader.read(500)
        if not entries:
            break
        for entry in entries:
            writer, number, _ = entry.body.split(b"\t")
            found.append((int(writer), int(number)))
        reader.position = entries[-1].after
    reader.close()
    return found


def test_records_from_concurrent_processes_all_arrive_whole_and_in_each_writers_order(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path, segment_bytes=64 * 1024)
    journal.create()
    context = multiprocessing.get_context("fork")
    writers = [
        context.Process(target=_write_many, args=(str(tmp_path), w, 2000, 64 * 1024))
        for w in range(4)
    ]
    for process in writers:
        process.start()
    for process in writers:
        process.join()
        assert process.exitcode == 0
    assert len(journal.sequences()) > 10, "the writers should have filled several segments"
    found = _read_all(journal)
    assert len(found) == 8000
    for w in range(4):
        assert [n for writer, n in found if writer == w] == list(range(2000))


def test_a_torn_record_is_skipped_and_the_records_after_it_are_read(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    writer = JournalWriter(journal)
    writer.open()
    writer.append(_record(1, 1))
    # A worker killed in the middle of its write leaves the start of a record...
    with open(journal.path(1), "ab") as file:
        file.write(_record(2, 2)[:5])
    # ...and the other workers' records follow it.
    writer.append(_record(1, 3))
    reader = JournalReader(journal, Position(1, 0))
    assert [e.body for e in reader.read(10)] == [b"1\t1\t", b"1\t3\t"]
    assert reader.skipped == 1


def test_a_record_being_written_is_not_read_until_it_is_whole(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    writer = JournalWriter(journal)
    writer.open()
    with open(journal.path(1), "ab") as file:
        file.write(_record(1, 1)[:4])
        file.flush()
        reader = JournalReader(journal, Position(1, 0))
        assert reader.read(10) == []
        file.write(_record(1, 1)[4:])
    assert [e.body for e in reader.read(10)] == [b"1\t1\t"]
    assert reader.skipped == 0


def test_zeros_left_by_a_power_cut_are_skipped(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    writer = JournalWriter(journal)
    writer.open()
    writer.append(_record(1, 1))
    with open(journal.path(1), "ab") as file:
        file.write(b"\0" * 4096)
    writer.append(_record(1, 2))
    assert _read_all(journal) == [(1, 1), (1, 2)]


def test_the_reader_leaves_a_full_segment_only_once_no_writer_holds_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=100)
    idle = JournalWriter(journal)
    idle.open()
    busy = JournalWriter(journal)
    busy.open()
    busy.append(_record(1, 1, pad=120))  # Fills segment 1.
    busy.append(_record(1, 2))  # Goes to segment 2.
    assert journal.sequences() == [1, 2]
    reader = JournalReader(journal, Position(1, 0))
    assert [e.body[:3] for e in reader.read(10)] == [b"1\t1"]
    reader.position = Position(1, 131)
    # The idle writer still holds segment 1 and could append there: wait.
    assert reader.read(10) == []
    assert reader.position.segment == 1
    idle.check()  # Its periodic check lets go of the full segment.
    assert [e.body for e in reader.read(10)] == [b"1\t2\t"]
    assert reader.position == Position(2, 0)


def _hold_segment_then_die(directory: str, ready: multiprocessing.synchronize.Event) -> None:
    writer = JournalWriter(Journal(Path(directory), segment_bytes=100))
    writer.open()
    ready.set()
    signal.pause()


def test_a_killed_writers_segment_is_released(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=100)
    journal.create()
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    holder = context.Process(target=_hold_segment_then_die, args=(str(tmp_path), ready))
    holder.start()
    assert ready.wait(30)
    writer = JournalWriter(journal)
    writer.open()
    writer.append(_record(1, 1, pad=120))
    writer.append(_record(1, 2))
    reader = JournalReader(journal, Position(1, 0))
    reader.position = reader.read(10)[-1].after
    assert reader.read(10) == [], "the holder may still append to segment 1"
    assert holder.pid is not None
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    assert [e.body for e in reader.read(10)] == [b"1\t2\t"]


def test_cursors_start_at_the_end_and_are_never_taken_over(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    writer = JournalWriter(journal)
    writer.open()
    writer.append(_record(1, 1))
    journal.start_cursor("hook one/two")
    end = journal.end()
    assert journal.load_cursor("hook one/two") == end
    writer.append(_record(1, 2))
    journal.start_cursor("hook one/two")  # Another worker starting: keeps the first.
    assert journal.load_cursor("hook one/two") == end
    fd = journal.open_cursor("hook one/two")
    journal.save_cursor(fd, Position(12, 3))
    journal.save_cursor(fd, Position(1, 3))  # Shorter numbers leave nothing behind.
    os.close(fd)
    assert journal.load_cursor("hook one/two") == Position(1, 3)
    assert sorted(p.name for p in journal.cursors.iterdir()) == ["hook%20one%2Ftwo"]


def test_delivered_segments_are_deleted_but_never_the_newest(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=10)
    writer = JournalWriter(journal)
    writer.open()
    for number in range(5):
        writer.append(_record(1, number, pad=10))  # Each fills a segment.
    assert journal.sequences() == [1, 2, 3, 4, 5]
    journal.delete_before(4)
    assert journal.sequences() == [4, 5]
    assert _read_all(journal, Position(4, 0)) == [(1, 3), (1, 4)]


def test_a_writer_never_brings_back_a_segment_the_reader_deleted(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=100)
    writer = JournalWriter(journal)
    writer.open()
    writer.append(_record(1, 1, pad=120))  # Fills segment 1.
    writer.append(_record(1, 2))  # Segment 2.
    journal.delete_before(2)  # Every reader is past segment 1.
    late = JournalWriter(journal)
    late._create = lambda sequence: None  # type: ignore[method-assign]
    late.open()  # Lists [2] and opens it without creating anything.
    assert journal.sequences() == [2]
    late.append(_record(2, 1))
    assert _read_all(journal, Position(2, 0)) == [(1, 2), (2, 1)]


def test_a_writer_leaves_a_segment_once_a_next_one_exists_even_with_room(tmp_path: Path) -> None:
    """Writers of two configurations (a reload changed the segment size): the one with the
    larger size must not go on appending behind the reader."""
    large = JournalWriter(Journal(tmp_path, segment_bytes=1 << 20))
    large.open()
    small = JournalWriter(Journal(tmp_path, segment_bytes=100))
    small.open()
    small.append(_record(1, 1, pad=120))
    small.append(_record(1, 2))  # Segment 2.
    journal = Journal(tmp_path)
    reader = JournalReader(journal, Position(1, 0))
    reader.position = reader.read(10)[-1].after
    assert reader.read(10) == [], "the large writer still holds segment 1"
    large.check()  # Its periodic check: segment 2 exists, so it moves there.
    large.append(_record(2, 1))
    assert [e.body for e in reader.read(10)] == [b"1\t2\t", b"2\t1\t"]


def test_trimming_drops_the_oldest_whole_segments_and_counts_for_each_reader(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path, segment_bytes=1000)
    writer = JournalWriter(journal)
    writer.open()
    for number in range(30):
        writer.append(_record(1, number, pad=200))  # 5 records (about 1 KB) per segment.
    assert journal.sequences() == [1, 2, 3, 4, 5, 6]
    assert journal.size() > 5000
    floor, dropped = journal.trim(2500, {"behind": Position(1, 0), "ahead": Position(6, 0),
                                         "middle": Position(2, 206)})  # fmt: skip
    assert floor == 5
    assert journal.sequences() == [5, 6]
    assert journal.size() <= 2500
    assert dropped == {"behind": 20, "middle": 14}
    # Never the newest segment, however small the limit.
    floor, _ = journal.trim(1, {})
    assert journal.sequences() == [6] and floor == 6


def test_trimming_stops_at_a_segment_a_writer_holds(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=100)
    holder = JournalWriter(journal)
    holder.open()  # Holds segment 1 (empty, never checked again).
    writer = JournalWriter(journal)
    writer.open()
    for number in range(3):
        writer.append(_record(1, number, pad=120))
    assert journal.sequences() == [1, 2, 3]
    floor, _ = journal.trim(1, {})
    assert floor == 1 and journal.sequences() == [1, 2, 3]
    holder.close()
    floor, _ = journal.trim(1, {})
    assert floor == 3 and journal.sequences() == [3]
