"""Property test of the Parquet export's partitioning (caas/export.py): whatever the events'
days and types, and however small the row groups, the waiting rows and the open files are made,
every event lands in exactly one file, of the partition named by its UTC day and its type, in the
log's order within its partition, with every field as it was; the union of the files is the input."""

from __future__ import annotations

import itertools
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from caas.analytics import read_export
from caas.export import ParquetSink, partition_of
from commands.ports import event_row
from domain.base import format_time
from domain.events import Event

TYPES = ("MessagePosted", "MessageEdited", "ReactionAdded", "ChannelCreated")
START = datetime(2026, 11, 29, tzinfo=UTC)
DAY_MS = 24 * 3600 * 1000
# a day's first and last millisecond, and any in between
MOMENTS = st.one_of(st.sampled_from([0, 1, DAY_MS - 1]), st.integers(0, DAY_MS - 1))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def logs(draw: st.DrawFn) -> list[Event]:
    count = draw(st.integers(0, 60))
    events = []
    for position in range(1, count + 1):
        day, moment = draw(st.integers(0, 4)), draw(MOMENTS)
        occurred_at = format_time(START + timedelta(days=day, milliseconds=moment))
        events.append(
            Event(
                event_id=f"e{position}",
                tenant_id=draw(st.sampled_from(["t1", "t2"])),
                stream=f"channel:c{draw(st.integers(0, 2))}",
                seq=position,
                position=position * draw(st.sampled_from([1, 1024])),  # embedded, or Kafka-like gaps
                type=draw(st.sampled_from(TYPES)),
                schema_version=draw(st.integers(1, 3)),
                occurred_at=occurred_at,
                actor=draw(st.none() | st.just("user:alice")),
                command_id=draw(st.none() | st.just(f"cmd-{position}")),
                causation_id=None,
                correlation_id=draw(st.none() | st.just("req-1")),
                payload=draw(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=4)),
            )
        )
    return events


def batches(events: list[Event], cuts: list[int]) -> list[list[Event]]:
    """``events`` cut into consecutive batches at ``cuts``."""
    bounds = sorted({c % (len(events) + 1) for c in cuts} | {0, len(events)})
    return [events[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def row_as_event(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "occurred_at": format_time(row["occurred_at"]), "payload": json.loads(row["payload"])}


@settings(max_examples=60, deadline=None)
@given(
    events=logs(),
    cuts=st.lists(st.integers(0, 60), max_size=6),
    row_group_rows=st.integers(1, 8),
    buffered_rows=st.integers(1, 20),
    open_files=st.integers(1, 3),
)
def test_every_event_lands_in_exactly_its_partition_and_the_union_is_the_input(
    events: list[Event], cuts: list[int], row_group_rows: int, buffered_rows: int, open_files: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sink = ParquetSink(root, row_group_rows=row_group_rows, buffered_rows=buffered_rows, open_files=open_files)
        for batch in batches(events, cuts):
            sink.write([event_row(e) for e in batch])
            assert sink.waiting <= buffered_rows, "rows waiting in memory stay bounded"
            assert len(sink.open) <= open_files, "open files stay bounded"
        counts = sink.close()

        expected: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for event in events:
            expected.setdefault(partition_of(event), []).append(event.model_dump())
        found: dict[tuple[str, str], list[dict[str, Any]]] = {}
        files = sorted(root.glob("day=*/type=*/part-*.parquet"), key=lambda p: (p.parent, int(p.stem[5:])))
        for path in files:
            day, event_type = path.parent.parent.name.removeprefix("day="), path.parent.name.removeprefix("type=")
            rows = [row_as_event({**r, "type": event_type}) for r in pq.read_table(path).to_pylist()]
            assert rows, f"{path}: no empty files"
            assert all(r["occurred_at"].startswith(day + "T") for r in rows), path
            found.setdefault((day, event_type), []).extend(rows)

        assert found == expected  # each partition holds its events, in log order, field for field
        assert (counts.events, counts.partitions, counts.files) == (len(events), len(expected), len(files))
        union = read_export(root).to_pylist()
        assert [row_as_event(r) for r in union] == sorted((e.model_dump() for e in events), key=lambda e: e["position"])
