"""The Kafka bus keeps the bus contract between two nodes on the real broker."""

from __future__ import annotations

import uuid

import pytest

from adapters.kafka.bus import KafkaBus
from adapters.kafka.topics import create_topic
from commands.ports import EphemeralBus
from tests.cluster import services_env
from tests.contract.bus_contract import BusContract


class TestKafkaBus(BusContract):
    async def open_nodes(self, request: pytest.FixtureRequest) -> list[EphemeralBus]:
        bootstrap, topic = services_env()["CAAS_KAFKA_BOOTSTRAP"], f"contract-bus-{uuid.uuid4().hex[:12]}"
        await create_topic(bootstrap, topic, 2)
        return [KafkaBus(bootstrap, topic, 2), KafkaBus(bootstrap, topic, 2)]
