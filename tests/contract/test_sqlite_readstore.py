"""The embedded SQLite read store against the ReadStore contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.sqlite_store import SqliteReadStore
from projections.ports import ReadStore
from tests.contract.readstore_contract import ReadStoreContract


class TestSqliteReadStore(ReadStoreContract):
    async def open_store(self, request: pytest.FixtureRequest) -> ReadStore:
        tmp_path: Path = request.getfixturevalue("tmp_path")
        store = SqliteReadStore(tmp_path / "read.db")
        await store.start()
        return store
