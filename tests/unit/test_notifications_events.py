"""Event records and registry:2's JSON: what goes on disk comes back as registry:2 sends it."""

from __future__ import annotations

import json
import re

from registry.notifications.events import (
    Ids,
    decode,
    envelope,
    go_string,
    quote,
    record,
    references,
    request_fields,
    source_fields,
    timestamp,
)

DIGEST = "sha256:325106d08a454bcfb4ba03caa05e3735eb4b522f5fb3c74ce97c3973a81bb532"

#: What Debian's docker-registry 2.8.2 POSTed for a manifest GET by tag (ids, time and
#: ports as they were; references on): the bytes our envelope must reproduce.
REGISTRY2_PULL = """{
   "events": [
      {
         "id": "d184a5a1-6853-4497-ba4b-1b45d21e1584",
         "timestamp": "2026-12-01T00:41:22.46546939Z",
         "action": "pull",
         "target": {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "size": 439,
            "digest": "sha256:325106d08a454bcfb4ba03caa05e3735eb4b522f5fb3c74ce97c3973a81bb532",
            "length": 439,
            "repository": "a/b",
            "url": "http://127.0.0.1:39191/v2/a/b/manifests/sha256:325106d08a454bcfb4ba03caa05e3735eb4b522f5fb3c74ce97c3973a81bb532",
            "tag": "v1",
            "references": [
               {
                  "mediaType": "application/vnd.docker.container.image.v1+json",
                  "size": 78,
                  "digest": "sha256:c5b1d63604f273462ef36fadac3182d43ae6a6138731cf594b314835cf1c034f"
               },
               {
                  "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                  "size": 110,
                  "digest": "sha256:e59909535cb9ade99371c092e0c86665f468fbc134d9fb173647d46686b7db77"
               }
            ]
         },
         "request": {
            "id": "f25bbc88-636a-43a4-8074-f76e279904d8",
            "addr": "127.0.0.1:52298",
            "host": "127.0.0.1:39191",
            "method": "GET",
            "useragent": "probe/1.0"
         },
         "actor": {},
         "source": {
            "addr": "vm:39191",
            "instanceID": "b0388d79-cf3b-47f4-8732-6d840620603b"
         }
      }
   ]
}"""  # noqa: E501

MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 78,
            "digest": "sha256:c5b1d63604f273462ef36fadac3182d43ae6a6138731cf594b314835cf1c034f",
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": 110,
                "digest": "sha256:e59909535cb9ade99371c092e0c86665f468fbc134d9fb173647d46686b7db77",
            }
        ],
    }
).encode()


def _hex(uuid: str) -> str:
    return uuid.replace("-", "")


def _body(data: bytes) -> bytes:
    assert data.startswith(b"\x1e") and data.endswith(b"\n") and data.count(b"\n") == 1
    return data[1:-1]


def test_a_record_comes_back_as_the_bytes_registry2_sent() -> None:
    request = request_fields(
        _hex("f25bbc88-636a-43a4-8074-f76e279904d8"),
        "127.0.0.1:52298",
        "127.0.0.1:39191",
        "GET",
        "probe/1.0",
        None,
        "http://127.0.0.1:39191",
    )
    source = source_fields("vm:39191", _hex("b0388d79-cf3b-47f4-8732-6d840620603b"))
    data = record(
        _hex("d184a5a1-6853-4497-ba4b-1b45d21e1584"),
        request,
        source,
        "pull",
        "a/b",
        quote("application/vnd.docker.distribution.manifest.v2+json"),
        439,
        DIGEST,
        "manifests",
        "v1",
        references=references(MANIFEST),
    )
    event = decode(_body(data))
    event["timestamp"] = "2026-12-01T00:41:22.46546939Z"
    assert envelope([event]).decode() == REGISTRY2_PULL


def test_delete_events_carry_only_what_registry2_sends() -> None:
    request = request_fields("0" * 32, "10.0.0.1:1", "r:5000", "DELETE", "", "alice", "")
    source = source_fields("", "")
    manifest = decode(_body(record("1" * 32, request, source, "delete", "a/b", digest=DIGEST)))
    assert manifest["target"] == {"digest": DIGEST, "repository": "a/b"}
    tag = decode(_body(record("2" * 32, request, source, "delete", "a/b", tag="v1")))
    assert tag["target"] == {"repository": "a/b", "tag": "v1"}
    # An empty user agent is still sent (no omitempty); an empty source is {}.
    assert tag["request"] == {"id": "00000000-0000-4000-8000-000000000000",
                              "addr": "10.0.0.1:1", "host": "r:5000", "method": "DELETE",
                              "useragent": ""}  # fmt: skip
    assert tag["actor"] == {"name": "alice"}
    assert tag["source"] == {}


def test_what_clients_choose_cannot_break_a_record_and_comes_back_intact() -> None:
    hostile = 'ag\tent\n"\x1e</script>&\u2028 ünïcode \\'
    request = request_fields("0" * 32, "[::1]:80", hostile, "GET", hostile, hostile, "")
    data = record("1" * 32, request, source_fields("h", "2" * 32), "pull", "a", "", 0, DIGEST,
                  "blobs")  # fmt: skip
    body = _body(data)
    assert b"\x1e" not in body and b"\n" not in body
    event = decode(body)
    assert event["request"]["useragent"] == hostile
    assert event["request"]["host"] == hostile
    assert event["actor"]["name"] == hostile
    assert event["target"]["url"] == f"/v2/a/blobs/{DIGEST}"  # relative URLs
    sent = envelope([event])
    assert json.loads(sent)["events"][0] == event
    # As Go writes strings: HTML characters escaped, UTF-8 kept.
    assert "\\u003c/script\\u003e\\u0026\\u2028 ünïcode" in sent.decode()


def test_go_strings() -> None:
    assert go_string("a<b>&c") == '"a\\u003cb\\u003e\\u0026c"'
    assert go_string("tab\there\b") == '"tab\\there\\u0008"'
    assert go_string("plain é") == '"plain é"'


def test_timestamps_are_go_rfc3339_with_nanoseconds() -> None:
    assert timestamp(1_764_549_682_465_469_390) == "2025-12-01T00:41:22.46546939Z"
    assert timestamp(1_764_549_682_000_000_000) == "2025-12-01T00:41:22Z"
    assert timestamp(1_764_549_682_000_000_001) == "2025-12-01T00:41:22.000000001Z"


def test_ids_are_unique_version_4_uuids() -> None:
    ids = Ids()
    request = request_fields("0" * 32, "", "", "GET", "", None, "")
    seen = set()
    for _ in range(20000):
        event = decode(_body(record(ids(), request, source_fields("", ""), "pull", "a")))
        seen.add(event["id"])
    assert len(seen) == 20000
    assert all(re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                            i) for i in seen)  # fmt: skip


def test_index_references_carry_platforms_as_registry2_rewrites_them() -> None:
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": DIGEST,
                    "size": 10,
                    "artifactType": "dropped",
                    "annotations": {"a": "b"},
                    "platform": {"os": "linux", "architecture": "arm64", "variant": "v8",
                                 "features": ["dropped"]},
                }
            ],
        }
    ).encode()  # fmt: skip
    assert json.loads(references(index)) == [
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": 10,
            "digest": DIGEST,
            "annotations": {"a": "b"},
            "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
        }
    ]
    assert references(b"not json") == ""
