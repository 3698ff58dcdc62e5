"""The MongoDB read store against the ReadStore contract, on the real MongoDB-wire server
(FerretDB in tests; ``infra/services up`` starts it). Each test class gets its own database,
dropped at the end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pymongo import MongoClient

from adapters.kafka.codec import encode_position
from adapters.kafka.node import IndexedLog
from adapters.kafka.projectors import project
from adapters.mongo_store import MongoReadStore
from api.bootstrap import CHAT
from domain.events import Event
from projections import eventindex
from projections.ports import Op, ReadStore, ReadStoreRefused
from projections.timetravel import AsOf, TimeTravel
from tests.cluster import services_env
from tests.contract.readstore_contract import THINGS, ReadStoreContract, fields
from tests.support import SEALER


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

    async def test_a_value_bson_cannot_hold_is_refused_and_the_store_stays_usable(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        with pytest.raises(ReadStoreRefused):  # not ReadStoreUnavailable: retrying cannot help
            await store.apply(projection, [Op(THINGS, tenant, "big", 1, set={"n": 2**70})], 1)
        assert await store.checkpoint(projection) == 0
        assert await store.get(THINGS, tenant, "big") is None
        await store.apply(projection, [Op(THINGS, tenant, "ok", 2, set={"n": 1})], 2)
        assert fields(await store.get(THINGS, tenant, "ok")) == {"n": 1}

    async def test_the_projector_parks_the_one_event_the_store_refuses_and_applies_the_rest(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        def registered(offset: int, user_id: str, metadata: dict[str, object]) -> Event:
            return Event(
                event_id=f"e{offset}",
                tenant_id=tenant,
                stream=f"user:{user_id}",
                seq=1,
                position=encode_position(0, offset),
                type="UserRegistered",
                schema_version=1,
                occurred_at="2026-01-01T00:00:00.000000Z",
                payload={"name": user_id, "metadata": metadata},
            )

        events = [
            registered(0, "before", {}),
            registered(1, "poison", {"too_big": 2**70}),  # an event an older release let through
            registered(2, "after", {"n": 1}),
        ]
        await project(store, CHAT, projection, events)
        assert await store.checkpoint(projection) == 3  # past the whole batch: the partition moves on
        assert (await store.get("users", tenant, "before") or {})["name"] == "before"
        assert (await store.get("users", tenant, "after") or {})["metadata"] == {"n": 1}
        assert await store.get("users", tenant, "poison") is None


async def test_the_event_index_reads_a_stream_by_an_index_and_a_fold_works_on_it(
    mongo_database: tuple[str, str],
) -> None:
    """A stream is read by (tenant, stream, seq) from an index, not by sorting the tenant's whole
    event collection (an as_of fold reads a channel in pages of 10,000; websocket resume too)."""
    url, database = mongo_database
    store = MongoReadStore(url, database, prefix="idx_")
    await store.start()
    try:
        with MongoClient(url, serverSelectionTimeoutMS=10_000) as client:
            indexes = client[database]["idx_events"].index_information().values()
            keys = [list(index["key"]) for index in indexes]
        assert [("tenant_id", 1), ("stream", 1), ("seq", 1)] in keys
        assert [("tenant_id", 1), ("position", 1)] in keys
        created = Event(
            event_id="e1", tenant_id="t", stream="channel:c", seq=1, position=10, type="ChannelCreated",
            schema_version=1, occurred_at="2026-01-01T00:00:00.000Z", payload={"name": "c", "kind": "group"},
        )  # fmt: skip
        said = [
            created.model_copy(update={"event_id": f"e{n}", "seq": n, "position": 10 * n, "type": "MessagePosted",
                                       "payload": {"message_id": f"m{n}", "author_id": "t", "text": f"hi {n}"}})
            for n in range(2, 6)
        ]  # fmt: skip
        for event in [created, *said]:
            await store.apply(eventindex.NAME, eventindex.project(event), event.position)
        log = IndexedLog(store, SEALER)
        assert [e.seq for e in await log.read_stream("t", "channel:c", 2, 2)] == [3, 4]
        travel = TimeTravel(log.read_stream, page=2)
        past = await travel.view("t", "c", AsOf(position=35))
        assert past is not None
        messages = await past[0].find("messages", "t", {"channel_id": "c"}, sort=[("seq", 1)])
        assert [m["text"] for m in messages] == ["hi 2", "hi 3"]
    finally:
        await store.close()
