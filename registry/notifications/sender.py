"""Delivery to one endpoint: the journal read in order, POSTed until accepted.

As registry:2's endpoint: a request that fails is tried again at once, and
after ``threshold`` failures in a row each try waits ``backoff`` (its circuit
breaker); any 2xx or 3xx answer (after redirects) is success; the configured
headers go on every request; events the endpoint ignored when they happened
(marked in their records) are passed over here.
Unlike registry:2, the position is kept on disk after each accepted request,
so nothing is lost when the registry stops, and an event is sent again only
if the registry stopped between the endpoint accepting it and the position
being saved (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Callable

import httpx

from ..config import NotificationEndpoint
from .events import (
    EVENTS_MEDIA_TYPE,
    Event,
    RecordError,
    decode,
    endpoint_key,
    envelope,
    ignored_by,
)
from .journal import Journal, JournalReader, Position

log = logging.getLogger(__name__)

#: How often an idle sender looks for events other workers wrote.
POLL_SECONDS = 0.1
USER_AGENT = "registry-notifications"


class _GivenUpError(Exception):
    """The batch in hand is given up: the sender stops, or the queue cap dropped it."""


class EndpointSender:
    """Runs as a task in the one process that delivers (see :class:`~.notifier.Notifier`)."""

    def __init__(
        self,
        endpoint: NotificationEndpoint,
        journal: Journal,
        on_saved: Callable[[], None] = lambda: None,
    ) -> None:
        self.endpoint = endpoint
        self.journal = journal
        self.on_saved = on_saved
        self.key = endpoint_key(endpoint.name).encode()
        position = journal.load_cursor(endpoint.name)
        if position is None:  # Made by the notifier's start; unreadable if missing here.
            journal.cursor_path(endpoint.name).unlink(missing_ok=True)
            journal.start_cursor(endpoint.name)
            position = journal.load_cursor(endpoint.name) or journal.end()
        self.cursor = journal.open_cursor(endpoint.name)
        self.reader = JournalReader(journal, position)
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        """Set to stop after the request in flight, if any (see :meth:`stop`)."""
        self._jumps = 0
        """Bumped when the queue cap moves this sender on: the batch in hand is dropped."""
        self.failures = 0
        """Failed requests in a row."""
        self.delivered = 0
        self.headers = [
            (name, value) for name, values in endpoint.headers.items() for value in values
        ]

    @property
    def position(self) -> Position:
        return self.reader.position

    def stop(self) -> None:
        """Stop once the request in flight is answered (or times out), never in the middle
        of it: the receiver may have taken the events, and the position must say so, or the
        next process would send them again."""
        self.stopping.set()
        self.wake.set()

    def jump(self, position: Position) -> None:
        """Go on at ``position`` (what lies before it was dropped), saved at once."""
        self._jumps += 1
        self.reader.close()
        self.reader = JournalReader(self.journal, position)
        self.journal.save_cursor(self.cursor, position)
        self.wake.set()

    async def run(self) -> None:
        context = ssl.create_default_context()  # The system's roots, as Go's client uses.
        try:
            async with httpx.AsyncClient(
                verify=context, follow_redirects=True, headers={"User-Agent": USER_AGENT}
            ) as client:
                while not self.stopping.is_set():
                    try:
                        await self._step(client)
                    except _GivenUpError:
                        continue
        finally:
            self.close()

    def close(self) -> None:
        self.reader.close()
        if self.cursor >= 0:
            os.close(self.cursor)
            self.cursor = -1

    async def _step(self, client: httpx.AsyncClient) -> None:
        jumps = self._jumps
        entries = self.reader.read(self.endpoint.batch)
        if not entries:
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), POLL_SECONDS)
            return
        events: list[Event] = []
        for entry in entries:
            if ignored_by(entry.body, self.key):
                continue
            try:
                event = decode(entry.body)
            except RecordError as error:
                log.error("notifications: skipped an unreadable record: %s", error)
                continue
            events.append(event)
        if events:
            await self._deliver(client, envelope(events), len(events), jumps)
        if jumps != self._jumps:
            return  # Dropped by the cap while in hand; the position is set already.
        after = entries[-1].after
        self.reader.position = after
        self.journal.save_cursor(self.cursor, after)
        self.on_saved()

    async def _pause(self, seconds: float, jumps: int) -> None:
        """Wait between tries; given up early when the sender stops or jumps."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            if self.stopping.is_set() or jumps != self._jumps:
                raise _GivenUpError
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), left)

    async def _deliver(
        self, client: httpx.AsyncClient, body: bytes, count: int, jumps: int
    ) -> None:
        """POST until accepted; registry:2's breaker between tries."""
        endpoint = self.endpoint
        while True:
            if self.failures >= endpoint.threshold:
                await self._pause(endpoint.backoff, jumps)
            elif self.stopping.is_set() or jumps != self._jumps:
                raise _GivenUpError
            try:
                async with asyncio.timeout(endpoint.timeout):
                    response = await client.post(
                        endpoint.url,
                        content=body,
                        headers=[("Content-Type", EVENTS_MEDIA_TYPE), *self.headers],
                    )
                if 200 <= response.status_code < 400:
                    if self.failures:
                        log.info("notifications: endpoint %s accepts events again", endpoint.name)
                    self.failures = 0
                    self.delivered += count
                    return
                problem = f"response status {response.status_code} unaccepted"
            except (httpx.HTTPError, TimeoutError, OSError) as error:
                problem = f"error posting: {error or type(error).__name__}"
            self.failures += 1
            if self.failures == 1 or self.failures == endpoint.threshold:
                log.warning(
                    "notifications: endpoint %s (%s): %s; retrying%s",
                    endpoint.name,
                    endpoint.url,
                    problem,
                    ", backing off" if self.failures >= endpoint.threshold else "",
                )
