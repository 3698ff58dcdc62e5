"""The webhook endpoints read model: one document per endpoint, in one scope for all tenants
(:data:`SCOPE`), so the delivery processor finds every endpoint with one query and the API
lists a tenant's by the ``tenant`` field. No secret is kept: it is derived when needed
(:func:`streams.webhooks.endpoint_secret`)."""

from __future__ import annotations

from domain.events import Event, StreamId
from projections.ports import Doc, Op

NAME = "webhooks"
COLLECTIONS = ("webhooks",)
SCOPE = "_webhooks"  # not a tenant id (those start with a letter or digit)


def doc_id(tenant_id: str, endpoint_id: str) -> str:
    return f"{tenant_id}/{endpoint_id}"


def project(event: Event) -> list[Op]:
    if not event.type.startswith("Webhook"):
        return []
    endpoint_id = StreamId.parse(event.stream).id
    p = event.payload
    common = {"version": event.seq, "updated_at": event.occurred_at}
    key = doc_id(event.tenant_id, endpoint_id)
    match event.type:
        case "WebhookRegistered":
            fields = {
                **common,
                "tenant": event.tenant_id,
                "endpoint_id": endpoint_id,
                "url": p["url"],
                "event_types": p["event_types"],
                "description": p.get("description", ""),
                "enabled": True,
                "deleted": False,
                "created_at": event.occurred_at,
                "start_position": event.position,  # deliveries start after the registration
                "replay_from": None,
                "replay_seq": 0,
                "disabled_reason": None,
                "config_version": event.seq,
            }
        case "WebhookUpdated":
            fields = {
                **common,
                "url": p["url"],
                "event_types": p["event_types"],
                "description": p.get("description", ""),
                "config_version": event.seq,
            }
        case "WebhookEnabled":
            fields = {**common, "enabled": True, "disabled_reason": None, "config_version": event.seq}
        case "WebhookDisabled":
            fields = {**common, "enabled": False, "disabled_reason": p["reason"]}
        case "WebhookReplayRequested":
            fields = {**common, "replay_from": p["from_position"], "replay_seq": event.seq}
        case "WebhookSecretRotated":
            fields = {
                **common,
                "secret_generation": event.seq,
                "previous_generation": p.get("previous_generation", 0),
                "secret_rotated_at": event.occurred_at,
            }
        case "WebhookDeleted":
            fields = {**common, "deleted": True, "enabled": False}
        case _:
            return []
    return [Op("webhooks", SCOPE, key, event.position, set=fields)]


def public(doc: Doc) -> Doc:
    """An endpoint as the API shows it."""
    return {
        "webhook_id": doc["endpoint_id"],
        "url": doc["url"],
        "event_types": doc["event_types"],
        "description": doc.get("description", ""),
        "enabled": doc["enabled"],
        "disabled_reason": doc.get("disabled_reason"),
        "created_at": doc.get("created_at"),
        "updated_at": doc.get("updated_at"),
        "version": doc["version"],
    }
