"""Hypercorn's HTTP/1.1 and HTTP/2 protocols, adapted to serve a registry as registry:2 does.

Each adaptation is a subclass of one of Hypercorn 0.18's classes, installed in
each worker (after the fork) by replacing the module-level name Hypercorn
builds it by; each says which Hypercorn behaviour it changes and why, and the
tests in tests/api/test_http_layer.py fail if one is taken away. The size of
socket reads is a constant replaced the same way; it changes only what a push
costs, which bench/compare.py measures.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

#: Bytes asked of a connection's socket per read (Hypercorn: 64 KiB). server.py's
#: MAX_APP_QUEUE_SIZE is counted in these.
SOCKET_READ = 256 * 1024


def _serve_http2_like_registry2() -> None:
    """Two changes to Hypercorn's HTTP/2: answered streams keep their connection, and no tunnels.

    Hypercorn 0.18 raises KeyError, and closes the connection with every
    request on it, when DATA arrives for a stream whose response has gone out
    (pgjones/hypercorn#329): a ``POST /blobs/uploads/`` is answered before the
    client's closing (even empty) DATA frame arrives. The data is acknowledged,
    so the connection's flow-control window stays open, and dropped.

    Hypercorn also announces and accepts CONNECT (RFC 8441 WebSockets), and
    hands such a stream to the app as a WebSocket, which the registry does not
    serve (a 500 and a traceback). Here CONNECT is not announced, and answered
    like any method the API has no route for: 405 UNSUPPORTED, as registry:2.
    """
    import h2.events
    import h2.settings
    import hypercorn.protocol
    from hypercorn.protocol.h2 import H2Protocol

    from .errors import ErrorCode, RegistryError
    from .middleware import API_VERSION_HEADER

    class RegistryH2Protocol(H2Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Set before the connection's first SETTINGS frame goes out (in initiate).
            self.connection.local_settings = h2.settings.Settings(
                client=False,
                initial_values={
                    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: (
                        self.config.h2_max_concurrent_streams
                    ),
                    h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: (
                        self.config.h2_max_header_list_size
                    ),
                },
            )

        async def _handle_events(self, events: list[h2.events.Event]) -> None:
            for event in events:
                # One at a time: a stream may be answered while earlier events are handled.
                if (
                    isinstance(event, h2.events.DataReceived)
                    and event.stream_id not in self.streams
                ):
                    self.connection.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                    continue
                if isinstance(event, h2.events.RequestReceived) and (
                    (b":method", b"CONNECT") in (event.headers or [])
                ):
                    self._refuse_connect(event.stream_id)
                    continue
                await super()._handle_events([event])
            await self._flush()

        def _refuse_connect(self, stream_id: int) -> None:
            """405 without a stream of Hypercorn's: the data that follows is dropped above."""
            error = RegistryError(ErrorCode.UNSUPPORTED, "method CONNECT not allowed here")
            body = error.body()
            headers = [
                (b":status", b"405"),
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                API_VERSION_HEADER,
                *self.config.response_headers("h2"),
            ]
            self.connection.send_headers(stream_id, headers)
            self.connection.send_data(stream_id, body, end_stream=True)

    # ProtocolWrapper makes its H2Protocol by this module-level name.
    if vars(hypercorn.protocol)["H2Protocol"] is H2Protocol:
        setattr(hypercorn.protocol, "H2Protocol", RegistryH2Protocol)  # noqa: B010


#: The standard reason phrase of every status code Python knows.
REASON_PHRASES = {int(status): status.phrase.encode("ascii") for status in HTTPStatus}

#: What Hypercorn's own refusals of a request it cannot parse say (h11's status hints).
PROTOCOL_ERRORS = {
    400: "malformed HTTP request",
    431: "request header fields too large",
    501: "transfer coding not supported (only chunked is)",
}


def _answer_http1_like_registry2() -> None:
    """HTTP/1.1 as registry:2 speaks it: reason phrases, spec error bodies, no upgrades.

    Hypercorn's h11 protocol writes ``HTTP/1.1 200 `` (h11's empty default):
    legal, but registry:2 writes ``200 OK`` and tools and people reading traffic
    expect it. A request h11 cannot parse (a garbled request line, headers
    over MAX_HEADER_BYTES, an unknown transfer coding) is refused by Hypercorn
    before any app sees it, with an empty body: here it gets the same
    ``{"errors": [...]}`` body and API version header as every other error.
    Upgrades (WebSocket, h2c) are ignored, and a paused connection whose client
    went away is released: see below.
    """
    import h11
    import hypercorn.protocol
    from hypercorn.asyncio.worker_context import EventWrapper
    from hypercorn.events import Closed, Event, Updated
    from hypercorn.protocol.h11 import H11Protocol
    from hypercorn.typing import H11SendableEvent

    from .errors import ErrorCode, RegistryError
    from .middleware import API_VERSION_HEADER

    class ConnectionGoneError(Exception):
        """The client went away while its connection was paused (see ``can_read``)."""

    class ReadAgainOrGone(EventWrapper):
        """``can_read`` that also wakes, and ends the wait, when the connection closes.

        h11 pauses a connection after a request while more is buffered (the client
        pipelined the next request) or the client proposed an upgrade; Hypercorn
        reads on once the response is done. If the client goes away first (the
        response's write fails), nothing wakes it: the connection's task and
        buffers stay until shutdown. Measured: 2,000 clients that pipelined 5 GETs
        and left held 23 MiB until shutdown; with this (and the TCP server's
        change below), 6,000 such clients move the worker's memory by about 1 MiB.
        """

        def __init__(self) -> None:
            super().__init__()
            self.gone = False

        async def wait(self) -> None:
            await super().wait()
            if self.gone:
                raise ConnectionGoneError

        async def close(self) -> None:
            self.gone = True
            await self.set()

    class RegistryH11Protocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.readable = ReadAgainOrGone()
            self.can_read = self.readable

        async def handle(self, event: Event) -> None:
            await super().handle(event)
            if isinstance(event, Closed):
                await self.readable.close()

        async def _handle_events(self) -> None:
            try:
                await super()._handle_events()
            except ConnectionGoneError:
                # Closed while paused: nothing is left to read or answer.
                await self.send(Closed())

        async def _send_h11_event(self, event: H11SendableEvent) -> None:
            if isinstance(event, h11.Response | h11.InformationalResponse) and not event.reason:
                # Headers are passed as h11's own object, so they are not validated twice.
                event = type(event)(
                    headers=event.headers,
                    status_code=event.status_code,
                    http_version=event.http_version,
                    reason=REASON_PHRASES.get(event.status_code, b""),
                )
            await super()._send_h11_event(event)

        async def _maybe_recycle(self) -> None:
            # Hypercorn's, but a stopping worker keeps the connection too: the answer
            # just sent may have begun before the stop (so it did not say Connection:
            # close), and the client may be sending its next request already. That
            # request is answered (saying close); an unused connection is closed by
            # the idle timer a moment later (STOP_LINGER).
            await self._close_stream()
            if (
                self.connection.our_state is h11.DONE
                and self.connection.their_state is h11.DONE
            ):
                try:
                    self.connection.start_next_cycle()
                except h11.LocalProtocolError:
                    await self.send(Closed())
                else:
                    self.response = None
                    self.scope = None
                    await self.can_read.set()
                    await self.send(Updated(idle=True))
            else:
                await self.can_read.set()
                await self.send(Closed())

        # No protocol switches: Upgrade is ignored (RFC 9110 7.8) and the request
        # served as the HTTP/1.1 it also is, as registry:2 does (its http.h2c is off
        # by default). Hypercorn hands a WebSocket upgrade to the app, which has
        # none (a 500 and a traceback), and its h2c upgrade leaks the connection's
        # task, about 44 KiB, for every HEAD whose client goes away. HTTP/2 with
        # prior knowledge or over TLS is not an upgrade and is unaffected.
        async def _check_protocol(self, event: h11.Request) -> None:
            await super()._check_protocol(_without_upgrade(event))

        async def _create_stream(self, request: h11.Request) -> None:
            await super()._create_stream(_without_upgrade(request))

        async def _send_error_response(self, status_code: int) -> None:
            message = PROTOCOL_ERRORS.get(status_code, "malformed HTTP request")
            body = RegistryError(ErrorCode.UNSUPPORTED, message, status=status_code).body()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                (b"connection", b"close"),
                API_VERSION_HEADER,
                *self.config.response_headers("h11"),
            ]
            await self._send_h11_event(h11.Response(status_code=status_code, headers=headers))
            await self._send_h11_event(h11.Data(data=body))
            await self._send_h11_event(h11.EndOfMessage())

    def _without_upgrade(request: h11.Request) -> h11.Request:
        if not any(name == b"upgrade" for name, _ in request.headers):
            return request
        return h11.Request(
            method=request.method,
            target=request.target,
            headers=[(name, value) for name, value in request.headers if name != b"upgrade"],
            http_version=request.http_version,
        )

    # ProtocolWrapper makes its H11Protocol by this module-level name.
    if vars(hypercorn.protocol)["H11Protocol"] is H11Protocol:
        setattr(hypercorn.protocol, "H11Protocol", RegistryH11Protocol)  # noqa: B010


