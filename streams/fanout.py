"""Live fan-out of recorded events to websocket subscribers.

Each committed channel event is encoded once and offered to every subscription of its
channel as one :class:`Wire`: its JSON text and, built on first use, its websocket frame
bytes, so a socket that can take them at once is written those very bytes (no per-subscriber
JSON, framing or compression). A subscription that is still replaying history buffers live
events; the switch to live skips every seq already sent, so resume is gapless and exactly once.
"""

from __future__ import annotations

import asyncio
import struct
import sys
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from commands.ports import StreamReader
from commands.service import Commands
from domain.channel import MessageState
from domain.events import Event, StreamId
from projections.queries import Horizon

REVOKING = frozenset({"MemberRemoved", "MemberBanned"})
# Request metadata of whoever caused an event: their Idempotency-Key is in command_id, their
# X-Request-Id in correlation_id. Subscribers are other members; they are shown none of it.
WITHHELD: dict[str, Any] = {"command_id": None, "causation_id": None, "correlation_id": None}
TEXTS = frozenset({"MessagePosted", "MessageEdited"})
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)


# The permessage-deflate settings of ``caas serve`` (``api/connections.py``): a frame compressed
# once with a fresh 12-bit window is valid on every socket that negotiated server_no_context_takeover
# and a server window of at least 12 bits.
DEFLATE_BITS = 12
DEFLATE_MEM_LEVEL = 5
_SYNC_TAIL = b"\x00\x00\xff\xff"


def ws_frame(payload: bytes, *, compressed: bool = False) -> bytes:
    """One unmasked, unfragmented websocket text frame (RFC 6455 5.2) as a server sends it;
    ``compressed`` sets RSV1 (RFC 7692: the payload is deflated)."""
    first = 0xC1 if compressed else 0x81
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


class Wire:
    """One server frame, encoded once for every socket it goes to: its JSON ``text`` and,
    built on first use, its websocket frame as sent without compression (``plain``) and
    with permessage-deflate (``deflated``: compressed once, with no context, so the same
    bytes are valid on every socket that negotiated it; the plain frame where deflating
    does not make it smaller). ``size`` is what holding it costs (``sys.getsizeof`` of the
    text), what a socket's outbox counts."""

    __slots__ = ("_deflated", "_plain", "event", "size", "text")

    def __init__(self, text: str, *, event: bool = False) -> None:
        self.text = text
        self.event = event  # a channel event: a delivery, when written to a socket (metering)
        self.size = sys.getsizeof(text)
        self._plain: bytes | None = None
        self._deflated: bytes | None = None

    def plain(self) -> bytes:
        if self._plain is None:
            self._plain = ws_frame(self.text.encode())
        return self._plain

    def deflated(self) -> bytes:
        if self._deflated is None:
            data = self.text.encode()
            z = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -DEFLATE_BITS, DEFLATE_MEM_LEVEL)
            packed = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
            if packed.endswith(_SYNC_TAIL) and len(packed) - 4 < len(data):
                self._deflated = ws_frame(packed[:-4], compressed=True)
            else:
                self._deflated = self.plain()
        return self._deflated

    def frame(self, deflate: bool) -> bytes:
        return self.deflated() if deflate else self.plain()


def event_frame(event: Event, payload: dict[str, Any] | None = None) -> str:
    """The websocket frame for one channel event (docs/api.md ``{"type": "event", …}``).

    The envelope keeps every field, but :data:`WITHHELD` ones are ``null``: a subscriber is
    shown what happened, not another client's request. (``GET /v1/events``, for the tenant's
    own backend, and ``caas replay``, for the operator, show the envelope as recorded.)
    ``payload`` replaces the recorded payload (see :class:`HistoryView`).
    """
    envelope = event.model_dump()
    envelope.update(WITHHELD)
    if payload is not None:
        envelope["payload"] = payload
    return orjson.dumps(
        {
            "type": "event",
            "channel_id": event.stream_id,
            "seq": event.seq,
            "position": event.position,
            "event": envelope,
        }
    ).decode()


