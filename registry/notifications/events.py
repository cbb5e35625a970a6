"""Events as registry:2 shapes them, and the compact records they wait in on disk.

Emitting happens on the request path (a manifest GET is a couple of hundred
microseconds), so an event is first written as a short tab-separated record
of what varies: no JSON encoder, no UUID objects, each untrusted string quoted
once per request. The sender turns records back into registry:2's event
objects (same fields, same key order, same omissions) and the envelope into
the bytes Go's ``json.MarshalIndent(envelope, "", "   ")`` writes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import Iterable, Mapping
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

#: What registry:2 (distribution 2.8) sends as Content-Type; registry 3.x sends
#: ``application/vnd.docker.distribution.events.v2+json`` with the same envelope.
EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"

PUSH = "push"
PULL = "pull"
MOUNT = "mount"
DELETE = "delete"

#: The media type registry:2 gives every blob in an event.
BLOB_MEDIA_TYPE = "application/octet-stream"

RECORD_START = b"\x1e"
"""Starts every record: quoted strings never hold it, so a torn record is found."""
RECORD_VERSION = "1"
_FIELDS = 22

Event = dict[str, Any]


def quote(text: str) -> str:
    """A JSON string literal: no tab, newline or record mark can be inside."""
    return encode_basestring_ascii(text)


class Ids:
    """Unique ids, cheaply: a random 64-bit prefix per process and a counter.

    Written as registry:2 writes its version 4 UUIDs; an id is fixed when the
    event is queued, so a receiver can tell a repeated delivery from a new event.
    """

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._salt = int.from_bytes(os.urandom(8))
        self._next = itertools.count()

    def __call__(self) -> str:
        # Times an odd constant, modulo 2**64: a bijection, so ids stay unique (for
        # 2**62 of them: the UUID variant takes two bits) but do not look counted.
        mixed = (next(self._next) * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF) ^ self._salt
        return f"{self._prefix}{mixed:016x}"


def request_fields(
    request_id: str,
    addr: str,
    host: str,
    method: str,
    useragent: str,
    actor: str | None,
    base: str,
) -> str:
    """The record fields about a request (made once per request, shared by its events).

    ``base``: scheme, host and prefix that content URLs start with ("" for relative).
    """
    name = quote(actor) if actor else ""
    return (
        f"{request_id}\t{quote(addr)}\t{quote(host)}\t{method}\t{quote(useragent)}\t"
        f"{name}\t{quote(base)}"
    )


def source_fields(addr: str, instance_id: str) -> str:
    """The record fields naming this registry process (the same in every record it writes)."""
    return f"{quote(addr)}\t{instance_id}"


def record(
    event_id: str,
    request: str,
    source: str,
    action: str,
    repository: str,
    media_type: str = "",
    size: int = 0,
    digest: str = "",
    content: str = "",
    tag: str = "",
    from_repository: str = "",
    references: str = "",
    ignoring: str = "",
) -> bytes:
    """One event as a journal record.

    ``media_type`` is quoted already (:func:`quote`); ``content`` is ``manifests``
    or ``blobs`` for events whose target has a URL. Names, tags and digests passed
    the grammar and go in as they are. ``ignoring``: the :func:`endpoint_key` of each
    endpoint whose ``ignore`` rules drop this event, space-separated; decided when
    the event happens (as registry:2 filters before its queue), so a reload that
    changes the rules changes them for later events only.
    """
    return (
        f"\x1e1\t{ignoring}\t{event_id}\t{time.time_ns()}\t{action}\t{media_type}\t{size}\t"
        f"{digest}\t"
        f"{repository}\t{from_repository}\t{content}\t{tag}\t{references}\t{request}\t"
        f"{source}\n"
    ).encode()


def endpoint_key(name: str) -> str:
    """A short, fixed name of an endpoint for records (its name may hold any character)."""
    return hashlib.sha256(name.encode()).hexdigest()[:12]


def ignored_by(body: bytes, key: bytes) -> bool:
    """The endpoint with this key ignores the record (read without decoding it)."""
    parts = body.split(b"\t", 2)
    return len(parts) == 3 and key in parts[1].split(b" ")


class RecordError(ValueError):
    """Bytes in the journal that are not a whole record (a write cut short by a crash)."""


def _unquote(field: str) -> str:
    if "\\" not in field and len(field) >= 2 and field[0] == field[-1] == '"':
        return field[1:-1]
    value = json.loads(field)
    if not isinstance(value, str):
        raise RecordError(f"expected a quoted string, got {field[:40]!r}")
    return value


def _uuid(hexid: str) -> str:
    """128 bits written as a version 4 UUID, as registry:2's ids are."""
    if len(hexid) != 32:
        raise RecordError(f"not an id: {hexid[:40]!r}")
    variant = "89ab"[int(hexid[16], 16) & 3]
    return f"{hexid[:8]}-{hexid[8:12]}-4{hexid[13:16]}-{variant}{hexid[17:20]}-{hexid[20:]}"


