"""Request and response bodies of the v1 API. Strict: unknown fields and wrong types are
rejected with ``422 invalid_request``."""

from __future__ import annotations

import base64
import binascii
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, RootModel, StringConstraints, model_validator

from api.errors import ErrorCode
from domain.base import ID_PATTERN as ID_PATTERN  # re-exported: the API layer names ids by it

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
EMOJI_PATTERN = r"^[^\s.$\x00-\x1f\x7f]{1,64}$"
Emoji = Annotated[str, StringConstraints(pattern=EMOJI_PATTERN)]
Role = Literal["owner", "admin", "member"]


# C0 control characters but tab, newline and carriage return; and DEL
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control_chars(text: str) -> str:
    if _CONTROL_CHARS.search(text) is not None:
        raise ValueError("text must not contain control characters other than newline and tab")
    return text


Text = Annotated[str, AfterValidator(_no_control_chars)]


def _storable_time(moment: datetime) -> datetime:
    """A time as events record it: in UTC (a time without an offset is taken as UTC), with a
    four-digit year, since recorded times are compared as text. An offset can carry the first or
    last day of ``datetime``'s range out of it: that is bad input, not a crash."""
    try:
        utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or utc.year < 1000:
        raise ValueError("must be a time between the years 1000 and 9999 in UTC")
    return utc