def compact_event_frame(event: Event, payload: dict[str, Any] | None = None) -> str:
    """The compact frame of one channel event (``frames.CompactEvent``, for sockets opened with
    ``?frames=compact``): the channel, seq, event type, time (ms since the epoch) and the
    payload without its ``null`` and empty fields; ``v`` only for a schema version above 1.
    What it leaves out, and where a client finds it, is in docs/websocket-protocol.md."""
    shown = event.payload if payload is None else payload
    frame: dict[str, Any] = {
        "type": "ev",
        "ch": event.stream[8:],
        "seq": event.seq,
        "ev": event.type,
        "at": epoch_ms(event.occurred_at),
        "d": {k: v for k, v in shown.items() if v is not None and v != [] and v != {}},
    }
    if event.schema_version != 1:
        frame["v"] = event.schema_version
    return orjson.dumps(frame).decode()


def epoch_ms(moment: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 UTC time as ``format_time`` writes it."""
    return (datetime.fromisoformat(moment) - EPOCH) // MILLISECOND


Edit = dict[str, Any]  # what a later edit shows in a replay: its "text" (and "e2e" envelope, if any)
EMPTY_EDIT: Edit = {"text": ""}


def _edit(payload: dict[str, Any]) -> Edit:
    """What of a ``MessageEdited`` payload replaces an earlier text in a replay."""
    edit: Edit = {"text": str(payload["text"])}
    if payload.get("e2e") is not None:
        edit["e2e"] = payload["e2e"]
    return edit


def without_text(payload: dict[str, Any], why: str) -> dict[str, Any]:
    """A message event's payload with its text, attachments, mentions and e2e envelope taken out, and why
    (``redacted``: ``deleted``, ``expired``)."""
    shown = {**payload, "text": "", "redacted": why}
    if "attachments" in shown:
        shown["attachments"] = []
    if shown.get("mentions"):
        shown["mentions"] = []
    if shown.get("e2e") is not None:
        shown["e2e"] = None
    return shown


async def expire(events: Sequence[Event], tenant_id: str, horizon: Horizon) -> list[Event]:
    """``events`` of one tenant with the message events its channels' retention hides shown
    without their text (:func:`without_text`, ``"redacted": "expired"``): ``GET /v1/events``."""
    cutoffs: dict[str, str | None] = {}
    shown = []
    for event in events:
        if event.type in TEXTS and event.stream_type == "channel":
            cid = event.stream_id
            if cid not in cutoffs:
                cutoffs[cid] = await horizon.cutoff(tenant_id, cid)
            cutoff = cutoffs[cid]
            if cutoff is not None and event.occurred_at < cutoff:
                event = event.model_copy(update={"payload": without_text(event.payload, "expired")})
        shown.append(event)
    return shown


class HistoryView:
    """How a channel's history is shown to a subscriber who replays it (``since_seq``).

    The log keeps every event as recorded; a replay shows its messages as the channel's
    history (``GET …/messages``) shows them now, judged by the channel's current state:

    - a message deleted since: its ``MessagePosted`` and ``MessageEdited`` carry
      ``"text": ""``, no attachments and ``"redacted": "deleted"``;
    - a message edited since: its ``MessagePosted`` and earlier ``MessageEdited`` carry the
      text of the latest edit and ``"redacted": "edited"``. Where the log's readable copy lags
      (the event index of the distributed backend) the view waits for that edit, like the
      replay waits for the head, at most ``wait`` seconds in all; then it shows ``"text": ""``
      (the replay delivers the edit later).

    - a message event recorded before ``cutoff`` (the channel's retention, docs/retention.md):
      ``"text": ""``, no attachments nor mentions and ``"redacted": "expired"``.

    Every seq is still sent exactly once and every other event as recorded, so resume stays
    gapless. A live subscriber is shown each event as it happens: it saw a text before its
    deletion, and the ``MessageDeleted`` that follows carries only the message id.
    """

    def __init__(
        self,
        service: Commands,
        log: StreamReader,
        tenant_id: str,
        stream: str,
        wait: float,
        *,
        compact: bool = False,
        cutoff: str | None = None,
    ) -> None:
        self.service, self.log, self.tenant_id, self.stream = service, log, tenant_id, stream
        self.cutoff = cutoff
        self.encode = compact_event_frame if compact else event_frame  # the socket's kind of event frame
        self.deadline = asyncio.get_running_loop().time() + wait
        self._messages: dict[str, MessageState] = {}
        self._texts: dict[int, Edit] = {}  # seq of a latest edit -> its text (and envelope), for the current page

    async def prepare(self, page: Sequence[Event]) -> None:
        """Look at the channel as it is now, and find the latest texts the page needs."""
        self._messages = (await self.service.channel(self.tenant_id, StreamId.parse(self.stream).id)).messages
        self._texts = {e.seq: _edit(e.payload) for e in page if e.type == "MessageEdited"}
        for event in page:
            message = self._message(event)
            if message is not None and self._superseded(message, event) and message.edited_seq not in self._texts:
                text = await self._edit_text(message.edited_seq)
                if text is not None:
                    self._texts[message.edited_seq] = text

    async def _edit_text(self, seq: int) -> Edit | None:
        """The text of the edit recorded at ``seq``, once readable; ``None`` after the deadline."""
        loop = asyncio.get_running_loop()
        while True:
            found = await self.log.read_stream(self.tenant_id, self.stream, seq - 1, 1)
            if found and found[0].seq == seq:  # a lagging copy may have a hole here
                return _edit(found[0].payload) if found[0].type == "MessageEdited" else None
            if loop.time() >= self.deadline:
                return None
            await asyncio.sleep(0.01)

    def frame(self, event: Event) -> str:
        message = self._message(event)
        if self.cutoff is not None and event.type in TEXTS and event.occurred_at < self.cutoff:
            return self.encode(event, without_text(event.payload, "expired"))
        if message is None:
            return self.encode(event)
        if message.deleted_seq:
            return self.encode(event, without_text(event.payload, "deleted"))
        if self._superseded(message, event):
            edit = self._texts.get(message.edited_seq, EMPTY_EDIT)
            return self.encode(event, {**event.payload, **edit, "redacted": "edited"})
        return self.encode(event)

    def _message(self, event: Event) -> MessageState | None:
        """The message whose text ``event`` records, if the channel's state knows it."""
        if event.type not in TEXTS:
            return None
        return self._messages.get(event.payload["message_id"])

    @staticmethod
    def _superseded(message: MessageState, event: Event) -> bool:
        """Whether a later edit replaced the text ``event`` records (of a message not deleted)."""
        return not message.deleted_seq and message.edited_seq > event.seq


class Subscription:
    """One socket's interest in one channel."""

    __slots__ = (
        "budget",
        "buffer",
        "buffered",
        "channel_id",
        "compact",
        "flush",
        "last_seq",
        "limit",
        "live",
        "overflow",
        "revoke",
        "revoke_at",
        "send",
        "tenant_id",
        "user_id",
    )

    def __init__(
        self,
        tenant_id: str,
        channel_id: str,
        user_id: str,
        *,
        send: Callable[[Wire], bool],
        flush: Callable[[], None] = lambda: None,
        overflow: Callable[[], None],
        revoke: Callable[[Subscription, str], None],
        limit: int,
        budget: int,
        compact: bool = False,
    ) -> None:
        self.tenant_id = tenant_id
        self.channel_id = channel_id
        self.user_id = user_id
        self.last_seq = 0
        self.live = False
        self.buffer: list[tuple[int, Wire]] = []
        self.buffered = 0  # memory of the buffered frames (see ``api.ws.Outbox``)
        self.send = send  # returns False when the socket's queue is full
        self.flush = flush  # writes what ``send`` held back: called after each batch of events
        self.overflow = overflow  # called once the subscriber has fallen too far behind
        self.revoke = revoke
        self.revoke_at = 0  # seq of a removal published while replaying history
        self.limit = limit  # live events buffered while replaying, at most: in frames
        self.budget = budget  # and in bytes
        self.compact = compact  # the socket asked for compact event frames (``frames.CompactEvent``)

    def offer(self, seq: int, frame: Wire) -> bool:
        """Deliver or buffer one event; ``False`` if the subscriber cannot keep up."""
        if not self.live:
            self.buffer.append((seq, frame))
            self.buffered += frame.size
            return len(self.buffer) <= self.limit and self.buffered <= self.budget
        if seq <= self.last_seq:
            return True
        self.last_seq = seq
        return self.send(frame)

    def go_live(self, last_sent_seq: int) -> bool:
        """Switch from history to the live tail after ``last_sent_seq`` was sent.

        A removal that arrived during the replay is delivered, then revokes the subscription.
        """
        self.last_seq = last_sent_seq
        self.live = True
        buffered, self.buffer, self.buffered = self.buffer, [], 0
        for seq, frame in buffered:
            if self.revoke_at and seq > self.revoke_at:
                break
            if not self.offer(seq, frame):
                return False
        self.flush()
        if self.revoke_at:
            self.revoke(self, f"you are no longer a member of channel {self.channel_id}")
        return True


class Hub:
    """Routes committed events to the subscriptions of their channel."""

    def __init__(self) -> None:
        self._subs: dict[tuple[str, str], set[Subscription]] = {}

    def add(self, sub: Subscription) -> None:
        self._subs.setdefault((sub.tenant_id, sub.channel_id), set()).add(sub)

    def remove(self, sub: Subscription) -> None:
        subs = self._subs.get((sub.tenant_id, sub.channel_id))
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[(sub.tenant_id, sub.channel_id)]

    def subscribers(self, tenant_id: str, channel_id: str) -> int:
        return len(self._subs.get((tenant_id, channel_id), ()))

    def publish(self, events: Sequence[Event]) -> None:
        touched: list[tuple[str, str]] = []  # channels given events, in order: each socket flushes once
        for event in events:
            if event.type == "UserErased":
                self._user_erased(event.tenant_id, event.stream_id)
                continue
            if not event.stream.startswith("channel:"):
                continue
            key = (event.tenant_id, event.stream[8:])
            subs = self._subs.get(key)
            if not subs:
                continue
            if not touched or touched[-1] != key:
                touched.append(key)
            full: Wire | None = None  # each encoding at most once, for all the channel's subscribers
            compact: Wire | None = None
            revoked: Any = event.payload.get("user_id") if event.type in REVOKING else None
            for sub in list(subs):
                if sub.compact:
                    if compact is None:
                        compact = Wire(compact_event_frame(event), event=True)
                    frame = compact
                else:
                    if full is None:
                        full = Wire(event_frame(event), event=True)
                    frame = full
                if not sub.offer(event.seq, frame):
                    sub.overflow()
                elif revoked is not None and sub.user_id == revoked:
                    if sub.live:
                        sub.revoke(sub, f"you are no longer a member of channel {sub.channel_id}")
                    elif not sub.revoke_at:
                        sub.revoke_at = event.seq  # revoked once the replay has delivered it
        for key in dict.fromkeys(touched):
            for sub in list(self._subs.get(key, ())):
                sub.flush()

    def _user_erased(self, tenant_id: str, user_id: str) -> None:
        """Tell every socket subscribed to a channel of the tenant, once, that ``user_id`` was
        erased (docs/erasure.md): a client drops the name and texts it holds of them; history
        now shows them erased."""
        frame = Wire(orjson.dumps({"type": "user_erased", "user_id": user_id}).decode())
        told: set[int] = set()  # sockets (a socket's subscriptions share its send)
        for (tenant, _), subs in list(self._subs.items()):
            if tenant != tenant_id:
                continue
            for sub in list(subs):
                socket = id(getattr(sub.send, "__self__", sub))
                if sub.live and socket not in told:
                    told.add(socket)
                    if not sub.send(frame):
                        sub.overflow()
                    sub.flush()

    def typing(self, tenant_id: str, channel_id: str, user_id: str, expires_in_ms: int = 5000) -> int:
        """Send an ephemeral typing frame to the channel's other live subscribers; clients
        drop the indicator after ``expires_in_ms`` unless another frame renews it."""
        frame = Wire(
            orjson.dumps(
                {"type": "typing", "channel_id": channel_id, "user_id": user_id, "expires_in_ms": expires_in_ms}
            ).decode()
        )
        sent = 0
        for sub in list(self._subs.get((tenant_id, channel_id), ())):
            if sub.live and sub.user_id != user_id:
                sent += 1
                if not sub.send(frame):
                    sub.overflow()
                sub.flush()
        return sent