#: Seconds an idle connection stays open once its worker stops, for a request on its way.
STOP_LINGER = 1.0


def _release_connections_clients_closed() -> None:
    """Close a connection as soon as its client has, not when the idle timer next fires.

    Hypercorn 0.18 keeps the socket of a connection whose client closed it in
    CLOSE-WAIT until the keep-alive timer fires (the timer is a task of the
    connection's task group, which waits for it): every connection a client
    opens and closes holds a file descriptor for up to KEEP_ALIVE_TIMEOUT after
    the client left, so a client opening 200 connections a second would hold
    15,000. Once reading has ended (end of stream or a read error), the timer is
    stopped and not started again (a response finishing after its client left
    would restart it); requests in flight still end as before (the app is told
    the client disconnected).
    """
    import hypercorn.asyncio.run
    from hypercorn.asyncio.tcp_server import TCPServer
    from hypercorn.events import Event, Updated

    class RegistryTCPServer(TCPServer):
        reading_ended = False

        async def _read_data(self) -> None:
            await super()._read_data()
            self.reading_ended = True
            await self.idle_task.stop()

        async def protocol_send(self, event: Event) -> None:
            if isinstance(event, Updated) and event.idle and self.reading_ended:
                return  # A request that ends after its client left: nothing to keep alive.
            await super().protocol_send(event)

        async def _idle_timeout(self) -> None:
            # Hypercorn closes every idle connection the moment the worker stops (a
            # reload, a shutdown): a request the client is sending on it right then
            # is lost (reset, or closed without an answer). Here an idle connection
            # gets a moment more: a client using it sends its request, is answered
            # (with Connection: close) and sees the connection end after the answer.
            try:
                await asyncio.wait_for(
                    self.context.terminated.wait(), self.config.keep_alive_timeout
                )
                await asyncio.sleep(STOP_LINGER)
            except TimeoutError:
                pass
            await asyncio.shield(self._initiate_server_close())

    # worker_serve makes its TCPServer by this module-level name.
    if vars(hypercorn.asyncio.run)["TCPServer"] is TCPServer:
        setattr(hypercorn.asyncio.run, "TCPServer", RegistryTCPServer)  # noqa: B010


def _read_sockets_in_bigger_pieces() -> None:
    """Socket reads of up to :data:`SOCKET_READ` bytes, not Hypercorn's 64 KiB.

    Each read becomes one h11 event, one queued ASGI message and one piece of a
    body, all handled in Python: with 64 KiB, a 256 MiB monolithic push went
    through 4,096 of them. With 256 KiB such a push ran about 30 % faster and
    cost a fifth less CPU per MB (docs/performance.md, Blob uploads); 1 MiB was
    no better. A read returns what the socket holds, so small requests are read
    as before.
    """
    import hypercorn.asyncio.tcp_server

    hypercorn.asyncio.tcp_server.MAX_RECV = SOCKET_READ  # Read at each call.


def adapt_hypercorn() -> None:
    """Install our Hypercorn protocol classes, in each worker after the fork.

    Each installer replaces the class only where Hypercorn's own is still in
    place, so calling this again (several workers in one test process) is harmless.
    """
    _serve_http2_like_registry2()
    _answer_http1_like_registry2()
    _release_connections_clients_closed()
    _read_sockets_in_bigger_pieces()
