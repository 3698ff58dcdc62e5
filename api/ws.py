"""``WS /v1/ws``: live channel events with gapless resume, typing, ping.

Each socket has one outgoing queue (its outbox), bounded in frames
and in bytes (``CAAS_WS_QUEUE_FRAMES``, ``CAAS_WS_MAX_BUFFERED_BYTES``), drained by a writer task
that runs while it holds frames (an idle socket has none). A live event (or typing)
frame is encoded once for every subscriber (``streams.fanout.Wire``); a socket whose outbox is
empty and whose transport takes it at once is written the shared bytes directly, without a
task switch; any other socket queues it, so order and back-pressure are the outbox's. A live subscriber
whose outbox overflows is closed with 1013 (try again later) and resumes with ``since_seq``;
a history replay waits for the socket to drain instead, so it is paced by the reader. Below
the outbox, uvicorn's websocket protocol stops writing while the transport's buffer is above
its high-water mark (64 KiB). A socket that drains nothing for ``CAAS_WS_STALL_SECONDS`` is
aborted (see ``api/socket_watch.py``). Bad frames get an error frame and the socket stays
open; other sockets never notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import sys
import uuid
from collections import deque
from typing import Any, Protocol

import orjson
import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from api.connections import GuardedWebSocketProtocol
from api.limits import retry_after
from api.observability import SLOW_CLOSES, SOCKETS, SUBSCRIPTIONS
from api.plumbing import engine
from api.tenant_metrics import TENANTS
from commands.auth import Principal, Unauthenticated
from commands.quotas import QuotaExceeded
from domain.base import ID_PATTERN
from domain.errors import PolicyDenied, UserIsErased
from domain.events import stream_name
from streams import frames
from streams.fanout import REVOKING, HistoryView, Subscription, Wire
from streams.frames import MAX_SEQ, POLICY_VIOLATION, TOO_BIG, TRY_AGAIN_LATER

log = structlog.get_logger("caas.ws")
CORK_FRAMES = 64  # shared frames a socket holds back for one write, at most (see Session.deliver)
HISTORY_PAGE = 500  # events per read of history, at most
FIRST_HISTORY_PAGE = 64  # the first read, before the size of the channel's frames is known
MIN_HISTORY_PAGE = 16


class Transport(Protocol):
    """What this module uses of the connection's asyncio (uvloop) transport."""

    def abort(self) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


def transport_of(ws: WebSocket) -> Transport | None:
    """The socket's transport, so that a peer that stopped reading can be aborted: ASGI has
    no abort. uvicorn's protocol owns the ``receive`` callable Starlette was given (nothing
    between them wraps ``receive`` of a websocket); ``None`` if that ever changes, and then
    stuck sockets are only closed, not reset."""
    protocol = getattr(ws._receive, "__self__", None)
    transport = getattr(protocol, "transport", None)
    if all(hasattr(transport, name) for name in ("abort", "get_write_buffer_size", "get_extra_info")):
        return transport
    return None


def raw_socket(ws: WebSocket) -> GuardedWebSocketProtocol | None:
    """The socket's uvicorn protocol, to write shared frames to (see :func:`transport_of`);
    ``None`` under another server, and then every frame goes through ``send_text``."""
    protocol = getattr(ws._receive, "__self__", None)
    return protocol if isinstance(protocol, GuardedWebSocketProtocol) else None


def buffered(transport: Transport | None) -> int:
    """Bytes the transport holds for the peer (what the kernel has not taken yet)."""
    if transport is None:
        return 0
    try:
        return transport.get_write_buffer_size()
    except Exception:  # a transport already closed
        return 0


