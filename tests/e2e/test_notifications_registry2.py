"""Notifications side by side with Debian's Go registry (distribution 2.8.2).

Both registries POST to a receiver of their own; the same requests go to each
(push of blobs and a manifest, pulls, a cross-repository mount, deletes).
Every event the Go registry sends must have its twin from ours: same action,
same field paths with the same JSON types, same values where they do not vary
from run to run (ids, timestamps, addresses and ports do).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_notifications import Receiver
from tests.conftest import RegistryProcess
from tests.go_registry import GoRegistry
from tests.pushing import DOCKER_MANIFEST, digest_of, image_manifest, push_blob, push_manifest

pytestmark = pytest.mark.e2e

USER_AGENT = "notifications-compat/1.0"
ACCEPT = {"Accept": DOCKER_MANIFEST, "User-Agent": USER_AGENT}


def _endpoint(receiver: Receiver) -> dict[str, Any]:
    return {"name": "compare", "url": receiver.url, "timeout": "2s", "threshold": 3,
            "backoff": "100ms"}  # fmt: skip


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    pair = (Receiver().start(), Receiver().start())
    yield pair
    for receiver in pair:
        receiver.stop()


def _scenario(base_url: str) -> list[int]:
    """The same requests against either registry; their status codes."""
    layer, config = b"layer bytes for the comparison" * 20, b'{"architecture":"amd64","os":"linux"}'
    manifest = image_manifest(config, [layer], media_type=DOCKER_MANIFEST)
    digest = digest_of(manifest)
    statuses = []
    with httpx.Client(base_url=base_url, timeout=30, headers=ACCEPT) as client:
        push_blob(client, "compat/app", layer)  # POST, then PUT with the body.
        push_blob(client, "compat/app", config)  # (registry:2 has no single POST ?digest=.)
        statuses.append(push_manifest(client, "compat/app", "v1", manifest).status_code)
        statuses.append(client.get("/v2/compat/app/manifests/v1").status_code)
        statuses.append(client.head(f"/v2/compat/app/manifests/{digest}").status_code)
        statuses.append(client.get(f"/v2/compat/app/blobs/{digest_of(layer)}").status_code)
        statuses.append(client.head(f"/v2/compat/app/blobs/{digest_of(layer)}").status_code)
        mount = {"mount": digest_of(layer), "from": "compat/app"}
        statuses.append(client.post("/v2/compat/other/blobs/uploads/", params=mount).status_code)
        statuses.append(client.delete(f"/v2/compat/other/blobs/{digest_of(layer)}").status_code)
        statuses.append(push_manifest(client, "compat/app", "v2", manifest).status_code)
        statuses.append(client.delete(f"/v2/compat/app/manifests/{digest}").status_code)
    return statuses


def _shape(value: object, path: str = "") -> dict[str, str]:
    """Every field path of a JSON value and the JSON type found there."""
    if isinstance(value, dict):
        found = {path or ".": "object"}
        for key, item in value.items():
            found.update(_shape(item, f"{path}.{key}"))
        return found
    if isinstance(value, list):
        found = {path: "array"}
        for item in value:
            found.update(_shape(item, f"{path}[]"))
        return found
    kind = {str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value))
    return {path: kind or "null"}


def _stable(event: dict[str, Any]) -> dict[str, Any]:
    """The event without what differs between two registries serving the same requests."""
    kept = json.loads(json.dumps(event))
    for name in ("id", "timestamp", "source"):
        kept.pop(name)
    for name in ("id", "addr", "host"):
        kept["request"].pop(name, None)
    url = kept["target"].pop("url", None)
    if url is not None:  # Same path, another host.
        kept["target"]["url-path"] = "/" + url.split("://", 1)[1].split("/", 1)[1]
    return kept


def _settled(receiver: Receiver) -> list[dict[str, Any]]:
    """The events once no new one came for a while (bounded)."""
    deadline = time.monotonic() + 30
    count = -1
    while time.monotonic() < deadline:
        events = receiver.accepted()
        if events and len(events) == count:
            return events
        count = len(events)
        time.sleep(1.0)
    raise AssertionError(f"events kept coming: {count}")


def test_our_events_match_the_go_registrys(
    registry_factory: Callable[..., RegistryProcess],
    receivers: tuple[Receiver, Receiver],
    tmp_path: Path,
) -> None:
    go_receiver, our_receiver = receivers
    go = GoRegistry(
        tmp_path / "go-data",
        tmp_path,
        {
            "log": {"accesslog": {"disabled": True}},
            "notifications": {"endpoints": [_endpoint(go_receiver)]},
        },
    ).start()
    try:
        go_statuses = _scenario(go.url)
        go_events = _settled(go_receiver)
    finally:
        go.stop()
    ours = registry_factory(
        {
            "storage": {
                "filesystem": {"rootdirectory": str(tmp_path / "our-data")},
                "delete": {"enabled": True},
            },
            "notifications": {"endpoints": [_endpoint(our_receiver)]},
            "log": {"accesslog": {"disabled": True}},
        }
    )
    assert _scenario(ours.url) == go_statuses
    our_events = _settled(our_receiver)

    # What the Go registry sent (seen on 2.8.2): blob pushes, the manifest push, a pull
    # per manifest and blob GET or HEAD, the mount, the blob delete, and a manifest delete
    # by digest followed by one delete per tag that pointed at it.
    assert [(e["action"], e["target"].get("tag")) for e in go_events] == [
        ("push", None), ("push", None), ("push", "v1"), ("pull", "v1"), ("pull", None),
        ("pull", None), ("pull", None), ("mount", None), ("delete", None), ("push", "v2"),
        ("delete", None), ("delete", "v1"), ("delete", "v2"),
    ]  # fmt: skip
    assert [e["action"] for e in our_events] == [e["action"] for e in go_events]
    for go_event, our_event in zip(go_events, our_events, strict=True):
        assert _shape(our_event) == _shape(go_event), (go_event, our_event)
        assert _stable(our_event) == _stable(go_event)
    # The envelope: one event per request, the same Content-Type, the same indentation.
    for received in (*go_receiver.requests, *our_receiver.requests):
        assert len(received.events) == 1
        assert received.body == json.dumps(json.loads(received.body), indent=3).encode()
    go_types = {v for r in go_receiver.requests for k, v in r.headers if k == "Content-Type"}
    our_types = {v for r in our_receiver.requests for k, v in r.headers if k == "Content-Type"}
    assert our_types == go_types == {"application/vnd.docker.distribution.events.v1+json"}
