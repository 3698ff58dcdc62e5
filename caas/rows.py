"""An event as ``caas replay`` prints it: a JSON object per line, or a CSV row.

``caas export --format jsonl|csv`` writes the same lines, so an export and a replay of the same
selection are the same bytes.
"""

from __future__ import annotations

from typing import Any

import orjson

from domain.events import Event

# The CSV columns, in order (a JSON line has every field of the envelope)
CSV_HEADER = ("position", "tenant_id", "stream", "seq", "type", "occurred_at", "event_id", "payload")


def jsonl_line(event: Event) -> str:
    """The event's envelope as one JSON object and a newline."""
    return orjson.dumps(event.model_dump()).decode() + "\n"


def csv_row(event: Event) -> list[Any]:
    """The event as a row of :data:`CSV_HEADER`'s columns (the payload as JSON text)."""
    payload = orjson.dumps(event.payload).decode()
    return [event.position, event.tenant_id, event.stream, event.seq, event.type, event.occurred_at,
            event.event_id, payload]  # fmt: skip
