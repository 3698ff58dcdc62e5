"""``caas export``: a selection of the log written to a directory, as Parquet, JSONL or CSV.

Parquet is written partitioned by day and event type, hive-style, so DuckDB, pandas, Polars or
Spark read the directory as one table and prune by ``day`` and ``type``::

    DIR/day=2026-12-03/type=MessagePosted/part-0.parquet

The table (:data:`SCHEMA`) is the event's envelope as typed columns, and its payload as one JSON
column. Payloads differ per event type (a ``MessagePosted`` has ``text``, a ``MemberBanned`` a
``user_id``) and grow fields over time (an upcaster lifts old ones on read), so one JSON column
keeps a single schema for every file and every version of the event, which any reader can unnest
(DuckDB: ``payload->>'$.text'``). The files hold every column but ``type`` (:data:`FILE_SCHEMA`):
the type is the ``type=`` directory, as the day is the ``day=`` one. A column that is also a
partition would make readers that infer partitions (``pyarrow.parquet.read_table``,
``pandas.read_parquet``) refuse the directory, its two types (string, dictionary) not merging.

The log is streamed, never held: rows wait per partition until a row group's worth
(:data:`ROW_GROUP_ROWS`) is there, or until the rows waiting in all partitions pass
:data:`BUFFERED_ROWS`, when the largest waiting partitions are written out; at most
:data:`OPEN_FILES` files are open at once (a partition whose file was closed goes on in its next
``part-N`` file). JSONL and CSV are one file each (``events.jsonl``, ``events.csv``), the very
lines ``caas replay`` prints.

An export is written into a hidden directory beside ``DIR`` and renamed to ``DIR`` only once
complete: a failed or interrupted export leaves no ``DIR`` behind (a killed one may leave the
hidden ``.DIR.partial-*`` directory, which is safe to delete).
"""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from caas.rows import CSV_HEADER, csv_row, jsonl_line
from caas.selection import Selection
from domain.events import Event

Format = Literal["parquet", "jsonl", "csv"]
FORMATS: tuple[Format, ...] = ("parquet", "jsonl", "csv")
MANIFEST = "_export.json"  # leading "_": dataset readers (pyarrow, Spark) skip it; DuckDB's *.parquet glob too

