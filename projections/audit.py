"""The audit trail's read model (docs/audit.md): one document per audited event.

``audit/<stream>/<seq>``: position, occurred_at, actor, request_id (the event's correlation
id), action (the event type), category, target (the stream) and the payload without secrets,
as JSON text (``details_json``: user-chosen keys never become field names). Which events are
audited is :mod:`domain.audit`'s table.
"""

from __future__ import annotations

from typing import Any

import orjson

from domain import audit
from domain.events import Event
from projections.chat import message_key
from projections.ports import Doc, Op

NAME = "audit"
COLLECTIONS = ("audit",)


def project(event: Event) -> list[Op]:
    if not audit.audited(event.type, event.actor, event.payload):
        return []
    doc: dict[str, Any] = {
        "position": event.position,
        "occurred_at": event.occurred_at,
        "actor": event.actor,
        "request_id": event.correlation_id,
        "action": event.type,
        "category": audit.AUDITED[event.type],
        "target": event.stream,
        "details_json": orjson.dumps(audit.details(event.payload)).decode(),
    }
    if event.type == "MessageDeleted":  # whether its author deleted it is told when the trail is read
        doc["message"] = message_key(event.stream_id, str(event.payload.get("message_id")))
    return [Op("audit", event.tenant_id, f"{event.stream}/{event.seq:012d}", event.position, set=doc)]


def render(doc: Doc) -> Doc:
    """An audit entry as ``GET /v1/audit`` shows it."""
    return {
        "position": doc["position"],
        "occurred_at": doc["occurred_at"],
        "actor": doc.get("actor"),
        "request_id": doc.get("request_id"),
        "action": doc["action"],
        "category": doc["category"],
        "target": doc["target"],
        "details": orjson.loads(doc["details_json"]),
    }
