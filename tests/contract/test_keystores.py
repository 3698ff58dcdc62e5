"""The key stores (in memory, SQLite, MongoDB on the real FerretDB) against the KeyStore contract."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from pymongo import MongoClient

from adapters.memory_keys import MemoryKeyStore
from adapters.mongo_keys import MongoKeyStore
from adapters.sqlite_keys import SqliteKeyStore
from commands.keys import DESTROYED, Keyring, KeyStore, MasterKey, StoredKey
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


class AwayKeyStore(MemoryKeyStore):
    """The in-memory key store, with a switch that makes reads hang (a database outage)."""

    def __init__(self) -> None:
        super().__init__()
        self.away = False

    async def read(self, tenant_id: str, key_ids: Sequence[str]) -> dict[str, StoredKey]:
        if self.away:
            await asyncio.Event().wait()  # never answers; the keyring's wait gives up
        return await super().read(tenant_id, key_ids)


async def test_a_keyring_goes_on_with_the_keys_it_held_while_the_store_is_away() -> None:
    store = AwayKeyStore()
    keyring = Keyring(store, MasterKey.generate(), ttl=0.0, stale_wait=0.05)  # every key expires at once
    held = await keyring.key("t", "user:alice", create=True)
    assert held and len(held) == 32
    store.away = True
    assert await keyring.key("t", "user:alice") == held  # a stale copy, trusted while the store is away
    with pytest.raises(TimeoutError):  # a key never held needs the store
        await asyncio.wait_for(keyring.key("t", "user:bob", create=True), 0.5)
    keyring.forget("t", "user:alice")  # the log said it was destroyed: no stale copy overrules that
    assert await keyring.key("t", "user:alice") == DESTROYED