def reset(transport: Transport) -> None:
    """Abort the connection with a TCP reset: the kernel drops what it still holds for the
    peer at once (a plain close would keep trying to deliver it to a peer that never reads)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def abort_if_unflushed(transport: Transport) -> None:
    if buffered(transport):
        reset(transport)


def size_of(frame: str | Wire) -> int:
    return frame.size if isinstance(frame, Wire) else sys.getsizeof(frame)


class Outbox:
    """Frames waiting for the socket's writer, bounded in frames and in bytes.

    Bytes are the memory of the frames' strings (``sys.getsizeof``: constant time, and what
    holding them costs); a live frame is shared by every subscriber it was offered to, so the
    count errs on the safe side. The accounting is an add and a subtract per frame. A frame is
    a control frame's text, or an event's :class:`Wire` (its bytes, shared)."""

    __slots__ = ("_drained", "_low", "_waiting", "budget", "bytes", "frames", "max_frames")

    def __init__(self, max_frames: int, budget: int) -> None:
        self.frames: deque[str | Wire] = deque()
        self.bytes = 0
        self.max_frames = max_frames
        self.budget = budget
        self._drained: asyncio.Future[None] | None = None  # a replay waits for the writer to drain
        self._waiting = False
        self._low = (0, 0)  # what the replay waits for: at most these bytes and frames

    def offer(self, frame: str | Wire) -> bool:
        """Queue ``frame``; ``False`` if it does not fit."""
        size = size_of(frame)
        if self.frames and (len(self.frames) >= self.max_frames or self.bytes + size > self.budget):
            return False
        self.frames.append(frame)
        self.bytes += size
        return True

    def take(self) -> str | Wire:
        """The next frame (the caller checked there is one)."""
        frame = self.frames.popleft()
        self.bytes -= size_of(frame)
        if self._waiting and self.bytes <= self._low[0] and len(self.frames) <= self._low[1]:
            self._waiting = False
            if self._drained is not None and not self._drained.done():
                self._drained.set_result(None)
        return frame

    async def room_for(self, size: int, frames: int) -> None:
        """Wait until ``size`` bytes in ``frames`` frames more fit, and at least half the budget
        is free (so the writer wakes a waiting replay once per half budget, not per frame)."""
        self._low = (
            max(0, min(self.budget // 2, self.budget - size)),
            max(0, min(self.max_frames // 2, self.max_frames - frames)),
        )
        while self.bytes > self._low[0] or len(self.frames) > self._low[1]:
            self._waiting = True
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        self._drained = None

    def clear(self) -> None:
        self.frames.clear()
        self.bytes = 0


class Session:
    """One connected socket of one user."""

    def __init__(self, ws: WebSocket, who: Principal, token: str) -> None:
        self.ws = ws
        self.who = who
        self.token = token
        self.node = engine(ws)
        settings = self.node.settings
        self.outbox = Outbox(settings.ws_queue_frames, settings.ws_max_buffered_bytes)
        self.transport = transport_of(ws)
        self.raw = raw_socket(ws)  # where shared frames are written directly
        self.deflate = self.raw is not None and self.raw.deflates()  # which of a Wire's frames it takes
        self.compact = ws.query_params.get("frames") == "compact"  # frames.CompactEvent, not EventFrame
        self.busy = False  # the writer holds a frame it has taken from the outbox
        self.writing: asyncio.Task[None] | None = None  # the writer, while the outbox holds frames
        self.corked: list[bytes] = []  # shared frames of this batch of events, written by flush()
        self.tally = self.node.meter.tally(who.tenant_id)  # held while the socket is open (metering)
        self.counted = TENANTS.of(who.tenant_id)  # the tenant's counters (/metrics)
        self.until = self.node.auth.accepted_until(token)  # when HTTP stops accepting the token
        self.subs: dict[str, Subscription] = {}
        self.closing: int | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # done: close
        self.farewell: str | None = None  # the error frame sent just before the close
        self.aborted = False
        self.watching = 0
        self.conn_id = uuid.uuid4().hex
        self.frames = self.node.limits.ws_frames.bucket()  # this socket's frame rate
        self.sent = 0  # frames written so far: the stall check's sign of progress
        self._progress: tuple[int, int] = (0, 0)  # (sent, backlog) at the last stall check
        self._progress_at = asyncio.get_running_loop().time()

    # outgoing ------------------------------------------------------------------------------
    def enqueue(self, frame: str) -> bool:
        if self.closing is not None:
            return True
        self.flush()  # what was delivered before it goes first
        return self.queue(frame)

    def queue(self, frame: str | Wire) -> bool:
        """Put ``frame`` in the outbox, and start the writer if it is not running."""
        if not self.outbox.offer(frame):
            return False
        if self.writing is None:
            self.writing = task = asyncio.create_task(self.writer())
            task.add_done_callback(self._written)
        return True

    async def put(self, frame: Wire) -> None:
        """Queue ``frame`` once there is room: how a replay is paced by what the socket drains."""
        while not self.queue(frame):
            await self.outbox.room_for(0, 0)

    def deliver(self, frame: Wire) -> bool:
        """Send a shared frame (a live event, a typing frame); ``False`` if the outbox is full.

        If nothing is queued before it and the transport takes it, its bytes are held for
        :meth:`flush`, which the hub calls after each batch of events: one write per socket and
        batch, not one per frame. Otherwise it joins the outbox, behind what is held."""
        if self.closing is not None:
            return True
        raw = self.raw
        if raw is not None and not self.busy and not self.outbox.frames and raw.ready():
            self.corked.append(frame.deflated() if self.deflate else frame.plain())
            self.sent += 1
            if frame.event:
                self.counted.deliveries += 1
                if self.tally is not None:
                    self.tally.deliveries += 1  # a delivery is an event frame written to the socket
            if len(self.corked) >= CORK_FRAMES:
                self.flush()
            return True
        self.flush()
        return self.queue(frame)

    def flush(self) -> None:
        """Write the frames :meth:`deliver` held back, in one write."""
        corked = self.corked
        if corked:
            self.corked = []
            if self.raw is not None and self.raw.open():
                self.raw.write_frame(corked[0] if len(corked) == 1 else b"".join(corked))

    def send(self, frame: str) -> None:
        """Queue an encoded control frame (``frames.PONG_WIRE``, ``frames.subscribed_wire``…)."""
        if not self.enqueue(frame):
            self.close(TRY_AGAIN_LATER)

    def error(
        self,
        code: frames.ErrorCode,
        message: str,
        *,
        channel_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        extra: dict[str, Any] = {"channel_id": channel_id, "retry_after": retry_after}
        frame = frames.Error(code=code, message=message, **{k: v for k, v in extra.items() if v is not None})
        if not self.enqueue(frame.wire()):
            self.close(TRY_AGAIN_LATER)

    def policy_denied(self, cid: str | None, message: str, details: dict[str, Any]) -> None:
        """A tenant policy refuses the channel ``cid`` (``None``: the presence watches) to this
        socket (docs/abac.md): an open subscription of it (or the presence watches) ends, and the
        error frame names the channel (if any) and the policy."""
        if cid is None:
            self.unwatch_presence()
        else:
            self.unsubscribe(cid)
        extra: dict[str, Any] = {"channel_id": cid} if cid is not None else {}
        frame = frames.Error(code="policy_denied", message=message, policy_id=details.get("policy_id"), **extra)
        if not self.enqueue(frame.wire()):
            self.close(TRY_AGAIN_LATER)

    async def allowed(self, cid: str | None, action: str) -> bool:
        """Whether the tenant's policies let this socket's user do ``action`` in channel ``cid``
        (``None``: no channel, e.g. ``read_presence``); else the socket is told, with a
        ``policy_denied`` error frame."""
        policies = self.node.policies
        if policies is None:
            return True
        try:
            await policies.check(self.who.tenant_id, "user", self.who.user_id, action, channel_id=cid)
        except PolicyDenied as exc:
            self.policy_denied(cid, exc.message, exc.details)
            return False
        return True

    def close(self, code: int) -> None:
        if self.closing is None:
            if code == TRY_AGAIN_LATER:
                SLOW_CLOSES.inc()
            self.closing = code
            if not self.closed.done():
                self.closed.set_result(None)

    def fail(self, code: int, error: frames.ErrorCode, message: str) -> None:
        """Close with ``code`` after one last error frame, sent ahead of anything still queued."""
        if self.closing is None:
            self.farewell = frames.Error(code=error, message=message).wire()
            self.close(code)

    def refuse(self, message: str) -> None:
        """The socket's credential is no longer accepted (expired, or its key rotated out)."""
        self.fail(POLICY_VIOLATION, "unauthenticated", message)

    def stalled(self, now: float, limit: float) -> bool:
        """Whether the socket has had frames to send and drained nothing for ``limit`` seconds
        (called by the node's sweep, about once a second)."""
        backlog = self.outbox.bytes + buffered(self.transport)
        sent, before = self._progress
        if not backlog or self.sent != sent or backlog < before:
            self._progress_at = now
        self._progress = (self.sent, backlog)
        return now - self._progress_at >= limit

    def abort(self) -> None:
        """Reset the connection of a peer that stopped reading, without waiting to flush."""
        if not self.aborted:
            self.aborted = True
            self.close(TRY_AGAIN_LATER)
            self.outbox.clear()
            if self.transport is not None:
                reset(self.transport)

    async def goodbye(self, stall_seconds: float) -> None:
        """The closing handshake, bounded: a peer that does not read gets a reset instead."""
        self.outbox.clear()  # never to be sent: free them now
        self.corked = []
        ws = self.ws
        if self.aborted or not (
            ws.client_state == WebSocketState.CONNECTED and ws.application_state == WebSocketState.CONNECTED
        ):
            return
        try:
            async with asyncio.timeout(stall_seconds):
                if self.farewell is not None:
                    await ws.send_text(self.farewell)
                await ws.close(self.closing or 1000)
        except TimeoutError:
            self.abort()
            return
        except Exception:  # the peer went away meanwhile
            return
        if self.transport is not None and buffered(self.transport):
            # uvicorn waits for the peer's close frame, then closes the transport, which flushes
            # first: a peer that never reads would hold the buffer forever
            asyncio.get_running_loop().call_later(stall_seconds, abort_if_unflushed, self.transport)

    async def writer(self) -> None:
        """Send what the outbox holds, then end (:meth:`queue` starts it again)."""
        outbox, send, raw, tally = self.outbox, self.ws.send_text, self.raw, self.tally
        try:
            while outbox.frames:
                frame = outbox.take()
                self.busy = True
                if isinstance(frame, str):
                    await send(frame)
                elif raw is None:
                    await send(frame.text)
                else:
                    await raw.drained()
                    if not raw.open():
                        self.close(1000)  # lost meanwhile: the session ends
                        return
                    raw.write_frame(frame.deflated() if self.deflate else frame.plain())
                self.busy = False
                self.sent += 1
                if isinstance(frame, Wire) and frame.event:
                    self.counted.deliveries += 1
                    if tally is not None:
                        tally.deliveries += 1  # a delivery is an event frame written to the socket
        finally:  # at once, not in a callback: a frame queued right after starts a new writer
            self.writing = None
            self.busy = False

    def _written(self, task: asyncio.Task[None]) -> None:
        """A writer that failed (the peer went away) ends the session."""
        if not task.cancelled() and task.exception() is not None:
            self.close(1000)

    # incoming ------------------------------------------------------------------------------
    async def reader(self) -> None:
        limit = self.node.settings.ws_max_frame_bytes
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                self.close(1000)
                return
            self.node.presence.active(self.conn_id)
            text = message.get("text")
            if frame_bytes(text, message.get("bytes")) > limit:
                self.fail(TOO_BIG, "payload_too_large", f"frames are at most {limit} bytes")
                return
            wait = self.frames.take(self.node.limits.ws_frames.clock())
            if wait:
                self.error("rate_limited", f"too many frames; retry after {retry_after(wait)} s", retry_after=wait)
                continue
            if text is None:
                self.error("invalid_request", "send JSON text frames, not binary")
                continue
            try:
                frame = orjson.loads(text)
            except orjson.JSONDecodeError:
                self.error("invalid_request", "the frame is not valid JSON")
                continue
            if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
                self.error("invalid_request", 'a frame is a JSON object with a "type"')
                continue
            await self.dispatch(frame)

    async def dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "ping":
            self.send(frames.PONG_WIRE)
        elif kind == "subscribe":
            await self.subscribe(frame)
        elif kind == "unsubscribe":
            cid = self._channel_id(frame)
            if cid is not None:
                self.unsubscribe(cid)
                self.send(frames.unsubscribed_wire(cid))
        elif kind == "typing":
            cid = self._channel_id(frame)
            if cid is not None and await self._member(cid) and await self.allowed(cid, "typing"):
                self.node.presence.typing(self.who.tenant_id, cid, self.who.user_id)
        elif kind == "subscribe_presence":
            await self.watch_presence(frame)
        else:
            self.error("invalid_request", f"unknown frame type {kind!r}")

    async def watch_presence(self, frame: dict[str, Any]) -> None:
        """Presence frames for these users of the tenant: their status now, then changes
        (judged by the tenant's policies as ``read_presence``, like ``GET /v1/presence``)."""
        user_ids = frame.get("user_ids")
        limit = self.node.settings.ws_max_presence_watch
        if (
            not isinstance(user_ids, list)
            or not all(isinstance(u, str) and re.fullmatch(ID_PATTERN, u) for u in user_ids)
            or len(user_ids) + self.watching > limit
        ):
            self.error("invalid_request", f"user_ids is a list of user ids; at most {limit} per socket")
            return
        if not await self.allowed(None, "read_presence"):
            return
        self.watching += len(user_ids)
        self.node.presence.watch(self.who.tenant_id, list(dict.fromkeys(user_ids)), self.send_presence)

    def unwatch_presence(self) -> None:
        """End this socket's presence watches (its device notices stay)."""
        self.node.presence.unwatch(self.send_presence)
        self.watching = 0

    def send_presence(self, frame: str) -> bool:
        if not self.enqueue(frame):
            self.close(TRY_AGAIN_LATER)
            return False
        return True

    def _channel_id(self, frame: dict[str, Any]) -> str | None:
        cid = frame.get("channel_id")
        if not isinstance(cid, str) or not re.fullmatch(ID_PATTERN, cid):
            self.error("invalid_request", "channel_id must be a channel id string")
            return None
        return cid

    async def _member(self, cid: str) -> bool:
        state = await self.node.service.channel(self.who.tenant_id, cid)
        if not state.exists:
            self.error("not_found", f"no channel {cid!r}", channel_id=cid)
            return False
        if self.who.user_id not in state.members:
            self.error("forbidden", f"you are not a member of channel {cid!r}", channel_id=cid)
            return False
        return True

    async def subscribe(self, frame: dict[str, Any]) -> None:
        cid = self._channel_id(frame)
        if cid is None:
            return
        since = frame.get("since_seq")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool) or since < 0):
            self.error("invalid_request", "since_seq must be a non-negative integer", channel_id=cid)
            return
        if since is not None and since > MAX_SEQ:
            self.error("invalid_request", f"since_seq is out of range: at most {MAX_SEQ} (2^63-1)", channel_id=cid)
            return
        if cid not in self.subs and len(self.subs) >= self.node.settings.ws_max_subscriptions:
            self.error("invalid_request", "too many subscriptions on this socket", channel_id=cid)
            return
        if not await self._member(cid) or not await self.allowed(cid, "subscribe"):
            return
        if since is not None and not await self.allowed(cid, "read_messages"):
            return  # a replay of history is a read of the channel's messages, as over HTTP
        self.unsubscribe(cid)
        state = await self.node.service.channel(self.who.tenant_id, cid)
        sub = Subscription(
            self.who.tenant_id,
            cid,
            self.who.user_id,
            send=self.deliver,
            flush=self.flush,
            overflow=lambda: self.close(TRY_AGAIN_LATER),
            revoke=self._revoked,
            limit=self.node.settings.ws_queue_frames,
            budget=self.node.settings.ws_max_buffered_bytes,
            compact=self.compact,
        )
        self.subs[cid] = sub
        self.node.hub.add(sub)
        SUBSCRIPTIONS.inc()
        self.send(frames.subscribed_wire(cid, state.version))
        if since is None:
            sub.go_live(0)
            return
        last = await self._replay(sub, since, head=state.version)
        if last is None or not sub.go_live(last):
            self.close(TRY_AGAIN_LATER)

    async def _replay(self, sub: Subscription, since: int, head: int) -> int | None:
        """Send the channel's events after ``since`` until the live buffer takes over.

        The history must reach both the head seen at subscribe time and the seq just before
        the first buffered live event; where the log's readable copy lags (the event index
        of the distributed backend) this waits for it, bounded. ``None`` means give up.
        """
        stream = stream_name("channel", sub.channel_id)
        wait = self.node.settings.ws_history_wait_seconds
        # what a replay shows
        cutoff = await self.node.queries.horizon.cutoff(self.who.tenant_id, sub.channel_id)  # docs/retention.md
        view = HistoryView(
            self.node.service, self.node.log, self.who.tenant_id, stream, wait, compact=self.compact, cutoff=cutoff
        )
        last = since
        deadline = asyncio.get_running_loop().time() + self.node.settings.ws_history_wait_seconds
        limit = FIRST_HISTORY_PAGE
        while True:
            page = await self.node.log.read_stream(self.who.tenant_id, stream, last, limit)
            await view.prepare(page)
            sent = size = 0
            for event in page:
                if event.seq != last + 1:
                    break  # a hole in a lagging copy: read again from here
                if self.closing is not None:
                    return None
                frame = Wire(view.frame(event), event=True)
                await self.put(frame)  # waits for the socket to drain: memory stays bounded
                sent, size, last = sent + 1, size + frame.size, event.seq
                if event.seq > head and event.type in REVOKING and event.payload.get("user_id") == sub.user_id:
                    sub.revoke_at = event.seq  # removed meanwhile: go_live delivers nothing after it
                    return last
            full = len(page) == limit and sent == len(page)
            if sent:  # a page costs about what its frames do: read about one byte budget at a time
                limit = max(MIN_HISTORY_PAGE, min(HISTORY_PAGE, self.outbox.budget * sent // size))
            target = max(head, sub.buffer[0][0] - 1 if sub.buffer else 0)
            if full:
                continue
            if last >= target:
                # the live events buffered meanwhile join the outbox: wait until they fit
                await self.outbox.room_for(sub.buffered, len(sub.buffer))
                return last
            if asyncio.get_running_loop().time() > deadline:
                return None
            await asyncio.sleep(0.01)

    def _revoked(self, sub: Subscription, reason: str) -> None:
        self.unsubscribe(sub.channel_id)
        self.error("forbidden", reason, channel_id=sub.channel_id)

    def unsubscribe(self, cid: str) -> None:
        sub = self.subs.pop(cid, None)
        if sub is not None:
            self.node.hub.remove(sub)
            SUBSCRIPTIONS.dec()

    def detach(self) -> None:
        for cid in list(self.subs):
            self.unsubscribe(cid)
        self.node.presence.unwatch(self.send_presence)
        self.node.notices.remove(self.who.tenant_id, self.who.user_id, self.send_presence)
        self.node.presence.closed(self.conn_id)


def frame_bytes(text: str | None, data: bytes | None) -> int:
    """A client frame's size in bytes: UTF-8 for text (``isascii`` is constant time)."""
    if text is None:
        return len(data or b"")
    return len(text) if text.isascii() else len(text.encode())


async def websocket_endpoint(ws: WebSocket) -> None:
    await ws.accept()
    node = engine(ws)
    token = ws.query_params.get("token", "")
    kind = ws.query_params.get("frames", "full")
    if kind not in frames.FRAME_FORMATS:
        message = f"frames is one of {', '.join(frames.FRAME_FORMATS)}"
        await ws.send_text(frames.Error(code="invalid_request", message=message).wire())
        await ws.close(POLICY_VIOLATION)
        return
    try:
        who = await node.auth.authenticate(token, node.clock())
        if who.kind != "user":
            raise Unauthenticated("connect with a user token: /v1/ws?token=<jwt>")
    except (Unauthenticated, UserIsErased) as exc:  # an erased user's token: refused like an expired one
        await ws.send_text(frames.Error(code="unauthenticated", message=str(exc)).wire())
        await ws.close(POLICY_VIOLATION)
        return
    key, cap = (who.tenant_id, who.user_id), node.settings.ws_max_sockets_per_user
    if node.sockets.get(key, 0) >= cap:
        message = f"at most {cap} open sockets per user; close one first"
        await ws.send_text(frames.Error(code="rate_limited", message=message).wire())
        await ws.close(POLICY_VIOLATION)
        return
    try:  # a plan's cap on concurrent sockets or on monthly active users (docs/quotas.md)
        await node.quotas.admit_socket(who.tenant_id, who.user_id, lambda: node.presence.open_sockets(who.tenant_id))
    except QuotaExceeded as exc:
        details = frames.QuotaDetails(meter=exc.meter, limit=exc.limit, used=exc.used, resets_at=exc.resets_at)
        await ws.send_text(frames.Error(code="quota_exceeded", message=str(exc), details=details).wire())
        await ws.close(POLICY_VIOLATION)
        return
    node.sockets[key] = node.sockets.get(key, 0) + 1
    try:
        await serve(ws, who, token)
    finally:
        if (left := node.sockets.pop(key) - 1) > 0:
            node.sockets[key] = left


async def serve(ws: WebSocket, who: Principal, token: str) -> None:
    node = engine(ws)
    session = Session(ws, who, token)
    SOCKETS.inc()
    node.presence.opened(session.conn_id, who.tenant_id, who.user_id)
    node.notices.add(who.tenant_id, who.user_id, session.send_presence)  # device notices (docs/e2e.md)
    node.meter.opened(who.tenant_id, who.user_id)
    node.socket_watch.add(session)
    reader = asyncio.create_task(session.reader())
    try:
        await asyncio.wait([reader, session.closed], return_when=asyncio.FIRST_COMPLETED)
    finally:
        SOCKETS.dec()
        node.meter.closed(who.tenant_id, who.user_id)
        node.socket_watch.remove(session)
        session.detach()
        session.closed.cancel()
        writing = session.writing
        tasks = [reader] if writing is None else [reader, writing]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await task
        await session.goodbye(node.settings.ws_stall_seconds)
