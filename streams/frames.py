"""The frames of ``WS /v1/ws``: one pydantic model per frame kind, in each direction.

These models are the websocket contract. ``/asyncapi.json`` is generated from them
(``api/asyncapi.py``), the SDKs generate their frame types from that document, and the server
builds its control frames from them (``api/ws.py``). The hot frames (``event``, ``typing``,
``presence``) are encoded directly with orjson for speed, in the same shape;
``tests/e2e/test_contracts.py`` validates every kind of frame a live server sends against
these models, and sends every client frame of the document to it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, StringConstraints
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from domain.base import ID_PATTERN, Actor, format_time
from domain.events import MessagePosted, stream_name

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
MAX_SEQ = 2**63 - 1  # seqs are 64-bit signed integers in every store

# The websocket close codes, and what a client does about each (docs/websocket-protocol.md).
NORMAL = 1000
ABNORMAL = 1006
POLICY_VIOLATION = 1008
TOO_BIG = 1009
INTERNAL_ERROR = 1011
SERVICE_RESTART = 1012
TRY_AGAIN_LATER = 1013
BACKOFF = "reconnect with exponential backoff and jitter (0.5 s doubling to 30 s, ± 50 %) and resume with since_seq"
CLOSE_CODES: dict[int, tuple[str, str]] = {
    NORMAL: (
        "normal closure: the client closed the socket (the server answers its close with the same code)",
        "nothing if the client asked for it; otherwise " + BACKOFF,
    ),
    ABNORMAL: (
        "never sent: the client's library reports it when the connection ended without a close frame (a "
        "network break, a killed node, or a socket reset because its client read nothing for "
        "CAAS_WS_STALL_SECONDS)",
        BACKOFF,
    ),
    POLICY_VIOLATION: (
        "the token is bad, expired or its signing key retired by a second rotation (after an "
        "`unauthenticated` error frame); too many sockets for the user (`rate_limited`); or a plan's "
        "socket or monthly-active-user cap (`quota_exceeded`); an unknown `frames` value in the URL "
        "(`invalid_request`)",
        "get a new token (or close another socket), then reconnect and resume; after `quota_exceeded` or "
        "`rate_limited` do not retry in a loop: wait until the cap allows it; after `invalid_request` fix the URL",
    ),
    TOO_BIG: (
        "a client frame was larger than CAAS_WS_MAX_FRAME_BYTES (after a `payload_too_large` error frame)",
        "send smaller frames; do not retry the same frame",
    ),
    INTERNAL_ERROR: ("the server met an unexpected error on this socket", BACKOFF),
    SERVICE_RESTART: (
        "the node is shutting down or restarting (a deploy, a scale-down); the server sends it to every "
        "open socket as it stops",
        BACKOFF + ": the first attempt after a random 0-1 s, so sockets do not all land on the other nodes "
        "at once; not an error, nothing is lost",
    ),
    TRY_AGAIN_LATER: (
        "the client fell more than CAAS_WS_QUEUE_FRAMES frames or CAAS_WS_MAX_BUFFERED_BYTES behind, "
        "or a history replay could not reach the channel's head in time",
        "reconnect at once and resubscribe each channel with since_seq = the last seq received",
    ),
}


class Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """Every frame carries its ``type`` on the wire, even where the model defaults it."""
        schema = handler.resolve_ref_schema(handler(core_schema))
        if "type" in schema.get("properties", {}) and "type" not in schema.setdefault("required", []):
            schema["required"].insert(0, "type")
        return schema


# --- client -> server ------------------------------------------------------------------------
class Subscribe(Frame):
    """Deliver every event of the channel with ``seq > since_seq``, in order and exactly once,
    then its live tail. Without ``since_seq``: the live tail only. The caller must be a member."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"type": "subscribe", "channel_id": "c1", "since_seq": 41}]}
    )
    type: Literal["subscribe"]
    channel_id: Id
    since_seq: Annotated[int, Field(ge=0, le=MAX_SEQ)] | None = Field(
        default=None, description="the last seq the client holds: resume after it (0: the whole history)"
    )