TIME = pa.timestamp("ms", tz="UTC")  # the log keeps milliseconds
JSON = pa.json_(pa.string())  # Parquet's JSON logical type: DuckDB reads the column as JSON
SCHEMA = pa.schema(
    [
        pa.field("position", pa.int64(), nullable=False),
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("stream", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("occurred_at", TIME, nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("actor", pa.string()),
        pa.field("command_id", pa.string()),
        pa.field("causation_id", pa.string()),
        pa.field("correlation_id", pa.string()),
        pa.field("payload", JSON, nullable=False),
    ],
    metadata={"caas.export": "1"},  # the version of this layout
)
# What each file holds: the type is its directory's (``type=``)
FILE_SCHEMA = SCHEMA.remove(SCHEMA.get_field_index("type"))
# The partitions, as hive-style directories: the UTC day of ``occurred_at``, the event type
PARTITIONING = pa.schema([("day", pa.string()), ("type", pa.string())])
# Columns whose values repeat (a tenant's id, a channel's stream, an author): dictionary-encoded.
# Unique ones (ids, payloads) are not: a dictionary of unique values only costs time.
DICTIONARY_COLUMNS = ["tenant_id", "stream", "actor"]

ROW_GROUP_ROWS = 65_536  # rows of one partition written as one row group
BUFFERED_ROWS = 262_144  # rows waiting in all partitions together, at most (before a batch lands)
OPEN_FILES = 64  # Parquet files open at once


def _payloads(events: Sequence[Event]) -> pa.Array:
    storage = pa.array([orjson.dumps(e.payload) for e in events], pa.binary()).view(pa.string())
    return pa.ExtensionArray.from_storage(JSON, storage)


def _column(name: str, kind: pa.DataType) -> Callable[[Sequence[Event]], pa.Array]:
    return lambda events: pa.array([getattr(e, name) for e in events], kind)


# How each column of :data:`SCHEMA` is made from a batch of events
COLUMNS: dict[str, Callable[[Sequence[Event]], pa.Array]] = {
    **{f.name: _column(f.name, f.type) for f in SCHEMA if f.name not in ("occurred_at", "payload")},
    "occurred_at": lambda events: pa.array([e.occurred_at for e in events], pa.string()).cast(TIME),
    "payload": _payloads,
}


def to_batch(events: Sequence[Event], schema: pa.Schema = SCHEMA) -> pa.RecordBatch:
    """Events as a record batch of ``schema`` (:data:`SCHEMA`, or some of its columns)."""
    return pa.RecordBatch.from_arrays([COLUMNS[name](events) for name in schema.names], schema=schema)


def partition_of(event: Event) -> tuple[str, str]:
    """``(day, type)``: the UTC day of ``occurred_at`` (``2026-12-03``) and the event type."""
    return event.occurred_at.partition("T")[0], event.type


def partition_path(day: str, event_type: str) -> str:
    """The directory of a partition, relative to the export's (hive-style ``key=value``)."""
    return f"day={day}/type={event_type}"


@dataclass
class Counts:
    """What an export wrote."""

    events: int = 0
    files: int = 0
    partitions: int = 0


class Sink(Protocol):
    """Where exported events go, in log order, batch by batch."""

    def write(self, events: Sequence[Event]) -> None: ...

    def close(self) -> Counts:
        """Write what waits, close every file; what was written."""
        ...


@dataclass
class _Partition:
    directory: Path
    waiting: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0
    files: int = 0  # part-N files begun
    writer: pq.ParquetWriter | None = None


class ParquetSink:
    """Parquet files partitioned by day and event type, written in row groups as events come."""

    def __init__(
        self,
        root: Path,
        *,
        row_group_rows: int = ROW_GROUP_ROWS,
        buffered_rows: int = BUFFERED_ROWS,
        open_files: int = OPEN_FILES,
    ) -> None:
        self.root = root
        self.row_group_rows = row_group_rows
        self.buffered_rows = buffered_rows
        self.open_files = open_files
        self.partitions: dict[tuple[str, str], _Partition] = {}
        self.open: OrderedDict[tuple[str, str], _Partition] = OrderedDict()  # least recently written first
        self.waiting = 0
        self.events = 0

    def write(self, events: Sequence[Event]) -> None:
        groups: dict[tuple[str, str], list[Event]] = {}
        for event in events:
            key = partition_of(event)
            group = groups.get(key)
            if group is None:
                groups[key] = [event]
            else:
                group.append(event)
        for key, group in groups.items():
            part = self.partitions.get(key)
            if part is None:
                part = self.partitions[key] = _Partition(self.root / partition_path(*key))
            part.waiting.append(to_batch(group, FILE_SCHEMA))
            part.rows += len(group)
            self.waiting += len(group)
            if part.rows >= self.row_group_rows:
                self._flush(key, part)
        self.events += len(events)
        while self.waiting > self.buffered_rows:
            key, part = max(self.partitions.items(), key=lambda item: item[1].rows)
            self._flush(key, part)

    def _flush(self, key: tuple[str, str], part: _Partition) -> None:
        if not part.rows:
            return
        if part.writer is None:
            while len(self.open) >= self.open_files:
                _, oldest = self.open.popitem(last=False)
                assert oldest.writer is not None
                oldest.writer.close()
                oldest.writer = None
            part.directory.mkdir(parents=True, exist_ok=True)
            part.writer = pq.ParquetWriter(
                part.directory / f"part-{part.files}.parquet",
                FILE_SCHEMA,
                compression="snappy",
                use_dictionary=DICTIONARY_COLUMNS,
            )
            part.files += 1
        self.open[key] = part
        self.open.move_to_end(key)
        table = pa.Table.from_batches(part.waiting, FILE_SCHEMA)
        part.writer.write_table(table, row_group_size=table.num_rows)
        self.waiting -= part.rows
        part.waiting, part.rows = [], 0

    def close(self) -> Counts:
        for key, part in self.partitions.items():
            self._flush(key, part)
        for part in self.open.values():
            assert part.writer is not None
            part.writer.close()
            part.writer = None
        self.open.clear()
        files = sum(part.files for part in self.partitions.values())
        return Counts(self.events, files, len(self.partitions))


class JsonlSink:
    """``events.jsonl``: ``caas replay``'s lines."""

    name = "events.jsonl"

    def __init__(self, root: Path) -> None:
        self.file = open(root / self.name, "w", encoding="utf-8")  # noqa: SIM115  # closed by close()
        self.events = 0

    def write(self, events: Sequence[Event]) -> None:
        self.file.write("".join(jsonl_line(e) for e in events))
        self.events += len(events)

    def close(self) -> Counts:
        self.file.close()
        return Counts(self.events, 1, 1)


class CsvSink:
    """``events.csv``: ``caas replay --format csv``'s rows, header first."""

    name = "events.csv"

    def __init__(self, root: Path) -> None:
        # newline="": the csv module writes its own line ends (\r\n), as on standard output
        self.file: io.TextIOWrapper = open(root / self.name, "w", encoding="utf-8", newline="")  # noqa: SIM115
        self.writer = csv.writer(self.file)
        self.writer.writerow(CSV_HEADER)
        self.events = 0

    def write(self, events: Sequence[Event]) -> None:
        self.writer.writerows(csv_row(e) for e in events)
        self.events += len(events)

    def close(self) -> Counts:
        self.file.close()
        return Counts(self.events, 1, 1)


def sink(fmt: Format, root: Path) -> Sink:
    if fmt == "parquet":
        return ParquetSink(root)
    return JsonlSink(root) if fmt == "jsonl" else CsvSink(root)


class Staging:
    """An export's directory, written beside its destination and renamed into place when done.

    The destination must not exist, or be an empty directory: an export never mixes with, nor
    replaces, other files. Checked (``ValueError``) before anything is read from the log.
    """

    def __init__(self, output: Path) -> None:
        self.output = output
        if output.exists() and not (output.is_dir() and not any(output.iterdir())):
            raise ValueError(f"{output} exists and is not an empty directory: give a new directory for the export")
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
        except OSError as exc:
            raise ValueError(f"cannot write the export beside {output}: {exc.strerror or exc}") from None

    def commit(self) -> None:
        if self.output.exists():
            self.output.rmdir()  # empty, checked in __init__ (a rename onto it needs it gone on some systems)
        self.path.rename(self.output)

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@dataclass(frozen=True)
class Summary:
    """What ``caas export`` wrote, as its manifest (``_export.json``) and its report line say."""

    format: Format
    output: str
    events: int
    files: int
    partitions: int
    tenant_id: str | None
    types: tuple[str, ...]
    since: int | str | None
    until: int | str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def manifest(path: Path, fmt: Format, output: Path, counts: Counts, selection: Selection) -> Summary:
    """Write the export's manifest into ``path`` (the staged directory)."""
    summary = Summary(
        fmt, str(output), counts.events, counts.files, counts.partitions,
        selection.tenant_id, selection.types, selection.since, selection.until,
    )  # fmt: skip
    (path / MANIFEST).write_bytes(orjson.dumps(summary.as_dict(), option=orjson.OPT_INDENT_2))
    return summary
