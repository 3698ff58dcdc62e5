"""The Kafka logs keep the same contracts as the embedded one, on the real broker.

:class:`PartitionLog` is the stream store the deciders of ``caas worker`` record commands
with; :class:`KafkaEventLog` is a whole log on one topic (tools), which adds the feed.
"""

from __future__ import annotations

import uuid

import pytest

from adapters.kafka.clients import producer
from adapters.kafka.log import KafkaEventLog, PartitionLog
from adapters.kafka.topics import create_topic
from commands.ports import EventLog, StreamStore
from tests.cluster import services_env
from tests.contract.eventlog_contract import EventLogContract, StreamStoreContract


def bootstrap() -> str:
    return services_env()["CAAS_KAFKA_BOOTSTRAP"]


class TestKafkaEventLog(EventLogContract):
    async def open_log(self, request: pytest.FixtureRequest) -> EventLog:
        log = KafkaEventLog(bootstrap(), f"contract-{uuid.uuid4().hex[:12]}")
        await log.start()
        return log


class _DeciderLog(PartitionLog):
    """A decider's partition log that, like the decider, owns its producer: closing it stops that too."""

    async def close(self) -> None:
        await super().close()
        await self.producer.stop()


class TestPartitionLog(StreamStoreContract):
    async def open_log(self, request: pytest.FixtureRequest) -> StreamStore:
        topic = f"contract-{uuid.uuid4().hex[:12]}"
        await create_topic(bootstrap(), topic, 1)
        kafka = producer(bootstrap())
        await kafka.start()
        log = _DeciderLog(kafka, bootstrap(), topic, 1)
        await log.start()
        return log