class Unsubscribe(Frame):
    """Stop the channel's events on this socket; answered by ``unsubscribed``."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"type": "unsubscribe", "channel_id": "c1"}]})
    type: Literal["unsubscribe"]
    channel_id: Id


class SendTyping(Frame):
    """Say the user is typing in the channel (the channel's other live subscribers get a
    ``typing`` frame, throttled per user)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"type": "typing", "channel_id": "c1"}]})
    type: Literal["typing"]
    channel_id: Id


class SubscribePresence(Frame):
    """Presence frames for these users of the tenant: each one's status now, then changes."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"type": "subscribe_presence", "user_ids": ["u1", "u2"]}]}
    )
    type: Literal["subscribe_presence"]
    user_ids: list[Id] = Field(description="at most CAAS_WS_MAX_PRESENCE_WATCH per socket, over all such frames")


class Ping(Frame):
    """Answered by ``pong`` after every frame queued before it (a barrier)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"type": "ping"}]})
    type: Literal["ping"]


# --- server -> client ------------------------------------------------------------------------
class Subscribed(Frame):
    """The subscription is on; replayed events (``since_seq``) and then live ones follow."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"type": "subscribed", "channel_id": "c1", "head_seq": 42}]}
    )
    type: Literal["subscribed"] = "subscribed"
    channel_id: str
    head_seq: int = Field(description="the channel's last seq when the subscription started")


class Envelope(Frame):
    """A recorded event as subscribers see it. The request metadata of whoever caused it
    (``command_id``, ``causation_id``, ``correlation_id``) is always ``null``."""

    event_id: str
    tenant_id: str
    stream: str = Field(description='"channel:<channel_id>"')
    seq: int
    position: int
    type: str = Field(description="the event type, e.g. MessagePosted, MemberAdded, MemberRemoved")
    schema_version: int
    occurred_at: str
    actor: str | None
    command_id: None
    causation_id: None
    correlation_id: None
    payload: dict[str, Any] = Field(
        description='the event\'s payload; in a replay a message deleted since shows "text": "", no '
        'attachments and "redacted": "deleted", one edited since its current text and "redacted": "edited", '
        'and one recorded before the channel\'s retention "text": "" and "redacted": "expired" (docs/retention.md)'
    )


# The examples are built by the domain, so they show what the server sends: the recorded payload
# of a real ``MessagePosted`` (every field, defaults included) and times as ``format_time`` writes
# them. ``tests/e2e/test_contracts.py`` checks the example's shape against a live event frame.
EXAMPLE_TIME = format_time(datetime(2026, 1, 1, 12, tzinfo=UTC))
EXAMPLE_POST = MessagePosted(message_id="m1", author_id="alice", text="hello")
EVENT_EXAMPLE: dict[str, Any] = {
    "type": "event",
    "channel_id": "c1",
    "seq": 42,
    "position": 1017,
    "event": {
        "event_id": "0b7c9f6e2a1d4e5f8a9b0c1d2e3f4a5b",
        "tenant_id": "t_3f2a",
        "stream": stream_name("channel", "c1"),
        "seq": 42,
        "position": 1017,
        "type": EXAMPLE_POST.type,
        "schema_version": EXAMPLE_POST.schema_version,
        "occurred_at": EXAMPLE_TIME,
        "actor": Actor("user", "alice").label,
        "command_id": None,
        "causation_id": None,
        "correlation_id": None,
        "payload": EXAMPLE_POST.model_dump(mode="json"),
    },
}


class EventFrame(Frame):
    """One event of a subscribed channel. Seqs of a channel arrive in order, each exactly
    once per subscription; keep the last one to resume with ``since_seq``."""

    model_config = ConfigDict(json_schema_extra={"examples": [EVENT_EXAMPLE]})
    type: Literal["event"]
    channel_id: str
    seq: int = Field(description="gapless per channel: resume with since_seq = the last seq received")
    position: int = Field(description="the event's place in the tenant's log (min_position for reads)")
    event: Envelope


def _compact_example() -> dict[str, Any]:
    shown = {k: v for k, v in EXAMPLE_POST.model_dump(mode="json").items() if v is not None and v != [] and v != {}}
    at = datetime(2026, 1, 1, 12, tzinfo=UTC)
    example = {"type": "ev", "ch": "c1", "seq": 42, "ev": EXAMPLE_POST.type, "at": int(at.timestamp()) * 1000}
    example["d"] = shown
    if EXAMPLE_POST.schema_version != 1:  # as compact_event_frame writes it
        example["v"] = EXAMPLE_POST.schema_version
    return example


COMPACT_EXAMPLE = _compact_example()


class CompactEvent(Frame):
    """One event of a subscribed channel, on a socket opened with ``?frames=compact`` (in place of
    ``event``): the same order, seqs and resume, in about a third of the bytes. Only what a client
    needs to show the event and resume: ``command_id``, ``causation_id`` and ``correlation_id``
    (always null), ``tenant_id`` (the token's), ``stream`` (``channel:`` + ``ch``), ``position``
    (a write's own answer carries it), ``event_id``, ``actor`` and ``schema_version`` (1 unless
    ``v`` says otherwise) are left out; ``GET /v1/events`` has the whole envelope."""

    model_config = ConfigDict(json_schema_extra={"examples": [COMPACT_EXAMPLE]})
    type: Literal["ev"]
    ch: str = Field(description="the channel id")
    seq: int = Field(description="gapless per channel: resume with since_seq = the last seq received")
    ev: str = Field(description="the event type, e.g. MessagePosted, MemberAdded, MemberRemoved")
    at: int = Field(description="when the event was recorded: milliseconds since 1970-01-01T00:00:00Z")
    d: dict[str, Any] = Field(
        description="the event's payload without its null and empty ([], {}) fields: read a missing field as "
        'null or empty; in a replay a message deleted since shows "text": "" and "redacted": "deleted", and one '
        'edited since its current text and "redacted": "edited"'
    )
    v: int | None = Field(default=None, description="the payload's schema version, only when it is not 1")


class Unsubscribed(Frame):
    model_config = ConfigDict(json_schema_extra={"examples": [{"type": "unsubscribed", "channel_id": "c1"}]})
    type: Literal["unsubscribed"] = "unsubscribed"
    channel_id: str


class Presence(Frame):
    """A watched user's status: one per user at once, then one per change (sampled every 250 ms)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "presence",
                    "user_id": "bob",
                    "status": "online",
                    "last_seen_at": EXAMPLE_TIME,
                    "devices": 1,
                }
            ]
        }
    )
    type: Literal["presence"]
    user_id: str
    status: Literal["online", "away", "offline"]
    last_seen_at: str | None
    devices: int = Field(description="the user's open sockets")


