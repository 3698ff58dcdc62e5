"""The embedded key store: wrapped data keys in a SQLite file of their own (``keys.db`` in the
data dir), apart from the log, so destroying a key never touches the log and the log's file can
be copied without the keys. A destroyed key's row keeps its id and times, with ``wrapped`` NULL.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from commands.keys import KeyStore, StoredKey

_COLUMNS = "tenant_id, key_id, master_id, wrapped, created_at, destroyed_at"


def _key(row: tuple[Any, ...]) -> StoredKey:
    return StoredKey(row[0], row[1], row[2], None if row[3] is None else bytes(row[3]), row[4], row[5])


class SqliteKeyStore(KeyStore):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA secure_delete=ON")  # a destroyed key's wrapped bytes are zeroed in the file
        conn.execute(
            "CREATE TABLE IF NOT EXISTS data_keys (tenant_id TEXT, key_id TEXT, master_id TEXT, wrapped BLOB, "
            "created_at TEXT, destroyed_at TEXT, PRIMARY KEY (tenant_id, key_id)) WITHOUT ROWID"
        )
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _run(self, sql: str, params: Sequence[Any]) -> list[Any]:
        assert self._conn is not None, "start() the key store first"
        conn = self._conn

        def run() -> list[Any]:
            with self._lock:
                cursor = conn.execute(sql, params)
                return cursor.fetchall() if cursor.description else [cursor.rowcount]

        return await asyncio.to_thread(run)

    async def read(self, tenant_id: str, key_ids: Sequence[str]) -> dict[str, StoredKey]:
        found: dict[str, StoredKey] = {}
        ids = list(key_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT {_COLUMNS} FROM data_keys WHERE tenant_id = ? AND key_id IN ({marks})"
            for row in await self._run(sql, [tenant_id, *chunk]):
                found[row[1]] = _key(row)
        return found

    async def create(self, key: StoredKey) -> StoredKey:
        await self._run(
            f"INSERT OR IGNORE INTO data_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            [key.tenant_id, key.key_id, key.master_id, key.wrapped, key.created_at, key.destroyed_at],
        )
        return (await self.read(key.tenant_id, [key.key_id]))[key.key_id]

    async def destroy(self, tenant_id: str, key_id: str) -> bool:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        changed = await self._run(
            "INSERT INTO data_keys (tenant_id, key_id, master_id, wrapped, created_at, destroyed_at) "
            "VALUES (?, ?, NULL, NULL, ?, ?) ON CONFLICT (tenant_id, key_id) DO UPDATE SET "
            "master_id = NULL, wrapped = NULL, destroyed_at = excluded.destroyed_at WHERE destroyed_at IS NULL",
            [tenant_id, key_id, now, now],
        )
        if changed[0]:
            await self._run("PRAGMA wal_checkpoint(TRUNCATE)", [])  # and gone from the WAL
        return bool(changed[0])

    async def list_keys(
        self, tenant_id: str | None = None, prefix: str = "", after: tuple[str, str] | None = None, limit: int = 1000
    ) -> list[StoredKey]:
        where, params = ["substr(key_id, 1, ?) = ?"], [len(prefix), prefix]
        if tenant_id is not None:
            where.append("tenant_id = ?")
            params.append(tenant_id)
        if after is not None:
            where.append("(tenant_id, key_id) > (?, ?)")
            params.extend(after)
        sql = f"SELECT {_COLUMNS} FROM data_keys WHERE {' AND '.join(where)} ORDER BY tenant_id, key_id LIMIT ?"
        return [_key(row) for row in await self._run(sql, [*params, limit])]

    async def rewrap(self, key: StoredKey, master_id: str, wrapped: bytes) -> bool:
        changed = await self._run(
            "UPDATE data_keys SET master_id = ?, wrapped = ? WHERE tenant_id = ? AND key_id = ? AND wrapped = ?",
            [master_id, wrapped, key.tenant_id, key.key_id, key.wrapped],
        )
        return bool(changed[0])
