"""Notifications end to end: a real registry POSTing to a real HTTP receiver.

The expected events are registry:2's, as Debian's docker-registry 2.8.2 sent
them for the same requests (captured side by side; see the report of this
feature): same fields, same order, same omissions, same indentation.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.access import USERS, htpasswd_config
from tests.conftest import RegistryProcess
from tests.pushing import (
    ACCEPT_MANIFESTS,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    digest_of,
    image_index,
    image_manifest,
    push_blob,
    push_image,
    push_manifest,
)

EVENTS_TYPE = "application/vnd.docker.distribution.events.v1+json"
BLOB_TYPE = "application/octet-stream"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
TIMESTAMP_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")
USER_AGENT = "notifications-test/1.0"


@dataclass
class Received:
    headers: list[tuple[str, str]]
    body: bytes
    status: int

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = json.loads(self.body)["events"]
        return events


@dataclass
class Receiver:
    """An HTTP endpoint on a free loopback port that records every POST it gets."""

    port: int = 0
    status: int = 200
    delay: float = 0.0
    """Seconds before answering (the request is recorded as it arrives)."""
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver.status
                with receiver.lock:
                    receiver.requests.append(Received(list(self.headers.items()), body, status))
                time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the port: the registry's requests are refused."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def accepted(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e for r in self.requests if 200 <= r.status < 400 for e in r.events]

    def wait_for(self, count: int, seconds: float = 30) -> list[dict[str, Any]]:
        """The accepted events once there are ``count`` (bounded wait), then a moment more
        so that extra ones would be seen too."""
        deadline = time.monotonic() + seconds
        while len(self.accepted()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        return self.accepted()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


def notifying(
    tmp_path: Path,
    receiver: Receiver,
    *,
    endpoints: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    endpoint = {"name": "hook", "url": receiver.url, "timeout": "2s", "threshold": 3,
                "backoff": "200ms"}  # fmt: skip
    return {
        "storage": {
            "filesystem": {"rootdirectory": str(tmp_path / "data")},
            "delete": {"enabled": True},
        },
        "notifications": {"endpoints": endpoints or [endpoint], **extra},
        "log": {"accesslog": {"disabled": True}},
    }


def client_of(registry: RegistryProcess, **options: Any) -> httpx.Client:
    headers = {**ACCEPT_MANIFESTS, "User-Agent": USER_AGENT}
    return httpx.Client(base_url=registry.url, timeout=30, headers=headers, **options)


def comparable(event: dict[str, Any], registry: RegistryProcess) -> dict[str, Any]:
    """The event without what differs from run to run, after checking its form."""
    assert list(event) == ["id", "timestamp", "action", "target", "request", "actor", "source"]
    assert UUID_RE.fullmatch(event["id"]), event
    assert TIMESTAMP_RE.fullmatch(event["timestamp"]), event
    request = dict(event["request"])
    assert list(request) == ["id", "addr", "host", "method", "useragent"]
    assert UUID_RE.fullmatch(request.pop("id"))
    assert re.fullmatch(r"127\.0\.0\.1:\d+", request.pop("addr"))
    assert request.pop("host") == f"127.0.0.1:{registry.port}"
    assert request.pop("useragent") == USER_AGENT
    source = event["source"]
    assert list(source) == ["addr", "instanceID"]
    assert source["addr"] == f"{socket.gethostname()}:{registry.port}"
    assert UUID_RE.fullmatch(source["instanceID"])
    return {"action": event["action"], "target": event["target"], "method": request["method"],
            "actor": event["actor"]}  # fmt: skip


def blob_target(registry: RegistryProcess, repo: str, data: bytes) -> dict[str, Any]:
    digest = digest_of(data)
    return {"mediaType": BLOB_TYPE, "size": len(data), "digest": digest, "length": len(data),
            "repository": repo, "url": f"{registry.url}/v2/{repo}/blobs/{digest}"}  # fmt: skip


def manifest_target(
    registry: RegistryProcess, repo: str, data: bytes, media_type: str, tag: str | None = None
) -> dict[str, Any]:
    digest = digest_of(data)
    url = f"{registry.url}/v2/{repo}/manifests/{digest}"
    target = {"mediaType": media_type, "size": len(data), "digest": digest, "length": len(data),
              "repository": repo, "url": url}  # fmt: skip
    if tag:
        target["tag"] = tag
    return target


def test_push_pull_mount_and_deletes_send_registry2s_events(
    registry_factory: Callable[..., RegistryProcess], receiver: Receiver, tmp_path: Path
) -> None:
    config = notifying(tmp_path, receiver)
    config["notifications"]["endpoints"][0]["headers"] = {
        "Authorization": ["Bearer secret"],
        "X-Test": ["a", "b"],
    }
    registry = registry_factory(config)
    layer, image_config = b"a layer of bytes" * 10, b'{"architecture":"amd64","os":"linux"}'
    manifest = image_manifest(image_config, [layer], media_type=DOCKER_MANIFEST)
    digest = digest_of(manifest)
    with client_of(registry) as client:
        push_blob(client, "team/app", layer)  # POST, then PUT with the body
        response = client.post(
            "/v2/team/app/blobs/uploads/", params={"digest": digest_of(image_config)},
            content=image_config,
        )  # fmt: skip
        assert response.status_code == 201
        assert push_manifest(client, "team/app", "v1", manifest).status_code == 201
        assert client.get("/v2/team/app/manifests/v1").status_code == 200
        assert client.head(f"/v2/team/app/manifests/{digest}").status_code == 200
        unchanged = client.get("/v2/team/app/manifests/v1", headers={"If-None-Match": digest})
        assert unchanged.status_code == 304  # No event, as registry:2.
        assert client.get("/v2/team/app/manifests/missing").status_code == 404  # None either.
        assert client.get(f"/v2/team/app/blobs/{digest_of(layer)}").status_code == 200
        assert client.head(f"/v2/team/app/blobs/{digest_of(layer)}").status_code == 200
        mount = {"mount": digest_of(layer), "from": "team/app"}
        assert client.post("/v2/other/blobs/uploads/", params=mount).status_code == 201
        assert client.delete(f"/v2/other/blobs/{digest_of(layer)}").status_code == 202
        assert push_manifest(client, "team/app", "v2", manifest).status_code == 201
        assert client.delete("/v2/team/app/manifests/v2").status_code == 202
        assert push_manifest(client, "team/app", "v3", manifest).status_code == 201
        assert client.delete(f"/v2/team/app/manifests/{digest}").status_code == 202
    events = receiver.wait_for(15)
    seen = [comparable(event, registry) for event in events]
    layer_target = blob_target(registry, "team/app", layer)
    mtype = DOCKER_MANIFEST

    def pushed(tag: str) -> dict[str, Any]:
        target = manifest_target(registry, "team/app", manifest, mtype, tag)
        return {"action": "push", "target": target, "method": "PUT", "actor": {}}

    deleted_manifest = {"digest": digest, "repository": "team/app"}
    assert seen == [
        {"action": "push", "target": layer_target, "method": "PUT", "actor": {}},
        {"action": "push", "target": blob_target(registry, "team/app", image_config),
         "method": "POST", "actor": {}},
        pushed("v1"),
        {"action": "pull", "target": manifest_target(registry, "team/app", manifest, mtype, "v1"),
         "method": "GET", "actor": {}},
        {"action": "pull", "target": manifest_target(registry, "team/app", manifest, mtype),
         "method": "HEAD", "actor": {}},
        {"action": "pull", "target": layer_target, "method": "GET", "actor": {}},
        {"action": "pull", "target": layer_target, "method": "HEAD", "actor": {}},
        {"action": "mount", "target": {**blob_target(registry, "other", layer),
                                       "fromRepository": "team/app"},
         "method": "POST", "actor": {}},
        {"action": "delete", "target": {"digest": digest_of(layer), "repository": "other"},
         "method": "DELETE", "actor": {}},
        pushed("v2"),
        {"action": "delete", "target": {"repository": "team/app", "tag": "v2"},
         "method": "DELETE", "actor": {}},
        pushed("v3"),
        {"action": "delete", "target": deleted_manifest, "method": "DELETE", "actor": {}},
        {"action": "delete", "target": {"repository": "team/app", "tag": "v1"},
         "method": "DELETE", "actor": {}},
        {"action": "delete", "target": {"repository": "team/app", "tag": "v3"},
         "method": "DELETE", "actor": {}},
    ]  # fmt: skip
    # One event per request, as registry:2 sends them, ids all different, and the
    # body indented exactly as Go's json.MarshalIndent(envelope, "", "   ") writes it.
    assert len(receiver.requests) == 15
    assert len({event["id"] for event in events}) == 15
    for received in receiver.requests:
        assert received.body == json.dumps(json.loads(received.body), indent=3).encode()
        assert ("Content-Type", EVENTS_TYPE) in received.headers
        assert ("Authorization", "Bearer secret") in received.headers
        assert [v for k, v in received.headers if k == "X-Test"] == ["a", "b"]
    # The events of one request share its id; each request has its own.
    request_ids = [event["request"]["id"] for event in events]
    assert request_ids[-3] == request_ids[-2] == request_ids[-1]
    assert len(set(request_ids)) == 13


def test_references_and_the_signed_in_actor(
    registry_factory: Callable[..., RegistryProcess], receiver: Receiver, tmp_path: Path
) -> None:
    config = notifying(tmp_path, receiver, events={"includereferences": True})
    config.update(htpasswd_config(tmp_path))
    registry = registry_factory(config)
    with client_of(registry, auth=httpx.BasicAuth("alice", USERS["alice"])) as client:
        _, child = push_image(client, "refs", "child", layers=[b"one", b"two"])
        index = image_index([(OCI_MANIFEST, child)])
        assert push_manifest(client, "refs", "multi", index).status_code == 201
    events = [e for e in receiver.wait_for(5) if e["target"].get("mediaType") != BLOB_TYPE]
    assert [e["actor"] for e in receiver.accepted()] == [{"name": "alice"}] * 5
    document = json.loads(child)
    assert events[0]["target"]["references"] == [
        {"mediaType": d["mediaType"], "size": d["size"], "digest": d["digest"]}
        for d in [document["config"], *document["layers"]]
    ]
    assert events[1]["target"]["mediaType"] == OCI_INDEX
    assert events[1]["target"]["references"] == [
        {"mediaType": OCI_MANIFEST, "size": len(child), "digest": digest_of(child),
         "platform": {"architecture": "arch0", "os": "linux"}}
    ]  # fmt: skip


def test_ignore_filters_and_disabled_endpoints(
    registry_factory: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    receivers = [Receiver().start() for _ in range(4)]
    try:
        endpoints: list[dict[str, Any]] = [
            {"name": "no-pulls", "url": receivers[0].url, "ignore": {"actions": ["pull"]}},
            {"name": "no-blobs", "url": receivers[1].url,
             "ignoredmediatypes": [BLOB_TYPE]},
            {"name": "only-pulls", "url": receivers[2].url,
             "ignore": {"mediatypes": [BLOB_TYPE], "actions": ["push", "delete", "mount"]}},
            {"name": "off", "url": receivers[3].url, "disabled": True},
        ]  # fmt: skip
        registry = registry_factory(notifying(tmp_path, receivers[0], endpoints=endpoints))
        with client_of(registry) as client:
            digest, _ = push_image(client, "filtered", "v1")  # 2 blobs, 1 manifest
            assert client.get("/v2/filtered/manifests/v1").status_code == 200
            assert client.delete(f"/v2/filtered/manifests/{digest}").status_code == 202
        no_pulls = receivers[0].wait_for(5)
        assert [e["action"] for e in no_pulls] == ["push"] * 3 + ["delete"] * 2
        no_blobs = receivers[1].wait_for(4)
        assert [(e["action"], e["target"].get("mediaType")) for e in no_blobs] == [
            ("push", OCI_MANIFEST), ("pull", OCI_MANIFEST), ("delete", None), ("delete", None)
        ]  # fmt: skip
        assert [e["action"] for e in receivers[2].wait_for(1)] == ["pull"]
        assert receivers[3].requests == []
    finally:
        for receiver in receivers:
            receiver.stop()


def _push_numbered(registry: RegistryProcess, repo: str, count: int) -> list[str]:
    """``count`` blob pushes, each a separate event; their digests in push order."""
    digests = []
    with client_of(registry) as client:
        for number in range(count):
            digests.append(push_blob(client, repo, f"{repo}: blob number {number}".encode()))
    return digests


def _pushed_digests(receiver: Receiver) -> list[str]:
    return [e["target"]["digest"] for e in receiver.accepted() if e["action"] == "push"]


def _duplicates(events: list[dict[str, Any]]) -> int:
    return len(events) - len({event["id"] for event in events})


@pytest.mark.parametrize("outage", ["500", "closed"])
def test_a_receiver_that_was_down_gets_every_event_in_order(
    registry_factory: Callable[..., RegistryProcess],
    receiver: Receiver,
    tmp_path: Path,
    outage: str,
) -> None:
    registry = registry_factory(notifying(tmp_path, receiver))
    if outage == "500":
        receiver.status = 500
    else:
        receiver.stop()
    digests = _push_numbered(registry, "outage", 30)
    time.sleep(1.0)  # The registry retries and backs off meanwhile.
    assert receiver.accepted() == []
    if outage == "500":
        # registry:2's breaker: `threshold` (3) tries at once, then one per `backoff`
        # (200ms); without it there would be hundreds by now.
        assert 3 <= len(receiver.requests) <= 40, len(receiver.requests)
        assert {len(r.events) for r in receiver.requests} == {1}
        assert len({r.events[0]["id"] for r in receiver.requests}) == 1, "the first event, again"
        receiver.status = 200
    else:
        receiver.start()
    events = receiver.wait_for(30)
    assert _pushed_digests(receiver) == digests
    assert _duplicates(events) == 0


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_queued_events_survive_a_restart(
    registry_factory: Callable[..., RegistryProcess],
    receiver: Receiver,
    tmp_path: Path,
    stop: signal.Signals,
) -> None:
    registry = registry_factory(notifying(tmp_path, receiver))
    receiver.stop()
    digests = _push_numbered(registry, "restart", 20)
    assert registry.process is not None
    if stop == signal.SIGKILL:
        _kill_all(registry)
    else:
        registry.process.send_signal(stop)
        registry.process.wait(timeout=30)
        registry.process = None
    registry.restart()
    digests += _push_numbered(registry, "restart", 5)
    receiver.start()
    events = receiver.wait_for(25)
    assert _pushed_digests(receiver) == digests
    assert _duplicates(events) == 0


def _kill_all(registry: RegistryProcess) -> None:
    """SIGKILL the supervisor and its workers, as a container's end (supervisor first, so
    that it starts no new worker)."""
    assert registry.process is not None
    for pid in [registry.process.pid, *_children(registry.process.pid)]:
        os.kill(pid, signal.SIGKILL)
    registry.process.wait(timeout=30)
    registry.process = None


def test_killed_while_delivering_it_sends_again_at_most_what_was_in_flight(
    registry_factory: Callable[..., RegistryProcess], receiver: Receiver, tmp_path: Path
) -> None:
    """At least once: an event the receiver got but whose answer the registry did not see
    before it died is sent again after the restart; nothing else is."""
    registry = registry_factory(notifying(tmp_path, receiver))
    receiver.delay = 0.1
    digests = _push_numbered(registry, "inflight", 20)
    deadline = time.monotonic() + 30
    while len(receiver.requests) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    _kill_all(registry)
    before = len(receiver.requests)
    receiver.delay = 0.0
    registry.restart()
    events = receiver.wait_for(20 + 1)
    pushed = _pushed_digests(receiver)
    assert sorted(set(pushed)) == sorted(digests)
    assert _duplicates(events) <= 1, f"{_duplicates(events)} repeated after {before} sent"
    print(f"sent before the kill: {before}, repeated: {_duplicates(events)}")
    # Order holds apart from the one repeat.
    assert list(dict.fromkeys(pushed)) == digests


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def test_a_killed_workers_events_are_delivered_by_another(
    registry_factory: Callable[..., RegistryProcess], receiver: Receiver, tmp_path: Path
) -> None:
    """Two workers; the one delivering is killed while events wait for a receiver that is
    down, and pushes go on through both workers (several connections)."""
    registry = registry_factory(notifying(tmp_path, receiver), workers=2)
    receiver.stop()
    assert registry.process is not None
    workers = []
    for _ in range(100):
        workers = _children(registry.process.pid)
        if len(workers) == 2:
            break
        time.sleep(0.05)
    lock = tmp_path / "data" / "notifications" / "sender.lock"
    digests = []
    for round_ in range(3):
        # A worker killed sooner than server.EARLY_EXIT after its start stops the server.
        time.sleep(2.2)
        for number in range(4):  # A new connection each: the kernel spreads them.
            digests += _push_numbered(registry, f"killed/r{round_}n{number}", 2)
        if round_ < 2:
            holder = _lock_holder(lock, workers)
            os.kill(holder, signal.SIGKILL)
            for _ in range(100):
                workers = _children(registry.process.pid)
                if len(workers) == 2 and holder not in workers:
                    break
                time.sleep(0.05)
    receiver.start()
    events = receiver.wait_for(len(digests))
    assert sorted(_pushed_digests(receiver)) == sorted(digests)
    # Per connection (one client after another), the order holds.
    assert _pushed_digests(receiver) == digests
    assert _duplicates(events) == 0


def _lock_holder(lock: Path, candidates: list[int]) -> int:
    """The worker holding the sender lock (from /proc/locks)."""
    inode = os.stat(lock).st_ino
    for _ in range(100):
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            if "FLOCK" in parts and parts[-3].endswith(f":{inode}"):
                pid = int(parts[4])
                if pid in candidates:
                    return pid
        time.sleep(0.05)
    raise AssertionError(f"no worker of {candidates} holds {lock}")


def _rewrite(registry: RegistryProcess, change: Callable[[dict[str, Any]], None]) -> None:
    path = registry.workdir / "config.yml"
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config))


def _log_count(registry: RegistryProcess, text: str) -> int:
    return registry.log().count(text)


def _wait_log(registry: RegistryProcess, text: str, before: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while registry.log().count(text) <= before:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} in the log:\n{registry.log()[-3000:]}")
        time.sleep(0.05)


RELOADED = "configuration reloaded"
HANDED_OVER = "hands delivery over to the new workers"


def _header(received: Received, name: str) -> list[str]:
    return [value for key, value in received.headers if key.lower() == name.lower()]


def test_a_reload_moves_delivery_to_the_new_endpoints_and_loses_nothing(
    registry_factory: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    """Endpoint ``hook`` moves to another URL with a header and an ignore rule, ``gone``
    is removed, ``added`` is new. What was queued for ``hook`` under the old URL (down)
    reaches the new one, once each, in order; the new rules hold for later events."""
    old, new, added, gone = (Receiver().start() for _ in range(4))
    try:
        old.status = 503  # Up, but refusing everything: nothing is accepted there.
        endpoints: list[dict[str, Any]] = [
            {"name": "hook", "url": old.url, "timeout": "2s", "threshold": 3, "backoff": "100ms"},
            {"name": "gone", "url": gone.url},
        ]  # fmt: skip
        registry = registry_factory(notifying(tmp_path, old, endpoints=endpoints), workers=2)
        before = _push_numbered(registry, "reload/before", 10)
        with client_of(registry) as client:
            assert client.head(f"/v2/reload/before/blobs/{before[0]}").status_code == 200
        assert len(gone.wait_for(11)) == 11

        def change(config: dict[str, Any]) -> None:
            config["notifications"]["endpoints"] = [
                {"name": "hook", "url": new.url, "headers": {"X-Generation": ["2"]},
                 "ignore": {"actions": ["pull"]}, "timeout": "2s"},
                {"name": "added", "url": added.url},
            ]  # fmt: skip

        _rewrite(registry, change)
        reloads, handovers = _log_count(registry, RELOADED), _log_count(registry, HANDED_OVER)
        assert registry.process is not None
        registry.process.send_signal(signal.SIGHUP)
        # Pushes go on while both generations run.
        during = _push_numbered(registry, "reload/during", 10)
        _wait_log(registry, RELOADED, reloads)
        _wait_log(registry, HANDED_OVER, handovers)
        sent_to_old = len(old.requests)
        after = _push_numbered(registry, "reload/after", 10)
        with client_of(registry) as client:
            assert client.head(f"/v2/reload/after/blobs/{after[0]}").status_code == 200
        events = new.wait_for(len(before) + 1 + len(during) + len(after))
        assert _pushed_digests(new) == before + during + after
        assert _duplicates(events) == 0
        # The pull queued before the reload is delivered; the one after is ignored.
        pulls = [e["target"]["repository"] for e in events if e["action"] == "pull"]
        assert pulls == ["reload/before"]
        assert all(_header(r, "X-Generation") == ["2"] for r in new.requests)
        time.sleep(0.5)
        assert len(old.requests) == sent_to_old, "the old URL was tried after the handover"
        assert old.accepted() == []
        # The new endpoint starts at the reload; the removed one gets nothing more.
        added_pushes = _pushed_digests(added)
        assert set(after) <= set(added_pushes) <= set(during + after)
        gone_pushes = _pushed_digests(gone)
        assert gone_pushes[: len(before)] == before
        assert set(gone_pushes) <= set(before + during), "delivered to gone after the handover"
        cursors = tmp_path / "data" / "notifications" / "cursors"
        assert sorted(path.name for path in cursors.iterdir()) == ["added", "hook"]
    finally:
        for receiver in (old, new, added, gone):
            receiver.stop()


def test_a_reload_during_delivery_sends_nothing_twice(
    registry_factory: Callable[..., RegistryProcess], receiver: Receiver, tmp_path: Path
) -> None:
    """The receiver is slow, so a request is in flight when the old generation is
    retired: it finishes that request and saves its place before the new one goes on."""
    config = notifying(tmp_path, receiver)
    config["notifications"]["endpoints"][0]["headers"] = {"X-Generation": ["1"]}
    registry = registry_factory(config, workers=2)
    receiver.delay = 0.05
    first = _push_numbered(registry, "busy/first", 30)
    deadline = time.monotonic() + 30
    while not receiver.requests and time.monotonic() < deadline:
        time.sleep(0.01)

    def change(config: dict[str, Any]) -> None:
        config["notifications"]["endpoints"][0]["headers"] = {"X-Generation": ["2"]}

    _rewrite(registry, change)
    reloads, handovers = _log_count(registry, RELOADED), _log_count(registry, HANDED_OVER)
    assert registry.process is not None
    registry.process.send_signal(signal.SIGHUP)
    second = _push_numbered(registry, "busy/second", 20)
    _wait_log(registry, RELOADED, reloads)
    _wait_log(registry, HANDED_OVER, handovers)
    later = _push_numbered(registry, "busy/later", 5)
    events = receiver.wait_for(55, seconds=60)
    assert _pushed_digests(receiver) == first + second + later
    assert _duplicates(events) == 0
    generations = {
        r.events[0]["target"]["digest"]: ",".join(_header(r, "X-Generation"))
        for r in receiver.requests
    }
    assert {generations[digest] for digest in later} == {"2"}
    assert "1" in generations.values(), "the old generation delivered nothing: a weak test"


def test_the_queue_stays_within_its_size_and_says_what_it_dropped(
    registry_factory: Callable[..., RegistryProcess], receiver: Receiver, tmp_path: Path
) -> None:
    """A receiver down for long: the oldest events go, the newest wait, the disk is bounded."""
    registry = registry_factory(notifying(tmp_path, receiver, queue={"maxsize": "64KiB"}))
    receiver.stop()
    with client_of(registry) as client:
        digest = push_blob(client, "capped", b"a blob pulled many times")
        for _ in range(600):  # About 300 KiB of events: HEAD of a blob is a pull.
            assert client.head(f"/v2/capped/blobs/{digest}").status_code == 200
    journal = tmp_path / "data" / "notifications" / "journal"
    deadline = time.monotonic() + 30
    while (size := sum(p.stat().st_size for p in journal.iterdir())) > 65536:
        assert time.monotonic() < deadline, f"the queue still takes {size} bytes"
        time.sleep(0.1)
    time.sleep(1.5)  # One more round of the check, which would drop more if it had to.
    log = registry.log()
    assert "over notifications.queue.maxsize (65536 bytes)" in log
    dropped = sum(int(n) for n in re.findall(r"dropped its (\d+) oldest", log))
    receiver.start()
    events = receiver.wait_for(601 - dropped)
    assert len(events) == 601 - dropped, (len(events), dropped)
    assert 0 < dropped < 601
    assert events[-1]["action"] == "pull"
    assert _duplicates(events) == 0
