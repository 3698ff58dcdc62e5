"""The websocket's frames (``WS /v1/ws``): the models generated from ``/asyncapi.json``
(:mod:`caas_client.frame_models`), and the union of what the server sends."""

from __future__ import annotations

from pydantic import ValidationError

from caas_client.frame_models import (
    Envelope,
    EventFrame,
    Ping,
    Pong,
    Presence,
    SendTyping,
    Subscribe,
    Subscribed,
    SubscribePresence,
    Typing,
    Unsubscribe,
    Unsubscribed,
)
from caas_client.frame_models import Error as ErrorFrame
from caas_client.frame_models import ServerFrame as _ServerFrame

__all__ = [
    "Envelope", "ErrorFrame", "EventFrame", "Ping", "Pong", "Presence", "SendTyping", "ServerFrame", "Subscribe",
    "SubscribePresence", "Subscribed", "Typing", "Unsubscribe", "Unsubscribed", "parse_frame",
]  # fmt: skip

ServerFrame = Subscribed | Unsubscribed | EventFrame | Presence | Typing | Pong | ErrorFrame
"""What the server sends: the generated ``ServerFrame`` union (discriminated by ``type``), unwrapped."""


def parse_frame(text: str | bytes) -> ServerFrame | None:
    """A server frame from its JSON text; ``None`` for a frame this client does not know (a newer
    server's), which the client skips."""
    try:
        return _ServerFrame.model_validate_json(text).root
    except ValidationError:
        return None
