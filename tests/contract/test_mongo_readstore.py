"""The MongoDB read store against the ReadStore contract, on the real MongoDB-wire server
(FerretDB in tests; ``infra/services up`` starts it). Each test class gets its own database,
dropped at the end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pymongo import MongoClient

from adapters.mongo_store import MongoReadStore
from projections.ports import ReadStore
from tests.cluster import services_env
from tests.contract.readstore_contract import ReadStoreContract


@pytest.fixture(scope="class")
def mongo_database() -> Iterator[tuple[str, str]]:
    """A database of its own for the class (the contract isolates tests by tenant), dropped after."""
    url = services_env()["CAAS_MONGO_URL"]
    name = f"contract_{uuid.uuid4().hex[:12]}"
    yield url, name
    with MongoClient(url, serverSelectionTimeoutMS=10_000) as client:
        client.drop_database(name)


class TestMongoReadStore(ReadStoreContract):
    async def open_store(self, request: pytest.FixtureRequest) -> ReadStore:
        url, database = request.getfixturevalue("mongo_database")
        store = MongoReadStore(url, database)
        await store.start()
        return store
