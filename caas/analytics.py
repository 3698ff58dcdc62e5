"""The event log for analysts, in Python: iterate events, load them into Arrow, export them.

A *source* is where the log is: an embedded server's data directory (a path), or the
:class:`~api.settings.Settings` of a backend (``Settings.from_env(os.environ)`` for the Kafka
backend, as ``caas`` reads its environment). The log is read as ``caas replay`` reads it, so the
server may be running or stopped. Every function takes the same selection: ``tenant`` (one
tenant's events), ``types`` (event type names), and a window ``[since, until)`` whose ends are
each a log position (an int, or digits) or an RFC 3339 time or date (``"2026-12-03"``)::

    from caas import analytics

    for event in analytics.iter_events("/var/lib/caas", tenant="t-acme", types=["MessagePosted"]):
        print(event.occurred_at, event.payload["text"])

    table = analytics.load_table("/var/lib/caas", tenant="t-acme", since="2026-12-01")  # a pyarrow.Table
    analytics.export("/var/lib/caas", "exports/december", since="2026-12-01", until="2027-01-01")
    table = analytics.read_export("exports/december")

The functions are synchronous and safe to call from a notebook whose event loop is running: the
log is read on an event loop of their own, in a helper thread. :func:`scan` and
:func:`export_async` are the same for asyncio code.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.dataset as ds

from api.bootstrap import build_backend
from api.settings import Settings
from caas.export import (
    FORMATS,
    JSON,
    MANIFEST,
    PARTITIONING,
    SCHEMA,
    TIME,
    Counts,
    Format,
    ParquetSink,
    Sink,
    Staging,
    Summary,
    line_sink,
    manifest,
    rows_to_batch,
    to_batch,
)
from caas.rows import CSV_HEADER
from caas.selection import Selection, bound, event_types, tenant_id
from commands.ports import EventRow
from domain.events import Event
from streams.projector import bulk_allocation

__all__ = [
    "SCHEMA",
    "Selection",
    "Source",
    "Summary",
    "export",
    "export_async",
    "iter_batches",
    "iter_events",
    "load_table",
    "read_export",
    "scan",
    "scan_rows",
    "select",
]

Source = Settings | str | os.PathLike[str]
T = TypeVar("T")


def settings_of(source: Source) -> Settings:
    """The settings of a source: a path is an embedded data directory."""
    if isinstance(source, Settings):
        return source
    return Settings.from_env({}, backend="embedded", data_dir=Path(source))


def select(
    *,
    tenant: str | None = None,
    types: str | Iterable[str] | None = None,
    since: int | str | datetime | None = None,
    until: int | str | datetime | None = None,
    names: tuple[str, str] = ("since", "until"),
) -> Selection:
    """A checked :class:`~caas.selection.Selection`; ``ValueError`` names what is wrong (an
    unknown event type, a bound that is neither a position nor a time, an empty window, a blank
    tenant), calling the window's ends ``names``."""
    return Selection(
        tenant_id=tenant_id(tenant),
        types=event_types(types),
        since=None if since is None else bound(since, names[0]),
        until=None if until is None else bound(until, names[1]),
    )


async def scan(source: Source, selection: Selection) -> AsyncIterator[list[Event]]:
    """The selected events in batches, in log order (on the Kafka backend, partition by
    partition), never the whole log at once."""
    backend = build_backend(settings_of(source))
    async for batch in _windowed(_replay(backend.replay, selection), selection.window):
        yield batch


async def scan_rows(source: Source, selection: Selection) -> AsyncIterator[list[EventRow]]:
    """:func:`scan` as rows (``commands.ports.ROW_FIELDS``: the payload as JSON text), what the
    Parquet export and :func:`load_table` read (the embedded log's rows as stored, no events built)."""
    backend = build_backend(settings_of(source))
    async for batch in _windowed(_replay(backend.replay_rows, selection), selection.window_rows):
        yield batch


def _replay(replay: Callable[..., AsyncIterator[list[T]]], selection: Selection) -> AsyncIterator[list[T]]:
    """A backend's ``replay`` (or ``replay_rows``) of what ``selection`` can narrow in the backend."""
    return replay(after_position=selection.after_position, tenant_id=selection.tenant_id, types=selection.types,
                  since=selection.since_time)  # fmt: skip


