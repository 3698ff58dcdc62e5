"""Live fan-out of recorded events to websocket subscribers.

Each committed channel event is encoded once and offered to every subscription of its
channel. A subscription that is still replaying history buffers live events; the switch to
live skips every seq already sent, so resume is gapless and exactly once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from domain.events import Event

REVOKING = frozenset({"MemberRemoved", "MemberBanned"})


def event_frame(event: Event) -> str:
    """The websocket frame for one channel event (API.md ``{"type": "event", …}``)."""
    return orjson.dumps(
        {
            "type": "event",
            "channel_id": event.stream.partition(":")[2],
            "seq": event.seq,
            "position": event.position,
            "event": event.model_dump(),
        }
    ).decode()


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
