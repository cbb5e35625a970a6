"""The command-line clients of the client matrix, each kept off the machine's own state.

podman and buildah get storage of their own (``--root``, ``--runroot``, vfs),
libpod state and network configuration in the test's folder; containerd is the
one the private Docker engine runs, in a namespace of the test's own. Nothing
touches the system's engine configuration or container storage.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from tests import pushing

from . import images
from .needs import require

DOCKER_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


def run(
    command: list[str],
    *,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([require("skopeo", "skopeo"), *args], check=check)


@dataclass
class ContainersTool:
    """podman or buildah on private storage: ``root`` for images, ``run`` for runtime state.

    ``run`` must be a short path: podman refuses a runroot longer than 50 characters.
    """

    binary: str
    root: Path
    run: Path

    def storage_args(self) -> list[str]:
        return [
            "--root",
            str(self.root / "storage"),
            "--runroot",
            str(self.run / "storage"),
            "--storage-driver",
            "vfs",
        ]

    def args(self) -> list[str]:
        return self.storage_args()

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([self.binary, *self.args(), *args], check=check)


class Podman(ContainersTool):
    def args(self) -> list[str]:
        return [
            *self.storage_args(),
            "--tmpdir",
            str(self.run / "libpod"),
            "--network-config-dir",
            str(self.root / "networks"),
            "--volumepath",
            str(self.root / "volumes"),
            "--events-backend",
            "none",
            "--cgroup-manager",
            "cgroupfs",
        ]


@dataclass
class ContainersTools:
    """Makes podman and buildah instances; removes their runtime folders afterwards."""

    base: Path
    runs: list[Path] = field(default_factory=list)

    def _run_folder(self) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="reg-run-", dir="/tmp"))
        self.runs.append(folder)
        return folder

    def podman(self, name: str) -> Podman:
        return Podman(require("podman", "podman"), self.base / name, self._run_folder())

    def buildah(self, name: str, *, like: ContainersTool | None = None) -> ContainersTool:
        """buildah on a storage of its own, or on ``like``'s (so podman sees what it commits)."""
        if like is not None:
            return ContainersTool(require("buildah", "buildah"), like.root, like.run)
        return ContainersTool(require("buildah", "buildah"), self.base / name, self._run_folder())

    def cleanup(self) -> None:
        for folder in self.runs:
            shutil.rmtree(folder, ignore_errors=True)


def containers_tools(base: Path) -> Iterator[ContainersTools]:
    """For a fixture: ``yield from containers_tools(tmp_path)``."""
    if os.geteuid() != 0:
        pytest.skip("podman and buildah on a private storage need root here")
    tools = ContainersTools(base)
    yield tools
    tools.cleanup()


# The registry, seen from outside.


def manifest(url: str, name: str, reference: str) -> httpx.Response:
    response = httpx.get(
        f"{url}/v2/{name}/manifests/{reference}", headers={"Accept": DOCKER_ACCEPT}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert (
        response.headers["Docker-Content-Digest"]
        == "sha256:" + hashlib.sha256(response.content).hexdigest()
    ), "the registry serves a manifest whose digest is not its header's"
    return response


def manifest_digest(url: str, name: str, reference: str) -> str:
    response = httpx.head(
        f"{url}/v2/{name}/manifests/{reference}", headers={"Accept": DOCKER_ACCEPT}, timeout=30
    )
    assert response.status_code == 200, f"HEAD {name}:{reference}: {response.status_code}"
    digest: str = response.headers["Docker-Content-Digest"]
    return digest


def blob_digest(url: str, name: str, digest: str) -> str:
    """Download a blob and hash what came: the digest the registry really serves."""
    hasher = hashlib.sha256()
    with httpx.stream("GET", f"{url}/v2/{name}/blobs/{digest}", timeout=60) as response:
        assert response.status_code == 200, f"GET blob {digest} in {name}: {response.status_code}"
        for chunk in response.iter_bytes():
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def check_image_blobs(url: str, name: str, reference: str) -> dict[str, object]:
    """The manifest of ``name:reference``, after checking every blob it names hashes right."""
    document: dict[str, object] = json.loads(manifest(url, name, reference).content)
    descriptors = [document["config"], *document["layers"]]  # type: ignore[list-item]
    for descriptor in descriptors:
        assert isinstance(descriptor, dict)
        assert blob_digest(url, name, descriptor["digest"]) == descriptor["digest"]
    return document


def stored_blobs(root: Path) -> list[str]:
    """Digests of the blobs in a registry's storage folder (registry:2's layout)."""
    base = root / "docker" / "registry" / "v2" / "blobs"
    return sorted(
        f"{algorithm.name}:{data.parent.name}"
        for algorithm in base.iterdir()
        for data in algorithm.glob("*/*/data")
    )


def access_lines(log: str, method: str, path_pattern: str) -> list[tuple[str, int]]:
    """(path with query, status) of the access log lines for ``method`` on a matching path."""
    found = []
    for line in log.splitlines():
        match = re.search(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3}) ', line)
        if match and match.group(1) == method and re.search(path_pattern, match.group(2)):
            found.append((match.group(2), int(match.group(3))))
    return found


def query(path: str) -> dict[str, str]:
    """The query values of a logged request path, decoded."""
    return dict(parse_qsl(urlsplit(path).query))


def push_content(url: str, name: str, tag: str, content: images.Image | images.Index) -> None:
    """Push test-made content over plain HTTP, blobs first, an index's children before it."""
    with httpx.Client(base_url=url, timeout=60) as http:
        children = content.images if isinstance(content, images.Index) else (content,)
        for child in children:
            for digest, data in child.blobs().items():
                if digest != child.digest:
                    pushing.push_blob(http, name, data)
        for child in children:
            if child is not content:
                response = pushing.push_manifest(http, name, child.digest, child.manifest)
                assert response.status_code == 201, response.text
        response = pushing.push_manifest(http, name, tag, content.manifest)
        assert response.status_code == 201, response.text
