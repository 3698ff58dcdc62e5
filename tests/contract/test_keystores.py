"""The key stores (in memory, SQLite, MongoDB on the real FerretDB) against the KeyStore contract."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient

from adapters.memory_keys import MemoryKeyStore
from adapters.mongo_keys import MongoKeyStore
from adapters.sqlite_keys import SqliteKeyStore
from commands.keys import KeyStore
from tests.cluster import services_env
from tests.contract.keystore_contract import KeyStoreContract


class TestMemoryKeyStore(KeyStoreContract):
    async def open_store(self, request: pytest.FixtureRequest) -> KeyStore:
        store = MemoryKeyStore()
        await store.start()
        return store


class TestSqliteKeyStore(KeyStoreContract):
    async def open_store(self, request: pytest.FixtureRequest) -> KeyStore:
        tmp_path: Path = request.getfixturevalue("tmp_path")
        store = SqliteKeyStore(tmp_path / "keys.db")
        await store.start()
        return store


@pytest.fixture(scope="class")
def mongo_database() -> Iterator[tuple[str, str]]:
    url = services_env()["CAAS_MONGO_URL"]
    name = f"keys_{uuid.uuid4().hex[:12]}"
    yield url, name
    with MongoClient(url, serverSelectionTimeoutMS=10_000) as client:
        client.drop_database(name)


class TestMongoKeyStore(KeyStoreContract):
    async def open_store(self, request: pytest.FixtureRequest) -> KeyStore:
        url, database = request.getfixturevalue("mongo_database")
        store = MongoKeyStore(url, database)
        await store.start()
        return store
