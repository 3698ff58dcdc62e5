"""The websocket's server frames (``WS /v1/ws``, docs/api.md#websocket), typed."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Frame(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Subscribed(_Frame):
    type: Literal["subscribed"]
    channel_id: str
    head_seq: int


class Unsubscribed(_Frame):
    type: Literal["unsubscribed"]
    channel_id: str


class EventFrame(_Frame):
    """One event of a channel: ``event`` is the envelope (``type``, ``payload``, ``seq``…)."""

    type: Literal["event"]
    channel_id: str
    seq: int
    position: int
    event: dict[str, Any]


class Presence(_Frame):
    type: Literal["presence"]
    user_id: str
    status: Literal["online", "away", "offline"]
    last_seen_at: str | None = None
    devices: int = 0


class Typing(_Frame):
    type: Literal["typing"]
    channel_id: str
    user_id: str
    expires_in_ms: int


class Pong(_Frame):
    type: Literal["pong"]


class ErrorFrame(_Frame):
    type: Literal["error"]
    code: str
    message: str
    channel_id: str | None = None
    retry_after: float | None = None


ServerFrame = Annotated[
    Subscribed | Unsubscribed | EventFrame | Presence | Typing | Pong | ErrorFrame, Field(discriminator="type")
]
_frames: TypeAdapter[ServerFrame] = TypeAdapter(ServerFrame)


def parse_frame(text: str | bytes) -> ServerFrame:
    """A server frame from its JSON text; ``ValueError`` for anything else."""
    return _frames.validate_json(text)
