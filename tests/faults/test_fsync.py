"""``storage.filesystem.fsync``: what was answered 201 survives a power cut.

A power cut cannot be made here, so these tests check the calls that make
files survive one (tests/faults/durability.py): in this process through a
recorder around the ``os`` functions the driver calls, and in a real server
through ``strace``, where the 201 itself is on the wire: every file a
request stored must be durable before its answer is written to the socket.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from registry.config import load_config
from registry.reference import Digest
from registry.storage import Store, paths
from registry.storage.driver.factory import create_driver
from registry.storage.driver.filesystem import FilesystemDriver
from tests.conftest import RegistryProcess
from tests.e2e.needs import require
from tests.faults.durability import Trace, attach_strace, parse_strace, recorded
from tests.pushing import (
    OCI_INDEX,
    OCI_MANIFEST,
    digest_of,
    image_index,
    image_manifest,
    push_blob,
    push_image,
    with_query,
)

Factory = Callable[..., RegistryProcess]


async def _body(data: bytes, piece: int = 64 * 1024) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), piece):
        yield data[offset : offset + piece]


async def _push_everything(root: str, store: Store, trace: Trace) -> list[tuple[int, list[str]]]:
    """Every way content is stored; each answer: (its place in the trace, what it stored)."""
    answers: list[tuple[int, list[str]]] = []

    def answered(*stored: str) -> None:
        answers.append((len(trace.events), [root + path for path in stored]))

    name = "durable/app"
    repo = store.repository(name)
    layer = os.urandom(300_000)
    layer_digest = Digest.of(layer)
    await repo.uploads.single(layer_digest, _body(layer), len(layer))
    answered(paths.blob_data(layer_digest), paths.layer_link(name, layer_digest))

    config = b'{"architecture": "amd64", "os": "linux"}'
    config_digest = Digest.of(config)
    session = await repo.uploads.start()
    answered(paths.upload_data(name, session.id), paths.upload_started_at(name, session.id))
    await repo.uploads.append(session.id, _body(config[:10]))
    await repo.uploads.complete(session.id, config_digest, _body(config[10:]))
    answered(paths.blob_data(config_digest), paths.layer_link(name, config_digest))

    other = store.repository("durable/other")
    assert await other.blobs.mount(layer_digest, repo.blobs) is not None
    answered(paths.layer_link("durable/other", layer_digest))

    manifest = image_manifest(config, [layer])
    digest, _ = await repo.manifests.put("v1", manifest, OCI_MANIFEST)
    answered(
        paths.blob_data(digest),
        paths.revision_link(name, digest),
        paths.tag_index_link(name, "v1", digest),
        paths.tag_current_link(name, "v1"),
    )
    index = image_index([(OCI_MANIFEST, manifest)])
    index_digest, _ = await repo.manifests.put("multi", index, OCI_INDEX)
    answered(
        paths.blob_data(index_digest),
        paths.revision_link(name, index_digest),
        paths.tag_current_link(name, "multi"),
    )
    # The tag moves: the new link replaces the old one durably too.
    await repo.manifests.put("v1", index, OCI_INDEX)
    answered(paths.tag_current_link(name, "v1"), paths.tag_index_link(name, "v1", index_digest))
    return answers


async def test_with_fsync_everything_answered_survives_a_power_cut(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    store = Store(FilesystemDriver(root, fsync=True))
    with recorded() as trace:
        answers = await _push_everything(root, store, trace)
    problems = [
        problem
        for position, stored in answers
        for path in stored
        for problem in trace.durable(path, before=position)
    ]
    assert not problems, "\n".join(problems)
    # And nothing more than that: one data sync per file stored, before its rename.
    renames = trace.count("rename")
    assert trace.count("fdatasync") == renames, trace.events


async def test_without_fsync_nothing_is_synced(tmp_path: Path) -> None:
    """The default, as registry:2: no sync at all, and the model sees what could be lost."""
    root = str(tmp_path / "root")
    store = Store(FilesystemDriver(root))
    with recorded() as trace:
        answers = await _push_everything(root, store, trace)
    assert trace.count("fsync", "fdatasync") == 0
    position, stored = answers[0]
    assert trace.durable(stored[0], before=position), "the model must see an unsynced file"


def test_the_config_key_reaches_the_driver(tmp_path: Path) -> None:
    for environ, expected in (({}, False), ({"REGISTRY_STORAGE_FILESYSTEM_FSYNC": "true"}, True)):
        config = load_config(None, environ)
        driver = create_driver(config.storage.driver, config.storage.parameters)
        assert isinstance(driver, FilesystemDriver)
        assert driver.fsync is expected
    with pytest.raises(ValueError, match=r"storage\.filesystem\.fsync"):
        load_config(None, {"REGISTRY_STORAGE_FILESYSTEM_FSYNC": "sometimes"})


CALLS = (
    "mkdir", "mkdirat", "rename", "renameat", "renameat2", "fsync", "fdatasync",
    "write", "writev", "sendmsg", "sendto",
)  # fmt: skip


def _push_over_http(client: httpx.Client) -> None:
    repo = "durable/app"
    push_blob(client, repo, b"a blob pushed with POST then PUT")
    layer = os.urandom(200_000)
    done = client.post(
        f"/v2/{repo}/blobs/uploads/", params={"digest": digest_of(layer)}, content=layer
    )
    assert done.status_code == 201, done.text
    started = client.post(f"/v2/{repo}/blobs/uploads/")
    chunk = client.patch(started.headers["Location"], content=layer[:1000] + b"x")
    assert chunk.status_code == 202, chunk.text
    push_image(client, repo, "v1", layers=[layer])
    other = client.post(
        "/v2/durable/other/blobs/uploads/", params={"mount": digest_of(layer), "from": repo}
    )
    assert other.status_code == 201, other.text
    chunked = client.put(with_query(chunk.headers["Location"], digest=digest_of(b"no")))
    assert chunked.status_code == 400, chunked.text  # A digest mismatch stores nothing.


@pytest.mark.parametrize("fsync", [True, False], ids=["fsync", "default"])
def test_the_server_answers_201_after_the_syncs(
    registry_factory: Factory, tmp_path: Path, fsync: bool
) -> None:
    require("strace", "strace")
    root = tmp_path / "storage"
    trace_file = tmp_path / "strace.txt"
    storage = {
        "filesystem": {"rootdirectory": str(root), "fsync": fsync},
        "maintenance": {"uploadpurging": {"enabled": False}},
    }
    # One process, no fork: its answers come in the order of its work.
    server = registry_factory({"storage": storage}, workers=1)
    tracer = attach_strace(server, CALLS, "-f", "-yy", "-s", "48", "-o", str(trace_file))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            _push_over_http(client)
    finally:
        tracer.terminate()
        tracer.wait(timeout=60)
    trace = parse_strace(trace_file.read_text())
    answers = [i for i, event in enumerate(trace.events) if event.call == "answer"]
    created = [i for i in answers if trace.events[i].path == "201"]
    assert len(created) >= 6, trace.events
    if not fsync:
        assert trace.count("fsync", "fdatasync") == 0
        return
    problems = []
    previous = 0
    stored_by_201 = 0
    for answer in answers:
        # One client, one request at a time: what is renamed into storage between two
        # answers is the later request's work.
        stored = [
            event.target
            for event in trace.events[previous:answer]
            if event.call == "rename" and event.target.startswith(str(root))
        ]
        if trace.events[answer].path == "201":
            stored_by_201 += len(stored)
            problems += [p for path in stored for p in trace.durable(path, before=answer)]
        previous = answer
    assert stored_by_201 >= 14, trace.events
    assert not problems, "\n".join(problems)
