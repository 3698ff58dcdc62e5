"""Events: immutable facts, named in the past tense.

A domain event (``MessagePosted``…) is the payload a decider returns. Once recorded in the
log it travels inside an :class:`Event` envelope that adds identity, order and causality.
Stored events are never rewritten; older schema versions are upcast on read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["owner", "admin", "member"]
ChannelKind = Literal["group", "direct"]


class DomainEvent(BaseModel):
    """Base of every event payload. ``type`` and ``schema_version`` name its shape."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    ephemeral: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.type = cls.__name__
        EVENT_TYPES[cls.__name__] = cls


EVENT_TYPES: dict[str, type[DomainEvent]] = {}


# --- tenant stream -------------------------------------------------------------------------
class TenantRegistered(DomainEvent):
    name: str
    registered_at: str | None = None  # absent in events recorded before billing


class ApiKeyIssued(DomainEvent):
    key_id: str
    name: str
    key_hash: str


class ApiKeyRevoked(DomainEvent):
    key_id: str


class SigningKeyRotated(DomainEvent):
    """End-user tokens are now signed with ``kid``; tokens of the previous key still verify."""

    kid: str


class AllowedOriginsSet(DomainEvent):
    """Browsers at these origins may read the tenant's API responses (CORS)."""

    origins: list[str]


class ConsoleSessionOpened(DomainEvent):
    """The tenant portal signed in with API key ``key_id``: a session until ``expires_at``.
    Only a hash of the session's secret is recorded (the browser holds it in a cookie)."""

    session_id: str
    key_id: str
    secret_hash: str
    opened_at: str
    expires_at: str


class ConsoleSessionClosed(DomainEvent):
    """The portal signed out: the session's cookie no longer authenticates."""

    session_id: str


class PolicySet(DomainEvent):
    """The tenant created or replaced ABAC policy ``policy_id`` (docs/abac.md)."""

    policy_id: str
    effect: Literal["deny", "allow"]
    actions: list[str]
    condition: Any
    description: str = ""


class PolicyDeleted(DomainEvent):
    policy_id: str


# --- user stream ---------------------------------------------------------------------------
class UserRegistered(DomainEvent):
    name: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    erased: bool = Field(default=False, exclude=True)  # read back erased (docs/erasure.md); never recorded


class UserUpdated(DomainEvent):
    name: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    erased: bool = Field(default=False, exclude=True)


class PresenceChanged(DomainEvent):
    """The user's presence status changed (durable; connections themselves are ephemeral)."""

    status: Literal["online", "away", "offline"]
    last_seen_at: str


class UserErased(DomainEvent):
    """The user asked to be forgotten: their data key is destroyed, so their name, metadata and
    the text of their messages read as erased from now on, everywhere (docs/erasure.md)."""


# --- channel stream ------------------------------------------------------------------------
class ChannelCreated(DomainEvent):
    name: str
    kind: ChannelKind
    e2e: bool = False
    created_by: str | None = None


class MemberAdded(DomainEvent):
    user_id: str
    role: Role


class MemberRoleChanged(DomainEvent):
    user_id: str
    role: Role


class MemberRemoved(DomainEvent):
    user_id: str


class MessagePosted(DomainEvent):
    """A message was posted. Version 2 added ``mentions``: the users the text names as
    ``@user_id`` when it was posted (:func:`mentions_in`), for notifications and analytics;
    version 1 payloads are lifted by ``domain.upcasters``."""

    schema_version: ClassVar[int] = 2
    message_id: str
    author_id: str
    text: str
    parent_id: str | None = None
    attachments: list[dict[str, Any]] = Field(default_factory=list)
    client_msg_id: str | None = None
    mentions: list[str] = Field(default_factory=list)
    # in an e2e channel: the ciphertext envelope (docs/e2e.md), and then no text or attachments;
    # absent (null) elsewhere and in every event recorded before e2e channels carried one
    e2e: dict[str, Any] | None = None
    erased: bool = Field(default=False, exclude=True)  # read back erased (docs/erasure.md); never recorded


