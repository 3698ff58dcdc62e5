"""The distributed ephemeral bus: the short-retention ``ephemeral`` topic, produced
without waiting and consumed by every node from its end (no consumer group)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import orjson
import structlog

# aiokafka ships no type information: its clients are Any to the type checker.
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from adapters.kafka.clients import Batches, producer, tailing
from commands.ports import EphemeralBus

log = structlog.get_logger("caas.bus")


class KafkaBus(EphemeralBus):
    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.producer = producer(self.bootstrap, durable=False)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self.consumer.start()
        parts = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        self.consumer.assign(parts)
        await self.consumer.seek_to_end(*parts)
        for tp in parts:
            await self.consumer.position(tp)
        self._task = tailing(self.consumer, self._deliver, name="ephemeral")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for client in (self.consumer, self.producer):
            with contextlib.suppress(Exception):
                await client.stop()

    def publish(self, message: dict[str, Any]) -> None:
        asyncio.get_running_loop().create_task(self._send(message))

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            # keyed by the sending node, so each node's facts stay in order on one partition
            key = str(message.get("node") or message.get("tenant") or "").encode() or None
            await self.producer.send(self.topic, orjson.dumps(message), key=key)
        except KafkaError as exc:  # ephemeral: heartbeats repair what is lost
            log.warning("ephemeral_send_failed", error=str(exc))

    def listen(self, listener: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.append(listener)

    def _deliver(self, batches: Batches) -> None:
        for records in batches.values():
            for record in records:
                message = orjson.loads(record.value)
                for listener in self._listeners:
                    listener(message)
