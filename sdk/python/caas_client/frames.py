"""The websocket's frames (``WS /v1/ws``): the models generated from ``/asyncapi.json``
(:mod:`caas_client.frame_models`), and the union of what the server sends."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from caas_client.frame_models import (
    CompactEvent,
    Envelope,
    EventFrame,
    IdentityKeyChangedFrame,
    Ping,
    Pong,
    PrekeysLow,
    Presence,
    SendTyping,
    Subscribe,
    Subscribed,
    SubscribePresence,
    Typing,
    Unsubscribe,
    Unsubscribed,
    UserErasedFrame,
)
from caas_client.frame_models import Error as ErrorFrame
from caas_client.frame_models import ServerFrame as _ServerFrame

__all__ = [
    "ChannelEvent", "CompactEvent", "Envelope", "ErrorFrame", "EventFrame", "IdentityKeyChangedFrame", "Ping", "Pong",
    "PrekeysLow", "Presence", "SendTyping", "ServerFrame", "Subscribe", "SubscribePresence", "Subscribed", "Typing",
    "Unreadable", "Unsubscribe", "Unsubscribed", "UserErasedFrame", "parse_frame",
]  # fmt: skip

ServerFrame = (
    Subscribed
    | Unsubscribed
    | EventFrame
    | CompactEvent
    | Presence
    | Typing
    | Pong
    | ErrorFrame
    | PrekeysLow
    | IdentityKeyChangedFrame
    | UserErasedFrame
)
"""What the server sends: the generated ``ServerFrame`` union (discriminated by ``type``), unwrapped."""


SERVER_TYPES = frozenset(
    {"subscribed", "unsubscribed", "event", "ev", "presence", "typing", "pong", "error"}
    | {"prekeys_low", "identity_key_changed", "user_erased"}
)
ChannelEvent = EventFrame | CompactEvent
"""An event of a channel: an ``event`` frame, or an ``ev`` frame on a socket opened with
``frames="compact"`` (docs/websocket-protocol.md: the channel as ``ch``, the event type as ``ev``,
the payload as ``d``, the time as ``at`` in ms; no envelope)."""


def channel_of(frame: ChannelEvent) -> str:
    return frame.channel_id if isinstance(frame, EventFrame) else frame.ch


def envelope_of(frame: ChannelEvent) -> dict[str, Any]:
    """What the outbox reads of an event: its type, seq, payload, and position if the frame has it."""
    if isinstance(frame, EventFrame):
        return frame.event.model_dump()
    return {"type": frame.ev, "seq": frame.seq, "payload": frame.d}


@dataclass(frozen=True)
class Unreadable:
    """A frame of a known ``type`` that does not fit its model (or is not JSON at all).
    ``channel_id`` is the channel it names, if it names one: an event that cannot be read must end
    its channel, since skipping it would leave a hole in the timeline."""

    type: str | None
    channel_id: str | None
    error: Exception


def parse_frame(text: str | bytes) -> ServerFrame | Unreadable | None:
    """A server frame from its JSON text; ``None`` for a frame of a ``type`` this client does not
    know (a newer server's), which the client skips; :class:`Unreadable` for one it cannot read."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        return Unreadable(None, None, exc)
    if not isinstance(data, dict):
        return Unreadable(None, None, ValueError("a frame is a JSON object"))
    kind = data.get("type")
    if kind not in SERVER_TYPES:
        return None
    try:
        return _ServerFrame.model_validate(data).root
    except ValidationError as exc:
        channel_id = data.get("channel_id", data.get("ch"))
        return Unreadable(kind, channel_id if isinstance(channel_id, str) else None, exc)
