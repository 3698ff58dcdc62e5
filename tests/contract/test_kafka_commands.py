"""The Kafka backend's command side keeps the command-path contract: an API node sends each
command over the real broker to a decider (the one ``caas worker`` runs), which decides it
and answers on the reply topic."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from adapters.kafka.deciders import DeciderWorker
from adapters.kafka.node import IndexedLog, KafkaNode
from adapters.memory_store import MemoryReadStore
from commands.service import Commands
from tests.cluster import services_env
from tests.contract.commands_contract import CommandsContract
from tests.support import SEALER

PARTITIONS = 2


@contextlib.asynccontextmanager
async def kafka_commands(log: IndexedLog | None = None, partitions: int = PARTITIONS) -> AsyncIterator[KafkaNode]:
    """A started decider and API node on fresh topics of the test broker (``log``: the node's
    history, to listen to what its consumer of the event topic hands on); stopped on exit."""
    async with decider_and_node(log, partitions) as (_, node):
        yield node


@contextlib.asynccontextmanager
async def decider_and_node(
    log: IndexedLog | None = None, partitions: int = PARTITIONS
) -> AsyncIterator[tuple[DeciderWorker, KafkaNode]]:
    """:func:`kafka_commands`, and its decider."""
    bootstrap, prefix = services_env()["CAAS_KAFKA_BOOTSTRAP"], f"contract-{uuid.uuid4().hex[:12]}-"
    decider = DeciderWorker(bootstrap, prefix, partitions, sealer=SEALER)
    await decider.start()
    deciding = asyncio.create_task(decider.run())
    # generous: the decider's first commands wait for its consumer group to form
    node = KafkaNode(bootstrap, prefix, partitions, log or IndexedLog(MemoryReadStore(), SEALER), timeout=30.0)
    await node.start()
    try:
        yield decider, node
    finally:
        await node.close()
        deciding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await deciding
        await decider.close()


class TestKafkaCommands(CommandsContract):
    @contextlib.asynccontextmanager
    async def open_commands(self, request: pytest.FixtureRequest) -> AsyncIterator[Commands]:
        async with kafka_commands() as node:
            yield node
