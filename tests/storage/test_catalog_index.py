"""The catalog's index (``storage/catalog_index.py``) against the walk it replaces.

Each test builds stores the way workers do (one per process, one storage
folder) and holds the index to one rule: a page is what registry:2's walk of
the same tree would give, whoever wrote the tree and whenever.
"""

from __future__ import annotations

import random
import shutil
import sys
import threading
from pathlib import Path

import pytest

from registry.storage import Store
from registry.storage.catalog import repositories
from registry.storage.catalog_index import (
    JOURNAL,
    IndexedCatalog,
    WalkedCatalog,
    _append,
    _rewrite,
    catalog_for,
)
from registry.storage.driver.filesystem import FilesystemDriver
from registry.storage.driver.inmemory import InMemoryDriver

from .content import push_image

V2 = "docker/registry/v2"


def worker(root: Path) -> Store:
    """A store as a worker process has it: its own index in memory."""
    return Store(FilesystemDriver(str(root)))


def everything(name: str) -> bool:
    return True


async def listed(store: Store) -> list[str]:
    names, more = await store.catalog.page(None, sys.maxsize, everything)
    assert not more
    return names


async def walked(store: Store) -> list[str]:
    return await repositories(store.driver)


def make_by_hand(root: Path, name: str) -> None:
    """A repository as another program leaves it: just the folders registry:2 looks for."""
    (root / V2 / "repositories" / name / "_manifests" / "revisions").mkdir(parents=True)


def test_the_index_is_used_where_there_is_a_folder(tmp_path: Path) -> None:
    assert isinstance(catalog_for(FilesystemDriver(str(tmp_path))), IndexedCatalog)
    assert isinstance(catalog_for(InMemoryDriver()), WalkedCatalog)


async def test_a_push_through_one_worker_is_listed_by_another_at_once(tmp_path: Path) -> None:
    first, second = worker(tmp_path), worker(tmp_path)
    assert await listed(second) == []
    for n in range(20):
        await push_image(first.repository(f"team/app{n:02}"), "v1")
        assert await listed(second) == [f"team/app{i:02}" for i in range(n + 1)]
    assert await listed(second) == await walked(second)


async def test_pages_follow_last_and_keep(tmp_path: Path) -> None:
    store = worker(tmp_path)
    names = sorted(f"r{n:03}" for n in range(30))
    for name in names:
        await push_image(store.repository(name), "v1")
    fresh = worker(tmp_path)
    page, more = await fresh.catalog.page(None, 10, everything)
    assert page == names[:10] and more
    page, more = await fresh.catalog.page("r009", 10, everything)
    assert page == names[10:20] and more
    page, more = await fresh.catalog.page("r019", 10, everything)
    assert page == names[20:] and not more
    page, more = await fresh.catalog.page("r0095", 5, lambda name: name.endswith("5"))
    assert page == ["r015", "r025"] and not more
    assert await fresh.catalog.page(None, 0, everything) == ([], True)


async def test_a_tree_written_before_the_start_is_indexed(tmp_path: Path) -> None:
    """A tree registry:2 (or a restore) wrote: the first page walks it once."""
    for name in ("alpha", "team/beta", "team/sub/gamma"):
        make_by_hand(tmp_path, name)
    (tmp_path / V2 / "repositories" / "layers-only" / "_layers").mkdir(parents=True)
    store = worker(tmp_path)
    assert await listed(store) == ["alpha", "team/beta", "team/sub/gamma"]
    journal = (tmp_path / JOURNAL.lstrip("/")).read_text().split()
    assert sorted(journal) == ["alpha", "team/beta", "team/sub/gamma"]


async def test_repositories_another_program_writes_while_serving(tmp_path: Path) -> None:
    store = worker(tmp_path)
    await push_image(store.repository("team/one"), "v1")
    assert await listed(store) == ["team/one"]
    make_by_hand(tmp_path, "newcomer")  # A new top folder: seen at the next page.
    assert await listed(store) == ["newcomer", "team/one"]
    make_by_hand(tmp_path, "team/two")  # Inside a known folder: the periodic walk finds it.
    await store.catalog.reindex()
    assert await listed(store) == ["newcomer", "team/one", "team/two"]
    assert await listed(worker(tmp_path)) == ["newcomer", "team/one", "team/two"]


async def test_a_repository_removed_by_hand_at_the_top_is_gone_at_once(tmp_path: Path) -> None:
    store, other = worker(tmp_path), worker(tmp_path)
    for name in ("a", "b", "c"):
        await push_image(store.repository(name), "v1")
    assert await listed(other) == ["a", "b", "c"]
    shutil.rmtree(tmp_path / V2 / "repositories" / "b")
    assert await listed(store) == ["a", "c"]
    assert await listed(other) == ["a", "c"]


