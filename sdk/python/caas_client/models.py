# mypy: disable-error-code="assignment"
# ruff: noqa: E501
# (the generator gives optional constrained values a None default that pydantic accepts)
"""Request and response models, generated from the server's ``/openapi.json``: do not edit.

Regenerate with ``python sdk/python/tools/generate_models.py <server url>``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel


class ErrorDetail(BaseModel):
    code: Annotated[
        Literal[
            "invalid_signature",
            "invalid_request",
            "unauthenticated",
            "payment_required",
            "quota_exceeded",
            "forbidden",
            "not_found",
            "method_not_allowed",
            "conflict",
            "payload_too_large",
            "rate_limited",
            "internal",
            "unavailable",
            "plaintext_in_e2e_channel",
            "policy_denied",
            "legal_hold",
            "user_erased",
        ],
        Field(title="Code"),
    ]
    """
    what went wrong; clients branch on it (and on details.rule)
    """
    message: Annotated[str, Field(title="Message")]
    details: Annotated[dict[str, Any], Field(title="Details")]
    policy_id: Annotated[str | None, Field(title="Policy Id")] = None
    """
    policy_denied only: the tenant policy that refused (docs/abac.md)
    """


class ErrorBody(BaseModel):
    error: ErrorDetail


class TenantCreated(BaseModel):
    event_id: Annotated[str, Field(title="Event Id")]
    position: Annotated[int, Field(title="Position")]
    seq: Annotated[int, Field(title="Seq")]
    tenant_id: Annotated[str, Field(title="Tenant Id")]
    key_id: Annotated[str, Field(title="Key Id")]
    api_key: Annotated[str | None, Field(title="Api Key")]


class CreateTenant(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    name: Annotated[str, Field(max_length=200, min_length=1, title="Name")]


class ApiKeyCreated(BaseModel):
    event_id: Annotated[str, Field(title="Event Id")]
    position: Annotated[int, Field(title="Position")]
    seq: Annotated[int, Field(title="Seq")]
    key_id: Annotated[str, Field(title="Key Id")]
    api_key: Annotated[str | None, Field(title="Api Key")]


class CreateApiKey(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    name: Annotated[str | None, Field(max_length=200, min_length=1, title="Name")] = "default"


class ApiKeyInfo(BaseModel):
    key_id: Annotated[str, Field(title="Key Id")]
    name: Annotated[str, Field(title="Name")]
    revoked: Annotated[bool, Field(title="Revoked")]


class ApiKeyList(BaseModel):
    api_keys: Annotated[list[ApiKeyInfo], Field(title="Api Keys")]
    next_after: Annotated[str | None, Field(title="Next After")]
    """
    pass as after= (with limit=) for the next page; null on the last. Without limit: every key
    """


class Written(BaseModel):
    event_id: Annotated[str, Field(title="Event Id")]
    position: Annotated[int, Field(title="Position")]
    seq: Annotated[int, Field(title="Seq")]


class SigningKeys(BaseModel):
    kid: Annotated[str, Field(title="Kid")]
    """
    the key new end-user tokens are signed with
    """
    verifying: Annotated[list[str], Field(title="Verifying")]
    """
    the keys whose tokens verify: the current one and the one before
    """


class SigningKeyRotated(BaseModel):
    event_id: Annotated[str, Field(title="Event Id")]
    position: Annotated[int, Field(title="Position")]
    seq: Annotated[int, Field(title="Seq")]
    kid: Annotated[str, Field(title="Kid")]


class OriginList(BaseModel):
    origins: Annotated[list[str], Field(title="Origins")]


class OriginsWritten(BaseModel):
    event_id: Annotated[str, Field(title="Event Id")]
    position: Annotated[int, Field(title="Position")]
    seq: Annotated[int, Field(title="Seq")]
    origins: Annotated[list[str], Field(title="Origins")]


class Origin(RootModel[str]):
    root: Annotated[str, Field(max_length=255, pattern="^https?://[A-Za-z0-9.\\-]+(:[0-9]{1,5})?$")]


class AllowedOrigins(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    origins: Annotated[list[Origin], Field(max_length=50, title="Origins")]


class UserInfo(BaseModel):
    user_id: Annotated[str, Field(title="User Id")]
    name: Annotated[str | None, Field(title="Name")]
    metadata: Annotated[dict[str, Any], Field(title="Metadata")]
    created_at: Annotated[str | None, Field(title="Created At")]
    updated_at: Annotated[str | None, Field(title="Updated At")]
    erased: Annotated[bool | None, Field(title="Erased")] = False
    """
    erased (docs/erasure.md): "name" is "" and "metadata" {}
    """


class UserList(BaseModel):
    users: Annotated[list[UserInfo], Field(title="Users")]
    next_after: Annotated[str | None, Field(title="Next After")]
    """
    pass as after= for the next page; null on the last
    """


class UserWritten(BaseModel):
    event_id: Annotated[str, Field(title="Event Id")]
    position: Annotated[int, Field(title="Position")]
    seq: Annotated[int, Field(title="Seq")]
    user_id: Annotated[str, Field(title="User Id")]


class PutUser(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    name: Annotated[str, Field(max_length=200, min_length=1, title="Name")]
    metadata: Annotated[dict[str, Any] | None, Field(title="Metadata")] = {}


class Token(BaseModel):
    token: Annotated[str, Field(title="Token")]
    expires_at: Annotated[str, Field(title="Expires At")]


class TtlSeconds(RootModel[int]):
    root: Annotated[int, Field(ge=60, title="Ttl Seconds")] = None


class CreateToken(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    ttl_seconds: Annotated[TtlSeconds | None, Field(title="Ttl Seconds")] = None


class AsOfPoint(BaseModel):
    seq: Annotated[int, Field(title="Seq")]
    """
    the channel's last seq as of then (its head_seq)
    """
    position: Annotated[int, Field(title="Position")]
    """
    that event's log position
    """
    occurred_at: Annotated[str, Field(title="Occurred At")]
    """
    when it was recorded (the latest time up to it)
    """


class Member(BaseModel):
    user_id: Annotated[str, Field(title="User Id")]
    role: Annotated[Literal["owner", "admin", "member"], Field(title="Role")]


class Message(BaseModel):
    message_id: Annotated[str, Field(title="Message Id")]
    channel_id: Annotated[str, Field(title="Channel Id")]
    seq: Annotated[int, Field(title="Seq")]
    author_id: Annotated[str, Field(title="Author Id")]
    text: Annotated[str | None, Field(title="Text")]
    parent_id: Annotated[str | None, Field(title="Parent Id")]
    attachments: Annotated[list[dict[str, Any]], Field(title="Attachments")]
    created_at: Annotated[str, Field(title="Created At")]
    edited_at: Annotated[str | None, Field(title="Edited At")]
    deleted: Annotated[bool, Field(title="Deleted")]
    reactions: Annotated[dict[str, list[str]], Field(title="Reactions")]
    reply_count: Annotated[int, Field(title="Reply Count")]
    mentions: Annotated[list[str] | None, Field(title="Mentions")] = None
    """
    users the text named as @user_id when it was posted (empty once deleted)
    """
    e2e: Annotated[dict[str, Any] | None, Field(title="E2E")] = None
    """
    the ciphertext envelope (e2e channels; docs/e2e.md)
    """
    seen_by: Annotated[list[str] | None, Field(title="Seen By")] = None
    """
    members who have read it (channels up to 100)
    """
    erased: Annotated[bool | None, Field(title="Erased")] = False
    """
    its author was erased: "text" is "" and "attachments" [] (docs/erasure.md)
    """


class ChannelWritten(BaseModel):
    event_id: Annotated[str, Field(title="Event Id")]
    position: Annotated[int, Field(title="Position")]
    seq: Annotated[int, Field(title="Seq")]
    channel_id: Annotated[str, Field(title="Channel Id")]


class ChannelId(RootModel[str]):
    root: Annotated[
        str,
        Field(pattern="^[A-Za-z0-9][A-Za-z0-9_.@=+\\-]{0,127}$", title="Channel Id"),
    ] = None


class Member1(RootModel[str]):
    root: Annotated[str, Field(pattern="^[A-Za-z0-9][A-Za-z0-9_.@=+\\-]{0,127}$")]


class CreateChannel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    channel_id: Annotated[ChannelId | None, Field(title="Channel Id")] = None
    name: Annotated[str | None, Field(max_length=200, title="Name")] = ""
    kind: Annotated[Literal["group", "direct"] | None, Field(title="Kind")] = "group"
    members: Annotated[
        list[Member1] | None,
        Field(max_length=10000, title="Members", validate_default=True),
    ] = []
    e2e: Annotated[bool | None, Field(title="E2E")] = False


class MemberDetail(BaseModel):
    user_id: Annotated[str, Field(title="User Id")]
    role: Annotated[str | None, Field(title="Role")]
    active: Annotated[bool, Field(title="Active")]
    """
    a member now (false: removed or banned)
    """
    muted: Annotated[bool, Field(title="Muted")]
    muted_until: Annotated[str | None, Field(title="Muted Until")]
    banned: Annotated[bool, Field(title="Banned")]
    last_read_seq: Annotated[int, Field(title="Last Read Seq")]


class MemberList(BaseModel):
    members: Annotated[list[MemberDetail], Field(title="Members")]
    next_after: Annotated[str | None, Field(title="Next After")]
    """
    pass as after= (with limit=) for the next page, in user id order; null on the last. Without limit or after: everyone, current members first
    """


class AddMember(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    user_id: Annotated[str, Field(pattern="^[A-Za-z0-9][A-Za-z0-9_.@=+\\-]{0,127}$", title="User Id")]
    role: Annotated[Literal["owner", "admin", "member"] | None, Field(title="Role")] = "member"


class MessagePage(BaseModel):
    messages: Annotated[list[Message], Field(title="Messages")]
    next_before_seq: Annotated[int | None, Field(title="Next Before Seq")] = None
    next_after_seq: Annotated[int | None, Field(title="Next After Seq")] = None
    as_of: AsOfPoint | None = None
    """
    with as_of: the point of the channel's stream the answer shows (docs/analyst.md, Time travel)
    """


class MessageWritten(BaseModel):
    event_id: Annotated[str, Field(title="Event Id")]
    position: Annotated[int, Field(title="Position")]
    seq: Annotated[int, Field(title="Seq")]
    channel_id: Annotated[str, Field(title="Channel Id")]
    message_id: Annotated[str, Field(title="Message Id")]


class Name(RootModel[str]):
    root: Annotated[str, Field(max_length=255, title="Name")] = None


class MimeType(RootModel[str]):
    root: Annotated[str, Field(max_length=127, title="Mime Type")] = None


class Size(RootModel[int]):
    root: Annotated[int, Field(ge=0, le=9223372036854775807, title="Size")] = None


class Attachment(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    type: Annotated[Literal["image", "video", "audio", "file", "link"], Field(title="Type")]
    url: Annotated[str, Field(max_length=2048, pattern="^https?://\\S+$", title="Url")]
    name: Annotated[Name | None, Field(title="Name")] = None
    mime_type: Annotated[MimeType | None, Field(title="Mime Type")] = None
    size: Annotated[Size | None, Field(title="Size")] = None


class E2ECiphertext(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    user_id: Annotated[str, Field(pattern="^[A-Za-z0-9][A-Za-z0-9_.@=+\\-]{0,127}$", title="User Id")]
    device_id: Annotated[str, Field(pattern="^[A-Za-z0-9][A-Za-z0-9_.@=+\\-]{0,127}$", title="Device Id")]
    body: Annotated[str, Field(max_length=65540, title="Body")]
    """
    a pairwise message (prekey 0x01 or normal 0x02), base64
    """


class Group(RootModel[str]):
    root: Annotated[str, Field(max_length=65540, title="Group")] = None
    """
    a sender-key message (0x03), base64
    """


class E2EEnvelope(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    sender_device: Annotated[
        str,
        Field(pattern="^[A-Za-z0-9][A-Za-z0-9_.@=+\\-]{0,127}$", title="Sender Device"),
    ]
    ciphertexts: Annotated[
        list[E2ECiphertext] | None,
        Field(max_length=1000, title="Ciphertexts", validate_default=True),
    ] = []
    group: Annotated[Group | None, Field(title="Group")] = None
    """
    a sender-key message (0x03), base64
    """


class ClientMsgId(RootModel[str]):
    root: Annotated[str, Field(pattern="^[\\x21-\\x7e]{1,128}$", title="Client Msg Id")] = None


class ParentId(RootModel[str]):
    root: Annotated[str, Field(pattern="^[A-Za-z0-9][A-Za-z0-9_.@=+\\-]{0,127}$", title="Parent Id")] = None


class UserId(RootModel[str]):
    root: Annotated[str, Field(pattern="^[A-Za-z0-9][A-Za-z0-9_.@=+\\-]{0,127}$", title="User Id")] = None
    """
    author, when a tenant API key posts for a user
    """


class PostMessage(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    text: Annotated[str | None, Field(title="Text")] = ""
    client_msg_id: Annotated[ClientMsgId | None, Field(title="Client Msg Id")] = None
    parent_id: Annotated[ParentId | None, Field(title="Parent Id")] = None
    attachments: Annotated[list[Attachment] | None, Field(title="Attachments", validate_default=True)] = []
    user_id: Annotated[UserId | None, Field(title="User Id")] = None
    """
    author, when a tenant API key posts for a user
    """
    e2e: E2EEnvelope | None = None
    """
    the ciphertext envelope: in e2e channels only, without text
    """


class EditMessage(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    text: Annotated[str | None, Field(title="Text")] = ""
    e2e: E2EEnvelope | None = None
    """
    the new ciphertext envelope, in an e2e channel
    """


class Thread(BaseModel):
    messages: Annotated[list[Message], Field(title="Messages")]


class UserId1(RootModel[str]):
    root: Annotated[str, Field(pattern="^[A-Za-z0-9][A-Za-z0-9_.@=+\\-]{0,127}$", title="User Id")] = None
    """
    who reacts, when a tenant API key acts for a user
    """


class AddReaction(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    emoji: Annotated[str, Field(pattern="^[^\\s.$\\x00-\\x1f\\x7f]{1,64}$", title="Emoji")]
    user_id: Annotated[UserId1 | None, Field(title="User Id")] = None
    """
    who reacts, when a tenant API key acts for a user
    """


class UserId2(RootModel[str]):
    root: Annotated[str, Field(pattern="^[A-Za-z0-9][A-Za-z0-9_.@=+\\-]{0,127}$", title="User Id")] = None


class MoveReadMarker(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    seq: Annotated[int, Field(ge=1, le=9223372036854775807, title="Seq")]
    user_id: Annotated[UserId2 | None, Field(title="User Id")] = None


class TypingDelivered(BaseModel):
    channel_id: Annotated[str, Field(title="Channel Id")]
    user_id: Annotated[str, Field(title="User Id")]
    sent: Annotated[bool, Field(title="Sent")]
    """
    false when throttled: the user's typing was announced moments ago
    """
    expires_in_ms: Annotated[int, Field(title="Expires In Ms")]


class Typing(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    user_id: Annotated[UserId2 | None, Field(title="User Id")] = None


class Mute(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    user_id: Annotated[str, Field(pattern="^[A-Za-z0-9][A-Za-z0-9_.@=+\\-]{0,127}$", title="User Id")]
    until: Annotated[AwareDatetime | None, Field(title="Until")] = None


class Reason(RootModel[str]):
    root: Annotated[str, Field(max_length=500, title="Reason")] = None


class Ban(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    user_id: Annotated[str, Field(pattern="^[A-Za-z0-9][A-Za-z0-9_.@=+\\-]{0,127}$", title="User Id")]
    reason: Annotated[Reason | None, Field(title="Reason")] = None


class UserPresence(BaseModel):
    status: Annotated[Literal["online", "away", "offline"], Field(title="Status")]
    last_seen_at: Annotated[str | None, Field(title="Last Seen At")]
    devices: Annotated[int, Field(title="Devices")]


class PresenceMap(RootModel[dict[str, UserPresence]]):
    root: dict[str, UserPresence]


class ChannelPresence(BaseModel):
    channel_id: Annotated[str, Field(title="Channel Id")]
    members: Annotated[int, Field(title="Members")]
    online: Annotated[int, Field(title="Online")]
    statuses: Annotated[dict[str, Literal["online", "away", "offline"]], Field(title="Statuses")]


class EventOut(BaseModel):
    event_id: Annotated[str, Field(title="Event Id")]
    tenant_id: Annotated[str, Field(title="Tenant Id")]
    stream: Annotated[str, Field(title="Stream")]
    seq: Annotated[int, Field(title="Seq")]
    position: Annotated[int, Field(title="Position")]
    type: Annotated[str, Field(title="Type")]
    schema_version: Annotated[int, Field(title="Schema Version")]
    occurred_at: Annotated[str, Field(title="Occurred At")]
    actor: Annotated[str | None, Field(title="Actor")]
    command_id: Annotated[str | None, Field(title="Command Id")]
    causation_id: Annotated[str | None, Field(title="Causation Id")]
    correlation_id: Annotated[str | None, Field(title="Correlation Id")]
    payload: Annotated[dict[str, Any], Field(title="Payload")]


class EventPage(BaseModel):
    events: Annotated[list[EventOut], Field(title="Events")]
    next_after_position: Annotated[int | None, Field(title="Next After Position")]


class UsageBucket(BaseModel):
    start: Annotated[str, Field(title="Start")]
    """
    the bucket's start (UTC): an hour, a day or a calendar month
    """
    meters: Annotated[dict[str, int], Field(title="Meters")]


class UsageReport(BaseModel):
    tenant_id: Annotated[str, Field(title="Tenant Id")]
    from_: Annotated[str, Field(alias="from", title="From")]
    to: Annotated[str, Field(title="To")]
    granularity: Annotated[Literal["hour", "day", "month"], Field(title="Granularity")]
    meters: Annotated[list[str], Field(title="Meters")]
    buckets: Annotated[list[UsageBucket], Field(title="Buckets")]
    totals: Annotated[dict[str, int], Field(title="Totals")]


class AnalyticsBucket(BaseModel):
    active_users: Annotated[int, Field(title="Active Users")]
    """
    distinct users who wrote to a channel in their own name (DAU by day, MAU by month)
    """
    messages: Annotated[int, Field(title="Messages")]
    """
    top-level messages posted (usage's messages meter)
    """
    replies: Annotated[int, Field(title="Replies")]
    """
    thread replies posted (usage's replies meter)
    """
    active_channels: Annotated[int, Field(title="Active Channels")]
    """
    distinct channels with at least one post
    """
    conversations: Annotated[int, Field(title="Conversations")]
    """
    posts after an hour of silence in their channel
    """
    answered: Annotated[int, Field(title="Answered")]
    """
    conversations another user posted in within 24 hours
    """
    median_first_reply_seconds: Annotated[float | None, Field(title="Median First Reply Seconds")]
    """
    median seconds from a conversation's first post to another user's first post (null: none answered)
    """
    start: Annotated[str, Field(title="Start")]
    """
    the bucket's start: a UTC day or calendar month
    """


class AnalyticsChannel(BaseModel):
    channel_id: Annotated[str, Field(title="Channel Id")]
    messages: Annotated[int, Field(title="Messages")]
    replies: Annotated[int, Field(title="Replies")]


class AnalyticsFigures(BaseModel):
    active_users: Annotated[int, Field(title="Active Users")]
    """
    distinct users who wrote to a channel in their own name (DAU by day, MAU by month)
    """
    messages: Annotated[int, Field(title="Messages")]
    """
    top-level messages posted (usage's messages meter)
    """
    replies: Annotated[int, Field(title="Replies")]
    """
    thread replies posted (usage's replies meter)
    """
    active_channels: Annotated[int, Field(title="Active Channels")]
    """
    distinct channels with at least one post
    """
    conversations: Annotated[int, Field(title="Conversations")]
    """
    posts after an hour of silence in their channel
    """
    answered: Annotated[int, Field(title="Answered")]
    """
    conversations another user posted in within 24 hours
    """
    median_first_reply_seconds: Annotated[float | None, Field(title="Median First Reply Seconds")]
    """
    median seconds from a conversation's first post to another user's first post (null: none answered)
    """


class AnalyticsReport(BaseModel):
    tenant_id: Annotated[str, Field(title="Tenant Id")]
    from_: Annotated[str, Field(alias="from", title="From")]
    to: Annotated[str, Field(title="To")]
    granularity: Annotated[Literal["day", "month"], Field(title="Granularity")]
    buckets: Annotated[list[AnalyticsBucket], Field(title="Buckets")]
    totals: AnalyticsFigures
    channels: Annotated[list[AnalyticsChannel], Field(title="Channels")]


class PlanWritten(BaseModel):
    event_id: Annotated[str, Field(title="Event Id")]
    position: Annotated[int, Field(title="Position")]
    seq: Annotated[int, Field(title="Seq")]
    tenant_id: Annotated[str, Field(title="Tenant Id")]
    plan: Annotated[str, Field(title="Plan")]
    effective_at: Annotated[str, Field(title="Effective At")]


class PutPlan(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    plan: Annotated[str, Field(pattern="^[A-Za-z0-9][A-Za-z0-9_.\\-]{0,63}$", title="Plan")]


class PreviewPeriod(BaseModel):
    start: Annotated[str, Field(title="Start")]
    end: Annotated[str, Field(title="End")]
    label: Annotated[str, Field(title="Label")]


class TierUnits(BaseModel):
    up_to: Annotated[int | None, Field(title="Up To")]
    unit_price: Annotated[int, Field(title="Unit Price")]
    """
    minor currency units per `per` units of the meter
    """
    units: Annotated[int, Field(title="Units")]


class Invoice(BaseModel):
    id: Annotated[str, Field(title="Id")]
    status: Annotated[str | None, Field(title="Status")] = None
    number: Annotated[str | None, Field(title="Number")] = None
    currency: Annotated[str | None, Field(title="Currency")] = None
    amount_due: Annotated[int | None, Field(title="Amount Due")] = None
    amount_paid: Annotated[int | None, Field(title="Amount Paid")] = None
    period_start: Annotated[int | None, Field(title="Period Start")] = None
    period_end: Annotated[int | None, Field(title="Period End")] = None
    hosted_invoice_url: Annotated[str | None, Field(title="Hosted Invoice Url")] = None
    outcome: Annotated[Literal["paid", "failed"] | None, Field(title="Outcome")] = None
    """
    the invoice's last word by Stripe's event time: paid, payment failed, or neither
    """


class InvoiceList(BaseModel):
    customer_id: Annotated[str | None, Field(title="Customer Id")]
    payment_status: Annotated[Literal["ok", "past_due"], Field(title="Payment Status")]
    subscription: Annotated[dict[str, Any] | None, Field(title="Subscription")]
    invoices: Annotated[list[Invoice], Field(title="Invoices")]


class WebhookReceived(BaseModel):
    received: Annotated[bool, Field(title="Received")]
    recorded: Annotated[bool, Field(title="Recorded")]
    """
    false for event types CAAS ignores, and for repeats
    """


class WebhookCreated(BaseModel):
    event_id: Annotated[str, Field(title="Event Id")]
    position: Annotated[int, Field(title="Position")]
    seq: Annotated[int, Field(title="Seq")]
    webhook_id: Annotated[str, Field(title="Webhook Id")]
    secret: Annotated[str, Field(title="Secret")]
    """
    the signing secret (whsec_…): shown on creation and on its idempotent retries
    """


class EventType(RootModel[str]):
    root: Annotated[str, Field(max_length=64, min_length=1)]


class CreateWebhook(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    url: Annotated[str, Field(max_length=2048, min_length=1, title="Url")]
    event_types: Annotated[list[EventType] | None, Field(max_length=50, min_length=1, title="Event Types")] = None
    description: Annotated[str | None, Field(max_length=200, title="Description")] = ""


class Webhook(BaseModel):
    webhook_id: Annotated[str, Field(title="Webhook Id")]
    url: Annotated[str, Field(title="Url")]
    event_types: Annotated[list[str], Field(title="Event Types")]
    description: Annotated[str, Field(title="Description")]
    enabled: Annotated[bool, Field(title="Enabled")]
    disabled_reason: Annotated[str | None, Field(title="Disabled Reason")]
    created_at: Annotated[str | None, Field(title="Created At")]
    updated_at: Annotated[str | None, Field(title="Updated At")]
    version: Annotated[int, Field(title="Version")]


class WebhookList(BaseModel):
    webhooks: Annotated[list[Webhook], Field(title="Webhooks")]


class WebhookWritten(BaseModel):
    event_id: Annotated[str, Field(title="Event Id")]
    position: Annotated[int, Field(title="Position")]
    seq: Annotated[int, Field(title="Seq")]
    webhook_id: Annotated[str, Field(title="Webhook Id")]


class Url(RootModel[str]):
    root: Annotated[str, Field(max_length=2048, min_length=1, title="Url")] = None


class EventTypes(RootModel[list[EventType]]):
    root: Annotated[list[EventType], Field(max_length=50, min_length=1, title="Event Types")] = None


class Description(RootModel[str]):
    root: Annotated[str, Field(max_length=200, title="Description")] = None


class UpdateWebhook(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    url: Annotated[Url | None, Field(title="Url")] = None
    event_types: Annotated[EventTypes | None, Field(title="Event Types")] = None
    description: Annotated[Description | None, Field(title="Description")] = None
    enabled: Annotated[bool | None, Field(title="Enabled")] = None
    """
    true re-enables a disabled endpoint
    """


class Delivery(BaseModel):
    delivery_id: Annotated[str, Field(title="Delivery Id")]
    event_id: Annotated[str, Field(title="Event Id")]
    event_type: Annotated[str, Field(title="Event Type")]
    position: Annotated[int, Field(title="Position")]
    attempt: Annotated[int, Field(title="Attempt")]
    status_code: Annotated[int | None, Field(title="Status Code")]
    ok: Annotated[bool, Field(title="Ok")]
    latency_ms: Annotated[float, Field(title="Latency Ms")]
    error: Annotated[str | None, Field(title="Error")]
    at: Annotated[str, Field(title="At")]


class DeliveryPage(BaseModel):
    deliveries: Annotated[list[Delivery], Field(title="Deliveries")]
    next_after: Annotated[str | None, Field(title="Next After")]


class ReplayWebhook(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    from_position: Annotated[int, Field(ge=0, title="From Position")]
    """
    re-deliver the matching events after this log position
    """


class WebhookSecret(BaseModel):
    event_id: Annotated[str, Field(title="Event Id")]
    position: Annotated[int, Field(title="Position")]
    seq: Annotated[int, Field(title="Seq")]
    webhook_id: Annotated[str, Field(title="Webhook Id")]
    secret: Annotated[str, Field(title="Secret")]
    """
    the new signing secret (whsec_…): shown here and on this rotation's retries
    """


class DeviceWritten(BaseModel):
    event_id: Annotated[str, Field(title="Event Id")]
    position: Annotated[int, Field(title="Position")]
    seq: Annotated[int, Field(title="Seq")]
    user_id: Annotated[str, Field(title="User Id")]
    device_id: Annotated[str, Field(title="Device Id")]


class OneTimePrekey(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    key_id: Annotated[int, Field(ge=0, le=4294967294, title="Key Id")]
    """
    uint32 other than 0xFFFFFFFF
    """
    public_key: Annotated[str, Field(max_length=64, title="Public Key")]
    """
    X25519 public key, base64 of 32 bytes
    """


class SignedPrekey(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    key_id: Annotated[int, Field(ge=0, le=4294967295, title="Key Id")]
    """
    uint32
    """
    public_key: Annotated[str, Field(max_length=64, title="Public Key")]
    """
    X25519 public key, base64 of 32 bytes
    """
    signature: Annotated[str, Field(max_length=100, title="Signature")]
    """
    Ed25519 signature of the 32 public key bytes by the identity key
    """


class PutDevice(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    identity_key: Annotated[str, Field(max_length=64, title="Identity Key")]
    """
    Ed25519 public key, base64 of 32 bytes
    """
    signed_prekey: SignedPrekey
    one_time_prekeys: Annotated[
        list[OneTimePrekey] | None,
        Field(max_length=100, title="One Time Prekeys", validate_default=True),
    ] = []


class DeviceInfo(BaseModel):
    device_id: Annotated[str, Field(title="Device Id")]
    identity_key: Annotated[str, Field(title="Identity Key")]
    signed_prekey: Annotated[dict[str, Any], Field(title="Signed Prekey")]
    """
    {"key_id", "public_key", "signature"}
    """
    one_time_prekeys_left: Annotated[int, Field(title="One Time Prekeys Left")]


class DeviceList(BaseModel):
    devices: Annotated[list[DeviceInfo], Field(title="Devices")]


class AddPrekeys(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    one_time_prekeys: Annotated[
        list[OneTimePrekey],
        Field(max_length=100, min_length=1, title="One Time Prekeys"),
    ]


class Bundle(BaseModel):
    user_id: Annotated[str, Field(title="User Id")]
    device_id: Annotated[str, Field(title="Device Id")]
    identity_key: Annotated[str, Field(title="Identity Key")]
    signed_prekey: Annotated[dict[str, Any], Field(title="Signed Prekey")]
    """
    {"key_id", "public_key", "signature"}
    """
    one_time_prekey: Annotated[dict[str, Any] | None, Field(title="One Time Prekey")]
    """
    {"key_id", "public_key"}: handed out to this caller only, never again; null when none is left
    """


class BundleList(BaseModel):
    bundles: Annotated[list[Bundle], Field(title="Bundles")]
    """
    one per device of the user, in registration order
    """


class PolicyWritten(BaseModel):
    event_id: Annotated[str, Field(title="Event Id")]
    position: Annotated[int, Field(title="Position")]
    seq: Annotated[int, Field(title="Seq")]
    policy_id: Annotated[str, Field(title="Policy Id")]


class PutPolicy(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    effect: Annotated[Literal["deny", "allow"] | None, Field(title="Effect")] = "deny"
    """
    deny (the default) or allow
    """
    actions: Annotated[list[str], Field(max_length=64, min_length=1, title="Actions")]
    """
    the action names it applies to (docs/abac.md), or ['*']
    """
    condition: Annotated[Any | None, Field(title="Condition")] = True
    """
    a JSON condition: true, false, {"all"|"any": [c…]}, {"not": c}, {"eq"|"ne"|"lt"|"le"|"gt"|"ge": [path, operand]}, {"in": [path, [operand…]]}, {"exists": path}
    """
    description: Annotated[str | None, Field(max_length=500, title="Description")] = ""


class Policy(BaseModel):
    policy_id: Annotated[str, Field(title="Policy Id")]
    effect: Annotated[Literal["deny", "allow"], Field(title="Effect")]
    actions: Annotated[list[str], Field(title="Actions")]
    condition: Annotated[Any, Field(title="Condition")]
    description: Annotated[str, Field(title="Description")]


class PolicyList(BaseModel):
    policies: Annotated[list[Policy], Field(title="Policies")]
    actions: Annotated[list[str], Field(title="Actions")]
    """
    every action a policy may name
    """


class RetentionWritten(BaseModel):
    event_id: Annotated[str, Field(title="Event Id")]
    position: Annotated[int, Field(title="Position")]
    seq: Annotated[int, Field(title="Seq")]
    days: Annotated[int | None, Field(title="Days")]


class Days(RootModel[int]):
    root: Annotated[int, Field(ge=1, le=36500, title="Days")]
    """
    keep messages this many days; null: the tenant keeps them forever, a channel follows the tenant's default
    """


class PutRetention(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    days: Annotated[Days | None, Field(title="Days")]
    """
    keep messages this many days; null: the tenant keeps them forever, a channel follows the tenant's default
    """


class TenantRetention(BaseModel):
    days: Annotated[int | None, Field(title="Days")]
    """
    the tenant's default; null: forever
    """


class ChannelRetention(BaseModel):
    channel_id: Annotated[str, Field(title="Channel Id")]
    days: Annotated[int | None, Field(title="Days")]
    """
    the channel's override; null: the tenant's default applies
    """
    effective_days: Annotated[int | None, Field(title="Effective Days")]
    """
    what applies: the override, else the tenant's default
    """
    legal_hold: Annotated[bool, Field(title="Legal Hold")]
    """
    a legal hold is on the channel
    """
    held: Annotated[bool, Field(title="Held")]
    """
    a legal hold on the channel or on one of its members suspends retention
    """
    hidden_before: Annotated[str | None, Field(title="Hidden Before")]
    """
    messages recorded before this time are hidden; null: none
    """
    shredded_days: Annotated[list[str], Field(title="Shredded Days")]
    """
    UTC days whose messages' key was destroyed
    """


class LegalHoldWritten(BaseModel):
    event_id: Annotated[str, Field(title="Event Id")]
    position: Annotated[int, Field(title="Position")]
    seq: Annotated[int, Field(title="Seq")]
    legal_hold: Annotated[bool, Field(title="Legal Hold")]


class PlaceLegalHold(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    reason: Annotated[str, Field(max_length=500, min_length=1, pattern="\\S", title="Reason")]


class ReleaseLegalHold(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    reason: Annotated[str | None, Field(max_length=500, title="Reason")] = ""


class AuditEntry(BaseModel):
    position: Annotated[int, Field(title="Position")]
    """
    the event's log position: entries are in this order
    """
    occurred_at: Annotated[str, Field(title="Occurred At")]
    actor: Annotated[str | None, Field(title="Actor")]
    """
    tenant:<key id>, user:<id>, admin:admin or system:<job>
    """
    request_id: Annotated[str | None, Field(title="Request Id")]
    """
    the X-Request-Id of the request that did it
    """
    action: Annotated[str, Field(title="Action")]
    """
    the event type
    """
    category: Annotated[str, Field(title="Category")]
    """
    admin, key, moderation, policy, erasure, retention or device
    """
    target: Annotated[str, Field(title="Target")]
    """
    the stream acted on: tenant:…, channel:…, user:…, webhook:…
    """
    details: Annotated[dict[str, Any], Field(title="Details")]
    """
    the event's payload without secrets
    """


class AuditPage(BaseModel):
    entries: Annotated[list[AuditEntry], Field(title="Entries")]
    next_after: Annotated[int | None, Field(title="Next After")]
    """
    pass as after= for the next page; null on the last
    """


class Channel(BaseModel):
    channel_id: Annotated[str, Field(title="Channel Id")]
    name: Annotated[str | None, Field(title="Name")]
    kind: Annotated[str | None, Field(title="Kind")]
    e2e: Annotated[bool, Field(title="E2E")]
    members: Annotated[list[Member], Field(title="Members")]
    head_seq: Annotated[int, Field(title="Head Seq")]
    last_message: Message | None
    unread_count: Annotated[int | None, Field(title="Unread Count")]
    as_of: AsOfPoint | None = None
    """
    with as_of: the point of the channel's stream the answer shows (docs/analyst.md, Time travel)
    """


class ChannelList(BaseModel):
    channels: Annotated[list[Channel], Field(title="Channels")]


class PreviewLine(BaseModel):
    meter: Annotated[str, Field(title="Meter")]
    plan: Annotated[str, Field(title="Plan")]
    """
    the plan this line prices: one line per meter per plan in force in the period
    """
    from_: Annotated[str, Field(alias="from", title="From")]
    """
    the stretch of the period this plan was in force (RFC 3339)
    """
    to: Annotated[str, Field(title="To")]
    mode: Annotated[Literal["cap", "overage"], Field(title="Mode")]
    used: Annotated[int, Field(title="Used")]
    """
    usage of the hours that started while this plan was in force
    """
    included: Annotated[int, Field(title="Included")]
    """
    the plan's quantity times its share of the period
    """
    billable: Annotated[int, Field(title="Billable")]
    over_cap: Annotated[int, Field(title="Over Cap")]
    """
    usage past a hard cap (admitted by projection lag; never charged)
    """
    tiers: Annotated[list[TierUnits], Field(title="Tiers")]
    amount: Annotated[int, Field(title="Amount")]
    """
    minor currency units
    """


class BillingPreview(BaseModel):
    period: PreviewPeriod
    plan: Annotated[str, Field(title="Plan")]
    """
    the plan in force now
    """
    plans: Annotated[list[str], Field(title="Plans")]
    """
    the plans in force during the period, in order
    """
    currency: Annotated[str, Field(title="Currency")]
    base_fee: Annotated[int, Field(title="Base Fee")]
    lines: Annotated[list[PreviewLine], Field(title="Lines")]
    total: Annotated[int, Field(title="Total")]
    """
    minor currency units
    """
