"""Debian's ``docker-registry`` (distribution 2.8.2, the Go reference) run beside ours.

One class for every test that compares the two: same storage layout, same
requests, same metrics, same events.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.e2e.needs import require
from tests.services.ports import free_port


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


class GoRegistry:
    """``docker-registry serve`` on a storage folder; ``extra`` is merged into its config
    (a debug listener, notification endpoints)."""

    def __init__(
        self, root: Path, workdir: Path, extra: dict[str, Any] | None = None
    ) -> None:
        self.binary = require("docker-registry", "docker-registry")
        self.root = root
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "go-config.yml"
        self.log = workdir / "go-registry.log"
        settings = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {
                "filesystem": {"rootdirectory": str(root)},
                "delete": {"enabled": True},
            },
            "http": {"addr": f"127.0.0.1:{self.port}"},
        }
        self.config.write_text(yaml.safe_dump(_merged(settings, extra or {})))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GoRegistry:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "serve", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/v2/").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def garbage_collect(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, "garbage-collect", "--dry-run", str(self.config)],
            capture_output=True,
            text=True,
            timeout=120,
        )