# ``@`` then a user id (domain.base.ID_PATTERN), not inside a word or an e-mail address.
_MENTION = re.compile(r"(?<![A-Za-z0-9_.@=+\-])@([A-Za-z0-9][A-Za-z0-9_.@=+\-]{0,127})")


def mentions_in(text: str) -> list[str]:
    """The user ids ``text`` mentions as ``@user_id``, once each, in order of appearance.
    A full stop after the id ends the sentence, not the id (``"thanks @bob."`` names ``bob``)."""
    found = (m.group(1).rstrip(".") for m in _MENTION.finditer(text))
    return list(dict.fromkeys(user for user in found if user))


class MessageEdited(DomainEvent):
    message_id: str
    text: str
    e2e: dict[str, Any] | None = None  # the new ciphertext envelope, in an e2e channel (text is then "")
    author_id: str | None = None  # the message's author, whose key seals the text (absent before erasure)
    erased: bool = Field(default=False, exclude=True)


class MessageDeleted(DomainEvent):
    message_id: str


class ReactionAdded(DomainEvent):
    message_id: str
    user_id: str
    emoji: str


class ReactionRemoved(DomainEvent):
    message_id: str
    user_id: str
    emoji: str


class ReadMarkerMoved(DomainEvent):
    user_id: str
    seq: int


class MemberMuted(DomainEvent):
    user_id: str
    until: str | None = None


class MemberUnmuted(DomainEvent):
    user_id: str


class MemberBanned(DomainEvent):
    user_id: str
    reason: str | None = None


class MemberUnbanned(DomainEvent):
    user_id: str


# --- usage stream (one per API node and tenant: ``usage:<node_id>``) -----------------------
class UsageRecorded(DomainEvent):
    """What one API node counted for one tenant in one interval ``[start, end)``.

    Counts that happen on a node and nowhere in the log: event frames written to sockets
    (``deliveries``), API requests and connection time. ``connections`` is the number of the
    tenant's sockets the node held open at ``sample_at``, an instant of the sampling grid every
    node shares (``None``: the interval did not end on the grid, e.g. a graceful shutdown).
    ``users`` are the users seen connected on this node this calendar month and not reported
    by it before.
    """

    node: str
    start: str
    end: str
    deliveries: int = 0
    api_reads: int = 0
    api_writes: int = 0
    connection_ms: int = 0
    connections: int = 0
    sample_at: str | None = None
    users: list[str] = Field(default_factory=list)


# --- billing stream (one per tenant: ``billing:<tenant_id>``) -----------------------------------
class PlanChanged(DomainEvent):
    """The tenant is billed on ``plan`` from ``effective_at``; ``terms`` is the plan as it was
    then (a later edit of the plans file does not change what was billed)."""

    plan: str
    terms: dict[str, Any]
    effective_at: str


class QuotaThresholdCrossed(DomainEvent):
    """A meter's usage reached ``threshold`` percent of its monthly ``limit`` in ``period``."""

    meter: str
    threshold: int
    period: str
    used: int
    limit: int


class StripeCustomerCreated(DomainEvent):
    """The tenant's customer at Stripe (created once; ``caas billing sync`` reports usage for it)."""

    customer_id: str


class MeterEventsPrepared(DomainEvent):
    """``caas billing sync`` is about to send these meter events for the hour starting at
    ``hour``: each item is ``{meter, value, n, identifier}`` (``value`` is the increase over what
    was sent for that meter hour before; ``n`` numbers the meter hour's events from 0). Recorded
    before sending, so a retry after a crash sends exactly the same events."""

    hour: str
    items: list[dict[str, Any]]
    prepared_at: str


class UsageHourSynced(DomainEvent):
    """Stripe accepted the prepared meter events of ``hour`` (``meter_events`` of them)."""

    hour: str
    meter_events: int


