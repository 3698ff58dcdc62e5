"""The Kafka event log keeps the same contract as the embedded one, on the real broker."""

from __future__ import annotations

import uuid

import pytest

from adapters.kafka.log import KafkaEventLog
from commands.ports import EventLog
from tests.cluster import services_env
from tests.contract.eventlog_contract import EventLogContract


class TestKafkaEventLog(EventLogContract):
    async def open_log(self, request: pytest.FixtureRequest) -> EventLog:
        log = KafkaEventLog(services_env()["CAAS_KAFKA_BOOTSTRAP"], f"contract-{uuid.uuid4().hex[:12]}")
        await log.start()
        return log
