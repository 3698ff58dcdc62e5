"""The route table: one declarative list drives both the router and ``/openapi.json``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from api import analytics, audit, billing, devices, examples, http, policies, retention, schemas, usage, webhooks
from api.errors import ApiError
from api.plumbing import MAX_INT

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Api:
    method: str
    path: str
    endpoint: Endpoint
    summary: str
    who: tuple[str, ...] = ()
    body: type[BaseModel] | None = None
    returns: type[BaseModel] | None = None
    status: int = 200
    query: tuple[str | tuple[str, dict[str, Any]], ...] = ()
    upsert: bool = False  # creates (201) or updates (200) what it names
    idempotent: bool = False  # honours Idempotency-Key: a retry with the same key gets the first answer
    exports: bool = False  # ``format=jsonl`` or ``csv`` streams every entry as JSON lines or CSV instead

    @property
    def handler(self) -> Endpoint:
        """The endpoint, refusing query parameters the route does not take (hostile input is
        answered, not ignored)."""
        if not self.who:
            return self.endpoint
        allowed = {q if isinstance(q, str) else q[0] for q in self.query}
        endpoint = self.endpoint

        async def strict(request: Request) -> Response:
            unknown = sorted(set(request.query_params) - allowed) if request.scope["query_string"] else None
            if unknown:
                takes = ", ".join(sorted(allowed)) or "none"
                raise ApiError("invalid_request", f"unknown query parameter {unknown[0]!r}; this route takes: {takes}")
            return await endpoint(request)

        strict.__name__ = endpoint.__name__
        return strict


# The query parameters' schemas, as the endpoints parse them (``api.plumbing.int_param``);
# a route narrows one with ``(name, {...})`` in its ``query``.
QUERY: dict[str, dict[str, Any]] = {
    "limit": {"type": "integer", "minimum": 1, "maximum": 200},
    "min_position": {"type": "integer", "minimum": 0, "maximum": MAX_INT},
    "before_seq": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
    "after_seq": {"type": "integer", "minimum": 0, "maximum": MAX_INT},
    "after_position": {"type": "integer", "minimum": 0, "maximum": MAX_INT},
    "after": {"type": "string"},
    "prefix": {"type": "string", "pattern": "^[A-Za-z0-9_.@=+\\-]{1,128}$", "description": "the start of a user id"},
    "types": {"type": "string", "description": "comma-separated event types"},
    "user_id": {"type": "string", "pattern": schemas.ID_PATTERN},
    "user_ids": {"type": "string", "description": "1 to 100 comma-separated user ids", "required": True},
    "from": {"type": "string", "format": "date-time", "description": "RFC 3339, inclusive", "required": True},
    "to": {"type": "string", "format": "date-time", "description": "RFC 3339, exclusive", "required": True},
    "granularity": {"type": "string", "enum": ["hour", "day", "month"], "default": "hour"},
    "meters": {"type": "string", "description": "comma-separated meter names (default: all; docs/meters.md)"},
    "as_of": {
        "type": "string",
        "pattern": "^((pos:)?[0-9]{1,19}|[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt].+)$",
        "description": "answer as the channel was then: a log position (pos:12345 or 12345: the events at "
        "positions <= it) or an RFC 3339 time with its offset (2026-12-03T10:00:00Z: the events with "
        "occurred_at <= it); the tenant API key only: with a user token it is 403 forbidden "
        "(details.rule as_of_tenant_only), since the past holds deleted messages and pre-edit text; "
        "docs/analyst.md, Time travel",
        "examples": ["pos:12345", "2026-12-03T10:00:00Z"],
    },
    "erase": {
        "type": "string",
        "enum": ["true"],
        "required": True,
        "description": "true: confirms that the user's personal data is erased for good (docs/erasure.md)",
    },
    "actor": {"type": "string", "description": "who acted: tenant:<key id>, user:<id>, admin:admin, system:<job>"},
    "action": {"type": "string", "description": "comma-separated event types or categories (docs/audit.md)"},
    "format": {"type": "string", "enum": ["json", "jsonl", "csv"], "default": "json",
               "description": "json: a page; jsonl or csv: every matching entry after `after`, streamed"},
}  # fmt: skip
EXPORT_MEDIA: dict[str, object] = {  # an exporting route's answer to format=jsonl and format=csv
    "application/x-ndjson": {"schema": {"type": "string", "description": "one JSON entry per line"}},
    "text/csv": {"schema": {"type": "string", "description": "a header, then a row per entry"}},
}
USAGE_QUERY = ("from", "to", "granularity", "meters", "min_position")
ANALYTICS_QUERY = ("from", "to", ("granularity", {"enum": ["day", "month"], "default": "day"}), "min_position")


ROUTES: list[Api] = [
    Api("POST", "/v1/tenants", http.create_tenant, "Register a tenant; returns its first API key (shown once)",
        ("admin",), schemas.CreateTenant, schemas.TenantCreated, 201, idempotent=True),
    Api("POST", "/v1/api-keys", http.create_api_key, "Issue another API key (shown once)",
        ("tenant",), schemas.CreateApiKey, schemas.ApiKeyCreated, 201, idempotent=True),
    Api("GET", "/v1/api-keys", http.list_api_keys, "The tenant's API keys, oldest first (never their secrets)",
        ("tenant",), None, schemas.ApiKeyList, query=("limit", "after")),
    Api("DELETE", "/v1/api-keys/{key_id}", http.revoke_api_key, "Revoke an API key",
        ("tenant",), None, schemas.Written),
    Api("GET", "/v1/signing-keys", http.get_signing_keys,
        "The key that signs new end-user tokens, and the keys whose tokens verify",
        ("tenant",), None, schemas.SigningKeys),
    Api("POST", "/v1/signing-keys", http.rotate_signing_key,
        "Rotate the key that signs end-user tokens (tokens of the previous key keep working)",
        ("tenant",), None, schemas.SigningKeyRotated, 201, idempotent=True),
    Api("GET", "/v1/cors", http.get_allowed_origins, "The browser origins allowed to read responses (CORS)",
        ("tenant",), None, schemas.OriginList),
    Api("PUT", "/v1/cors", http.set_allowed_origins, "Set the browser origins allowed to read responses (CORS)",
        ("tenant",), schemas.AllowedOrigins, schemas.OriginsWritten, idempotent=True),
    Api("GET", "/v1/users", http.list_users, "The tenant's users in id order (those whose id starts with prefix)",
        ("tenant",), None, schemas.UserList, query=("prefix", "after", "limit", "min_position")),
    Api("PUT", "/v1/users/{user_id}", http.put_user, "Register or update an end user",
        ("tenant",), schemas.PutUser, schemas.UserWritten, 201, upsert=True, idempotent=True),
    Api("POST", "/v1/users/{user_id}/tokens", http.create_token, "Mint an end-user token",
        ("tenant",), schemas.CreateToken, schemas.Token, 201),
    Api("DELETE", "/v1/users/{user_id}", http.erase_user,
        "Erase a user: UserErased, and their data key destroyed (their name, metadata and messages' text read as "
        "erased from now on; docs/erasure.md). 409 legal_hold under a legal hold; again: the first answer",
        ("tenant",), None, schemas.UserWritten, query=("erase",)),
    Api("GET", "/v1/channels", http.list_channels, "Channels of the user, or all of the tenant's",
        ("tenant", "user"), None, schemas.ChannelList, query=("limit", "after", "min_position")),
    Api("POST", "/v1/channels", http.create_channel, "Create a group or direct channel",
        ("tenant", "user"), schemas.CreateChannel, schemas.ChannelWritten, 201, idempotent=True),
    Api("GET", "/v1/channels/{cid}", http.get_channel, "A channel with its members and roles",
        ("tenant", "user"), None, schemas.Channel, query=("min_position", "as_of")),
    Api("GET", "/v1/channels/{cid}/members", http.list_members,
        "Everyone who was a member: role, muted, banned, read marker (current members first; pages in user id order)",
        ("tenant",), None, schemas.MemberList, query=("limit", "after", "min_position")),
    Api("POST", "/v1/channels/{cid}/members", http.add_member, "Add a member or change their role",
        ("tenant", "user"), schemas.AddMember, schemas.ChannelWritten, 201, upsert=True, idempotent=True),
    Api("DELETE", "/v1/channels/{cid}/members/{uid}", http.remove_member, "Remove a member (or leave)",
        ("tenant", "user"), None, schemas.ChannelWritten),
    Api("GET", "/v1/channels/{cid}/messages", http.list_messages, "A page of the channel's timeline",
        ("tenant", "user"), None, schemas.MessagePage,
        query=("before_seq", "after_seq", "limit", "min_position", "as_of")),
    Api("POST", "/v1/channels/{cid}/messages", http.post_message, "Post a message",
        ("tenant", "user"), schemas.PostMessage, schemas.MessageWritten, 201, idempotent=True),
    Api("PATCH", "/v1/channels/{cid}/messages/{mid}", http.edit_message, "Edit your message",
        ("tenant", "user"), schemas.EditMessage, schemas.MessageWritten, idempotent=True),
    Api("DELETE", "/v1/channels/{cid}/messages/{mid}", http.delete_message, "Delete a message (tombstone)",
        ("tenant", "user"), None, schemas.MessageWritten),
    Api("GET", "/v1/channels/{cid}/messages/{mid}/thread", http.get_thread, "Replies to a message",
        ("tenant", "user"), None, schemas.Thread, query=(("limit", {"maximum": 1000}), "min_position")),
    Api("POST", "/v1/channels/{cid}/messages/{mid}/reactions", http.add_reaction, "React to a message",
        ("tenant", "user"), schemas.AddReaction, schemas.MessageWritten, 201, idempotent=True),
    Api("DELETE", "/v1/channels/{cid}/messages/{mid}/reactions/{emoji}", http.remove_reaction,
        "Remove your reaction", ("tenant", "user"), None, schemas.MessageWritten, query=("user_id",)),
    Api("POST", "/v1/channels/{cid}/read", http.move_read_marker, "Move your read marker forward",
        ("tenant", "user"), schemas.MoveReadMarker, schemas.ChannelWritten, idempotent=True),
    Api("POST", "/v1/channels/{cid}/typing", http.typing, "Say you are typing (ephemeral)",
        ("tenant", "user"), schemas.Typing, schemas.TypingDelivered, 202),
    Api("POST", "/v1/channels/{cid}/mutes", http.mute, "Mute a member (reads, cannot post)",
        ("tenant", "user"), schemas.Mute, schemas.ChannelWritten, 201, idempotent=True),
    Api("DELETE", "/v1/channels/{cid}/mutes/{uid}", http.unmute, "Unmute a member",
        ("tenant", "user"), None, schemas.ChannelWritten),
    Api("POST", "/v1/channels/{cid}/bans", http.ban, "Ban a user (removed, cannot rejoin)",
        ("tenant", "user"), schemas.Ban, schemas.ChannelWritten, 201, idempotent=True),
    Api("DELETE", "/v1/channels/{cid}/bans/{uid}", http.unban, "Lift a ban",
        ("tenant", "user"), None, schemas.ChannelWritten),
    Api("GET", "/v1/presence", http.get_presence, "Presence of up to 100 users of the tenant",
        ("tenant", "user"), None, schemas.PresenceMap, query=("user_ids",)),
    Api("GET", "/v1/channels/{cid}/presence", http.channel_presence, "How many of a channel's members are online",
        ("tenant", "user"), None, schemas.ChannelPresence),
    Api("GET", "/v1/events", http.list_events, "The tenant's events in log order",
        ("tenant",), None, schemas.EventPage,
        query=("after_position", ("limit", {"maximum": 1000}), "types", "min_position")),
    Api("GET", "/v1/usage", usage.get_usage, "The tenant's metered usage in hourly, daily or monthly buckets",
        ("tenant",), None, schemas.UsageReport, query=USAGE_QUERY),
    Api("GET", "/v1/tenants/{tenant_id}/usage", usage.get_tenant_usage, "Any tenant's metered usage (platform admin)",
        ("admin",), None, schemas.UsageReport, query=USAGE_QUERY),
    Api("GET", "/v1/analytics", analytics.get_analytics,
        "The tenant's active users, posts, active channels and median time to first reply by UTC day or month",
        ("tenant",), None, schemas.AnalyticsReport, query=ANALYTICS_QUERY),
    Api("PUT", "/v1/tenants/{tenant_id}/plan", billing.put_plan,
        "Put a tenant on a plan from now (a change mid-period is prorated by time: docs/plans.md)",
        ("admin",), schemas.PutPlan, schemas.PlanWritten),
    Api("GET", "/v1/billing/preview", billing.preview,
        "The current period's bill so far: a line per meter with tiers applied, and the total",
        ("tenant",), None, schemas.BillingPreview),
    Api("GET", "/v1/billing/invoices", billing.invoices,
        "The tenant's invoices and payment standing, as Stripe's webhooks reported them",
        ("tenant",), None, schemas.InvoiceList),
    Api("POST", "/v1/billing/stripe/webhook", billing.stripe_webhook,
        "Stripe's webhook: verified by its Stripe-Signature header (400 invalid_signature otherwise)",
        (), None, schemas.WebhookReceived),
    Api("POST", "/v1/webhooks", webhooks.create_webhook,
        "Register an outbound webhook endpoint; returns its signing secret (again on an idempotent retry)",
        ("tenant",), schemas.CreateWebhook, schemas.WebhookCreated, 201, idempotent=True),
    Api("GET", "/v1/webhooks", webhooks.list_webhooks, "The tenant's webhook endpoints",
        ("tenant",), None, schemas.WebhookList, query=("min_position",)),
    Api("GET", "/v1/webhooks/{webhook_id}", webhooks.get_webhook, "A webhook endpoint",
        ("tenant",), None, schemas.Webhook, query=("min_position",)),
    Api("PATCH", "/v1/webhooks/{webhook_id}", webhooks.update_webhook,
        "Change an endpoint's URL, event types or description; enabled: true re-enables it",
        ("tenant",), schemas.UpdateWebhook, schemas.WebhookWritten, idempotent=True),
    Api("DELETE", "/v1/webhooks/{webhook_id}", webhooks.delete_webhook, "Delete an endpoint (deliveries stop)",
        ("tenant",), None, schemas.WebhookWritten),
    Api("GET", "/v1/webhooks/{webhook_id}/deliveries", webhooks.list_deliveries,
        "The endpoint's delivery log, oldest first: attempt, status code, latency, error",
        ("tenant",), None, schemas.DeliveryPage, query=("limit", "after", "min_position")),
    Api("POST", "/v1/webhooks/{webhook_id}/replay", webhooks.replay_webhook,
        "Re-deliver the endpoint's matching events after from_position",
        ("tenant",), schemas.ReplayWebhook, schemas.WebhookWritten, idempotent=True),
    Api("POST", "/v1/webhooks/{webhook_id}/rotate-secret", webhooks.rotate_secret,
        "A new signing secret for the endpoint (the old one still signs for a day)",
        ("tenant",), None, schemas.WebhookSecret, idempotent=True),
    Api("PUT", "/v1/users/{user_id}/devices/{device_id}", devices.put_device,
        "Register a device's public keys for end-to-end encryption, or replace them (docs/e2e.md)",
        ("tenant", "user"), schemas.PutDevice, schemas.DeviceWritten, 201, upsert=True, idempotent=True),
    Api("GET", "/v1/users/{user_id}/devices", devices.list_devices,
        "The user's devices: identity key, signed prekey, one-time prekeys left",
        ("tenant", "user"), None, schemas.DeviceList),
    Api("DELETE", "/v1/users/{user_id}/devices/{device_id}", devices.remove_device, "Remove a device and its keys",
        ("tenant", "user"), None, schemas.DeviceWritten),
    Api("POST", "/v1/users/{user_id}/devices/{device_id}/prekeys", devices.add_prekeys,
        "Upload more one-time prekeys (at most 100 per request, 500 waiting per device)",
        ("tenant", "user"), schemas.AddPrekeys, schemas.DeviceWritten, 201, idempotent=True),
    Api("PUT", "/v1/users/{user_id}/devices/{device_id}/signed-prekey", devices.rotate_signed_prekey,
        "Rotate the device's signed prekey (its signature is verified against the identity key)",
        ("tenant", "user"), schemas.SignedPrekey, schemas.DeviceWritten, idempotent=True),
    Api("POST", "/v1/users/{user_id}/devices/{device_id}/bundle", devices.claim_bundle,
        "Fetch a device's prekey bundle: its one-time prekey is handed out to this caller only",
        ("tenant", "user"), None, schemas.Bundle, idempotent=True),
    Api("POST", "/v1/users/{user_id}/bundles", devices.claim_bundles,
        "Fetch the prekey bundles of every device of the user (one one-time prekey each, handed out once)",
        ("tenant", "user"), None, schemas.BundleList, idempotent=True),
    Api("PUT", "/v1/policies/{policy_id}", policies.put_policy,
        "Create or replace an ABAC policy (docs/abac.md); in force on every node within a second",
        ("tenant",), schemas.PutPolicy, schemas.PolicyWritten, idempotent=True),
    Api("GET", "/v1/policies", policies.list_policies, "The tenant's ABAC policies, and every action they may name",
        ("tenant",), None, schemas.PolicyList),
    Api("GET", "/v1/policies/{policy_id}", policies.get_policy, "An ABAC policy",
        ("tenant",), None, schemas.Policy),
    Api("DELETE", "/v1/policies/{policy_id}", policies.delete_policy, "Delete an ABAC policy",
        ("tenant",), None, schemas.PolicyWritten),
    Api("PUT", "/v1/retention", retention.put_retention,
        "Keep the tenant's messages N days (null: forever): older ones disappear from reads and are shredded",
        ("tenant",), schemas.PutRetention, schemas.RetentionWritten, idempotent=True),
    Api("GET", "/v1/retention", retention.get_retention, "The tenant's default retention",
        ("tenant",), None, schemas.TenantRetention),
    Api("PUT", "/v1/channels/{cid}/retention", retention.put_channel_retention,
        "Override the tenant's retention in one channel (null: follow the tenant's default)",
        ("tenant",), schemas.PutRetention, schemas.RetentionWritten, idempotent=True),
    Api("GET", "/v1/channels/{cid}/retention", retention.get_channel_retention,
        "The channel's retention: override, effective days, holds, what is hidden, the days shredded",
        ("tenant",), None, schemas.ChannelRetention),
    Api("POST", "/v1/channels/{cid}/legal-hold", retention.place_channel_hold,
        "Place a legal hold on a channel: nothing in it is hidden or shredded while it lasts",
        ("tenant",), schemas.PlaceLegalHold, schemas.LegalHoldWritten, idempotent=True),
    Api("DELETE", "/v1/channels/{cid}/legal-hold", retention.release_channel_hold,
        "Release a channel's legal hold", ("tenant",), schemas.ReleaseLegalHold, schemas.LegalHoldWritten),
    Api("POST", "/v1/users/{uid}/legal-hold", retention.place_user_hold,
        "Place a legal hold on a user: the user cannot be erased, and the channels they are or were in keep "
        "everything", ("tenant",), schemas.PlaceLegalHold, schemas.LegalHoldWritten, idempotent=True),
    Api("DELETE", "/v1/users/{uid}/legal-hold", retention.release_user_hold,
        "Release a user's legal hold", ("tenant",), schemas.ReleaseLegalHold, schemas.LegalHoldWritten),
    Api("GET", "/v1/audit", audit.get_audit,
        "The tenant's audit trail: admin, key, moderation, policy, erasure, retention and device actions",
        ("tenant",), None, schemas.AuditPage, exports=True,
        query=(("after", {"type": "integer", "minimum": 0, "description": "a position: the previous page's "
               "next_after"}), ("limit", {"maximum": 1000}), ("from", {"required": False}),
               ("to", {"required": False}), "actor", "action", "format", "min_position")),
    Api("GET", "/healthz", http.healthz, "The process is up"),
    Api("GET", "/readyz", http.readyz, "The backend is reachable; projection lag"),
]  # fmt: skip


# One security scheme per credential; each is sent as ``Authorization: Bearer <credential>``.
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "admin": {"type": "http", "scheme": "bearer", "description": (
        "The platform operator's admin token (CAAS_ADMIN_TOKEN): `Authorization: Bearer <admin token>`.")},
    "tenant": {"type": "http", "scheme": "bearer", "description": (
        "A tenant API key, for the tenant's backend (shown once by POST /v1/tenants and POST /v1/api-keys): "
        "`Authorization: Bearer <API key>`.")},
    "user": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": (
        "An end-user token minted by POST /v1/users/{user_id}/tokens: `Authorization: Bearer <token>` "
        "(the websocket takes it as `?token=`).")},
}  # fmt: skip
SCHEME_NAMES = {"admin": "adminToken", "tenant": "tenantApiKey", "user": "userToken"}
RATE_HEADERS: dict[str, dict[str, Any]] = {
    "RateLimit-Limit": {"description": "requests the rate limit that binds first allows in a burst on this node "
                        "(IETF httpapi rate-limit headers draft); a user token's own limit. Absent on a user "
                        "token's reads (docs/api.md, Rate limits)", "schema": {"type": "integer", "minimum": 1}},
    "RateLimit-Remaining": {"description": "requests left now: that many more sent at once are admitted",
                            "schema": {"type": "integer", "minimum": 0}},
    "RateLimit-Reset": {"description": "seconds until that limit is whole again",
                        "schema": {"type": "integer", "minimum": 0}},
}  # fmt: skip
RETRY_AFTER = {"description": "seconds to wait before a retry", "schema": {"type": "integer", "minimum": 1}}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes the write safe to retry: a retry by the same caller with the same key and the same request "
        "gets the first answer (200) and records nothing more; the same key with another request is "
        "409 conflict (rule idempotency_key_reused). Keys are kept as long as the log."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
}
STRIPE_SIGNATURE = {
    "name": "Stripe-Signature",
    "in": "header",
    "required": True,
    "description": "Stripe's signature of the body (t=…,v1=…); 400 invalid_signature if it does not verify",
    "schema": {"type": "string"},
}
TAGS: list[tuple[str, str, str]] = [  # (path prefix, tag, description); the first match wins
    ("/v1/tenants/{tenant_id}/", "platform", "The platform operator's routes (admin token)"),
    ("/v1/tenants", "platform", "The platform operator's routes (admin token)"),
    ("/v1/api-keys", "credentials", "API keys, the end-user token signing key, browser origins"),
    ("/v1/signing-keys", "credentials", "API keys, the end-user token signing key, browser origins"),
    ("/v1/cors", "credentials", "API keys, the end-user token signing key, browser origins"),
    ("/v1/users/{user_id}/devices", "e2e", "Devices and prekey bundles for end-to-end encryption (docs/e2e.md)"),
    ("/v1/users/{user_id}/bundles", "e2e", "Devices and prekey bundles for end-to-end encryption (docs/e2e.md)"),
    ("/v1/users", "users", "End users and their tokens"),
    ("/v1/channels/{cid}/messages", "messages", "Messages, threads, reactions"),
    ("/v1/channels/{cid}/read", "messages", "Messages, threads, reactions"),
    ("/v1/channels/{cid}/typing", "presence", "Presence and typing"),
    ("/v1/channels/{cid}/presence", "presence", "Presence and typing"),
    ("/v1/presence", "presence", "Presence and typing"),
    ("/v1/channels", "channels", "Channels, members and moderation (mutes, bans)"),
    ("/v1/events", "events", "The tenant's event log"),
    ("/v1/usage", "billing", "Usage, bills, invoices, Stripe"),
    ("/v1/analytics", "analytics", "Tenant analytics: active users, posts, channels, reply times"),
    ("/v1/billing", "billing", "Usage, bills, invoices, Stripe"),
    ("/v1/policies", "policies", "Attribute-based access control: the tenant's policies (docs/abac.md)"),
    ("/v1/retention", "compliance", "Retention, legal hold and the audit trail"),
    ("/v1/audit", "compliance", "Retention, legal hold and the audit trail"),
    ("/", "operations", "Health and readiness"),
]


def tag(path: str) -> str:
    return next(name for prefix, name, _ in TAGS if path.startswith(prefix))


def rate_limited(api: Api) -> bool:
    """Whether the route draws on the rate limits: every credential but the admin token does
    (``api.plumbing.principal``), and then its answers carry ``RateLimit-*`` headers (but for a
    user token's reads)."""
    return any(kind != "admin" for kind in api.who)


def openapi() -> dict[str, object]:
    """The OpenAPI 3.1 document, generated from :data:`ROUTES` and the pydantic schemas."""
    components: dict[str, object] = {}

    def ref(model: type[BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            components[name] = sub
        components[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    def headers(names: dict[str, dict[str, Any]], required: bool) -> dict[str, object]:
        return {name: {"$ref": f"#/components/headers/{name}"} if required else {**spec, "required": False}
                for name, spec in names.items()}  # fmt: skip

    error_schema = ref(schemas.ErrorBody)
    paths: dict[str, dict[str, object]] = {}
    for api in ROUTES:
        params = [
            {"name": name, "in": "path", "required": True, "schema": _path_schema(name)}
            for name in _path_params(api.path)
        ]
        params += [_query_param(entry) for entry in api.query]
        if api.idempotent:
            params.append(IDEMPOTENCY_KEY)
        if api.endpoint is billing.stripe_webhook:
            params.append(STRIPE_SIGNATURE)
        limited = rate_limited(api)
        rated = headers(RATE_HEADERS, required=True) if limited else {}
        name = api.endpoint.__name__
        ok: dict[str, object] = {"description": "success"}
        if api.returns is not None:
            media: dict[str, object] = {"schema": ref(api.returns)}
            if name in examples.RESPONSES:
                media["example"] = examples.RESPONSES[name]
            ok["content"] = {"application/json": media, **(EXPORT_MEDIA if api.exports else {})}
        if rated:
            ok["headers"] = rated
        maybe_rated = headers(RATE_HEADERS, required=False) if limited else {}
        error: dict[str, object] = {
            "description": "error: `error.code` says what went wrong (api/errors.py)",
            "content": {"application/json": {"schema": error_schema, "example": examples.ERROR}},
        }
        if maybe_rated:
            error["headers"] = maybe_rated
        unavailable = {
            "description": "the backend is unavailable or busy: retry after Retry-After seconds",
            "content": {"application/json": {"schema": error_schema, "example": examples.UNAVAILABLE}},
            "headers": {"Retry-After": {**RETRY_AFTER, "required": False}, **maybe_rated},
        }
        responses: dict[str, object] = {str(api.status): ok, "4XX": error, "503": unavailable}
        if limited:
            responses["429"] = {
                "description": "rate limited: retry after Retry-After seconds (docs/api.md, Rate limits)",
                "headers": {"Retry-After": {"$ref": "#/components/headers/Retry-After"}, **rated},
                "content": {"application/json": {"schema": error_schema, "example": examples.RATE_LIMITED}},
            }
        if api.status == 201 and api.returns is not None and issubclass(api.returns, schemas.Written):
            # plumbing.written: 201 when the write creates, 200 for an update or a replay
            again = "an update of what existed, or " if api.upsert else ""
            replay = "the replay of an idempotent retry" if api.idempotent else "a write that created nothing"
            responses["200"] = {**ok, "description": f"{again}{replay}"}
        op: dict[str, object] = {
            "summary": api.summary,
            "operationId": name,
            "tags": [tag(api.path)],
            "parameters": params,
            "responses": responses,
        }
        if api.who:
            op["security"] = [{SCHEME_NAMES[kind]: []} for kind in api.who]
            op["description"] = "Credential: " + " or ".join(api.who)
        if api.body is not None:
            body: dict[str, object] = {"schema": ref(api.body)}
            if name in examples.REQUESTS:
                body["example"] = examples.REQUESTS[name]
            op["requestBody"] = {"required": False, "content": {"application/json": body}}
        paths.setdefault(api.path, {})[api.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "CAAS", "version": "1.0.0", "description": "Chat as a service: the v1 HTTP API."},
        "tags": [{"name": name, "description": text} for name, text in dict((n, d) for _, n, d in TAGS).items()],
        "paths": paths,
        "components": {
            "schemas": components,
            "headers": {
                name: {**spec, "required": True} for name, spec in {**RATE_HEADERS, "Retry-After": RETRY_AFTER}.items()
            },
            "securitySchemes": {SCHEME_NAMES[kind]: scheme for kind, scheme in SECURITY_SCHEMES.items()},
        },
    }


def _path_schema(name: str) -> dict[str, Any]:
    if name == "emoji":
        return {"type": "string", "minLength": 1}
    return {"type": "string", "pattern": schemas.ID_PATTERN}


def _query_param(entry: str | tuple[str, dict[str, Any]]) -> dict[str, Any]:
    name, narrowed = (entry, {}) if isinstance(entry, str) else entry
    schema = {**QUERY[name], **narrowed}
    required = schema.pop("required", False)
    return {"name": name, "in": "query", "required": required, "schema": schema}


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
