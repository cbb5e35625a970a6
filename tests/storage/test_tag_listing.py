"""The filesystem driver keeps a large folder's ``list_holding`` answer (a repository's
tags) while the folder's time says nothing was added or removed, and stays right when
anything is, by any process."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from registry.storage.driver import filesystem
from registry.storage.driver.filesystem import KEPT_LISTING, SETTLED_SECONDS, FilesystemDriver

TAGS = "/docker/registry/v2/repositories/big/_manifests/tags"
LINK = b"sha256:" + b"0" * 64
COUNT = KEPT_LISTING + 44


def _names(count: int) -> list[str]:
    return [f"t{index:04d}" for index in range(count)]


async def _tag(driver: FilesystemDriver, name: str) -> None:
    await driver.put_content(f"{TAGS}/{name}/current/link", LINK)


async def _tagged(root: Path, count: int = COUNT) -> FilesystemDriver:
    """A driver on ``root`` whose repository has ``count`` tags."""
    driver = FilesystemDriver(str(root))
    for name in _names(count):
        await _tag(driver, name)
    return driver


def _settle(root: Path) -> None:
    """As if the last tag was made a minute ago."""
    folder = root / TAGS.lstrip("/")
    past = time.time() - 6 * SETTLED_SECONDS
    os.utime(folder, (past, past))


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many children each check of the driver looked at."""
    seen: list[int] = []
    real = filesystem._holding_of

    def counted(folder: str, names: list[str], inner: str) -> list[str]:
        seen.append(len(names))
        return real(folder, names, inner)

    monkeypatch.setattr(filesystem, "_holding_of", counted)
    return seen


async def _listed(driver: FilesystemDriver) -> list[str]:
    return await driver.list_holding(TAGS, "current/link")


async def test_a_settled_folder_is_checked_once_then_kept(
    tmp_path: Path, checks: list[int]
) -> None:
    driver = await _tagged(tmp_path)
    _settle(tmp_path)
    assert await _listed(driver) == _names(COUNT)
    assert await _listed(driver) == _names(COUNT)
    assert checks == [COUNT]  # The second listing checked nobody.


async def test_a_folder_changed_just_now_is_checked_each_time(
    tmp_path: Path, checks: list[int]
) -> None:
    driver = await _tagged(tmp_path)
    assert await _listed(driver) == _names(COUNT)
    assert await _listed(driver) == _names(COUNT)
    assert checks == [COUNT, COUNT]


async def test_tags_made_and_deleted_after_a_kept_listing_show(tmp_path: Path) -> None:
    driver = await _tagged(tmp_path)
    _settle(tmp_path)
    assert await _listed(driver) == _names(COUNT)
    await _tag(driver, "zz-new")  # Another process, or this one: the folder's time moves.
    assert await _listed(driver) == [*_names(COUNT), "zz-new"]
    _settle(tmp_path)
    assert await _listed(driver) == [*_names(COUNT), "zz-new"]
    await driver.delete(f"{TAGS}/t0001")
    assert await _listed(driver) == [name for name in [*_names(COUNT), "zz-new"] if name != "t0001"]
    # Pointing a tag elsewhere writes below its folder: the list is the same anyway.
    await driver.put_content(f"{TAGS}/t0002/current/link", b"sha256:" + b"1" * 64)
    assert "t0002" in await _listed(driver)


async def test_a_folder_made_before_its_link_is_listed_once_the_link_is_there(
    tmp_path: Path, checks: list[int]
) -> None:
    driver = await _tagged(tmp_path)
    os.makedirs(tmp_path / TAGS.lstrip("/") / "t-crashed" / "current")
    _settle(tmp_path)
    assert await _listed(driver) == _names(COUNT)  # No link: not a tag.
    await _tag(driver, "t-crashed")  # Its folder's time does not change: it is checked.
    assert await _listed(driver) == sorted([*_names(COUNT), "t-crashed"])
    assert await _listed(driver) == sorted([*_names(COUNT), "t-crashed"])
    assert checks == [COUNT + 1, 1]  # The whole folder once, then the one without a link.


async def test_a_repository_deleted_and_made_again_is_listed_afresh(tmp_path: Path) -> None:
    driver = await _tagged(tmp_path)
    _settle(tmp_path)
    assert await _listed(driver) == _names(COUNT)
    await driver.delete("/docker/registry/v2/repositories/big")
    for name in _names(KEPT_LISTING):
        await _tag(driver, name)
    _settle(tmp_path)  # Even with a time that could match: the folder is another one.
    assert await _listed(driver) == _names(KEPT_LISTING)
