"""skopeo against the registry: OCI layouts in and out, indexes, inspect, tags, delete, sync.

The images are OCI layouts the test writes itself (``images.py``), so every
digest skopeo or the registry reports is known in advance.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from . import images
from .clients import check_image_blobs, manifest, manifest_digest, run, skopeo
from .needs import require

pytestmark = pytest.mark.e2e

PLAIN = "--tls-verify=false"


def one_image(tag: str, architecture: str = "amd64") -> images.Image:
    return images.image(
        [
            {"etc/skopeo/base.txt": b"base layer\n"},
            {f"etc/skopeo/{tag}.txt": f"{tag} on {architecture}\n".encode()},
        ],
        architecture=architecture,
    )


def test_oci_layout_to_registry_and_back(registry_factory, tmp_path: Path) -> None:
    registry = registry_factory(workers=2)
    host = f"127.0.0.1:{registry.port}"
    content = one_image("v1")
    layout = images.Layout(tmp_path / "layout", {"v1": content}).write()

    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout.path}:v1", f"docker://{host}/sk/app:v1")
    assert manifest(registry.url, "sk/app", "v1").content == content.manifest
    check_image_blobs(registry.url, "sk/app", "v1")

    back = tmp_path / "back"
    skopeo("copy", "--src-tls-verify=false", f"docker://{host}/sk/app:v1", f"dir:{back}")
    assert (back / "manifest.json").read_bytes() == content.manifest
    assert images.read_dir(back) == {
        digest: data for digest, data in content.blobs().items() if digest != content.digest
    }

    # And into another OCI layout, byte for byte the same index entry.
    again = tmp_path / "again"
    skopeo("copy", "--src-tls-verify=false", f"docker://{host}/sk/app:v1", f"oci:{again}:copy")
    top = json.loads((again / "index.json").read_text())
    assert [m["digest"] for m in top["manifests"]] == [content.digest]
    # umoci unpacks it: the files are the ones the layers were made of.
    bundle = tmp_path / "bundle"
    run([require("umoci", "umoci"), "unpack", "--image", f"{again}:copy", str(bundle)])
    assert (bundle / "rootfs" / "etc" / "skopeo" / "base.txt").read_bytes() == b"base layer\n"
    assert (bundle / "rootfs" / "etc" / "skopeo" / "v1.txt").read_bytes() == b"v1 on amd64\n"


def test_copy_all_of_an_index_keeps_its_digest(registry_factory, tmp_path: Path) -> None:
    registry = registry_factory()
    host = f"127.0.0.1:{registry.port}"
    amd64, arm64 = one_image("multi", "amd64"), one_image("multi", "arm64")
    both = images.index([amd64, arm64])
    layout = images.Layout(tmp_path / "layout", {"multi": both}).write()

    skopeo(
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        f"oci:{layout.path}:multi",
        f"docker://{host}/sk/multi:2.0",
    )
    served = manifest(registry.url, "sk/multi", "2.0")
    assert served.headers["Docker-Content-Digest"] == both.digest
    assert served.headers["Content-Type"] == images.OCI_INDEX
    assert served.content == both.manifest
    for child in (amd64, arm64):
        assert manifest(registry.url, "sk/multi", child.digest).content == child.manifest
        check_image_blobs(registry.url, "sk/multi", child.digest)

    raw = skopeo("inspect", PLAIN, "--raw", f"docker://{host}/sk/multi:2.0").stdout
    assert raw.encode() == both.manifest
    inspected = json.loads(skopeo("inspect", PLAIN, f"docker://{host}/sk/multi:2.0").stdout)
    assert inspected["Digest"] == both.digest
    assert inspected["Architecture"] == "amd64"
    assert inspected["Layers"] == [layer.digest for layer in amd64.layers]
    arm = json.loads(
        skopeo("--override-arch", "arm64", "inspect", PLAIN, f"docker://{host}/sk/multi:2.0").stdout
    )
    assert arm["Layers"] == [layer.digest for layer in arm64.layers]
    config = json.loads(
        skopeo("inspect", PLAIN, "--config", "--raw", f"docker://{host}/sk/multi:2.0").stdout
    )
    assert config == json.loads(amd64.config)

    # Back out, the whole index: the same digests again.
    out = tmp_path / "out"
    skopeo(
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        f"docker://{host}/sk/multi:2.0",
        f"oci:{out}:multi",
    )
    top = json.loads((out / "index.json").read_text())
    assert [m["digest"] for m in top["manifests"]] == [both.digest]
    assert (out / "blobs" / "sha256" / both.digest.removeprefix("sha256:")).read_bytes() == (
        both.manifest
    )


def test_list_tags_and_delete(registry_factory, tmp_path: Path) -> None:
    registry = registry_factory({"storage": {"delete": {"enabled": True}}})
    host = f"127.0.0.1:{registry.port}"
    kept, dropped = one_image("kept"), one_image("dropped")
    layout = images.Layout(tmp_path / "layout", {"kept": kept, "dropped": dropped}).write()
    for tag in ("kept", "dropped"):
        skopeo(
            "copy",
            "--dest-tls-verify=false",
            f"oci:{layout.path}:{tag}",
            f"docker://{host}/sk/del:{tag}",
        )
    listed = json.loads(skopeo("list-tags", PLAIN, f"docker://{host}/sk/del").stdout)
    assert listed["Repository"] == f"{host}/sk/del"
    assert sorted(listed["Tags"]) == ["dropped", "kept"]

    skopeo("delete", PLAIN, f"docker://{host}/sk/del:dropped")
    listed = json.loads(skopeo("list-tags", PLAIN, f"docker://{host}/sk/del").stdout)
    assert listed["Tags"] == ["kept"]
    gone = httpx.get(f"{registry.url}/v2/sk/del/manifests/{dropped.digest}")
    assert gone.status_code == 404
    assert gone.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    failed = skopeo("inspect", PLAIN, f"docker://{host}/sk/del:dropped", check=False)
    assert failed.returncode != 0
    assert "manifest unknown" in failed.stderr
    assert manifest_digest(registry.url, "sk/del", "kept") == kept.digest


def test_sync_a_repository_between_registries(registry_factory, tmp_path: Path) -> None:
    source, target = registry_factory(), registry_factory(workers=2)
    source_host, target_host = f"127.0.0.1:{source.port}", f"127.0.0.1:{target.port}"
    single = one_image("single")
    amd64, arm64 = one_image("synced", "amd64"), one_image("synced", "arm64")
    both = images.index([amd64, arm64])
    layout = images.Layout(tmp_path / "layout", {"single": single, "both": both}).write()
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"oci:{layout.path}:single",
        f"docker://{source_host}/team/synced:single",
    )
    skopeo(
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        f"oci:{layout.path}:both",
        f"docker://{source_host}/team/synced:both",
    )

    skopeo(
        "sync",
        "--all",
        "--preserve-digests",
        "--src",
        "docker",
        "--dest",
        "docker",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        f"{source_host}/team/synced",
        f"{target_host}/mirror",
    )
    catalog = httpx.get(f"{target.url}/v2/_catalog").json()
    assert catalog == {"repositories": ["mirror/synced"]}
    tags = httpx.get(f"{target.url}/v2/mirror/synced/tags/list").json()
    assert sorted(tags["tags"]) == ["both", "single"]
    assert manifest(target.url, "mirror/synced", "single").content == single.manifest
    assert manifest(target.url, "mirror/synced", "both").content == both.manifest
    for child in (amd64, arm64):
        check_image_blobs(target.url, "mirror/synced", child.digest)