class Typing(Frame):
    """Another member is typing: hide the indicator after ``expires_in_ms`` unless renewed.
    Never sent to the typer."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"type": "typing", "channel_id": "c1", "user_id": "bob", "expires_in_ms": 5000}]
        }
    )
    type: Literal["typing"]
    channel_id: str
    user_id: str
    expires_in_ms: int


class Pong(Frame):
    model_config = ConfigDict(json_schema_extra={"examples": [{"type": "pong"}]})
    type: Literal["pong"] = "pong"


class PrekeysLow(Frame):
    """To the user's own sockets: a bundle fetch left one of their devices with fewer than
    ``threshold`` one-time prekeys; that device should upload more
    (``POST /v1/users/{uid}/devices/{device_id}/prekeys``; docs/e2e.md)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"type": "prekeys_low", "user_id": "alice", "device_id": "phone", "remaining": 9, "threshold": 10}
            ]
        }
    )
    type: Literal["prekeys_low"]
    user_id: str
    device_id: str = Field(description="the device whose pool runs low")
    remaining: int = Field(description="one-time prekeys left in its pool (0: bundles go out without one)")
    threshold: int = Field(description="the pool size under which this frame is sent (after every such fetch)")


class IdentityKeyChangedFrame(Frame):
    """A safety-number change: ``user_id`` registered ``device_id`` again with another identity
    key. Sent to every user who shares a channel with them (and to their own sockets); sessions
    with that device must be started again from a fresh bundle, after the user checks the new
    key if they verify keys (docs/e2e.md)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "identity_key_changed",
                    "user_id": "bob",
                    "device_id": "phone",
                    "identity_key": "1QWJzCHFtJwb9ZbRAVI8sgyPA/ZBvDpNu9jp7LmqQ0Q=",
                    "previous_identity_key": "A1hQ2ZF3jtu5s5cxUTmY6cQzrH0KF+6v0Mv5/07kXQQ=",
                    "occurred_at": EXAMPLE_TIME,
                }
            ]
        }
    )
    type: Literal["identity_key_changed"]
    user_id: str
    device_id: str
    identity_key: str = Field(description="the new Ed25519 public key, base64")
    previous_identity_key: str = Field(description="the one it replaces")
    occurred_at: str


class UserErasedFrame(Frame):
    """A user of the tenant was erased (docs/erasure.md): drop their name and the texts of theirs you
    hold; history now shows them erased. Sent to every open socket of the tenant."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"type": "user_erased", "user_id": "alice"}]})
    type: Literal["user_erased"] = "user_erased"
    user_id: str


