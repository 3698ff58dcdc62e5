"""What an API node reads of the log keeps the EventHistory contract on both backends: the
SQLite log itself (embedded), and on Kafka the node's IndexedLog, which reads the event index
in MongoDB and hears new events from the node's consumer of the event topic."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from pymongo import MongoClient

from adapters.kafka.codec import checkpoint_mark, decode_position
from adapters.kafka.log import KafkaEventLog
from adapters.kafka.node import IndexedLog, KafkaNode
from adapters.mongo_store import MongoReadStore
from adapters.sqlite_log import SqliteEventLog
from api.bootstrap import EVENT_INDEX
from domain.events import Event
from streams.projector import checkpoint_name, project
from tests.cluster import services_env
from tests.contract.history_contract import EventHistoryContract, Opened
from tests.support import SEALER


class TestSqliteHistory(EventHistoryContract):
    @contextlib.asynccontextmanager
    async def open_history(self, request: pytest.FixtureRequest) -> AsyncIterator[Opened]:
        tmp_path: Path = request.getfixturevalue("tmp_path")
        log = SqliteEventLog(tmp_path / "events.db")
        await log.start()
        try:
            yield log, log
        finally:
            await log.close()


class TestKafkaNodeHistory(EventHistoryContract):
    @contextlib.asynccontextmanager
    async def open_history(self, request: pytest.FixtureRequest) -> AsyncIterator[Opened]:
        env = services_env()
        bootstrap, prefix = env["CAAS_KAFKA_BOOTSTRAP"], f"contract-{uuid.uuid4().hex[:12]}-"
        database = f"contract_{uuid.uuid4().hex[:12]}"
        store = MongoReadStore(env["CAAS_MONGO_URL"], database)
        await store.start()
        history = IndexedLog(store, SEALER)
        node = KafkaNode(bootstrap, prefix, 1, history)
        await node.start()  # creates the topics
        writer = KafkaEventLog(bootstrap, f"{prefix}events")

        indexing: set[asyncio.Future[None]] = set()

        def index(events: Sequence[Event]) -> None:
            # the event index as the worker's projectors keep it: per partition, checkpointed
            name = checkpoint_name(EVENT_INDEX.name, decode_position(events[0].position)[0])
            task = asyncio.ensure_future(project(store, EVENT_INDEX, name, list(events), mark=checkpoint_mark))
            indexing.add(task)
            task.add_done_callback(indexing.discard)

        writer.listen(index)
        await writer.start()
        try:
            yield history, writer
        finally:
            if indexing:
                await asyncio.gather(*indexing, return_exceptions=True)
            await writer.close()
            await node.close()
            await store.close()
            with MongoClient(env["CAAS_MONGO_URL"], serverSelectionTimeoutMS=10_000) as client:
                client.drop_database(database)
