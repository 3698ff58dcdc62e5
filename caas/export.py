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

The log is streamed, never held: it is read as rows (``Backend.replay_rows``: the embedded log's
rows as stored), each batch converted to Arrow and cut by partition; rows wait per partition until
a row group's worth (:data:`ROW_GROUP_ROWS`) is there, or until the rows waiting in all partitions
pass :data:`BUFFERED_ROWS`, when the largest waiting partitions are handed to a writer thread
(at most :data:`WRITES_AHEAD` row groups behind) that encodes and writes them; at most
:data:`OPEN_FILES` files are open at once (a partition whose file was closed goes on in its next
``part-N`` file). JSONL and CSV are one file each (``events.jsonl``, ``events.csv``), the very
lines ``caas replay`` prints.

An export is written into a hidden directory beside ``DIR`` and renamed to ``DIR`` only once
complete: a failed or interrupted export leaves no ``DIR`` behind (a killed one may leave the
hidden ``.DIR.partial-*`` directory, which is safe to delete).
"""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import tempfile
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from caas.rows import CSV_HEADER, csv_row, jsonl_line
from caas.selection import Selection
from commands.ports import ROW_FIELDS, EventRow, event_row
from domain.events import Event

T_contra = TypeVar("T_contra", contravariant=True)
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
BUFFERED_ROWS = 131_072  # rows waiting in all partitions together, at most (before a batch lands)
OPEN_FILES = 64  # Parquet files open at once
WRITES_AHEAD = 2  # row groups handed to the writer thread and not yet written, at most


_INDEX = {name: i for i, name in enumerate(ROW_FIELDS)}


def rows_to_batch(rows: Sequence[EventRow], schema: pa.Schema = SCHEMA) -> pa.RecordBatch:
    """Rows of ``commands.ports.ROW_FIELDS`` as a record batch of ``schema`` (:data:`SCHEMA`, or
    some of its columns): one Arrow array per column, converted in C from the column's values."""
    if not rows:
        return pa.RecordBatch.from_pylist([], schema=schema)
    columns = list(zip(*rows, strict=True))
    arrays = []
    for f in schema:
        values = columns[_INDEX[f.name]]
        if f.name == "occurred_at":  # the log's RFC 3339 text, parsed by Arrow
            arrays.append(pa.array(values, pa.string()).cast(TIME))
        elif f.name == "payload":  # JSON text as stored
            arrays.append(pa.ExtensionArray.from_storage(JSON, pa.array(values, pa.string())))
        else:
            arrays.append(pa.array(values, f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def to_batch(events: Sequence[Event], schema: pa.Schema = SCHEMA) -> pa.RecordBatch:
    """Events as a record batch of ``schema``."""
    return rows_to_batch([event_row(e) for e in events], schema)


def day_of(occurred_at: str) -> str:
    """The UTC day of a time as the log writes times (``2026-12-03``)."""
    return datetime.fromisoformat(occurred_at).astimezone(UTC).date().isoformat()


def partition_of(event: Event) -> tuple[str, str]:
    """``(day, type)``: the UTC day of ``occurred_at`` (``2026-12-03``) and the event type."""
    return day_of(event.occurred_at), event.type


def partition_path(day: str, event_type: str) -> str:
    """The directory of a partition, relative to the export's (hive-style ``key=value``)."""
    return f"day={day}/type={event_type}"


def split(batch: pa.RecordBatch) -> Iterator[tuple[tuple[str, str], pa.RecordBatch]]:
    """A batch of :data:`SCHEMA` cut by partition (as :func:`partition_of`), each part as the
    files hold it (:data:`FILE_SCHEMA`), its rows in the batch's order."""
    day = batch.column("occurred_at").cast(pa.date32()).cast(pa.string())
    keys = pc.binary_join_element_wise(day, batch.column("type"), "/").dictionary_encode()
    for index, key in enumerate(keys.dictionary.to_pylist()):
        part = batch if len(keys.dictionary) == 1 else batch.filter(pc.equal(keys.indices, index))
        day_, _, event_type = key.partition("/")
        columns = [part.column(name) for name in FILE_SCHEMA.names]
        yield (day_, event_type), pa.RecordBatch.from_arrays(columns, schema=FILE_SCHEMA)


@dataclass
class Counts:
    """What an export wrote."""

    events: int = 0
    files: int = 0
    partitions: int = 0


@dataclass
class _Partition:
    directory: Path
    waiting: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0
    files: int = 0  # part-N files begun (the writer thread's)
    writer: pq.ParquetWriter | None = None  # the writer thread's


class ParquetSink:
    """Parquet files partitioned by day and event type, written in row groups as rows come.

    This thread converts and partitions the rows; one writer thread encodes and writes the
    files (Arrow lets go of the GIL as it does), at most :data:`WRITES_AHEAD` row groups behind.
    Every file is opened, written and closed by the writer thread only.
    """

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
        self.waiting = 0  # rows waiting in self.partitions (not yet handed to the writer thread)
        self.events = 0
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="caas-export-writer")
        self._writes: deque[Future[None]] = deque()

    def write(self, rows: Sequence[EventRow]) -> None:
        if not rows:
            return
        for key, batch in split(rows_to_batch(rows)):
            part = self.partitions.get(key)
            if part is None:
                part = self.partitions[key] = _Partition(self.root / partition_path(*key))
            part.waiting.append(batch)
            part.rows += batch.num_rows
            self.waiting += batch.num_rows
            if part.rows >= self.row_group_rows:
                self._flush(key, part)
        self.events += len(rows)
        while self.waiting > self.buffered_rows:
            key, part = max(self.partitions.items(), key=lambda item: item[1].rows)
            self._flush(key, part)

    def _flush(self, key: tuple[str, str], part: _Partition) -> None:
        """Hand a partition's waiting rows to the writer thread, as one row group."""
        if not part.rows:
            return
        table = pa.Table.from_batches(part.waiting, FILE_SCHEMA)
        self.waiting -= part.rows
        part.waiting, part.rows = [], 0
        while len(self._writes) >= WRITES_AHEAD:
            self._writes.popleft().result()  # a failed write fails the export here
        self._writes.append(self._writer.submit(self._write_group, key, part, table))

    def _write_group(self, key: tuple[str, str], part: _Partition, table: pa.Table) -> None:
        """(The writer thread.) Append a row group to the partition's open file, or begin its next file."""
        if part.writer is None:
            while len(self.open) >= self.open_files:
                _, oldest = self.open.popitem(last=False)
                assert oldest.writer is not None
                oldest.writer.close()
                oldest.writer = None
            part.directory.mkdir(parents=True, exist_ok=True)
            path = part.directory / f"part-{part.files}.parquet"
            part.writer = pq.ParquetWriter(path, FILE_SCHEMA, compression="snappy", use_dictionary=DICTIONARY_COLUMNS)
            part.files += 1
        self.open[key] = part
        self.open.move_to_end(key)
        part.writer.write_table(table, row_group_size=table.num_rows)

    def _close_files(self) -> None:
        """(The writer thread.)"""
        for part in self.open.values():
            assert part.writer is not None
            part.writer.close()
            part.writer = None
        self.open.clear()

    def close(self) -> Counts:
        try:
            for key, part in self.partitions.items():
                self._flush(key, part)
            self._writes.append(self._writer.submit(self._close_files))
            while self._writes:
                self._writes.popleft().result()
        finally:
            self._writer.shutdown(wait=True, cancel_futures=True)
        files = sum(part.files for part in self.partitions.values())
        return Counts(self.events, files, len(self.partitions))

    def discard(self) -> None:
        """Stop: nothing more is written (the files are removed with the staging directory)."""
        self._writer.shutdown(wait=True, cancel_futures=True)
        for part in self.open.values():
            if part.writer is not None:
                with contextlib.suppress(Exception):
                    part.writer.close()


class _FileSink:
    """One text file of events, in log order."""

    name: str

    def __init__(self, root: Path) -> None:
        # newline="": lines end as written (the csv module's \r\n, as on standard output)
        self.file: io.TextIOWrapper = open(root / self.name, "w", encoding="utf-8", newline="")  # noqa: SIM115
        self.events = 0

    def close(self) -> Counts:
        self.file.close()
        return Counts(self.events, 1, 1)

    def discard(self) -> None:
        self.file.close()


class JsonlSink(_FileSink):
    """``events.jsonl``: ``caas replay``'s lines."""

    name = "events.jsonl"

    def write(self, events: Sequence[Event]) -> None:
        self.file.write("".join(jsonl_line(e) for e in events))
        self.events += len(events)


class CsvSink(_FileSink):
    """``events.csv``: ``caas replay --format csv``'s rows, header first."""

    name = "events.csv"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writer = csv.writer(self.file)
        self.writer.writerow(CSV_HEADER)

    def write(self, events: Sequence[Event]) -> None:
        self.writer.writerows(csv_row(e) for e in events)
        self.events += len(events)


class Sink(Protocol[T_contra]):
    """Where an export's batches go, in log order: rows (Parquet) or events (JSONL, CSV)."""

    def write(self, batch: Sequence[T_contra]) -> None: ...

    def close(self) -> Counts:
        """Write what waits, close every file; what was written."""
        ...

    def discard(self) -> None:
        """Stop after a failure, writing nothing more."""
        ...


def line_sink(fmt: Format, root: Path) -> JsonlSink | CsvSink:
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
