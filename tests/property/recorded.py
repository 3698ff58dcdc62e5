"""Generated facts as recorded events, positioned as each backend positions them (the usage and
analytics property tests share it)."""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from adapters.kafka.codec import encode_position
from domain.events import Event

StreamKey = tuple[str, str]  # tenant id, stream
Position = Callable[[StreamKey, int], int]  # (stream key, index in the log) -> position


def recorded(log: Sequence[Any], position: Position, when: Callable[[Any], str]) -> list[Event]:
    """The facts as recorded events: ``position(stream key, index)`` gives each its position,
    ``when(fact)`` its time; each stream's seq counts from 1."""
    seqs: Counter[StreamKey] = Counter()
    events = []
    for i, fact in enumerate(log):
        key = (fact.tenant_id, fact.stream)
        seqs[key] += 1
        events.append(
            Event(
                event_id=f"e{i}",
                tenant_id=fact.tenant_id,
                stream=fact.stream,
                seq=seqs[key],
                position=position(key, i),
                type=fact.type,
                schema_version=1,
                occurred_at=when(fact),
                actor=fact.actor,
                payload=fact.payload,
            )
        )
    return events


def partitioned(partitions: int) -> Position:
    """Kafka's positions: each stream hashed onto a partition (the same in every run: ``hash()``
    is salted), offsets counted per partition."""
    offsets: Counter[int] = Counter()

    def position(key: StreamKey, i: int) -> int:
        partition = zlib.crc32(repr(key).encode()) % partitions
        offsets[partition] += 1
        return encode_position(partition, offsets[partition] - 1)

    return position