class MeterEventsAbandoned(DomainEvent):
    """Prepared meter events that were not confirmed in time to be re-sent safely (Stripe
    dedupes identifiers for 24 hours): they count as sent, an operator checks Stripe."""

    hour: str
    reason: str


class UsageWindowMoved(DomainEvent):
    """Hours before ``floor`` are out of the sync (Stripe takes meter events up to 35 days old);
    ``skipped`` is, per meter, the usage of those hours that was never sent."""

    floor: str
    skipped: dict[str, int] = Field(default_factory=dict)


class StripeEventRecorded(DomainEvent):
    """A webhook from Stripe: an invoice paid or not, a subscription changed. ``status`` is the
    tenant's payment standing after it (``ok`` or ``past_due``)."""

    stripe_event_id: str
    kind: Literal["invoice_paid", "payment_failed", "subscription_changed"]
    status: Literal["ok", "past_due"]
    created: int = 0  # Stripe's ``created`` of the event: what came later wins, whatever the arrival order
    invoice: dict[str, Any] | None = None
    subscription: dict[str, Any] | None = None


# --- webhook stream (docs/webhooks.md) ----------------------------------------------------
class WebhookRegistered(DomainEvent):
    """A tenant registered an endpoint; its secret is derived from the server's key and the
    endpoint's id, never recorded."""

    url: str
    event_types: list[str]
    description: str = ""


class WebhookUpdated(DomainEvent):
    url: str
    event_types: list[str]
    description: str = ""


class WebhookEnabled(DomainEvent):
    """Deliveries resume (from where the endpoint's cursor stopped)."""


class WebhookDisabled(DomainEvent):
    """No more deliveries until re-enabled: ``reason`` says why (it kept failing since ``failing_since``)."""

    reason: str
    failing_since: str | None = None


class WebhookReplayRequested(DomainEvent):
    """Re-deliver the tenant's matching events after ``from_position``."""

    from_position: int


class WebhookSecretRotated(DomainEvent):
    """The endpoint signs with a new secret from now on (its generation: this event's seq);
    ``previous_generation`` is the one it replaces, still signed with for a grace period."""

    previous_generation: int = 0


class WebhookDeleted(DomainEvent):
    pass


# --- user stream: devices for end-to-end encryption (docs/e2e.md) --------------------------
# Keys are public keys, standard base64: the server never holds a private key.
class DeviceRegistered(DomainEvent):
    """A device's keys, as uploaded: its identity key (Ed25519), signed prekey (X25519, signed
    by the identity key) and a pool of one-time prekeys (X25519). It replaces what the device
    had (the pool too) unless the identity key is the same: then the ids handed out stay used."""

    device_id: str
    identity_key: str
    signed_prekey: dict[str, Any]  # {"key_id", "public_key", "signature"}
    one_time_prekeys: list[dict[str, Any]] = Field(default_factory=list)  # [{"key_id", "public_key"}]


class IdentityKeyChanged(DomainEvent):
    """The device id was registered again with another identity key (a reinstall, or someone
    else): a safety-number change for everyone who talks to the user. Its new keys follow in a
    ``DeviceRegistered``."""

    device_id: str
    identity_key: str
    previous_identity_key: str


class OneTimePrekeysAdded(DomainEvent):
    device_id: str
    one_time_prekeys: list[dict[str, Any]]


class SignedPrekeyRotated(DomainEvent):
    device_id: str
    signed_prekey: dict[str, Any]


class DeviceRemoved(DomainEvent):
    device_id: str


class OneTimePrekeyClaimed(DomainEvent):
    """A bundle fetch handed out this one-time prekey; it is never handed out again.
    ``remaining`` is what the device's pool holds after it."""

    device_id: str
    key_id: int
    public_key: str
    remaining: int


# --- retention and legal hold (docs/retention.md) -------------------------------------------
class RetentionSet(DomainEvent):
    """Messages older than ``days`` days disappear from every read and are shredded.

    On the tenant stream: the tenant's default (``None``: kept forever). On a channel stream:
    the channel's override (``None``: the tenant's default applies again)."""

    days: int | None


