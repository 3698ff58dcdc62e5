"""``WS /v1/ws``: live channel events with gapless resume, typing, ping.

Each socket has one bounded outgoing queue drained by a writer task. A subscriber whose
queue overflows is closed with 1013 (try again later) and resumes with ``since_seq``.
Bad frames get an error frame and the socket stays open; other sockets never notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from typing import Any

import orjson
import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from adapters.ids import utcnow
from api.limits import retry_after
from api.observability import SLOW_CLOSES, SOCKETS, SUBSCRIPTIONS
from api.plumbing import engine
from api.schemas import ID_PATTERN
from commands.auth import Principal, Unauthenticated
from domain.events import stream_name
from streams.fanout import REVOKING, Subscription, event_frame

log = structlog.get_logger("caas.ws")
TRY_AGAIN_LATER = 1013
POLICY_VIOLATION = 1008
TOO_BIG = 1009
HISTORY_PAGE = 500
MAX_SEQ = 2**63 - 1  # seqs are 64-bit signed integers in every store


class Session:
    """One connected socket of one user."""

    def __init__(self, ws: WebSocket, who: Principal) -> None:
        self.ws = ws
        self.who = who
        self.node = engine(ws)  # type: ignore[arg-type]
        settings = self.node.settings
        self.queue: asyncio.Queue[str] = asyncio.Queue(settings.ws_queue_frames)
        self.subs: dict[str, Subscription] = {}
        self.closing: int | None = None
        self.closed = asyncio.Event()
        self.watching = 0
        self.conn_id = uuid.uuid4().hex
        self.frames = self.node.limits.ws_frames.bucket()  # this socket's frame rate

    # outgoing ------------------------------------------------------------------------------
    def enqueue(self, frame: str) -> bool:
        if self.closing is not None:
            return True
        try:
            self.queue.put_nowait(frame)
            return True
        except asyncio.QueueFull:
            return False

    def send_json(self, data: dict[str, Any]) -> None:
        if not self.enqueue(orjson.dumps(data).decode()):
            self.close(TRY_AGAIN_LATER)

    def error(self, code: str, message: str, **extra: Any) -> None:
        self.send_json({"type": "error", "code": code, "message": message, **extra})

    def close(self, code: int) -> None:
        if self.closing is None:
            if code == TRY_AGAIN_LATER:
                SLOW_CLOSES.inc()
            self.closing = code
            self.closed.set()

    async def writer(self) -> None:
        while True:
            frame = await self.queue.get()
            await self.ws.send_text(frame)

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
                self.error("payload_too_large", f"frames are at most {limit} bytes")
                self.close(TOO_BIG)
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
            self.send_json({"type": "pong"})
        elif kind == "subscribe":
            await self.subscribe(frame)
        elif kind == "unsubscribe":
            cid = self._channel_id(frame)
            if cid is not None:
                self.unsubscribe(cid)
                self.send_json({"type": "unsubscribed", "channel_id": cid})
        elif kind == "typing":
            cid = self._channel_id(frame)
            if cid is not None and await self._member(cid):
                self.node.presence.typing(self.who.tenant_id, cid, self.who.user_id)
        elif kind == "subscribe_presence":
            self.watch_presence(frame)
        else:
            self.error("invalid_request", f"unknown frame type {kind!r}")

    def watch_presence(self, frame: dict[str, Any]) -> None:
        """Presence frames for these users of the tenant: their status now, then changes."""
        user_ids = frame.get("user_ids")
        limit = self.node.settings.ws_max_presence_watch
        if (
            not isinstance(user_ids, list)
            or not all(isinstance(u, str) and re.fullmatch(ID_PATTERN, u) for u in user_ids)
            or len(user_ids) + self.watching > limit
        ):
            self.error("invalid_request", f"user_ids is a list of user ids; at most {limit} per socket")
            return
        self.watching += len(user_ids)
        self.node.presence.watch(self.who.tenant_id, list(dict.fromkeys(user_ids)), self.send_presence)

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
        state = await self.node.service.state(self.who.tenant_id, stream_name("channel", cid))
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
        if not await self._member(cid):
            return
        self.unsubscribe(cid)
        state = await self.node.service.state(self.who.tenant_id, stream_name("channel", cid))
        sub = Subscription(
            self.who.tenant_id,
            cid,
            self.who.user_id,
            send=self.enqueue,
            overflow=lambda: self.close(TRY_AGAIN_LATER),
            revoke=self._revoked,
            limit=self.node.settings.ws_queue_frames,
        )
        self.subs[cid] = sub
        self.node.hub.add(sub)
        SUBSCRIPTIONS.inc()
        self.send_json({"type": "subscribed", "channel_id": cid, "head_seq": state.version})
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
        last = since
        deadline = asyncio.get_running_loop().time() + self.node.settings.ws_history_wait_seconds
        while True:
            page = await self.node.log.read_stream(self.who.tenant_id, stream, last, HISTORY_PAGE)
            for event in page:
                if event.seq != last + 1:
                    break  # a hole in a lagging copy: read again from here
                if self.closing is not None:
                    return None
                await self.queue.put(event_frame(event))  # waits for the writer: memory stays bounded
                last = event.seq
                if event.seq > head and event.type in REVOKING and event.payload.get("user_id") == sub.user_id:
                    sub.revoke_at = event.seq  # removed meanwhile: go_live delivers nothing after it
                    return last
            target = max(head, sub.buffer[0][0] - 1 if sub.buffer else 0)
            if len(page) == HISTORY_PAGE:
                await asyncio.sleep(0)  # let the writer drain between pages
            elif last >= target and self.queue.qsize() > self.queue.maxsize // 2:
                await asyncio.sleep(0.01)  # let the writer drain before the live tail joins the queue
            elif last >= target:
                return last
            elif asyncio.get_running_loop().time() > deadline:
                return None
            else:
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
        self.node.presence.closed(self.conn_id)


def frame_bytes(text: str | None, data: bytes | None) -> int:
    """A client frame's size in bytes: UTF-8 for text (``isascii`` is constant time)."""
    if text is None:
        return len(data or b"")
    return len(text) if text.isascii() else len(text.encode())


