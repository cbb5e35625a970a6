"""The Docker engine against the registry: build, push, mount, pull, run, manifest lists, deletes.

Images are built here: a root filesystem from busybox-static through ``docker
import``, then ``docker build --network none`` on top of it (dockerd 20.10's
legacy builder needs no hub for a local ``FROM``), so the image has several
layers, one of them 20 MiB of random bytes. Every step checks digests: what
docker printed, what the registry serves, what the blobs hash to.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from pathlib import Path

import httpx
import pytest

from .clients import access_lines, check_image_blobs, manifest, manifest_digest, query
from .conftest import DockerEngine, busybox_tar

pytestmark = pytest.mark.e2e

BIG = 20 * 1024 * 1024 + 4321


def pushed_digest(output: str, tag: str) -> str:
    found = re.search(
        rf"^{re.escape(tag)}: digest: (sha256:[0-9a-f]{{64}}) size: \d+$", output, re.M
    )
    assert found, f"no digest for {tag} in:\n{output}"
    return found.group(1)


def build_multilayer(engine: DockerEngine, workdir: Path, tag: str) -> tuple[str, str]:
    """A four-layer image (busybox, 20 MiB random, a RUN step, a small file).

    Returns (image tag, sha256 hex of the big file).
    """
    base = f"e2e-base/{uuid.uuid4().hex[:12]}:latest"
    engine.import_image(base, busybox_tar({"etc/base-id": base.encode()}))
    context = workdir / "context"
    context.mkdir()
    big = os.urandom(BIG)
    (context / "big.bin").write_bytes(big)
    (context / "small.txt").write_text("small file\n")
    (context / "Dockerfile").write_text(
        f"FROM {base}\n"
        "COPY big.bin /data/big.bin\n"
        'RUN ["/bin/sh", "-c", "echo built by RUN > /data/run.txt"]\n'
        "COPY small.txt /data/small.txt\n"
    )
    engine.docker("build", "--network", "none", "-q", "-t", tag, str(context))
    engine.docker("image", "rm", base)
    return tag, hashlib.sha256(big).hexdigest()


def test_multilayer_push_mount_pull_run(
    registry_factory, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    registry = registry_factory(workers=2)
    host = f"127.0.0.1:{registry.port}"
    local, big_hash = build_multilayer(docker_engine, tmp_path, "e2e-local/multilayer:built")
    layers = json.loads(
        docker_engine.docker(
            "image", "inspect", "--format", "{{json .RootFS.Layers}}", local
        ).stdout
    )
    assert len(layers) == 4

    # A nested name, and tags with '.', '-' and '_'.
    first = f"{host}/team/app/web:1.0"
    docker_engine.docker("tag", local, first)
    pushed = docker_engine.docker("push", first).stdout
    digest = pushed_digest(pushed, "1.0")
    assert pushed.count(": Pushed") == 4
    assert manifest_digest(registry.url, "team/app/web", "1.0") == digest
    document = check_image_blobs(registry.url, "team/app/web", "1.0")
    assert len(document["layers"]) == 4  # type: ignore[arg-type]
    assert max(layer["size"] for layer in document["layers"]) > BIG // 2  # type: ignore[attr-defined]

    for tag in ("v1.0-rc_1", "release_2.3-final", "latest"):
        docker_engine.docker("tag", local, f"{host}/team/app/web:{tag}")
        again = docker_engine.docker("push", f"{host}/team/app/web:{tag}").stdout
        assert pushed_digest(again, tag) == digest
        assert again.count("Layer already exists") == 4
    tags = httpx.get(f"{registry.url}/v2/team/app/web/tags/list").json()
    assert sorted(tags["tags"]) == ["1.0", "latest", "release_2.3-final", "v1.0-rc_1"]

    # A second repository: every layer is mounted, none uploaded.
    second = f"{host}/team/mirror:1.0"
    docker_engine.docker("tag", local, second)
    mounted = docker_engine.docker("push", second).stdout
    assert pushed_digest(mounted, "1.0") == digest
    assert mounted.count("Mounted from team/app/web") == 4, mounted
    log = registry.log()
    mounts = access_lines(log, "POST", r"^/v2/team/mirror/blobs/uploads/\?")
    assert all(query(path)["from"] == "team/app/web" for path, _ in mounts), mounts
    mounted_digests = {query(path)["mount"] for path, status in mounts if status == 201}
    layer_digests = {layer["digest"] for layer in document["layers"]}  # type: ignore[attr-defined]
    assert mounted_digests == layer_digests, mounts
    # Only the config is uploaded: docker's manifest builder puts it when HEAD says 404.
    uploads = access_lines(log, "PUT", r"^/v2/team/mirror/blobs/uploads/")
    assert [query(path)["digest"] for path, _ in uploads] == [document["config"]["digest"]]  # type: ignore[index]
    assert manifest(registry.url, "team/mirror", "1.0").content == (
        manifest(registry.url, "team/app/web", "1.0").content
    )

    # Remove every local copy, pull it back, run it.
    extra_tags = [f"{host}/team/app/web:{t}" for t in ("v1.0-rc_1", "release_2.3-final", "latest")]
    for reference in (local, first, second, *extra_tags):
        docker_engine.docker("image", "rm", reference)
    assert docker_engine.docker("image", "inspect", first, check=False).returncode != 0
    pulled = docker_engine.docker("pull", first).stdout
    assert f"Digest: {digest}" in pulled
    assert pulled.count("Pull complete") == 4, pulled
    repo_digests = json.loads(
        docker_engine.docker("image", "inspect", "--format", "{{json .RepoDigests}}", first).stdout
    )
    assert f"{host}/team/app/web@{digest}" in repo_digests
    ran = docker_engine.docker(
        "run",
        "--rm",
        "--network",
        "none",
        first,
        "/bin/sh",
        "-c",
        "sha256sum /data/big.bin; cat /data/run.txt /data/small.txt",
    ).stdout
    assert ran.split()[0] == big_hash
    assert "built by RUN" in ran and "small file" in ran
    docker_engine.docker("image", "rm", first)


def test_manifest_list_create_push_inspect(
    registry_factory, docker_engine: DockerEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``docker manifest`` (experimental on 20.10) makes a two-platform list of pushed images."""
    monkeypatch.setenv("DOCKER_CLI_EXPERIMENTAL", "enabled")
    registry = registry_factory()
    host = f"127.0.0.1:{registry.port}"
    digests = {}
    for arch in ("amd64", "arm64"):
        reference = f"{host}/multi/app:{arch}"
        docker_engine.import_image(reference, busybox_tar({"etc/arch": arch.encode()}))
        digests[arch] = pushed_digest(docker_engine.docker("push", reference).stdout, arch)
    assert digests["amd64"] != digests["arm64"]

    listed = f"{host}/multi/app:1.0"
    docker_engine.docker(
        "manifest",
        "create",
        "--insecure",
        listed,
        f"{host}/multi/app:amd64",
        f"{host}/multi/app:arm64",
    )
    docker_engine.docker(
        "manifest",
        "annotate",
        "--arch",
        "arm64",
        "--variant",
        "v8",
        listed,
        f"{host}/multi/app:arm64",
    )
    pushed = docker_engine.docker("manifest", "push", "--purge", "--insecure", listed).stdout
    list_digest = pushed.strip().splitlines()[-1]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", list_digest), pushed

    served = manifest(registry.url, "multi/app", "1.0")
    assert served.headers["Docker-Content-Digest"] == list_digest
    assert served.headers["Content-Type"] == (
        "application/vnd.docker.distribution.manifest.list.v2+json"
    )
    children = {
        entry["platform"]["architecture"]: entry
        for entry in json.loads(served.content)["manifests"]
    }
    assert {arch: entry["digest"] for arch, entry in children.items()} == digests
    assert children["arm64"]["platform"]["variant"] == "v8"

    # Inspected from the registry (the local copy was purged by the push).
    before = len(registry.log())
    inspected = json.loads(docker_engine.docker("manifest", "inspect", "--insecure", listed).stdout)
    assert inspected["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    assert {m["platform"]["architecture"]: m["digest"] for m in inspected["manifests"]} == digests
    reads = access_lines(registry.log()[before:], "GET", r"^/v2/multi/app/manifests/1\.0$")
    assert reads and all(status == 200 for _, status in reads), "read from the registry"

    # Pulling the list picks this machine's platform.
    docker_engine.docker("image", "rm", f"{host}/multi/app:amd64", f"{host}/multi/app:arm64")
    pulled = docker_engine.docker("pull", listed).stdout
    assert f"Digest: {list_digest}" in pulled
    arch_file = docker_engine.docker(
        "run", "--rm", "--network", "none", listed, "/bin/cat", "/etc/arch"
    ).stdout
    assert arch_file == "amd64"
    docker_engine.docker("image", "rm", listed)


def test_deleted_tag_cannot_be_pulled(registry_factory, docker_engine: DockerEngine) -> None:
    registry = registry_factory({"storage": {"delete": {"enabled": True}}})
    host = f"127.0.0.1:{registry.port}"
    reference = f"{host}/gone/app:to-delete"
    docker_engine.import_image(reference, busybox_tar({"etc/gone": b"soon"}))
    digest = pushed_digest(docker_engine.docker("push", reference).stdout, "to-delete")

    deleted = httpx.delete(f"{registry.url}/v2/gone/app/manifests/to-delete")
    assert deleted.status_code == 202, deleted.text
    docker_engine.docker("image", "rm", reference)
    failed = docker_engine.docker("pull", reference, check=False)
    assert failed.returncode != 0
    assert "manifest unknown" in failed.stderr, failed.stderr

    # Deleting the tag keeps the manifest: by digest it still pulls.
    by_digest = f"{host}/gone/app@{digest}"
    assert f"Digest: {digest}" in docker_engine.docker("pull", by_digest).stdout
    docker_engine.docker("image", "rm", by_digest)


@pytest.mark.parametrize("name", ["x/blobs/uploads", "y/manifests/z", "t/tags/list"])
def test_names_that_look_like_api_paths(
    registry_factory, docker_engine: DockerEngine, name: str
) -> None:
    """Repository names whose components are the API's own words still route to the right place."""
    registry = registry_factory()
    reference = f"127.0.0.1:{registry.port}/{name}:1"
    docker_engine.import_image(reference, busybox_tar({"etc/name": name.encode()}))
    pushed = docker_engine.docker("push", reference).stdout
    digest = pushed_digest(pushed, "1")
    assert "Pushed" in pushed, "fresh content: uploaded, not mounted"
    assert manifest_digest(registry.url, name, "1") == digest
    check_image_blobs(registry.url, name, "1")
    assert httpx.get(f"{registry.url}/v2/{name}/tags/list").json() == {"name": name, "tags": ["1"]}
    assert httpx.get(f"{registry.url}/v2/_catalog").json() == {"repositories": [name]}
    docker_engine.docker("image", "rm", reference)
    assert f"Digest: {digest}" in docker_engine.docker("pull", reference).stdout
    ran = docker_engine.docker("run", "--rm", "--network", "none", reference, "cat", "/etc/name")
    assert ran.stdout == name
    docker_engine.docker("image", "rm", reference)
