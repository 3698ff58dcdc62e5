"""The MongoDB read store against the ReadStore contract, on the real MongoDB-wire server
(FerretDB in tests; ``infra/services up`` starts it). Each test class gets its own database,
dropped at the end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pymongo import MongoClient

from adapters.mongo_store import MongoReadStore
from projections.ports import Op, ReadStore
from tests.cluster import services_env
from tests.contract.readstore_contract import THINGS, ReadStoreContract, fields


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

    # Beyond the shared contract (and worth moving into it): documents carry keys users chose.
    async def test_user_chosen_keys_mongodb_reserves_round_trip(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        metadata = {"a.b": 1, "$where": "x", "%2E": "literal", "k": {"x.y": [{"$z": 1, "nul\x00": True}]}}
        await store.apply(projection, [Op(THINGS, tenant, "u", 1, set={"metadata": metadata, "n": 1})], 1)
        await store.apply(projection, [Op(THINGS, tenant, "u", 2, set={"metadata.c": 2}, inc={"n": 1})], 2)
        expected = {"metadata": {**metadata, "c": 2}, "n": 2}
        assert fields(await store.get(THINGS, tenant, "u")) == expected
        assert [fields(d) for d in await store.find(THINGS, tenant, {"n": 2})] == [expected]
