"""The embedded read store: documents as JSON in SQLite, one table per collection.

Filters become ``json_extract`` expressions; the fields the queries filter and sort on
have expression indexes. ``apply`` loads each touched document once per batch, applies
the ops in memory with the position guard, and writes it back in the same transaction
that moves the checkpoint, so a crash never leaves a half-applied batch. A document JSON
cannot hold (an integer beyond 64 bits) is refused (:class:`ReadStoreRefused`), and the
projector's rule for refused events applies.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from adapters.sqlite_log import insert_rows, parameters_limit
from projections.ports import Doc, Filter, Fold, Key, Op, ReadStore, ReadStoreRefused, touched

INDEXES: dict[str, list[tuple[str, ...]]] = {
    "messages": [("channel_id", "parent_id", "seq"), ("channel_id", "seq"), ("chday",)],  # chday: retention
    "memberships": [("user_id", "active"), ("channel_id", "active")],
    "usage": [("day",)],
    "usage_peaks": [("day",)],
    "usage_samples": [("day",)],
    "usage_users": [("month",)],
    "usage_stored": [("day",)],  # usage_messages are read by id only (stored-bytes changes)
    "analytics_users": [("day",)],
    "analytics_monthly": [("month",)],
    "analytics_channels": [("day",)],
    "webhooks": [("tenant", "deleted", "created_at"), ("deleted",)],  # a tenant's list; the processor's load
    "webhook_deliveries": [("webhook_id", "delivery_id")],  # an endpoint's delivery log, paged
    "users": [("user_id",)],  # the tenant portal's user search: by id prefix, paged
    "audit": [("position",), ("occurred_at",)],  # the audit trail (projections/audit.py), paged by position
}
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LOAD_CHUNK = 512  # documents per SELECT … IN (…) when a batch is applied (a power of two; fewer past the limit)
_OPS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<=", "$ne": "IS NOT"}


def _expr(name: str) -> str:
    if not _FIELD.match(name):
        raise ValueError(f"bad field name {name!r}")
    return f"json_extract(doc, '$.{name}')"


def _sql_value(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    return value


# How long a write waits for another writer's lock before SQLite answers "busy": the live
# projector's stall detection works on it (a locked database is reported and retried); a
# rebuild's processes wait for their turn (:meth:`SqliteReadStore.patient`)
BUSY_SECONDS = 5.0
REBUILD_BUSY_SECONDS = 60.0


class SqliteReadStore(ReadStore):
    def __init__(self, path: Path, *, busy_seconds: float = BUSY_SECONDS) -> None:
        self.path = path
        self.busy_seconds = busy_seconds
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._tables: set[str] = set()
        self._unindexed: set[str] = set()  # emptied by drop(): indexes are built once, by settle()
        self._not_mine: set[str] = set()  # loaded by a rebuild worker: the instance that dropped them indexes them
        self._lock = threading.Lock()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_seconds * 1000)}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        # what a write replaces is zeroed, not left in free space: an erased user's text is gone
        # from the file once erase() has checkpointed the WAL (docs/erasure.md)
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("CREATE TABLE IF NOT EXISTS checkpoints (projection TEXT PRIMARY KEY, position INTEGER)")
        self._conn = conn
        reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        reader.execute("PRAGMA busy_timeout=5000")
        self._reader = reader

    async def close(self) -> None:
        if self._conn is not None:
            await self.settle()
        for conn in (self._conn, self._reader):
            if conn is not None:
                conn.close()
        self._conn = self._reader = None

    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None, "start() the read store first"
        return self._conn

    def _read(self, collection: str, sql: str, params: Sequence[Any]) -> list[Any]:
        """Run a query on the reader connection; WAL lets it run beside a batch being applied."""
        if collection not in self._tables or collection in self._unindexed:
            with self._lock:
                self._table(collection)
                self._index(collection)
        assert self._reader is not None
        return self._reader.execute(sql.replace("{table}", f"rm_{collection}"), params).fetchall()

    def _table(self, collection: str) -> str:
        if collection not in self._tables:
            if not _FIELD.match(collection):
                raise ValueError(f"bad collection name {collection!r}")
            db = self._db()
            db.execute(
                f"CREATE TABLE IF NOT EXISTS rm_{collection} (tenant_id TEXT, id TEXT, doc TEXT, "
                "PRIMARY KEY (tenant_id, id)) WITHOUT ROWID"
            )
            if collection not in self._unindexed and collection not in self._not_mine:
                self._index(collection)
            self._tables.add(collection)
        return f"rm_{collection}"

    def _index(self, collection: str) -> None:
        db = self._db()
        for number, fields in enumerate(INDEXES.get(collection, [])):
            columns = ", ".join(_expr(f) for f in fields)
            db.execute(f"CREATE INDEX IF NOT EXISTS rm_{collection}_{number} ON rm_{collection} (tenant_id, {columns})")
        self._unindexed.discard(collection)

    def patient(self, seconds: float) -> None:
        """Let writes wait ``seconds`` for the write lock (a rebuild's processes take turns)."""
        self.busy_seconds = seconds
        if self._conn is not None:
            with self._lock:
                self._conn.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")

    def postpone_indexes(self, collections: Iterable[str]) -> None:
        """Never index ``collections`` (a rebuild worker loading tables another instance dropped:
        that one's :meth:`settle` indexes them once every worker is done)."""
        self._not_mine.update(collections)

    async def settle(self) -> None:
        """Build the indexes that a rebuild postponed: one sort at the end instead of an index
        update per document (about half of a rebuild's insert time). Reads settle first too."""
        with self._lock:
            for collection in sorted(self._unindexed):
                self._table(collection)
                self._index(collection)

    async def apply(self, projection: str, ops: Sequence[Op], position: int) -> None:
        await asyncio.to_thread(self.apply_sync, projection, ops, position)

    def apply_sync(self, projection: str, ops: Sequence[Op], position: int) -> None:
        """Apply a batch in the calling thread (projection runners call it off the loop)."""
        self._fold_and_write(projection, ops, position, None)

    async def load(self, projection: str, ops: Sequence[Op], position: int, loaded: set[Key]) -> None:
        """A rebuild's window (see :meth:`ReadStore.load`): only the documents earlier windows
        wrote are read back; the window's documents are folded in memory and written with one
        ``executemany`` per collection, in key order, in one transaction with the checkpoint."""
        await asyncio.to_thread(self._fold_and_write, projection, ops, position, loaded)

    async def apply_many(self, batches: Sequence[tuple[str, Sequence[Op], int]]) -> None:
        """Every projection's batch in one thread hop and one transaction (the live runner
        applies the same events to each read model: one commit, not one per model)."""
        await asyncio.to_thread(self._fold_and_write_many, batches)

    def _fold_and_write(self, projection: str, ops: Sequence[Op], position: int, loaded: set[Key] | None) -> None:
        self._fold_and_write_many([(projection, ops, position)], loaded)

    def _fold_and_write_many(
        self, batches: Sequence[tuple[str, Sequence[Op], int]], loaded: set[Key] | None = None
    ) -> None:
        with self._lock:
            db = self._db()
            # the tables are made outside the transaction
            tables = {collection: self._table(collection) for _, ops, _ in batches for collection, _, _ in touched(ops)}
            db.execute("BEGIN IMMEDIATE")  # the write lock first: a read-then-write upgrade could not wait for it
            try:
                changed = [
                    self._write(db, tables, projection, ops, position, loaded) for projection, ops, position in batches
                ]
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if loaded is not None:
            for keys in changed:
                loaded.update(keys)

    def _write(
        self,
        db: sqlite3.Connection,
        tables: dict[str, str],
        projection: str,
        ops: Sequence[Op],
        position: int,
        loaded: set[Key] | None,
    ) -> dict[Key, None]:
        """Fold ``ops`` over the stored documents and write what changed, and the checkpoint
        (in the caller's transaction); the keys written."""
        keys = touched(ops)
        wanted = keys if loaded is None else [k for k in keys if k in loaded]
        fold = Fold(self._load(db, tables, wanted))
        fold.apply(ops)
        for collection, docs in fold.written().items():
            rows = []
            for tenant_id, id, doc in docs:
                try:
                    rows.append((tenant_id, id, orjson.dumps(doc).decode()))
                except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits: no retry can store it
                    raise ReadStoreRefused(f"the SQLite read store cannot hold {collection}/{id}: {exc}") from exc
            if loaded is not None:
                rows.sort()  # in key order: B-tree appends instead of scattered page splits
            insert_rows(db, f"INSERT OR REPLACE INTO {tables[collection]}", rows)  # one step, not one a row
        db.execute(
            "INSERT INTO checkpoints VALUES (?, ?) ON CONFLICT (projection) "
            "DO UPDATE SET position = max(position, excluded.position)",
            (projection, position),
        )
        return fold.changed

    @staticmethod
    def _load(db: sqlite3.Connection, tables: dict[str, str], keys: Iterable[Key]) -> dict[Key, Doc | None]:
        """The stored documents among ``keys``, many per query."""
        wanted: dict[tuple[str, str], list[str]] = {}
        for collection, tenant_id, id in keys:
            wanted.setdefault((collection, tenant_id), []).append(id)
        docs: dict[Key, Doc | None] = {}
        # a power of two within the parameter limit (one more parameter: the tenant)
        per_query = 1 << (max(1, min(LOAD_CHUNK, parameters_limit(db) - 1)).bit_length() - 1)
        for (collection, tenant_id), ids in wanted.items():
            for start in range(0, len(ids), per_query):
                chunk = ids[start : start + per_query]
                # padded to a power of two with its last id: a few statement shapes, not one per
                # count, stay in the connection's statement cache (see adapters.sqlite_log.insert_rows)
                chunk += [chunk[-1]] * ((1 << (len(chunk) - 1).bit_length()) - len(chunk))
                rows = db.execute(
                    f"SELECT id, doc FROM {tables[collection]} WHERE tenant_id = ? "
                    f"AND id IN ({','.join('?' * len(chunk))})",
                    (tenant_id, *chunk),
                )
                for id, doc in rows:
                    docs[(collection, tenant_id, id)] = orjson.loads(doc)
        return docs

    async def checkpoint(self, projection: str) -> int:
        with self._lock:
            row = self._db().execute("SELECT position FROM checkpoints WHERE projection = ?", (projection,)).fetchone()
        return int(row[0]) if row else 0

    async def get(self, collection: str, tenant_id: str, id: str) -> Doc | None:
        rows = self._read(collection, "SELECT doc FROM {table} WHERE tenant_id = ? AND id = ?", (tenant_id, id))
        return _public(rows[0][0]) if rows else None

    def _where(self, tenant_id: str, filter: Filter) -> tuple[str, list[Any]]:
        clauses, params = ["tenant_id = ?"], [tenant_id]
        for name, cond in filter.items():
            conds = cond.items() if isinstance(cond, dict) else [("$eq", cond)]
            for op, operand in conds:
                if op == "$in":
                    # SQL's IN never matches NULL; like equality, None in the list matches a missing field
                    values = [v for v in operand if v is not None]
                    clause = f"{_expr(name)} IN ({','.join('?' * len(values))})"
                    if len(values) < len(operand):
                        clause = f"({clause} OR {_expr(name)} IS NULL)"
                    clauses.append(clause)
                    params.extend(_sql_value(v) for v in values)
                elif op == "$eq":
                    clauses.append(f"{_expr(name)} IS ?")
                    params.append(_sql_value(operand))
                elif op == "$ne" and operand is not None:
                    clauses.append(f"({_expr(name)} IS NULL OR {_expr(name)} != ?)")
                    params.append(_sql_value(operand))
                else:
                    clauses.append(f"{_expr(name)} {_OPS[op]} ?")
                    params.append(_sql_value(operand))
        return " AND ".join(clauses), params

    async def find(
        self,
        collection: str,
        tenant_id: str,
        filter: Filter,
        sort: Sequence[tuple[str, int]] = (),
        limit: int | None = None,
    ) -> list[Doc]:
        where, params = self._where(tenant_id, filter)
        order = ", ".join(f"{_expr(name)} {'DESC' if d < 0 else 'ASC'}" for name, d in sort)
        order = f"{order}, id ASC" if order else "id ASC"
        rows = self._read(
            collection,
            f"SELECT doc FROM {{table}} WHERE {where} ORDER BY {order} LIMIT ?",
            [*params, -1 if limit is None else limit],
        )
        return [_public(row[0]) for row in rows]

    async def count(self, collection: str, tenant_id: str, filter: Filter) -> int:
        where, params = self._where(tenant_id, filter)
        rows = self._read(collection, f"SELECT COUNT(*) FROM {{table}} WHERE {where}", params)
        return int(rows[0][0])

    async def erase(self, collection: str, tenant_id: str, field: str, value: str, fields: Mapping[str, Any]) -> int:
        table, where = f"rm_{collection}", f"tenant_id = ? AND {_expr(field)} = ?"
        patch = orjson.dumps(dict(fields)).decode()

        def run() -> int:
            with self._lock:
                self._table(collection)
                db = self._db()
                cursor = db.execute(
                    f"UPDATE {table} SET doc = json_patch(doc, ?) WHERE {where}", (patch, tenant_id, value)
                )
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL's older copies of the pages, gone too
                return int(cursor.rowcount)

        return await asyncio.to_thread(run)

    async def drop(self, projection: str, collections: Sequence[str]) -> None:
        with self._lock:
            db = self._db()
            for name in collections:
                self._table(name)
                db.execute(f"DROP TABLE rm_{name}")
                self._tables.discard(name)
                self._unindexed.add(name)
            db.execute("DELETE FROM checkpoints WHERE projection = ?", (projection,))


def _public(raw: str) -> Doc:
    doc: Doc = orjson.loads(raw)
    doc.pop("_pos", None)
    return doc