def timestamp(nanoseconds: int) -> str:
    """Go's RFC 3339 with nanoseconds, trailing zeros dropped, as time.Time marshals in UTC."""
    seconds, fraction = divmod(nanoseconds, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def decode(body: bytes) -> Event:
    """A record (without its start mark and newline) as registry:2's event object."""
    try:
        fields = body.decode("ascii").split("\t")
    except UnicodeDecodeError:
        raise RecordError("not ASCII") from None
    if len(fields) != _FIELDS or fields[0] != RECORD_VERSION:
        raise RecordError(f"expected {_FIELDS} fields of version {RECORD_VERSION}")
    (
        _,
        _,
        event_id,
        nanoseconds,
        action,
        media_type,
        size,
        digest,
        repository,
        from_repository,
        content,
        tag,
        references,
        request_id,
        addr,
        host,
        method,
        useragent,
        actor,
        base,
        source_addr,
        instance_id,
    ) = fields
    try:
        length = int(size)
        target: Event = {}
        # distribution.Descriptor's fields first (mediaType, size, digest), then the
        # event's own; every one omitempty.
        if media_type:
            target["mediaType"] = _unquote(media_type)
        if length:
            target["size"] = length
        if digest:
            target["digest"] = digest
        if length:
            target["length"] = length
        if repository:
            target["repository"] = repository
        if from_repository:
            target["fromRepository"] = from_repository
        if content:
            target["url"] = f"{_unquote(base)}/v2/{repository}/{content}/{digest}"
        if tag:
            target["tag"] = tag
        if references:
            target["references"] = json.loads(references)
        request: Event = {"id": _uuid(request_id)}
        request_addr = _unquote(addr)
        if request_addr:
            request["addr"] = request_addr
        request_host = _unquote(host)
        if request_host:
            request["host"] = request_host
        request["method"] = method
        request["useragent"] = _unquote(useragent)
        source: Event = {}
        source_text = _unquote(source_addr)
        if source_text:
            source["addr"] = source_text
        if instance_id:
            source["instanceID"] = _uuid(instance_id)
        return {
            "id": _uuid(event_id),
            "timestamp": timestamp(int(nanoseconds)),
            "action": action,
            "target": target,
            "request": request,
            "actor": {"name": _unquote(actor)} if actor else {},
            "source": source,
        }
    except RecordError:
        raise
    except (ValueError, IndexError) as error:
        raise RecordError(str(error)) from None


# --- references (notifications.events.includereferences) ---

_DESCRIPTOR_KEYS = ("mediaType", "size", "digest", "urls", "annotations", "platform")
_PLATFORM_KEYS = ("architecture", "os", "os.version", "os.features", "variant")


def _descriptor(value: object, platform: bool) -> dict[str, object] | None:
    """distribution.Descriptor as Go re-marshals it: its own fields, in its order, omitempty."""
    if not isinstance(value, dict):
        return None
    out: dict[str, object] = {}
    for key in _DESCRIPTOR_KEYS:
        item = value.get(key)
        if key == "platform":
            if not platform or not isinstance(item, dict):
                continue
            item = {k: item[k] for k in _PLATFORM_KEYS if item.get(k)}
        if item not in (None, "", 0, [], {}):
            out[key] = item
    return out


def references(data: bytes) -> str:
    """A manifest's references as registry:2 lists them (config and layers, or the
    manifests of an index), compact JSON; empty when there are none."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return ""
    if not isinstance(document, dict):
        return ""
    found: list[dict[str, object] | None]
    manifests = document.get("manifests")
    if isinstance(manifests, list):
        found = [_descriptor(item, platform=True) for item in manifests]
    else:
        layers = document.get("layers")
        found = [_descriptor(document.get("config"), platform=False)]
        if isinstance(layers, list):
            found += [_descriptor(item, platform=False) for item in layers]
    kept = [item for item in found if item is not None]
    return json.dumps(kept, separators=(",", ":")) if kept else ""


# --- the envelope, as Go's encoding/json indents it ---

_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
               "\u2029": "\\u2029", "\b": "\\u0008", "\f": "\\u000c"}  # fmt: skip
_GO_SPECIAL = frozenset(_GO_ESCAPES)


def go_string(text: str) -> str:
    """A string literal as Go writes it: HTML-safe, UTF-8 kept as it is."""
    if _GO_SPECIAL.isdisjoint(text):
        return encode_basestring(text)
    return "".join(_GO_ESCAPES.get(ch) or encode_basestring(ch)[1:-1] for ch in text).join('""')


def _indented(value: object, level: int) -> str:
    """Any JSON value, indented as Go's MarshalIndent with three spaces."""
    if isinstance(value, str):
        return go_string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return "null"
    inner = "\n" + "   " * (level + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = (f"{go_string(k)}: {_indented(v, level + 1)}" for k, v in value.items())
        return "{" + inner + ("," + inner).join(items) + "\n" + "   " * level + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        items = (_indented(v, level + 1) for v in value)
        return "[" + inner + ("," + inner).join(items) + "\n" + "   " * level + "]"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _flat(value: Mapping[str, Any], pad: str) -> str:
    """A map of strings and numbers (with keys that need no escaping) at depth 3."""
    if not value:
        return "{}"
    lines = []
    for key, item in value.items():
        if isinstance(item, str):
            text = go_string(item)
        elif isinstance(item, int):
            text = str(item)
        else:
            text = _indented(item, 4)
        lines.append(f'{pad}"{key}": {text}')
    return "{\n" + ",\n".join(lines) + "\n         }"


_PAD = " " * 12


def _event(event: Event) -> str:
    return (
        "{\n"
        f'         "id": {go_string(event["id"])},\n'
        f'         "timestamp": {go_string(event["timestamp"])},\n'
        f'         "action": {go_string(event["action"])},\n'
        f'         "target": {_flat(event["target"], _PAD)},\n'
        f'         "request": {_flat(event["request"], _PAD)},\n'
        f'         "actor": {_flat(event["actor"], _PAD)},\n'
        f'         "source": {_flat(event["source"], _PAD)}\n'
        "      }"
    )


def envelope(events: Iterable[Event]) -> bytes:
    """The request body: ``{"events": [...]}`` indented with three spaces, as registry:2 sends."""
    items = [_event(event) for event in events]
    if not items:
        return b'{\n   "events": []\n}'
    return ('{\n   "events": [\n      ' + ",\n      ".join(items) + "\n   ]\n}").encode()


def target_of(event: Mapping[str, Any]) -> tuple[str, str]:
    """(action, target media type): what an endpoint's ``ignore`` looks at."""
    return event["action"], event["target"].get("mediaType", "")
