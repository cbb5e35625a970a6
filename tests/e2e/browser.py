"""A real browser for the web pages: Debian's Chromium, headless, driven by Selenium.

Chromium starts once per test session (about a second) with a fresh profile;
each test gets it with no cookies and a folder for its screenshots. The flags
keep it off the network: this machine has none beyond localhost.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .needs import require

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

FLAGS = (
    "--headless=new",
    "--no-sandbox",  # As root, Chromium's sandbox will not start.
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--window-size=1280,900",
)


@dataclass
class Browser:
    """The driver, and where this test's screenshots go."""

    driver: object
    shots: Path

    def open(self, url: str) -> None:
        self.driver.get(url)  # type: ignore[attr-defined]

    def shot(self, name: str) -> Path:
        """A screenshot of the page as it is now, saved under the test's folder."""
        path = self.shots / f"{name}.png"
        assert self.driver.save_screenshot(str(path)), path  # type: ignore[attr-defined]
        return path

    def text(self) -> str:
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.TAG_NAME, "body").text)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    require(CHROMIUM, "chromium")
    require(CHROMEDRIVER, "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        import shutil

        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(chromium: object, tmp_path: Path) -> Iterator[Browser]:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    driver = chromium
    # Every site's cookies: registries on other ports of 127.0.0.1 share the host's.
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})  # type: ignore[attr-defined]
    driver.set_window_size(1280, 900)  # type: ignore[attr-defined]
    yield Browser(driver, shots)
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})  # type: ignore[attr-defined]
