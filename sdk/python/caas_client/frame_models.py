# mypy: disable-error-code="assignment"
# ruff: noqa: E501
# (the generator gives optional constrained values a None default that pydantic accepts)
"""Websocket frame models, generated from the server's ``/asyncapi.json``: do not edit.

Regenerate with ``python sdk/python/tools/generate_models.py <server url>``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel


class SinceSeq(RootModel[int]):
    root: Annotated[int, Field(ge=0, le=9223372036854775807, title="Since Seq")] = None
    """
    the last seq the client holds: resume after it (0: the whole history)
    """


class Subscribe(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["subscribe"], Field(title="Type")]
    channel_id: Annotated[
        str,
        Field(pattern="^[A-Za-z0-9][A-Za-z0-9_.@=+\\-]{0,127}$", title="Channel Id"),
    ]
    since_seq: Annotated[SinceSeq | None, Field(title="Since Seq")] = None
    """
    the last seq the client holds: resume after it (0: the whole history)
    """


class Unsubscribe(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["unsubscribe"], Field(title="Type")]
    channel_id: Annotated[
        str,
        Field(pattern="^[A-Za-z0-9][A-Za-z0-9_.@=+\\-]{0,127}$", title="Channel Id"),
    ]


class SendTyping(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["typing"], Field(title="Type")]
    channel_id: Annotated[
        str,
        Field(pattern="^[A-Za-z0-9][A-Za-z0-9_.@=+\\-]{0,127}$", title="Channel Id"),
    ]


class UserId(RootModel[str]):
    root: Annotated[str, Field(pattern="^[A-Za-z0-9][A-Za-z0-9_.@=+\\-]{0,127}$")]


class SubscribePresence(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["subscribe_presence"], Field(title="Type")]
    user_ids: Annotated[list[UserId], Field(title="User Ids")]
    """
    at most CAAS_WS_MAX_PRESENCE_WATCH per socket, over all such frames
    """


class Ping(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["ping"], Field(title="Type")]


class Subscribed(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["subscribed"], Field(title="Type")]
    channel_id: Annotated[str, Field(title="Channel Id")]
    head_seq: Annotated[int, Field(title="Head Seq")]
    """
    the channel's last seq when the subscription started
    """


class Envelope(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    event_id: Annotated[str, Field(title="Event Id")]
    tenant_id: Annotated[str, Field(title="Tenant Id")]
    stream: Annotated[str, Field(title="Stream")]
    """
    "channel:<channel_id>"
    """
    seq: Annotated[int, Field(title="Seq")]
    position: Annotated[int, Field(title="Position")]
    type: Annotated[str, Field(title="Type")]
    """
    the event type, e.g. MessagePosted, MemberAdded, MemberRemoved
    """
    schema_version: Annotated[int, Field(title="Schema Version")]
    occurred_at: Annotated[str, Field(title="Occurred At")]
    actor: Annotated[str | None, Field(title="Actor")]
    command_id: Annotated[Any, Field(title="Command Id")]
    causation_id: Annotated[Any, Field(title="Causation Id")]
    correlation_id: Annotated[Any, Field(title="Correlation Id")]
    payload: Annotated[dict[str, Any], Field(title="Payload")]
    """
    the event's payload; in a replay a message deleted since shows "text": "", no attachments and "redacted": "deleted", one edited since its current text and "redacted": "edited", and one recorded before the channel's retention "text": "" and "redacted": "expired" (docs/retention.md)
    """


class EventFrame(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["event"], Field(title="Type")]
    channel_id: Annotated[str, Field(title="Channel Id")]
    seq: Annotated[int, Field(title="Seq")]
    """
    gapless per channel: resume with since_seq = the last seq received
    """
    position: Annotated[int, Field(title="Position")]
    """
    the event's place in the tenant's log (min_position for reads)
    """
    event: Envelope


class CompactEvent(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["ev"], Field(title="Type")]
    ch: Annotated[str, Field(title="Ch")]
    """
    the channel id
    """
    seq: Annotated[int, Field(title="Seq")]
    """
    gapless per channel: resume with since_seq = the last seq received
    """
    ev: Annotated[str, Field(title="Ev")]
    """
    the event type, e.g. MessagePosted, MemberAdded, MemberRemoved
    """
    at: Annotated[int, Field(title="At")]
    """
    when the event was recorded: milliseconds since 1970-01-01T00:00:00Z
    """
    d: Annotated[dict[str, Any], Field(title="D")]
    """
    the event's payload without its null and empty ([], {}) fields: read a missing field as null or empty; in a replay a message deleted since shows "text": "" and "redacted": "deleted", and one edited since its current text and "redacted": "edited"
    """
    v: Annotated[int | None, Field(title="V")] = None
    """
    the payload's schema version, only when it is not 1
    """


class Unsubscribed(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["unsubscribed"], Field(title="Type")]
    channel_id: Annotated[str, Field(title="Channel Id")]


class Presence(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["presence"], Field(title="Type")]
    user_id: Annotated[str, Field(title="User Id")]
    status: Annotated[str, Field(title="Status")]
    last_seen_at: Annotated[str | None, Field(title="Last Seen At")]
    devices: Annotated[int, Field(title="Devices")]
    """
    the user's open sockets
    """


class Typing(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["typing"], Field(title="Type")]
    channel_id: Annotated[str, Field(title="Channel Id")]
    user_id: Annotated[str, Field(title="User Id")]
    expires_in_ms: Annotated[int, Field(title="Expires In Ms")]


class Pong(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["pong"], Field(title="Type")]


class QuotaDetails(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    meter: Annotated[str, Field(title="Meter")]
    limit: Annotated[int, Field(title="Limit")]
    used: Annotated[int, Field(title="Used")]
    resets_at: Annotated[str, Field(title="Resets At")]


class Error(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["error"], Field(title="Type")]
    code: Annotated[
        str,
        Field(title="Code"),
    ]
    message: Annotated[str, Field(title="Message")]
    channel_id: Annotated[str | None, Field(title="Channel Id")] = None
    """
    the channel the refused frame named
    """
    retry_after: Annotated[float | None, Field(title="Retry After")] = None
    """
    seconds until a frame is accepted (rate_limited)
    """
    details: QuotaDetails | None = None
    """
    the quota that refused the socket
    """
    policy_id: Annotated[str | None, Field(title="Policy Id")] = None
    """
    policy_denied: the tenant's ABAC policy that refused (docs/abac.md)
    """


class PrekeysLow(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["prekeys_low"], Field(title="Type")]
    user_id: Annotated[str, Field(title="User Id")]
    device_id: Annotated[str, Field(title="Device Id")]
    """
    the device whose pool runs low
    """
    remaining: Annotated[int, Field(title="Remaining")]
    """
    one-time prekeys left in its pool (0: bundles go out without one)
    """
    threshold: Annotated[int, Field(title="Threshold")]
    """
    the pool size under which this frame is sent (after every such fetch)
    """


class IdentityKeyChangedFrame(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["identity_key_changed"], Field(title="Type")]
    user_id: Annotated[str, Field(title="User Id")]
    device_id: Annotated[str, Field(title="Device Id")]
    identity_key: Annotated[str, Field(title="Identity Key")]
    """
    the new Ed25519 public key, base64
    """
    previous_identity_key: Annotated[str, Field(title="Previous Identity Key")]
    """
    the one it replaces
    """
    occurred_at: Annotated[str, Field(title="Occurred At")]


class UserErasedFrame(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    type: Annotated[Literal["user_erased"], Field(title="Type")]
    user_id: Annotated[str, Field(title="User Id")]


class ClientFrame(RootModel[Subscribe | Unsubscribe | SendTyping | SubscribePresence | Ping]):
    root: Annotated[
        Subscribe | Unsubscribe | SendTyping | SubscribePresence | Ping,
        Field(discriminator="type"),
    ]
    """
    any frame the client sends
    """


class ServerFrame(
    RootModel[
        Subscribed
        | EventFrame
        | CompactEvent
        | Unsubscribed
        | Presence
        | Typing
        | Pong
        | Error
        | PrekeysLow
        | IdentityKeyChangedFrame
        | UserErasedFrame
    ]
):
    root: Annotated[
        Subscribed
        | EventFrame
        | CompactEvent
        | Unsubscribed
        | Presence
        | Typing
        | Pong
        | Error
        | PrekeysLow
        | IdentityKeyChangedFrame
        | UserErasedFrame,
        Field(discriminator="type"),
    ]
    """
    any frame the server sends
    """


class SubscribePayload(RootModel[Subscribe]):
    root: Subscribe


class UnsubscribePayload(RootModel[Unsubscribe]):
    root: Unsubscribe


class TypingSentPayload(RootModel[SendTyping]):
    root: SendTyping


class SubscribePresencePayload(RootModel[SubscribePresence]):
    root: SubscribePresence


class PingPayload(RootModel[Ping]):
    root: Ping


class SubscribedPayload(RootModel[Subscribed]):
    root: Subscribed


class EventPayload(RootModel[EventFrame]):
    root: EventFrame


class CompactEventPayload(RootModel[CompactEvent]):
    root: CompactEvent


class UnsubscribedPayload(RootModel[Unsubscribed]):
    root: Unsubscribed


class PresencePayload(RootModel[Presence]):
    root: Presence


class TypingPayload(RootModel[Typing]):
    root: Typing


class PongPayload(RootModel[Pong]):
    root: Pong


class ErrorPayload(RootModel[Error]):
    root: Error


class PrekeysLowPayload(RootModel[PrekeysLow]):
    root: PrekeysLow


class IdentityKeyChangedPayload(RootModel[IdentityKeyChangedFrame]):
    root: IdentityKeyChangedFrame


class UserErasedPayload(RootModel[UserErasedFrame]):
    root: UserErasedFrame


class WsWsQuery(BaseModel):
    model_config = ConfigDict(
        extra="allow",
    )
    token: str
    """
    a user token (JWT)
    """
    frames: Literal["full", "compact"] | None = "full"
    """
    how channel events are sent: full: event frames (EventFrame), the default; compact: ev frames (CompactEvent)
    """