class LegalHoldPlaced(DomainEvent):
    """A legal hold on the channel, or on the user (user stream): retention and erasure stop."""

    reason: str


class LegalHoldReleased(DomainEvent):
    """The legal hold is lifted: retention (and, for a user, erasure) applies again."""

    reason: str


class ChannelDayShredded(DomainEvent):
    """The key of the channel's messages of UTC day ``day`` (``YYYY-MM-DD``) was destroyed."""

    day: str


class Event(BaseModel):
    """A recorded event: the envelope of docs/design.md around a domain event's payload.

    ``stream`` is ``"<type>:<id>"`` (``channel:c1``); ``seq`` is gapless per stream;
    ``position`` is the global order token of the log.
    """

    model_config = ConfigDict(frozen=True)

    event_id: str
    tenant_id: str
    stream: str
    seq: int
    position: int
    type: str
    schema_version: int
    occurred_at: str
    actor: str | None = None
    command_id: str | None = None
    causation_id: str | None = None
    correlation_id: str | None = None
    payload: dict[str, Any]
    # The W3C trace context of the command that recorded it (adapters/tracing.py), so what reads
    # the log later continues that trace. Kept by both logs; absent from events recorded before
    # tracing or while it was off; never part of the event's JSON (``exclude``): the public
    # envelope (/v1/events, websockets, webhooks, replay) stays as it was.
    traceparent: str | None = Field(default=None, exclude=True)

    @property
    def stream_type(self) -> str:
        """``StreamId.parse(stream).kind``, without building one (projections ask per event)."""
        return self.stream.partition(":")[0]

    @property
    def stream_id(self) -> str:
        """``StreamId.parse(stream).id``, without building one."""
        return self.stream.partition(":")[2]

    def data(self) -> DomainEvent:
        """The payload as its typed domain event (after upcasting)."""
        return EVENT_TYPES[self.type].model_validate(self.payload)


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def register_upcaster(event_type: str, from_version: int, fn: Upcaster) -> None:
    """Teach the log reader to lift ``event_type`` payloads from ``from_version`` by one."""
    UPCASTERS[(event_type, from_version)] = fn


def upcast(event_type: str, version: int, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Lift a stored payload to the current schema version, one step at a time. A payload whose
    personal fields are still sealed (``"sealed"``: commands/sealing.py) is left as it is: it is
    lifted once they are opened, so an upcaster sees the fields it reads."""
    if "sealed" in payload:
        return version, payload
    while (step := UPCASTERS.get((event_type, version))) is not None:
        payload = step(payload)
        version += 1
    return version, payload


@dataclass(frozen=True, slots=True)
class StreamId:
    """A stream's name as its parts: the aggregate ``kind`` (``channel``, ``user``, ``tenant``)
    and the ``id`` within its tenant. ``str()`` is the name the log records (``channel:c1``)."""

    kind: str
    id: str

    @classmethod
    def parse(cls, stream: str) -> StreamId:
        kind, _, ident = stream.partition(":")
        return cls(kind, ident)

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"


def stream_name(kind: str, ident: str) -> str:
    """The recorded name of the stream of ``kind`` and ``ident`` (``str(StreamId(kind, ident))``)."""
    return str(StreamId(kind, ident))


def with_payload(event: Event, payload: dict[str, Any], schema_version: int | None = None) -> Event:
    """``event`` with another payload (and schema version): ``model_copy(update=…)`` without its
    cost, for what rewrites every event it reads (opening sealed payloads, commands/sealing.py)."""
    values = dict(event.__dict__)
    values["payload"] = payload
    if schema_version is not None:
        values["schema_version"] = schema_version
    copy = Event.__new__(Event)
    object.__setattr__(copy, "__dict__", values)
    object.__setattr__(copy, "__pydantic_fields_set__", set(event.__pydantic_fields_set__))
    object.__setattr__(copy, "__pydantic_extra__", None)
    object.__setattr__(copy, "__pydantic_private__", None)
    return copy
