"""Live fan-out of recorded events to websocket subscribers.

Each committed channel event is encoded once and offered to every subscription of its
channel. A subscription that is still replaying history buffers live events; the switch to
live skips every seq already sent, so resume is gapless and exactly once.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from commands.ports import StreamReader
from commands.service import Commands
from domain.channel import MessageState
from domain.events import Event, StreamId

REVOKING = frozenset({"MemberRemoved", "MemberBanned"})
# Request metadata of whoever caused an event: their Idempotency-Key is in command_id, their
# X-Request-Id in correlation_id. Subscribers are other members; they are shown none of it.
WITHHELD: dict[str, Any] = {"command_id": None, "causation_id": None, "correlation_id": None}
TEXTS = frozenset({"MessagePosted", "MessageEdited"})


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

    Every seq is still sent exactly once and every other event as recorded, so resume stays
    gapless. A live subscriber is shown each event as it happens: it saw a text before its
    deletion, and the ``MessageDeleted`` that follows carries only the message id.
    """

    def __init__(self, service: Commands, log: StreamReader, tenant_id: str, stream: str, wait: float) -> None:
        self.service, self.log, self.tenant_id, self.stream = service, log, tenant_id, stream
        self.deadline = asyncio.get_running_loop().time() + wait
        self._messages: dict[str, MessageState] = {}
        self._texts: dict[int, str] = {}  # seq of a latest edit -> its text, for the current page

    async def prepare(self, page: Sequence[Event]) -> None:
        """Look at the channel as it is now, and find the latest texts the page needs."""
        self._messages = (await self.service.channel(self.tenant_id, StreamId.parse(self.stream).id)).messages
        self._texts = {e.seq: e.payload["text"] for e in page if e.type == "MessageEdited"}
        for event in page:
            message = self._message(event)
            if message is not None and self._superseded(message, event) and message.edited_seq not in self._texts:
                text = await self._edit_text(message.edited_seq)
                if text is not None:
                    self._texts[message.edited_seq] = text

    async def _edit_text(self, seq: int) -> str | None:
        """The text of the edit recorded at ``seq``, once readable; ``None`` after the deadline."""
        loop = asyncio.get_running_loop()
        while True:
            found = await self.log.read_stream(self.tenant_id, self.stream, seq - 1, 1)
            if found and found[0].seq == seq:  # a lagging copy may have a hole here
                return str(found[0].payload["text"]) if found[0].type == "MessageEdited" else None
            if loop.time() >= self.deadline:
                return None
            await asyncio.sleep(0.01)

    def frame(self, event: Event) -> str:
        message = self._message(event)
        if message is None:
            return event_frame(event)
        if message.deleted_seq:
            shown = {**event.payload, "text": "", "redacted": "deleted"}
            if "attachments" in shown:
                shown["attachments"] = []
            return event_frame(event, shown)
        if self._superseded(message, event):
            text = self._texts.get(message.edited_seq, "")
            return event_frame(event, {**event.payload, "text": text, "redacted": "edited"})
        return event_frame(event)

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
        send: Callable[[str], bool],
        overflow: Callable[[], None],
        revoke: Callable[[Subscription, str], None],
        limit: int,
        budget: int,
    ) -> None:
        self.tenant_id = tenant_id
        self.channel_id = channel_id
        self.user_id = user_id
        self.last_seq = 0
        self.live = False
        self.buffer: list[tuple[int, str]] = []
        self.buffered = 0  # memory of the buffered frames (see ``api.ws.Outbox``)
        self.send = send  # returns False when the socket's queue is full
        self.overflow = overflow  # called once the subscriber has fallen too far behind
        self.revoke = revoke
        self.revoke_at = 0  # seq of a removal published while replaying history
        self.limit = limit  # live events buffered while replaying, at most: in frames
        self.budget = budget  # and in bytes

    def offer(self, seq: int, frame: str) -> bool:
        """Deliver or buffer one event; ``False`` if the subscriber cannot keep up."""
        if not self.live:
            self.buffer.append((seq, frame))
            self.buffered += sys.getsizeof(frame)
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
        for event in events:
            if not event.stream.startswith("channel:"):
                continue
            subs = self._subs.get((event.tenant_id, event.stream[8:]))
            if not subs:
                continue
            frame = event_frame(event)
            revoked: Any = event.payload.get("user_id") if event.type in REVOKING else None
            for sub in list(subs):
                if not sub.offer(event.seq, frame):
                    sub.overflow()
                elif revoked is not None and sub.user_id == revoked:
                    if sub.live:
                        sub.revoke(sub, f"you are no longer a member of channel {sub.channel_id}")
                    elif not sub.revoke_at:
                        sub.revoke_at = event.seq  # revoked once the replay has delivered it

    def typing(self, tenant_id: str, channel_id: str, user_id: str, expires_in_ms: int = 5000) -> int:
        """Send an ephemeral typing frame to the channel's other live subscribers; clients
        drop the indicator after ``expires_in_ms`` unless another frame renews it."""
        frame = orjson.dumps(
            {"type": "typing", "channel_id": channel_id, "user_id": user_id, "expires_in_ms": expires_in_ms}
        ).decode()
        sent = 0
        for sub in list(self._subs.get((tenant_id, channel_id), ())):
            if sub.live and sub.user_id != user_id:
                sent += 1
                if not sub.send(frame):
                    sub.overflow()
        return sent
