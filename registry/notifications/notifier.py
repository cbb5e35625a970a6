"""One process's part in notifications: write its events, and deliver if elected.

Every worker writes the events of the requests it serves into the journal.
One process delivers them: whichever holds the ``flock`` on ``sender.lock``
(the others try again every second, so when that process dies another takes
over, and a killed worker's events are delivered by the next holder).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fcntl
import ipaddress
import logging
import os
import shutil
import socket
import tempfile
from collections import OrderedDict
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote

from ..auth.grant import user_of
from ..config import Config, ConfigError, HTTPConfig
from .events import PULL, Ids, endpoint_key, quote, record, references, source_fields
from .events import request_fields as request_fields_of
from .journal import SEGMENT_BYTES, Journal, JournalWriter, Position

if TYPE_CHECKING:
    from .sender import EndpointSender

log = logging.getLogger(__name__)

#: How often a process checks its segment and tries to become the sender.
HOUSEKEEPING_SECONDS = 1.0
#: Manifests whose references are kept (content by digest never changes).
REFERENCES_CACHED = 4096
_REQUEST_KEY = "registry.notifications.request"


def queue_directory(config: Config) -> Path | None:
    """Where the queue lives; None: a temporary folder of this process.

    Beside the filesystem storage by default: the one folder a deployment keeps
    (registry:2's image mounts only ``/var/lib/registry``), so queued events
    survive the container being replaced. registry:2 reads only ``docker/``
    there. Other drivers have no local folder: a temporary one, lost at exit
    like registry:2's memory queue, unless ``notifications.queue.directory``.
    """
    configured = config.notifications.queue_directory
    if configured:
        return Path(configured)
    if config.storage.driver == "filesystem":
        root = config.storage.parameters.get("rootdirectory")
        return Path(str(root)) / "notifications"
    return None


def source_addr(addr: str, bound: int | None = None) -> str:
    """registry:2's source address: this host's name and the configured port (or,
    when that is 0, the port the request came in on)."""
    hostname = socket.gethostname()
    _, separator, port = addr.rpartition(":")
    if not separator or not port.isdigit() or addr.startswith("/"):
        return hostname
    if port == "0" and bound:
        port = str(bound)
    return f"{hostname}:{port}" if ":" not in hostname else f"[{hostname}]:{port}"


def _client_addr(scope: Mapping[str, Any]) -> str:
    client = scope.get("client")
    if not client:
        return ""
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _basic_user(value: str) -> str:
    """The user name of Basic credentials (registry:2's actor when no one checked them)."""
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return ""
    return decoded.partition(":")[0]


def request_fields(scope: Mapping[str, Any], http: HTTPConfig, ids: Ids) -> str:
    """The record fields about this request, worked out at its first event."""
    cached = scope.get(_REQUEST_KEY)
    if cached is not None:
        return cast(str, cached)
    wanted: dict[bytes, str] = {}
    for name, value in scope.get("headers", ()):
        name = name.lower()
        if name in _HEADERS and name not in wanted:
            wanted[name] = value.decode("utf-8", "replace")
    addr = ""
    if wanted.keys() & _PROXY_HEADERS:
        # registry:2's RemoteAddr: a proxy's X-Forwarded-For or X-Real-Ip, if an address.
        addr = wanted.get(b"x-forwarded-for", "").split(",")[0].strip()
        if not _ip(addr):
            addr = wanted.get(b"x-real-ip", "").strip()
            if not _ip(addr):
                addr = ""
    host = wanted.get(b"host", "")
    if http.relativeurls:
        base = ""
    elif http.host:
        base = http.host
    else:
        scheme = wanted.get(b"x-forwarded-proto", "").split(",")[0].strip()
        origin = wanted.get(b"x-forwarded-host", "").split(",")[0].strip() or host
        base = f"{scheme or scope.get('scheme', 'http')}://{origin}" if origin else ""
    actor = user_of(scope)
    if actor is None and b"authorization" in wanted:
        actor = _basic_user(wanted[b"authorization"])
    fields = request_fields_of(
        ids(),
        addr or _client_addr(scope),
        host,
        str(scope.get("method", "")),
        wanted.get(b"user-agent", ""),
        actor,
        base + http.prefix,
    )
    cast(MutableMapping[str, Any], scope)[_REQUEST_KEY] = fields
    return fields


_PROXY_HEADERS = frozenset({b"x-forwarded-for", b"x-real-ip"})
_HEADERS = frozenset(
    {
        b"host",
        b"user-agent",
        b"x-forwarded-for",
        b"x-real-ip",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"authorization",
    }
)


class Notifier:
    """Built by the app when an endpoint is configured; started in its lifespan."""

    def __init__(self, config: Config) -> None:
        notifications = config.notifications
        self.endpoints = tuple(e for e in notifications.endpoints if not e.disabled)
        self.http = config.http
        self.include_references = notifications.includereferences
        self.maxsize = notifications.queue_maxsize
        # Segments small enough that the cap drops a few at a time, never the one in use.
        self._segment_bytes = max(16 * 1024, min(SEGMENT_BYTES, self.maxsize // 8))
        directory = queue_directory(config)
        self._temporary = directory is None
        fsync = notifications.queue_fsync
        if fsync is None:
            fsync = bool(config.storage.parameters.get("fsync", False))
        self._fsync = fsync
        self.journal = self._journal(directory or Path("."))
        self.writer = JournalWriter(self.journal)
        self.instance_id = os.urandom(16).hex()
        self.source = source_fields(source_addr(config.http.addr), self.instance_id)
        self._port_unknown = config.http.addr.endswith(":0")
        self.ids = Ids()
        self._quoted: dict[str, str] = {}
        self._wanted: dict[tuple[str, str], str | None] = {}
        self._keys = {endpoint.name: endpoint_key(endpoint.name) for endpoint in self.endpoints}
        self._references: OrderedDict[str, str] = OrderedDict()
        self.senders: list[EndpointSender] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._sending: list[asyncio.Task[None]] = []
        self._lock_fd = -1
        self._deleted_before = 0
        self._retiring = False
        self.dropped = 0
        """Events dropped by the size cap (as far as this process counted)."""

    def _journal(self, directory: Path) -> Journal:
        return Journal(directory, fsync=self._fsync, segment_bytes=self._segment_bytes)

    # Lifecycle

    async def start(self) -> None:
        """Open the journal and give every endpoint a cursor, before any request is served."""
        if self._temporary:
            directory = Path(tempfile.mkdtemp(prefix="registry-notifications-"))
            self.journal = self._journal(directory)
            self.writer = JournalWriter(self.journal)
        try:
            self.writer.open()
            for endpoint in self.endpoints:
                self.journal.start_cursor(endpoint.name)
        except OSError as error:
            raise ConfigError(
                f"notifications.queue.directory: {self.journal.directory}: "
                f"{error.strerror or error}"
            ) from None
        self._tasks.append(asyncio.create_task(self._housekeeping()))

    async def stop(self) -> None:
        await self._stop_sending()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self.writer.close()
        self._release()
        if self._temporary:
            shutil.rmtree(self.journal.directory, ignore_errors=True)

    def retire(self) -> None:
        """Stop delivering (or trying to) and let a process of the new generation do it;
        this process still writes the events of the requests it finishes."""
        if self._retiring:
            return
        self._retiring = True
        self._tasks.append(asyncio.create_task(self._hand_over()))

    async def _hand_over(self) -> None:
        delivering = self._lock_fd >= 0
        await self._stop_sending()
        self._release()
        if delivering:
            log.info("notifications: process %d hands delivery over to the new workers",
                     os.getpid())  # fmt: skip

    async def _stop_sending(self) -> None:
        """The senders stop after the request each has in flight (bounded by its timeout)."""
        for sender in self.senders:
            sender.stop()
        if self._sending:
            grace = max(sender.endpoint.timeout for sender in self.senders) + 1.0
            _, late = await asyncio.wait(self._sending, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*self._sending, return_exceptions=True)
        for sender in self.senders:
            sender.close()
        self._sending.clear()
        self.senders.clear()

    def _release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # Another process may deliver now.
            self._lock_fd = -1

    @property
    def delivering(self) -> bool:
        """This process holds the sender lock."""
        return bool(self.senders)

    async def _housekeeping(self) -> None:
        fd = os.open(self.journal.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                self.writer.check()
                if not self._retiring:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        pass
                    else:
                        break
                await asyncio.sleep(HOUSEKEEPING_SECONDS)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        self._deliver()
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            self.writer.check()
            if self.senders:
                self._cap()

    def _deliver(self) -> None:
        """This process holds the lock: start a sender per endpoint."""
        from .sender import EndpointSender  # httpx: only in the process that delivers

        log.info("notifications: process %d delivers events to %d endpoint(s), queued in %s",
                 os.getpid(), len(self.endpoints), self.journal.directory)  # fmt: skip
        self._forget_other_cursors()
        self.senders = [
            EndpointSender(endpoint, self.journal, self._delete_delivered)
            for endpoint in self.endpoints
        ]
        self._sending = [asyncio.create_task(sender.run()) for sender in self.senders]
        self._cap()

    def _forget_other_cursors(self) -> None:
        """An endpoint removed (or disabled) keeps no place in the queue: it would hold
        nothing back, but if it came back it would get everything left since."""
        known = {self.journal.cursor_path(endpoint.name).name for endpoint in self.endpoints}
        for path in self.journal.cursors.iterdir():
            if path.name not in known and not path.name.startswith("."):
                log.info("notifications: endpoint %s is no longer configured; its place "
                         "in the queue is removed", unquote(path.name))  # fmt: skip
                path.unlink(missing_ok=True)

    def _cap(self) -> None:
        """Keep the queue within notifications.queue.maxsize: the oldest events go first."""
        if self.journal.size() <= self.maxsize:
            return
        positions = {sender.endpoint.name: sender.position for sender in self.senders}
        floor, dropped = self.journal.trim(self.maxsize, positions)
        for sender in self.senders:
            if sender.position.segment < floor:
                sender.jump(Position(floor, 0))
        for name, count in dropped.items():
            self.dropped += count
            log.error(
                "notifications: the queue is over notifications.queue.maxsize (%d bytes) "
                "while endpoint %s is not accepting events: dropped its %d oldest",
                self.maxsize,
                name,
                count,
            )
        self._deleted_before = max(self._deleted_before, floor)

    def _delete_delivered(self) -> None:
        oldest = min(sender.position.segment for sender in self.senders)
        if oldest > self._deleted_before:
            self.journal.delete_before(oldest)
            self._deleted_before = oldest

    # Emitting

    def ignoring(self, action: str, media_type: str) -> str | None:
        """The keys of the endpoints that ignore this event, for its record; None when
        every endpoint does (then it is never written)."""
        key = (action, media_type)
        try:
            return self._wanted[key]
        except KeyError:
            pass
        ignoring = [e for e in self.endpoints if not e.accepts(action, media_type)]
        found = None
        if len(ignoring) < len(self.endpoints):
            found = " ".join(self._keys[e.name] for e in ignoring)
        self._wanted[key] = found
        return found

    def wants(self, action: str, media_type: str) -> bool:
        """Some endpoint takes this event."""
        return self.ignoring(action, media_type) is not None

    def emit(
        self,
        scope: Mapping[str, Any],
        action: str,
        repository: str,
        *,
        media_type: str = "",
        size: int = 0,
        digest: str = "",
        content: str = "",
        tag: str = "",
        from_repository: str = "",
        manifest: bytes | None = None,
    ) -> None:
        """Queue one event. ``content``: ``manifests`` or ``blobs``, for the target's URL."""
        ignoring = self.ignoring(action, media_type)
        if ignoring is None:
            return
        if self._port_unknown:
            server = scope.get("server")
            if server and server[1]:
                addr = source_addr(self.http.addr, server[1])
                self.source = source_fields(addr, self.instance_id)
                self._port_unknown = False
        quoted = self._quoted.get(media_type)
        if quoted is None:
            quoted = self._quoted[media_type] = quote(media_type) if media_type else ""
        data = record(
            self.ids(),
            request_fields(scope, self.http, self.ids),
            self.source,
            action,
            repository,
            quoted,
            size,
            digest,
            content,
            tag,
            from_repository,
            self._references_of(digest, manifest) if manifest is not None else "",
            ignoring,
        )
        # A pull changes nothing; pushes and deletes are as durable as the storage.
        self.writer.append(data, durable=action != PULL)
        for sender in self.senders:
            sender.wake.set()

    def _references_of(self, digest: str, manifest: bytes) -> str:
        if not self.include_references:
            return ""
        found = self._references.get(digest)
        if found is None:
            found = references(manifest)
            self._references[digest] = found
            if len(self._references) > REFERENCES_CACHED:
                self._references.popitem(last=False)
        return found
