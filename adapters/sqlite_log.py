"""The embedded event log: SQLite in WAL mode with group commit.

One writer thread owns the write connection. Appends queue up; the writer drains the
queue, checks each append's expected version, inserts every event of the batch in one
transaction and commits once (``synchronous=FULL``: one fsync for many commands). Only
then are the callers' futures resolved, so an acknowledged command survives ``kill -9``.
Reads use separate connections; WAL lets them run beside the writer. A read of more than
a few events (a cold load of a long stream) and a snapshot's read are done on reader
threads, so they never hold the event loop. Snapshots of aggregate states live in the same
file; the writer stores them after a batch's callers were answered.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import sqlite3
import threading
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog

from adapters import tracing
from commands.ports import (
    ROW_FIELDS,
    ConcurrencyError,
    EventLog,
    EventRow,
    Idempotency,
    IdempotencyKeyReused,
    Listener,
    LogUnavailable,
    NewEvent,
    Snapshot,
    recorded_fields,
)
from domain import errors
from domain.events import UPCASTERS, Event, upcast

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    occurred_at TEXT NOT NULL,
    actor TEXT,
    command_id TEXT,
    causation_id TEXT,
    correlation_id TEXT,
    payload TEXT NOT NULL,
    traceparent TEXT,
    UNIQUE (tenant_id, stream, seq)
);
CREATE INDEX IF NOT EXISTS events_by_tenant ON events (tenant_id, position);
CREATE TABLE IF NOT EXISTS idempotency (
    tenant_id TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    first_position INTEGER NOT NULL,
    last_position INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
) WITHOUT ROWID;
"""

# Snapshots are a cache of the log (see commands/snapshots.py): one per stream, the newest.
SNAPSHOT_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    tenant_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    schema TEXT NOT NULL,
    version INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (tenant_id, stream)
);
"""

# A read of at most this many events is decoded on the event loop: a thread hop would cost
# more than it does. Longer reads go to a reader thread.
INLINE_READ = 64
READER_THREADS = 2

logger = structlog.get_logger("caas.log")

# A stored row: an event's row (commands/ports.py, what an export reads) and the trace it continues
ROW_COLUMNS = ", ".join(ROW_FIELDS)
COLUMNS = f"{ROW_COLUMNS}, traceparent"


def add_traceparent(conn: sqlite3.Connection) -> None:
    """Give a log file written before tracing its ``traceparent`` column (NULL for old events)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    if "traceparent" not in columns:
        conn.execute("ALTER TABLE events ADD COLUMN traceparent TEXT")


_EVENT_FIELDS = tuple(Event.model_fields)
_setattr = object.__setattr__


def _event(values: dict[str, Any]) -> Event:
    """``Event.model_construct(**values)`` for a dict holding every field, minus its per-field loop.

    Sets what ``model_construct`` sets (``__dict__``, ``__pydantic_fields_set__``, no extra, no
    private state); the log builds thousands of these per batch.
    """
    if len(values) != len(_EVENT_FIELDS):  # a field this helper does not know: the slow, safe way
        return Event.model_construct(**values)
    event = Event.__new__(Event)
    _setattr(event, "__dict__", values)
    _setattr(event, "__pydantic_fields_set__", set(_EVENT_FIELDS))
    _setattr(event, "__pydantic_extra__", None)
    _setattr(event, "__pydantic_private__", None)
    return event


def row_to_event(row: tuple[Any, ...]) -> Event:
    """Decode a stored row, upcasting old payload versions. Stored rows are trusted."""
    version, payload = upcast(row[5], row[6], orjson.loads(row[12]))
    return _event(
        {
            "event_id": row[4],
            "tenant_id": row[1],
            "stream": row[2],
            "seq": row[3],
            "position": row[0],
            "type": row[5],
            "schema_version": version,
            "occurred_at": row[7],
            "actor": row[8],
            "command_id": row[9],
            "causation_id": row[10],
            "correlation_id": row[11],
            "payload": payload,
            "traceparent": row[13],
        }
    )