async def test_a_deeper_removal_is_seen_by_every_worker_after_one_walk(tmp_path: Path) -> None:
    store, other = worker(tmp_path), worker(tmp_path)
    for name in ("team/a", "team/b", "team/c"):
        await push_image(store.repository(name), "v1")
    assert await listed(other) == ["team/a", "team/b", "team/c"]
    shutil.rmtree(tmp_path / V2 / "repositories" / "team" / "b")
    await store.catalog.reindex()  # The maintenance worker's periodic walk.
    assert await listed(store) == ["team/a", "team/c"]
    assert await listed(other) == ["team/a", "team/c"]  # It read the journal written anew.
    await push_image(store.repository("team/b"), "v2")  # And back again.
    assert await listed(other) == ["team/a", "team/b", "team/c"]


async def test_deleting_the_last_manifest_keeps_it_listed_as_registry2_does(
    tmp_path: Path,
) -> None:
    store = worker(tmp_path)
    digest, _ = await push_image(store.repository("gone/image"), "v1")
    await store.repository("gone/image").manifests.delete(digest)
    assert await listed(store) == await walked(store) == ["gone/image"]


@pytest.mark.parametrize("seed", range(5))
async def test_the_index_matches_the_walk_through_random_histories(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    workers = [worker(tmp_path) for _ in range(3)]
    pushed: list[str] = []
    for step in range(120):
        store = rng.choice(workers)
        action = rng.random()
        if action < 0.5 or not pushed:
            name = f"ns{rng.randrange(4)}/repo{rng.randrange(30)}"
            await push_image(store.repository(name), f"t{step}")
            pushed.append(name)
        elif action < 0.65:
            make_by_hand(tmp_path, f"hand{step}")
        elif action < 0.8:
            victim = rng.choice(pushed)
            shutil.rmtree(tmp_path / V2 / "repositories" / victim, ignore_errors=True)
            await rng.choice(workers).catalog.reindex()  # Deeper edits: seen by a walk.
        else:
            await store.catalog.reindex()
        reader = rng.choice(workers)
        assert await listed(reader) == await walked(reader), step
    for store in workers:
        await store.catalog.reindex()
        assert await listed(store) == await walked(store)


async def test_garbage_in_the_journal_is_ignored(tmp_path: Path) -> None:
    store = worker(tmp_path)
    await push_image(store.repository("real"), "v1")
    journal = tmp_path / JOURNAL.lstrip("/")
    with journal.open("ab") as file:
        file.write(b"NOT A NAME\n../../etc\n\xff\xfe\nhalf-written")
    assert await listed(worker(tmp_path)) == ["real"]


async def test_an_unwritable_journal_still_lists(tmp_path: Path) -> None:
    """Storage that cannot take the journal (here a folder where the file would be):
    each process lists from its own walk and pushes still succeed."""
    (tmp_path / JOURNAL.lstrip("/")).mkdir(parents=True)
    make_by_hand(tmp_path, "before")
    store = worker(tmp_path)
    assert await listed(store) == ["before"]
    await push_image(store.repository("after"), "v1")
    assert await listed(store) == ["after", "before"]


def test_appends_racing_a_rewrite_are_never_lost(tmp_path: Path) -> None:
    """Writers append while walks write the journal anew: every name appended stays."""
    journal = str(tmp_path / "journal")
    top = tmp_path / "repositories"
    names = [f"name{n:04}" for n in range(400)]
    for name in names:
        (top / name / "_manifests").mkdir(parents=True)
    stop = threading.Event()

    def rewrite() -> None:
        while not stop.is_set():
            _rewrite(journal, str(top), {"dead"})

    rewriter = threading.Thread(target=rewrite)
    rewriter.start()
    writers = [
        threading.Thread(target=lambda part=part: [_append(journal, [n]) for n in part])
        for part in (names[0::4], names[1::4], names[2::4], names[3::4])
    ]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    rewriter.join()
    assert sorted(set(Path(journal).read_text().split())) == names


@pytest.mark.parametrize("count", [1, 50])
async def test_many_new_names_at_once_stay_sorted(tmp_path: Path, count: int) -> None:
    store = worker(tmp_path)
    assert await listed(store) == []
    journal = str(tmp_path / JOURNAL.lstrip("/"))
    names = [f"z{n:03}" for n in range(count, 0, -1)]
    for name in names:
        make_by_hand(tmp_path, f"ns/{name}")  # Inside a folder the walk already saw.
    _append(journal, [f"ns/{name}" for name in names])
    assert await listed(store) == sorted(f"ns/{name}" for name in names)