Time = Annotated[datetime, AfterValidator(_storable_time)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CreateTenant(Body):
    name: Name


class CreateApiKey(Body):
    name: Name = "default"


class AllowedOrigins(Body):
    origins: list[
        Annotated[str, StringConstraints(pattern=r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?$", max_length=255)]
    ] = Field(max_length=50)


MAX_INT = 2**63 - 1  # what every store can hold (BSON and SQLite integers are 64-bit)


def _storable(value: Any, depth: int = 0) -> Any:
    """JSON a read store can hold: finite numbers, 64-bit integers, bounded nesting.
    (NaN and infinities, or an integer past 64 bits, would stall a MongoDB projection.)"""
    if depth > 32:
        raise ValueError("metadata is nested more than 32 levels deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("metadata numbers must be finite")
    if isinstance(value, int) and not isinstance(value, bool) and not -MAX_INT - 1 <= value <= MAX_INT:
        raise ValueError("metadata integers must fit in 64 bits")
    if isinstance(value, dict):
        for item in value.values():
            _storable(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _storable(item, depth + 1)
    return value


class PutUser(Body):
    name: Name
    metadata: Annotated[dict[str, Any], AfterValidator(_storable)] = {}


class CreateToken(Body):
    ttl_seconds: int | None = Field(default=None, ge=60)


class CreateChannel(Body):
    channel_id: Id | None = None
    name: Annotated[str, StringConstraints(max_length=200)] = ""
    kind: Literal["group", "direct"] = "group"
    members: list[Id] = Field(default=[], max_length=10_000)
    e2e: bool = False


class AddMember(Body):
    user_id: Id
    role: Role = "member"


class Attachment(Body):
    type: Literal["image", "video", "audio", "file", "link"]
    url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2048)]
    name: Annotated[str, StringConstraints(max_length=255)] | None = None
    mime_type: Annotated[str, StringConstraints(max_length=127)] | None = None
    size: int | None = Field(default=None, ge=0, le=MAX_INT)


class PostMessage(Body):
    text: Text = ""
    client_msg_id: Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,128}$")] | None = None
    parent_id: Id | None = None
    attachments: list[Attachment] = []
    user_id: Id | None = Field(default=None, description="author, when a tenant API key posts for a user")
    e2e: E2EEnvelope | None = Field(
        default=None, description="the ciphertext envelope: in e2e channels only, without text"
    )


class EditMessage(Body):
    text: Text = ""
    e2e: E2EEnvelope | None = Field(default=None, description="the new ciphertext envelope, in an e2e channel")


class AddReaction(Body):
    emoji: Emoji
    user_id: Id | None = Field(default=None, description="who reacts, when a tenant API key acts for a user")


class MoveReadMarker(Body):
    seq: int = Field(ge=1, le=MAX_INT)
    user_id: Id | None = None


class Mute(Body):
    user_id: Id
    until: Time | None = None


class Ban(Body):
    user_id: Id
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None


class Typing(Body):
    user_id: Id | None = None


# --- responses (documented in /openapi.json) -----------------------------------------------
class Written(BaseModel):
    event_id: str
    position: int
    seq: int


class SigningKeyRotated(Written):
    kid: str


class OriginsWritten(Written):
    origins: list[str]


class TenantCreated(Written):
    tenant_id: str
    key_id: str
    api_key: str | None


class ApiKeyCreated(Written):
    key_id: str
    api_key: str | None


class UserWritten(Written):
    user_id: str


class Token(BaseModel):
    token: str
    expires_at: str


class ChannelWritten(Written):
    channel_id: str


class MessageWritten(Written):
    channel_id: str
    message_id: str


class Member(BaseModel):
    user_id: str
    role: Role


class Message(BaseModel):
    message_id: str
    channel_id: str
    seq: int
    author_id: str
    text: str | None
    parent_id: str | None
    attachments: list[dict[str, Any]]
    created_at: str
    edited_at: str | None
    deleted: bool
    reactions: dict[str, list[str]]
    reply_count: int
    mentions: list[str] = Field(
        default_factory=list, description="users the text named as @user_id when it was posted (empty once deleted)"
    )
    e2e: dict[str, Any] | None = Field(default=None, description="the ciphertext envelope (e2e channels; docs/e2e.md)")
    seen_by: list[str] | None = Field(default=None, description="members who have read it (channels up to 100)")
    erased: bool = Field(
        default=False, description='its author was erased: "text" is "" and "attachments" [] (docs/erasure.md)'
    )


class AsOfPoint(BaseModel):
    """Where an ``as_of`` fell: the channel's last event it includes."""

    seq: int = Field(description="the channel's last seq as of then (its head_seq)")
    position: int = Field(description="that event's log position")
    occurred_at: str = Field(description="when it was recorded (the latest time up to it)")


AS_OF_DESCRIPTION = "with as_of: the point of the channel's stream the answer shows (docs/analyst.md, Time travel)"


class Channel(BaseModel):
    channel_id: str
    name: str | None
    kind: str | None
    e2e: bool
    members: list[Member]
    head_seq: int
    last_message: Message | None
    unread_count: int | None
    as_of: AsOfPoint | None = Field(default=None, description=AS_OF_DESCRIPTION)


class ChannelList(BaseModel):
    channels: list[Channel]


class MessagePage(BaseModel):
    messages: list[Message]
    next_before_seq: int | None = None
    next_after_seq: int | None = None
    as_of: AsOfPoint | None = Field(default=None, description=AS_OF_DESCRIPTION)


class Thread(BaseModel):
    messages: list[Message]


class EventOut(BaseModel):
    event_id: str
    tenant_id: str
    stream: str
    seq: int
    position: int
    type: str
    schema_version: int
    occurred_at: str
    actor: str | None
    command_id: str | None
    causation_id: str | None
    correlation_id: str | None
    payload: dict[str, Any]


class EventPage(BaseModel):
    events: list[EventOut]
    next_after_position: int | None


class UserPresence(BaseModel):
    status: Literal["online", "away", "offline"]
    last_seen_at: str | None
    devices: int


class PresenceMap(RootModel[dict[str, UserPresence]]):
    pass


class ChannelPresence(BaseModel):
    channel_id: str
    members: int
    online: int
    statuses: dict[str, Literal["online", "away", "offline"]]


class TypingDelivered(BaseModel):
    channel_id: str
    user_id: str
    sent: bool = Field(description="false when throttled: the user's typing was announced moments ago")
    expires_in_ms: int


# --- billing (docs/plans.md, docs/stripe.md) ------------------------------------------------
class PutPlan(Body):
    plan: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]


class PlanWritten(Written):
    tenant_id: str
    plan: str
    effective_at: str


class TierUnits(BaseModel):
    up_to: int | None
    unit_price: int = Field(description="minor currency units per `per` units of the meter")
    units: int


class PreviewLine(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    meter: str
    plan: str = Field(description="the plan this line prices: one line per meter per plan in force in the period")
    from_: str = Field(alias="from", description="the stretch of the period this plan was in force (RFC 3339)")
    to: str
    mode: Literal["cap", "overage"]
    used: int = Field(description="usage of the hours that started while this plan was in force")
    included: int = Field(description="the plan's quantity times its share of the period")
    billable: int
    over_cap: int = Field(description="usage past a hard cap (admitted by projection lag; never charged)")
    tiers: list[TierUnits]
    amount: int = Field(description="minor currency units")


class PreviewPeriod(BaseModel):
    start: str
    end: str
    label: str


class BillingPreview(BaseModel):
    period: PreviewPeriod
    plan: str = Field(description="the plan in force now")
    plans: list[str] = Field(description="the plans in force during the period, in order")
    currency: str
    base_fee: int
    lines: list[PreviewLine]
    total: int = Field(description="minor currency units")


class Invoice(BaseModel):
    id: str
    status: str | None = None
    number: str | None = None
    currency: str | None = None
    amount_due: int | None = None
    amount_paid: int | None = None
    period_start: int | None = None
    period_end: int | None = None
    hosted_invoice_url: str | None = None
    outcome: Literal["paid", "failed"] | None = Field(
        default=None, description="the invoice's last word by Stripe's event time: paid, payment failed, or neither"
    )


class InvoiceList(BaseModel):
    customer_id: str | None
    payment_status: Literal["ok", "past_due"]
    subscription: dict[str, Any] | None
    invoices: list[Invoice]


class WebhookReceived(BaseModel):
    received: bool
    recorded: bool = Field(description="false for event types CAAS ignores, and for repeats")


class ErrorDetail(BaseModel):
    code: ErrorCode = Field(description="what went wrong; clients branch on it (and on details.rule)")
    message: str
    details: dict[str, Any]
    policy_id: str | None = Field(
        default=None, description="policy_denied only: the tenant policy that refused (docs/abac.md)"
    )


class ErrorBody(BaseModel):
    error: ErrorDetail


class UsageBucket(BaseModel):
    start: str = Field(description="the bucket's start (UTC): an hour, a day or a calendar month")
    meters: dict[str, int]


class UsageReport(BaseModel):
    """A tenant's usage in ``[from, to)``: every bucket of the granularity, zeros included, and
    the totals a billing period of that range sums to (docs/meters.md)."""

    model_config = ConfigDict(populate_by_name=True)

    tenant_id: str
    from_: str = Field(alias="from")
    to: str
    granularity: Literal["hour", "day", "month"]
    meters: list[str]
    buckets: list[UsageBucket]
    totals: dict[str, int]


class AnalyticsFigures(BaseModel):
    """A bucket's (or the range's) analytics; docs/analytics.md defines each figure."""

    active_users: int = Field(
        description="distinct users who wrote to a channel in their own name (DAU by day, MAU by month)"
    )
    messages: int = Field(description="top-level messages posted (usage's messages meter)")
    replies: int = Field(description="thread replies posted (usage's replies meter)")
    active_channels: int = Field(description="distinct channels with at least one post")
    conversations: int = Field(description="posts after an hour of silence in their channel")
    answered: int = Field(description="conversations another user posted in within 24 hours")
    median_first_reply_seconds: float | None = Field(
        description="median seconds from a conversation's first post to another user's first post (null: none answered)"
    )


class AnalyticsBucket(AnalyticsFigures):
    start: str = Field(description="the bucket's start: a UTC day or calendar month")


class AnalyticsChannel(BaseModel):
    channel_id: str
    messages: int
    replies: int


class AnalyticsReport(BaseModel):
    """A tenant's analytics over the whole UTC days (or months) ``[from, to)`` overlaps: every
    bucket, zeros included, the range's totals (distinct over the range) and its busiest
    channels (at most 100, by posts)."""

    model_config = ConfigDict(populate_by_name=True)

    tenant_id: str
    from_: str = Field(alias="from")
    to: str
    granularity: Literal["day", "month"]
    buckets: list[AnalyticsBucket]
    totals: AnalyticsFigures
    channels: list[AnalyticsChannel]


# --- outbound webhooks (docs/webhooks.md) ----------------------------------------------------
WebhookUrl = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
EventType = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class CreateWebhook(Body):
    url: WebhookUrl
    event_types: list[EventType] = Field(default_factory=lambda: ["*"], min_length=1, max_length=50)
    description: Annotated[str, StringConstraints(max_length=200)] = ""


class UpdateWebhook(Body):
    url: WebhookUrl | None = None
    event_types: list[EventType] | None = Field(default=None, min_length=1, max_length=50)
    description: Annotated[str, StringConstraints(max_length=200)] | None = None
    enabled: bool | None = Field(default=None, description="true re-enables a disabled endpoint")


class ReplayWebhook(Body):
    from_position: int = Field(ge=0, description="re-deliver the matching events after this log position")


class WebhookWritten(Written):
    webhook_id: str


class WebhookCreated(WebhookWritten):
    secret: str = Field(description="the signing secret (whsec_…): shown on creation and on its idempotent retries")


class WebhookSecret(WebhookWritten):
    secret: str = Field(description="the new signing secret (whsec_…): shown here and on this rotation's retries")


class Webhook(BaseModel):
    webhook_id: str
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    created_at: str | None
    updated_at: str | None
    version: int


class WebhookList(BaseModel):
    webhooks: list[Webhook]


class Delivery(BaseModel):
    delivery_id: str
    event_id: str
    event_type: str
    position: int
    attempt: int
    status_code: int | None
    ok: bool
    latency_ms: float
    error: str | None
    at: str


class DeliveryPage(BaseModel):
    deliveries: list[Delivery]
    next_after: str | None


# --- what the tenant portal lists (docs/console.md) ----------------------------------------
class ApiKeyInfo(BaseModel):
    key_id: str
    name: str
    revoked: bool


class ApiKeyList(BaseModel):
    """The tenant's API keys, oldest first: never a secret (only its hash is recorded)."""

    api_keys: list[ApiKeyInfo]
    next_after: str | None = Field(
        description="pass as after= (with limit=) for the next page; null on the last. Without limit: every key"
    )


class SigningKeys(BaseModel):
    kid: str = Field(description="the key new end-user tokens are signed with")
    verifying: list[str] = Field(description="the keys whose tokens verify: the current one and the one before")


class OriginList(BaseModel):
    origins: list[str]


class UserInfo(BaseModel):
    user_id: str
    name: str | None
    metadata: dict[str, Any]
    created_at: str | None
    updated_at: str | None
    erased: bool = Field(default=False, description='erased (docs/erasure.md): "name" is "" and "metadata" {}')


class UserList(BaseModel):
    users: list[UserInfo]
    next_after: str | None = Field(description="pass as after= for the next page; null on the last")


class MemberDetail(BaseModel):
    user_id: str
    role: str | None
    active: bool = Field(description="a member now (false: removed or banned)")
    muted: bool
    muted_until: str | None
    banned: bool
    last_read_seq: int


class MemberList(BaseModel):
    members: list[MemberDetail]
    next_after: str | None = Field(
        description="pass as after= (with limit=) for the next page, in user id order; null on the last. "
        "Without limit or after: everyone, current members first"
    )


# --- end-to-end encryption: devices, bundles, ciphertext envelopes (docs/e2e.md) ------------
KEY_ID_MAX = 2**32 - 1  # key ids are uint32 on the wire (docs/e2e.md)
MAX_CIPHERTEXT_BYTES = 48 * 1024  # one ciphertext, decoded: the body cap (CAAS_MAX_BODY_BYTES) binds first
MAX_CIPHERTEXTS = 1000  # pairwise ciphertexts in one envelope


def _base64_of(size: int | None, what: str, max_size: int = MAX_CIPHERTEXT_BYTES) -> AfterValidator:
    """Standard base64 with padding (the canonical encoding) of exactly ``size`` bytes, or of 1
    to ``max_size`` bytes when ``size`` is ``None``."""

    def check(value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{what} must be standard base64 with padding") from None
        if base64.b64encode(raw).decode() != value:
            raise ValueError(f"{what} must be canonical standard base64 with padding")
        if size is not None and len(raw) != size:
            raise ValueError(f"{what} must be {size} bytes (base64 of {size} bytes), not {len(raw)}")
        if size is None and not 1 <= len(raw) <= max_size:
            raise ValueError(f"{what} must be 1 to {max_size} bytes")
        return value

    return AfterValidator(check)


PublicKey = Annotated[str, StringConstraints(max_length=64), _base64_of(32, "a public key")]
Signature = Annotated[str, StringConstraints(max_length=100), _base64_of(64, "a signature")]
_CIPHERTEXT_CHARS = MAX_CIPHERTEXT_BYTES * 4 // 3 + 4
Ciphertext = Annotated[str, StringConstraints(max_length=_CIPHERTEXT_CHARS), _base64_of(None, "a ciphertext")]
KeyId = Annotated[int, Field(ge=0, le=KEY_ID_MAX, description="uint32")]
# 0xFFFFFFFF is the wire's "no one-time prekey" in a prekey message (docs/e2e-protocol.md): a one-time
# prekey with that id would make the initiator use DH4 while the responder reads "none"
OneTimePrekeyId = Annotated[int, Field(ge=0, le=KEY_ID_MAX - 1, description="uint32 other than 0xFFFFFFFF")]


class SignedPrekey(Body):
    key_id: KeyId
    public_key: PublicKey = Field(description="X25519 public key, base64 of 32 bytes")
    signature: Signature = Field(description="Ed25519 signature of the 32 public key bytes by the identity key")


class OneTimePrekey(Body):
    key_id: OneTimePrekeyId
    public_key: PublicKey = Field(description="X25519 public key, base64 of 32 bytes")


class PutDevice(Body):
    identity_key: PublicKey = Field(description="Ed25519 public key, base64 of 32 bytes")
    signed_prekey: SignedPrekey
    one_time_prekeys: list[OneTimePrekey] = Field(default=[], max_length=100)


class AddPrekeys(Body):
    one_time_prekeys: list[OneTimePrekey] = Field(min_length=1, max_length=100)


class E2ECiphertext(Body):
    user_id: Id
    device_id: Id
    body: Ciphertext = Field(description="a pairwise message (prekey 0x01 or normal 0x02), base64")


class E2EEnvelope(Body):
    """What an e2e channel's message carries instead of text: ciphertexts per recipient device
    and/or one sender-key (group) message. The server stores and forwards it as it is."""

    sender_device: Id
    ciphertexts: list[E2ECiphertext] = Field(default=[], max_length=MAX_CIPHERTEXTS)
    group: Ciphertext | None = Field(default=None, description="a sender-key message (0x03), base64")

    @model_validator(mode="after")
    def _something(self) -> E2EEnvelope:
        if not self.ciphertexts and self.group is None:
            raise ValueError("an e2e envelope carries ciphertexts, a group message, or both")
        pairs = [(c.user_id, c.device_id) for c in self.ciphertexts]
        if len(set(pairs)) != len(pairs):
            raise ValueError("an e2e envelope has at most one ciphertext per recipient device")
        return self


class DeviceWritten(Written):
    user_id: str
    device_id: str


class DeviceInfo(BaseModel):
    device_id: str
    identity_key: str
    signed_prekey: dict[str, Any] = Field(description='{"key_id", "public_key", "signature"}')
    one_time_prekeys_left: int


class DeviceList(BaseModel):
    devices: list[DeviceInfo]


class Bundle(BaseModel):
    user_id: str
    device_id: str
    identity_key: str
    signed_prekey: dict[str, Any] = Field(description='{"key_id", "public_key", "signature"}')
    one_time_prekey: dict[str, Any] | None = Field(
        description='{"key_id", "public_key"}: handed out to this caller only, never again; null when none is left'
    )


class BundleList(BaseModel):
    bundles: list[Bundle] = Field(description="one per device of the user, in registration order")


# --- ABAC policies (docs/abac.md) ----------------------------------------------------------
class PutPolicy(BaseModel):
    """A tenant policy: refuse (``deny``) or require (``allow``) the listed actions when its
    condition holds (docs/abac.md: the condition language, actions and combining rule)."""

    model_config = ConfigDict(extra="forbid")

    effect: Literal["deny", "allow"] = Field(default="deny", description="deny (the default) or allow")
    actions: list[str] = Field(
        min_length=1, max_length=64, description="the action names it applies to (docs/abac.md), or ['*']"
    )
    condition: Any = Field(
        default=True,
        description='a JSON condition: true, false, {"all"|"any": [c…]}, {"not": c}, '
        '{"eq"|"ne"|"lt"|"le"|"gt"|"ge": [path, operand]}, {"in": [path, [operand…]]}, {"exists": path}',
    )
    description: str = Field(default="", max_length=500)


class Policy(BaseModel):
    policy_id: str
    effect: Literal["deny", "allow"]
    actions: list[str]
    condition: Any
    description: str


class PolicyList(BaseModel):
    policies: list[Policy]
    actions: list[str] = Field(description="every action a policy may name")


class PolicyWritten(Written):
    policy_id: str


# --- retention and legal hold (docs/retention.md), audit (docs/audit.md) ---------------------
RetentionDays = Annotated[int, Field(ge=1, le=36_500)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"\S")]


class PutRetention(Body):
    days: RetentionDays | None = Field(
        description="keep messages this many days; null: the tenant keeps them forever, a channel follows "
        "the tenant's default"
    )


class RetentionWritten(Written):
    days: int | None


class TenantRetention(BaseModel):
    days: int | None = Field(description="the tenant's default; null: forever")


class ChannelRetention(BaseModel):
    channel_id: str
    days: int | None = Field(description="the channel's override; null: the tenant's default applies")
    effective_days: int | None = Field(description="what applies: the override, else the tenant's default")
    legal_hold: bool = Field(description="a legal hold is on the channel")
    held: bool = Field(description="a legal hold on the channel or on one of its members suspends retention")
    hidden_before: str | None = Field(description="messages recorded before this time are hidden; null: none")
    shredded_days: list[str] = Field(description="UTC days whose messages' key was destroyed")


class PlaceLegalHold(Body):
    reason: Reason


class ReleaseLegalHold(Body):
    reason: Annotated[str, StringConstraints(max_length=500)] = ""


class LegalHoldWritten(Written):
    legal_hold: bool


class AuditEntry(BaseModel):
    position: int = Field(description="the event's log position: entries are in this order")
    occurred_at: str
    actor: str | None = Field(description="tenant:<key id>, user:<id>, admin:admin or system:<job>")
    request_id: str | None = Field(description="the X-Request-Id of the request that did it")
    action: str = Field(description="the event type")
    category: str = Field(description="admin, key, moderation, policy, erasure, retention or device")
    target: str = Field(description="the stream acted on: tenant:…, channel:…, user:…, webhook:…")
    details: dict[str, Any] = Field(description="the event's payload without secrets")


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_after: int | None = Field(description="pass as after= for the next page; null on the last")