def upcast_row(row: EventRow) -> EventRow:
    """A stored row with its payload lifted to the current schema version (a row of a version
    that has no upcaster is returned as it is, without decoding its payload)."""
    if (row[5], row[6]) not in UPCASTERS:
        return row
    version, payload = upcast(row[5], row[6], orjson.loads(row[12]))
    return (*row[:6], version, *row[7:12], orjson.dumps(payload).decode())


ROWS_PER_INSERT = 64  # the largest statement: 64 rows (fewer past the connection's parameter limit)


def parameters_limit(conn: sqlite3.Connection) -> int:
    """How many ``?`` one statement on ``conn`` may hold: the linked SQLite's bound, 32,766 by
    default since 3.32 but 999 before it (and lower wherever a build or a caller set it so)."""
    return conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


def insert_rows(conn: sqlite3.Connection, head: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """``conn.executemany(head + " VALUES (?, …)", rows)`` as multi-row ``INSERT`` statements.

    The sqlite3 module lets go of the GIL for every step of a statement, and ``executemany``
    steps once per row: under load each step's return then waits for the event loop's thread
    to hand the GIL back, so a writer thread inserting row by row advanced one row per switch
    interval. One statement of many rows is one step, holding as many rows as the connection's
    parameter limit allows (:func:`parameters_limit`).

    Statements come in a few shapes only, a power of two rows each (at most
    :data:`ROWS_PER_INSERT`): the connection keeps every prepared statement it ran in its cache
    (128 of them), and a statement of ``n`` rows holds memory growing faster than ``n``. One
    statement per batch size kept one for every size seen: 128 sizes of up to 128 rows held
    10 MiB of SQLite memory per connection (and each new size was compiled). Now at most seven
    shapes per table are kept (0.17 MiB for the log's events), and a batch of ``n`` rows takes
    ``n // 64`` statements and one per bit set in the rest.
    """
    if not rows:
        return
    width, start = len(rows[0]), 0
    most = 1 << (max(1, min(ROWS_PER_INSERT, parameters_limit(conn) // width)).bit_length() - 1)
    while start < len(rows):
        size = min(most, 1 << ((len(rows) - start).bit_length() - 1))
        chunk = rows[start : start + size]
        conn.execute(_insert_sql(head, width, size), [value for row in chunk for value in row])
        start += size


@functools.lru_cache(maxsize=64)
def _insert_sql(head: str, width: int, size: int) -> str:
    one = "(" + ",".join("?" * width) + ")"
    return f"{head} VALUES {','.join([one] * size)}"


def connect(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def stream_part(stream: str, parts: int) -> int:
    """Which of ``parts`` disjoint sets of streams ``stream`` belongs to (a stable hash of its
    name), for a rebuild that folds them in parallel processes."""
    return zlib.crc32(stream.encode()) % parts


class PartReader:
    """Reads the events of one part (:func:`stream_part`) of a log file up to ``head``, for a
    rebuild worker: a plain read connection, without the log's writer and reader threads."""

    def __init__(self, path: Path, part: int, parts: int, head: int) -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False)
        self._conn.create_function("caas_part", 2, stream_part, deterministic=True)
        self.part, self.parts, self.head = part, parts, head

    def read(self, after: int, limit: int) -> list[Event]:
        sql = (
            f"SELECT {COLUMNS} FROM events WHERE position > ? AND position <= ? AND caas_part(stream, ?) = ? "
            "ORDER BY position LIMIT ?"
        )
        return [row_to_event(row) for row in self._conn.execute(sql, (after, self.head, self.parts, self.part, limit))]

    def close(self) -> None:
        self._conn.close()


@dataclass(slots=True)
class _Append:
    tenant_id: str
    stream: str
    expected_version: int
    events: Sequence[NewEvent]
    idempotency: Idempotency | None
    future: asyncio.Future[list[Event]]
    result: list[Event] | BaseException | None = None
    rows: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass(slots=True)
class _SnapshotWrite:
    tenant_id: str
    stream: str
    schema: str
    version: int
    state: bytes


_STOP = object()


class SqliteEventLog(EventLog):
    """Event log in one SQLite file. One process writes it at a time."""

    keeps_snapshots = True

    def __init__(self, path: Path, *, max_batch: int = 2000) -> None:
        self.path = path
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._listeners: list[Listener] = []
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heads: dict[tuple[str, str], int] = {}
        self._position = 0
        self._readers: ThreadPoolExecutor | None = None
        self._reader_connections: list[sqlite3.Connection] = []
        self._local = threading.local()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        writer = connect(self.path)
        writer.executescript(SCHEMA)
        add_traceparent(writer)
        writer.executescript(SNAPSHOT_SCHEMA)
        self._position = writer.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]
        self._reader = connect(self.path)
        self._readers = ThreadPoolExecutor(READER_THREADS, "caas-log-reader", initializer=self._open_thread_reader)
        self._thread = threading.Thread(target=self._write_loop, args=(writer,), name="caas-log-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        if self._readers is not None:
            readers, self._readers = self._readers, None
            await asyncio.to_thread(readers.shutdown)
            for conn in self._reader_connections:
                conn.close()
            self._reader_connections.clear()
        if self._thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _open_thread_reader(self) -> None:
        conn = connect(self.path)
        self._local.conn = conn
        self._reader_connections.append(conn)

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def append(
        self,
        tenant_id: str,
        stream: str,
        expected_version: int,
        events: Sequence[NewEvent],
        idempotency: Idempotency | None = None,
    ) -> asyncio.Future[list[Event]]:
        assert self._loop is not None, "start() the log first"
        future: asyncio.Future[list[Event]] = self._loop.create_future()
        if self._thread is None:
            future.set_exception(LogUnavailable("the event log is closed"))
            return future
        self._queue.put(_Append(tenant_id, stream, expected_version, events, idempotency, future))
        return future

    # --- writer thread ---------------------------------------------------------------------
    def _write_loop(self, conn: sqlite3.Connection) -> None:
        stopping = False
        while not stopping:
            batch: list[_Append | _SnapshotWrite] = []
            item = self._queue.get()
            while True:
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
                if len(batch) >= self.max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            appends = [item for item in batch if isinstance(item, _Append)]
            if appends:
                self._commit(conn, appends)
            if len(appends) < len(batch):
                self._write_snapshots(conn, [item for item in batch if isinstance(item, _SnapshotWrite)])
        conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Append]) -> None:
        """Write ``batch`` in one transaction (a ``sqlite.commit`` span in each command's trace
        while tracing), then hand the outcomes to the event loop."""
        traced = [item.events[0] for item in batch if item.events] if tracing.ON else None
        with (
            tracing.of_events(tracing.NODE, "sqlite.commit", traced, appends=len(batch))
            if traced
            else (tracing.UNTRACED)
        ):
            self._write(conn, batch)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._resolve, batch)

    def _write(self, conn: sqlite3.Connection, batch: list[_Append]) -> None:
        start_position = self._position
        heads_before: dict[tuple[str, str], int] = {}
        rows: list[tuple[Any, ...]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for item in batch:
                self._stage(conn, item, heads_before, rows)
            insert_rows(conn, f"INSERT INTO events ({COLUMNS})", rows)  # the whole batch's events
            conn.execute("COMMIT")
        except Exception as exc:  # never let one batch kill the writer thread: fail the batch instead
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._position = start_position
            for key, version in heads_before.items():
                self._heads[key] = version
            failure = LogUnavailable(f"the event log could not commit: {exc}")
            for item in batch:
                if not isinstance(item.result, BaseException):
                    item.result = failure

    def _stage(
        self,
        conn: sqlite3.Connection,
        item: _Append,
        heads_before: dict[tuple[str, str], int],
        rows: list[tuple[Any, ...]],
    ) -> None:
        """Check ``item`` against its stream's head and stage its events: their rows go to
        ``rows`` (inserted with the batch's), their events to ``item.result``."""
        key = (item.tenant_id, item.stream)
        head = self._heads.get(key)
        if head is None:
            head = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM events WHERE tenant_id = ? AND stream = ?", key
            ).fetchone()[0]
        if head != item.expected_version:
            item.result = ConcurrencyError(f"{item.stream} is at version {head}, expected {item.expected_version}")
            return
        if item.idempotency is not None:
            found = conn.execute(
                "SELECT 1 FROM idempotency WHERE tenant_id = ? AND key = ?",
                (item.tenant_id, item.idempotency.key),
            ).fetchone()
            if found is not None:
                item.result = IdempotencyKeyReused(item.idempotency.key)
                return
        try:
            payloads = [orjson.dumps(new.payload).decode() for new in item.events]
        except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits: refuse this append only
            item.result = errors.Invalid(f"the request holds a value that cannot be stored as JSON: {exc}")
            return
        heads_before.setdefault(key, head)
        events = []
        for offset, (new, payload) in enumerate(zip(item.events, payloads, strict=True)):
            self._position += 1
            seq = head + offset + 1
            if new.seq != seq:
                raise sqlite3.IntegrityError(f"event seq {new.seq} is not the next seq {seq}")
            row = (
                self._position, item.tenant_id, item.stream, seq, new.event_id, new.type,
                new.schema_version, new.occurred_at, new.actor, new.command_id,
                new.causation_id, new.correlation_id, payload, new.traceparent,
            )  # fmt: skip
            rows.append(row)
            events.append(_event(recorded_fields(new, item.tenant_id, item.stream, self._position)))
        if item.idempotency is not None and events:
            conn.execute(
                "INSERT INTO idempotency VALUES (?, ?, ?, ?, ?)",
                (item.tenant_id, item.idempotency.key, item.idempotency.fingerprint,
                 events[0].position, events[-1].position),
            )  # fmt: skip
        self._heads[key] = head + len(item.events)
        item.result = events

    def _write_snapshots(self, conn: sqlite3.Connection, snapshots: list[_SnapshotWrite]) -> None:
        """Keep snapshots, after the batch's callers were answered, in a transaction of their own.

        It needs no fsync (``synchronous=NORMAL``): a snapshot lost in a crash is folded
        again from the log, and the next batch's fsync makes it durable anyway. A snapshot
        names the event at its version, which a loader checks against the log.
        """
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            for snap in snapshots:
                found = conn.execute(
                    "SELECT event_id FROM events WHERE tenant_id = ? AND stream = ? AND seq = ?",
                    (snap.tenant_id, snap.stream, snap.version),
                ).fetchone()
                if found is None:  # not (or no longer) recorded: nothing to take a snapshot of
                    continue
                conn.execute(
                    "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, stream) DO UPDATE SET "
                    "schema = excluded.schema, version = excluded.version, event_id = excluded.event_id, "
                    "state = excluded.state WHERE excluded.version >= version OR excluded.schema != schema "
                    "OR NOT EXISTS (SELECT 1 FROM events AS e WHERE (e.tenant_id, e.stream, e.seq, e.event_id) "
                    "= (snapshots.tenant_id, snapshots.stream, snapshots.version, snapshots.event_id))",
                    (snap.tenant_id, snap.stream, snap.schema, snap.version, found[0], snap.state),
                )
            conn.execute("COMMIT")
        except Exception as exc:  # a snapshot is only a shortcut: never let one stop the writer
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            logger.warning("snapshot_write_failed", error=str(exc))
        finally:
            conn.execute("PRAGMA synchronous=FULL")

    def _resolve(self, batch: list[_Append]) -> None:
        committed: list[Event] = []
        for item in batch:
            if isinstance(item.result, list):
                committed.extend(item.result)
        for listener in self._listeners:
            if committed:
                listener(committed)
        for item in batch:
            if item.future.done():
                continue
            if isinstance(item.result, BaseException):
                item.future.set_exception(item.result)
            else:
                item.future.set_result(item.result or [])

    # --- reads -----------------------------------------------------------------------------
    def _read(self, sql: str, params: Sequence[Any]) -> list[Event]:
        assert self._reader is not None, "start() the log first"
        return [row_to_event(row) for row in self._reader.execute(sql, params)]

    def _read_here(self, sql: str, params: Sequence[Any]) -> list[Event]:
        """``_read`` on a reader thread, with that thread's connection."""
        return [row_to_event(row) for row in self._local.conn.execute(sql, params)]

    async def read_stream(
        self, tenant_id: str, stream: str, after_seq: int = 0, limit: int | None = None
    ) -> list[Event]:
        sql = f"SELECT {COLUMNS} FROM events WHERE tenant_id = ? AND stream = ? AND seq > ? ORDER BY seq LIMIT ?"
        params = (tenant_id, stream, after_seq, -1 if limit is None else limit)
        if self._readers is not None and (limit is None or limit > INLINE_READ):
            assert self._reader is not None, "start() the log first"
            head = self._reader.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM events WHERE tenant_id = ? AND stream = ?", (tenant_id, stream)
            ).fetchone()[0]
            if head <= after_seq:  # nothing to read (a lookup of an unknown stream, say)
                return []
            if head - after_seq > INLINE_READ:  # decoding it would hold the event loop: a reader thread does
                return await asyncio.get_running_loop().run_in_executor(self._readers, self._read_here, sql, params)
        return self._read(sql, params)

    async def read_snapshot(self, tenant_id: str, stream: str, schema: str) -> Snapshot | None:
        if self._readers is None or self._reader is None:
            return None  # closed: fold the log
        key = (tenant_id, stream, schema)
        where = "WHERE tenant_id = ? AND stream = ? AND schema = ?"
        if self._reader.execute(f"SELECT 1 FROM snapshots {where}", key).fetchone() is None:
            return None  # the usual answer (short or unknown streams), found without a thread hop
        sql = f"SELECT version, event_id, state FROM snapshots {where}"
        row = await asyncio.get_running_loop().run_in_executor(
            self._readers, lambda: self._local.conn.execute(sql, key).fetchone()
        )
        return None if row is None else Snapshot(row[0], row[1], row[2])

    def save_snapshot(self, tenant_id: str, stream: str, schema: str, version: int, state: bytes) -> None:
        if self._thread is not None:  # else closing: a snapshot is only a shortcut
            self._queue.put(_SnapshotWrite(tenant_id, stream, schema, version, state))

    async def read_all(
        self,
        after_position: int = 0,
        limit: int = 1000,
        tenant_id: str | None = None,
        types: Sequence[str] | None = None,
    ) -> list[Event]:
        return self._read(*_log_query(after_position, limit, tenant_id, types))

    def read_rows(
        self, after_position: int, limit: int, tenant_id: str | None = None, types: Sequence[str] | None = None
    ) -> list[EventRow]:
        """:meth:`read_all` as stored rows, upcast (``caas export``: no events are built)."""
        assert self._reader is not None, "start() the log first"
        rows = self._reader.execute(*_log_query(after_position, limit, tenant_id, types, ROW_COLUMNS)).fetchall()
        return [upcast_row(row) for row in rows] if UPCASTERS else rows

    async def find_idempotent(self, tenant_id: str, key: str) -> tuple[str, list[Event]] | None:
        assert self._reader is not None
        row = self._reader.execute(
            "SELECT fingerprint, first_position, last_position FROM idempotency WHERE tenant_id = ? AND key = ?",
            (tenant_id, key),
        ).fetchone()
        if row is None:
            return None
        events = self._read(
            f"SELECT {COLUMNS} FROM events WHERE position BETWEEN ? AND ? ORDER BY position", (row[1], row[2])
        )
        return row[0], events

    async def head_position(self) -> int:
        assert self._reader is not None
        return int(self._reader.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0])


def _log_query(
    after_position: int, limit: int, tenant_id: str | None, types: Sequence[str] | None, columns: str = COLUMNS
) -> tuple[str, list[int | str]]:
    """The SQL and parameters of a read of the log's ``columns`` in position order."""
    clauses, params = ["position > ?"], list[int | str]([after_position])
    if tenant_id is not None:
        clauses.append("tenant_id = ?")
        params.append(tenant_id)
    if types:
        clauses.append(f"type IN ({','.join('?' * len(types))})")
        params.extend(types)
    params.append(limit)
    return f"SELECT {columns} FROM events WHERE {' AND '.join(clauses)} ORDER BY position LIMIT ?", params
