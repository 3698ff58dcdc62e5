"""The event index: every event as a document, for reading a stream or a tenant's log
where the log itself cannot (Kafka has no read-by-stream). Payloads are stored as JSON
text so that user-chosen keys never become document field names."""

from __future__ import annotations

import orjson

from domain.events import Event, upcast
from projections.ports import Doc, Op

NAME = "events"
COLLECTIONS = ("events",)


def project(event: Event) -> list[Op]:
    fields = event.model_dump(exclude={"payload", "tenant_id"})
    fields["payload_json"] = orjson.dumps(event.payload).decode()
    return [Op("events", event.tenant_id, f"{event.stream}/{event.seq:012d}", event.position, set=fields)]


def to_event(doc: Doc) -> Event:
    """The indexed event, its payload upcast (an index built before a schema change holds the
    old shape, as the log does)."""
    data = {k: v for k, v in doc.items() if k not in ("_id", "payload_json")}
    stored = orjson.loads(doc["payload_json"])
    data["schema_version"], data["payload"] = upcast(data["type"], data["schema_version"], stored)
    return Event.model_construct(**data)
