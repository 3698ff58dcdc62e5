"""What the audit trail lists (``GET /v1/audit``, docs/audit.md): the one place that names them.

Every admin, credential, moderation, policy, erasure, retention and device-identity action is
an event; this table names their types and the category each belongs to, by name, so that
events other parts of the code base define join the trail as soon as they are recorded. An
audit entry shows the event's payload without :data:`SECRET_FIELDS`.
"""

from __future__ import annotations

from typing import Any

AUDITED: dict[str, str] = {
    # tenant stream: the tenant, its credentials and settings
    "TenantRegistered": "admin",
    "ApiKeyIssued": "key",
    "ApiKeyRevoked": "key",
    "SigningKeyRotated": "key",
    "AllowedOriginsSet": "admin",
    "ConsoleSessionOpened": "admin",
    "ConsoleSessionClosed": "admin",
    "PolicySet": "policy",
    "PolicyDeleted": "policy",
    # billing stream
    "PlanChanged": "admin",
    # webhook streams
    "WebhookRegistered": "admin",
    "WebhookUpdated": "admin",
    "WebhookEnabled": "admin",
    "WebhookDisabled": "admin",
    "WebhookReplayRequested": "admin",
    "WebhookSecretRotated": "key",
    "WebhookDeleted": "admin",
    # channel streams: moderation (MemberRemoved and MessageDeleted only when someone else acts)
    "MemberRemoved": "moderation",
    "MemberRoleChanged": "moderation",
    "MemberMuted": "moderation",
    "MemberUnmuted": "moderation",
    "MemberBanned": "moderation",
    "MemberUnbanned": "moderation",
    "MessageDeleted": "moderation",
    # retention and legal hold (channel, tenant and user streams)
    "RetentionSet": "retention",
    "LegalHoldPlaced": "retention",
    "LegalHoldReleased": "retention",
    "ChannelDayShredded": "retention",
    # user streams: erasure and device identities
    "UserErased": "erasure",
    "DeviceRegistered": "device",
    "DeviceRemoved": "device",
    "SignedPrekeyRotated": "device",
    "IdentityKeyChanged": "device",
}
CATEGORIES = frozenset(AUDITED.values())

# payload fields never shown: hashes of secrets, and anything named like a secret
SECRET_FIELDS = frozenset({"key_hash", "secret_hash", "secret", "token", "api_key", "wrapped_key", "private_key"})


def audited(event_type: str, actor: str | None, payload: dict[str, Any]) -> bool:
    """Whether an event belongs in the audit trail. A member leaving (``MemberRemoved`` by
    that user) is not moderation; a user deleting their own message is told apart when the
    trail is read (the author is not in the event)."""
    if event_type not in AUDITED:
        return False
    return not (event_type == "MemberRemoved" and actor == f"user:{payload.get('user_id')}")


def details(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as an audit entry shows it: without secrets (nor their hashes)."""
    return {k: v for k, v in payload.items() if k not in SECRET_FIELDS and "secret" not in k and "hash" not in k}