ErrorCode = Literal[
    "invalid_request",
    "not_found",
    "forbidden",
    "rate_limited",
    "unauthenticated",
    "payload_too_large",
    "quota_exceeded",
    "policy_denied",
]


class QuotaDetails(Frame):
    meter: str
    limit: int
    used: int
    resets_at: str


class Error(Frame):
    """A refused frame (the socket stays open), or the reason for the close that follows:
    ``unauthenticated`` and ``quota_exceeded`` before 1008, ``rate_limited`` before 1008 when
    the user has too many sockets, ``payload_too_large`` before 1009. ``forbidden`` with a
    ``channel_id`` after a ``MemberRemoved``/``MemberBanned`` event of the subscriber: nothing
    more of that channel follows."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"type": "error", "code": "forbidden", "message": "you are not a member of channel 'c1'",
                 "channel_id": "c1"},
                {"type": "error", "code": "rate_limited", "message": "too many frames; retry after 1 s",
                 "retry_after": 0.25},
            ]
        }
    )  # fmt: skip
    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    channel_id: str | None = Field(default=None, description="the channel the refused frame named")
    retry_after: float | None = Field(default=None, description="seconds until a frame is accepted (rate_limited)")
    details: QuotaDetails | None = Field(default=None, description="the quota that refused the socket")
    policy_id: str | None = Field(
        default=None, description="policy_denied: the tenant's ABAC policy that refused (docs/abac.md)"
    )

    def wire(self) -> str:
        """The frame as sent: the optional fields not given are left out."""
        return self.model_dump_json(exclude=set(OPTIONAL_ERROR_FIELDS - self.model_fields_set))


OPTIONAL_ERROR_FIELDS = frozenset({"channel_id", "retry_after", "details", "policy_id"})


# The control frames the server sends most, encoded without building a model per frame; the
# bytes are the models' own (``tests/property/test_frames_wire.py``).
PONG_WIRE = Pong().model_dump_json()


def subscribed_wire(channel_id: str, head_seq: int) -> str:
    """``Subscribed(channel_id=…, head_seq=…).model_dump_json()``, without the model."""
    return orjson.dumps({"type": "subscribed", "channel_id": channel_id, "head_seq": head_seq}).decode()


def unsubscribed_wire(channel_id: str) -> str:
    """``Unsubscribed(channel_id=…).model_dump_json()``, without the model."""
    return orjson.dumps({"type": "unsubscribed", "channel_id": channel_id}).decode()


CLIENT_FRAMES: tuple[type[Frame], ...] = (Subscribe, Unsubscribe, SendTyping, SubscribePresence, Ping)
SERVER_FRAMES: tuple[type[Frame], ...] = (
    Subscribed,
    EventFrame,
    CompactEvent,
    Unsubscribed,
    Presence,
    Typing,
    Pong,
    Error,
    PrekeysLow,
    IdentityKeyChangedFrame,
    UserErasedFrame,
)
# ``?frames=`` on the socket's URL: which frame carries channel events
FRAME_FORMATS = {"full": "event frames (EventFrame), the default", "compact": "ev frames (CompactEvent)"}


def examples(model: type[Frame]) -> list[dict[str, Any]]:
    """The example frames of ``model`` (its schema's ``examples``)."""
    extra = model.model_config.get("json_schema_extra")
    found = extra.get("examples", []) if isinstance(extra, dict) else []
    return [dict(example) for example in found if isinstance(example, dict)] if isinstance(found, list) else []


def frame_type(model: type[Frame]) -> str:
    """The ``type`` a frame model carries."""
    literal = model.model_fields["type"].annotation
    (value,) = literal.__args__  # type: ignore[union-attr]
    return str(value)