async def _windowed(batches: AsyncIterator[list[T]], window: Callable[[list[T]], list[T]]) -> AsyncIterator[list[T]]:
    """The non-empty batches of what ``window`` keeps; a generator left early closes the backend's
    (which closes the log it reads)."""
    try:
        async for batch in batches:
            kept = window(batch)
            if kept:
                yield kept
    finally:
        close = getattr(batches, "aclose", None)
        if close is not None:
            await close()


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end on an event loop of its own, in a helper thread (this
    thread may be running one: a notebook's)."""
    with ThreadPoolExecutor(1, thread_name_prefix="caas-analytics") as pool:
        return pool.submit(asyncio.run, coroutine).result()


_END = object()


def iter_batches(source: Source, selection: Selection) -> Iterator[list[Event]]:
    """:func:`scan` as a plain iterator. The log is read in a helper thread, at most a few
    batches ahead; leaving the loop early stops the read and closes the log."""
    return _in_thread(lambda: scan(source, selection))


def _in_thread(batches: Callable[[], AsyncIterator[list[T]]]) -> Iterator[list[T]]:
    handoff: queue.Queue[object] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    async def pump() -> None:
        try:
            async for batch in batches():
                if not put(batch):
                    return
        except BaseException as exc:  # the reader's error is raised to the caller
            put(exc)
            return
        put(_END)

    thread = threading.Thread(target=asyncio.run, args=(pump(),), name="caas-analytics-scan", daemon=True)
    thread.start()
    try:
        while (item := handoff.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]  # the pump puts batches, an error, or the end
    finally:
        stop.set()
        thread.join()


def iter_events(
    source: Source,
    *,
    tenant: str | None = None,
    types: str | Iterable[str] | None = None,
    since: int | str | datetime | None = None,
    until: int | str | datetime | None = None,
) -> Iterator[Event]:
    """The selected events one by one, in log order: each an :class:`~domain.events.Event`
    (``position``, ``tenant_id``, ``stream``, ``seq``, ``type``, ``occurred_at``, ``payload``, …)."""
    selection = select(tenant=tenant, types=types, since=since, until=until)
    for batch in iter_batches(source, selection):
        yield from batch


def load_table(
    source: Source,
    *,
    tenant: str | None = None,
    types: str | Iterable[str] | None = None,
    since: int | str | datetime | None = None,
    until: int | str | datetime | None = None,
) -> pa.Table:
    """The selected events as one ``pyarrow.Table`` of :data:`SCHEMA`'s columns, in log order
    (held in memory: for a large log, :func:`export` and read the files instead)."""
    selection = select(tenant=tenant, types=types, since=since, until=until)
    batches = _in_thread(lambda: scan_rows(source, selection))
    return pa.Table.from_batches([rows_to_batch(rows) for rows in batches], SCHEMA)


async def export_async(source: Source, output: str | os.PathLike[str], fmt: Format, selection: Selection) -> Summary:
    """Write the selected events to the directory ``output`` (see :mod:`caas.export`); it must
    not exist or be empty (``ValueError``, before the log is read). On any failure nothing is
    left at ``output``."""
    if fmt not in FORMATS:
        raise ValueError(f"the export formats are {', '.join(FORMATS)}, not {fmt!r}")
    target = Path(output)
    staging = Staging(target)
    try:
        with bulk_allocation():  # millions of short-lived rows: no cyclic collector passes over them
            if fmt == "parquet":
                counts = await _write(ParquetSink(staging.path), scan_rows(source, selection))
            else:
                counts = await _write(line_sink(fmt, staging.path), scan(source, selection))
        summary = manifest(staging.path, fmt, target, counts, selection)
    except BaseException:
        staging.abort()
        raise
    staging.commit()
    return summary


async def _write(sink: Sink[T], batches: AsyncIterator[list[T]]) -> Counts:
    try:
        async for batch in batches:
            sink.write(batch)
        return sink.close()
    except BaseException:
        sink.discard()
        raise


def export(
    source: Source,
    output: str | os.PathLike[str],
    *,
    format: Format = "parquet",  # the word the command line uses (--format)
    tenant: str | None = None,
    types: str | Iterable[str] | None = None,
    since: int | str | datetime | None = None,
    until: int | str | datetime | None = None,
) -> Summary:
    """``caas export``: the selected events written to the directory ``output`` as Parquet
    (partitioned by day and event type), JSONL or CSV; what was written."""
    selection = select(tenant=tenant, types=types, since=since, until=until)
    return _run(export_async(source, output, format, selection))


def read_export(path: str | os.PathLike[str]) -> pa.Table:
    """An export directory read back as one ``pyarrow.Table``.

    Parquet and JSONL exports give :data:`SCHEMA`'s columns, CSV exports the CSV's (position,
    tenant_id, stream, seq, type, occurred_at, event_id, payload), typed the same way. JSONL and
    CSV rows come in the file's (log) order, Parquet rows by position (the log's order on the
    embedded backend; on Kafka positions order the events of each partition).
    """
    root = Path(path)
    fmt = orjson.loads((root / MANIFEST).read_bytes())["format"] if (root / MANIFEST).exists() else _guess(root)
    if fmt == "jsonl":
        return pa.Table.from_batches(list(_jsonl_batches(root / "events.jsonl")), SCHEMA)
    if fmt == "csv":
        return _read_csv(root / "events.csv")
    partitioning = ds.partitioning(PARTITIONING, flavor="hive")
    table = ds.dataset(root, format="parquet", schema=SCHEMA, partitioning=partitioning).to_table()
    return table.sort_by("position")


def _guess(root: Path) -> str:
    for fmt in ("jsonl", "csv"):
        if (root / f"events.{fmt}").exists():
            return fmt
    return "parquet"


def _jsonl_batches(path: Path, size: int = 10_000) -> Iterator[pa.RecordBatch]:
    with path.open("rb") as lines:
        chunk: list[Event] = []
        for line in lines:
            chunk.append(Event.model_validate(orjson.loads(line)))
            if len(chunk) == size:
                yield to_batch(chunk)
                chunk = []
        if chunk:
            yield to_batch(chunk)


def _read_csv(path: Path) -> pa.Table:
    strings = {name: pa.string() for name in CSV_HEADER}
    options = pa_csv.ConvertOptions(column_types={**strings, "position": pa.int64(), "seq": pa.int64()})
    table = pa_csv.read_csv(path, convert_options=options)
    occurred = table.column("occurred_at").cast(TIME)
    payload = pa.chunked_array(
        [pa.ExtensionArray.from_storage(JSON, chunk) for chunk in table.column("payload").chunks], JSON
    )
    table = table.set_column(table.schema.get_field_index("occurred_at"), pa.field("occurred_at", TIME), occurred)
    return table.set_column(table.schema.get_field_index("payload"), pa.field("payload", JSON), payload)
