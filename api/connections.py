"""The HTTP edge of ``caas serve``: read timeouts and a cap of open connections per client address.

uvicorn's httptools protocol never times out a request that is still arriving
(``timeout_keep_alive`` only runs between requests), so a client could hold any number of
connections open by sending half a request. These subclasses of uvicorn's protocols add:

- a deadline for a request's headers (from the connection's start, or from the first byte of a
  keep-alive connection's next request) and a later one for its whole body; a request that misses
  it has its connection closed. One timer per request, armed when it starts and cancelled when it
  has arrived: websockets and a request the application is still answering have none.
- a cap of open connections per client address (an IPv6 /64 counts as one address); a connection
  over it is closed before a byte is read. A websocket keeps its connection's slot until it closes.

The websocket protocol also negotiates permessage-deflate without context takeover in either
direction, and lets ``api/ws.py`` write frames built once for many sockets
(``streams.fanout.Wire``) straight to the transport: a frame deflated once with no context is
valid on every socket, and no socket holds a compressor or a decompressor between messages.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.permessage_deflate import PerMessageDeflate, ServerPerMessageDeflateFactory
from websockets.server import ServerProtocol

from api.observability import CONNECTIONS_REFUSED, REQUEST_TIMEOUTS
from api.settings import Settings
from streams.fanout import DEFLATE_BITS, DEFLATE_MEM_LEVEL


def address_key(client: tuple[str, int] | None) -> str:
    """What the per-address cap counts: an IPv4 address, or an IPv6 /64 (a subscriber's usual
    allocation, whose 2^64 addresses one host can use at will)."""
    if client is None:
        return ""  # a Unix socket: one local peer
    host = client[0]
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host)
    except ValueError:
        return host
    if address.ipv4_mapped is not None:  # an IPv4 client of a dual-stack listener
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


class ConnectionGuard:
    """Open connections per address, shared by every connection of one server."""

    def __init__(self, max_per_address: int, header_timeout: float, body_timeout: float) -> None:
        self.max_per_address = max_per_address  # 0: no cap
        self.header_timeout = header_timeout
        self.body_timeout = max(body_timeout, header_timeout)
        self.open: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        """Count a new connection; False if it takes its address over the cap (it is counted
        anyway: :meth:`release` runs for every connection when it closes)."""
        count = self.open.get(address, 0) + 1
        self.open[address] = count
        return not self.max_per_address or count <= self.max_per_address

    def release(self, address: str) -> None:
        count = self.open[address] - 1
        if count:
            self.open[address] = count
        else:
            del self.open[address]  # the map holds only addresses with open connections


class GuardedHttpProtocol(HttpToolsProtocol):
    guard: ClassVar[ConnectionGuard]

    # per-connection state (class defaults, so no __init__ runs per connection)
    _address = ""
    _timer: asyncio.TimerHandle | None = None  # the current request's read deadline
    _started = 0.0  # loop time the current request (or the connection) started
    _reading_body = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn narrows BaseTransport the same way
        super().connection_made(transport)
        self._address = address_key(self.client)
        if not self.guard.admit(self._address):
            CONNECTIONS_REFUSED.inc()
            transport.close()
            return
        self._arm(self.guard.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self._disarm()
            self.guard.release(self._address)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_body = False
        if self._timer is None:  # a keep-alive connection's next request (the first has its timer)
            self._arm(self.guard.header_timeout)

    def on_headers_complete(self) -> None:
        self._reading_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        # the websocket protocol takes the connection, and its slot (released when it closes)
        self._disarm()
        super().handle_websocket_upgrade()

    def _arm(self, delay: float) -> None:
        self._started = self.loop.time()
        self._timer = self.loop.call_later(delay, self._read_timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _read_timed_out(self) -> None:
        self._timer = None
        if self._reading_body:
            if self.flow.read_paused:  # the server holds the body back (pipelining): not the client's delay
                self._arm(self.guard.body_timeout)
                return
            left = self._started + self.guard.body_timeout - self.loop.time()
            if left > 0:
                self._timer = self.loop.call_later(left, self._read_timed_out)
                return
        REQUEST_TIMEOUTS.labels("body" if self._reading_body else "headers").inc()
        self.transport.close()  # the application, if it waits for the body, sees a disconnect


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.ws_per_message_deflate:
            # uvicorn's settings (12-bit windows, memLevel 5), with no context kept between messages
            deflate = ServerPerMessageDeflateFactory(
                server_no_context_takeover=True,
                client_no_context_takeover=True,
                server_max_window_bits=DEFLATE_BITS,
                client_max_window_bits=DEFLATE_BITS,
                compress_settings={"memLevel": DEFLATE_MEM_LEVEL},
            )
            self.conn = ServerProtocol(extensions=[deflate], max_size=self.config.ws_max_size, logger=self.conn.logger)

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept":
            # the handshake's request and response (their headers) are done with: memory per socket
            del self.request, self.response

    # frames built once for many sockets (api/ws.py) ---------------------------------------------
    paused = False  # the transport is above its high-water mark (``writable`` is clear)

    def pause_writing(self) -> None:
        self.paused = True
        super().pause_writing()

    def resume_writing(self) -> None:
        self.paused = False
        super().resume_writing()

    def deflates(self) -> bool:
        """Whether a frame deflated once with no context (``Wire.deflated``) is valid on this
        socket: it negotiated permessage-deflate, and a server window of at least 12 bits."""
        return any(
            isinstance(ext, PerMessageDeflate)
            and ext.local_no_context_takeover
            and ext.local_max_window_bits >= DEFLATE_BITS
            for ext in self.conn.extensions
        )

    def ready(self) -> bool:
        """Whether a frame written now goes out in order: the socket is open and its transport
        below the high-water mark (``send`` would not wait)."""
        return not self.paused and not self.close_sent and not self.disconnected and not self.transport.is_closing()

    def open(self) -> bool:
        """Whether frames may still be written (no close frame sent, the connection not lost)."""
        return not self.close_sent and not self.disconnected and not self.transport.is_closing()

    async def drained(self) -> None:
        """Wait until the transport is below its low-water mark (or the connection is lost)."""
        await self.writable.wait()

    def write_frame(self, frame: bytes) -> None:
        """Write one complete websocket frame (``Wire.plain`` or ``Wire.deflated``); the caller
        checked :meth:`ready`."""
        self.transport.write(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self.guard.release(address_key(self.client))


def guarded_protocols(settings: Settings) -> tuple[type[GuardedHttpProtocol], type[GuardedWebSocketProtocol]]:
    """uvicorn's ``http`` and ``ws`` protocol classes for one server, sharing one guard."""
    guard = ConnectionGuard(
        settings.http_max_connections_per_address,
        settings.http_header_timeout_seconds,
        settings.http_body_timeout_seconds,
    )
    http = type("GuardedHttp", (GuardedHttpProtocol,), {"guard": guard})
    ws = type("GuardedWebSocket", (GuardedWebSocketProtocol,), {"guard": guard})
    return http, ws