async def websocket_endpoint(ws: WebSocket) -> None:
    await ws.accept()
    node = engine(ws)  # type: ignore[arg-type]
    try:
        who = await node.auth.authenticate(ws.query_params.get("token", ""), utcnow())
        if who.kind != "user":
            raise Unauthenticated("connect with a user token: /v1/ws?token=<jwt>")
    except Unauthenticated as exc:
        await ws.send_text(orjson.dumps({"type": "error", "code": "unauthenticated", "message": str(exc)}).decode())
        await ws.close(POLICY_VIOLATION)
        return
    key, cap = (who.tenant_id, who.user_id), node.settings.ws_max_sockets_per_user
    if node.sockets.get(key, 0) >= cap:
        message = f"at most {cap} open sockets per user; close one first"
        await ws.send_text(orjson.dumps({"type": "error", "code": "rate_limited", "message": message}).decode())
        await ws.close(POLICY_VIOLATION)
        return
    node.sockets[key] = node.sockets.get(key, 0) + 1
    try:
        await serve(ws, who)
    finally:
        if (left := node.sockets.pop(key) - 1) > 0:
            node.sockets[key] = left


async def serve(ws: WebSocket, who: Principal) -> None:
    node = engine(ws)  # type: ignore[arg-type]
    session = Session(ws, who)
    SOCKETS.inc()
    node.presence.opened(session.conn_id, who.tenant_id, who.user_id)
    tasks = [asyncio.create_task(session.writer()), asyncio.create_task(session.reader())]
    closer = asyncio.create_task(session.closed.wait())
    try:
        await asyncio.wait([*tasks, closer], return_when=asyncio.FIRST_COMPLETED)
    finally:
        SOCKETS.dec()
        session.detach()
        for task in [*tasks, closer]:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await task
        if ws.client_state == WebSocketState.CONNECTED and ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await ws.close(session.closing or 1000)
