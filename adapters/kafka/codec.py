"""How CAAS lays its log out on Kafka: topics, partitioning, positions, record encoding.

- ``<prefix>commands`` and ``<prefix>events`` have the same number of partitions and are
  keyed by ``<tenant>/<stream>``, so a stream's commands and events share a partition
  number and one decider owns both.
- A ``position`` is ``((offset + 1) << 10) | partition``: unique, increasing within a
  partition, and decodable back to the offset that ``min_position`` waits for. Across
  partitions positions interleave but promise no order; with one partition (the default)
  they are a total order like the embedded log's.
- A record's value is the event's JSON (with its ``traceparent``, if any, which the command and
  event records also carry as a ``traceparent`` header: :mod:`adapters.tracing`).
- A projection's checkpoints are kept per partition (:func:`streams.projector.checkpoint_name`) and hold the
  next offset to apply (:func:`checkpoint_mark`).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from domain.events import Event, upcast
from streams.projector import checkpoint_name as checkpoint_name  # kept here too: the layout names it

PARTITION_BITS = 10
MAX_PARTITIONS = 1 << PARTITION_BITS


def stream_key(tenant_id: str, stream: str) -> str:
    return f"{tenant_id}/{stream}"


def partition_for(key: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key), as the Java clients compute it."""
    hashed: int = murmur2(key.encode())
    return (hashed & 0x7FFFFFFF) % partitions


def encode_position(partition: int, offset: int) -> int:
    return ((offset + 1) << PARTITION_BITS) | partition


def decode_position(position: int) -> tuple[int, int]:
    """``(partition, offset)`` of a position."""
    return position & (MAX_PARTITIONS - 1), (position >> PARTITION_BITS) - 1


def checkpoint_mark(event: Event) -> int:
    """What a checkpoint holds once ``event`` is applied: the next offset of its partition."""
    return decode_position(event.position)[1] + 1


def event_value(event: Event) -> bytes:
    """An event as a Kafka record value (its position is the record's own coordinates). Its
    ``traceparent``, left out of the event's JSON everywhere else, is kept here when it has one
    (a record without it reads back as ``None``, like the records written before tracing)."""
    data = event.model_dump(exclude={"position"})
    if event.traceparent is not None:
        data["traceparent"] = event.traceparent
    return orjson.dumps(data)


def event_from_record(value: bytes, partition: int, offset: int) -> Event:
    data: dict[str, Any] = orjson.loads(value)
    version, payload = upcast(data["type"], data["schema_version"], data["payload"])
    data.update(schema_version=version, payload=payload, position=encode_position(partition, offset))
    return Event.model_construct(**data)
