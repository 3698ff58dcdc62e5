"""The Kafka clients CAAS uses, built one way: producers, and consumers tailed forever."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog

# aiokafka ships no type information: its clients are Any to the type checker.
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

log = structlog.get_logger("caas.kafka")

# A fetched batch: TopicPartition -> its records (each with .key, .value, .offset).
Batches = dict[Any, list[Any]]


def producer(bootstrap: str, *, durable: bool = True, request_timeout_ms: int = 10_000) -> AIOKafkaProducer:
    """A producer of the log (idempotent, ``acks=all``: what it acknowledges survives a
    broker restart), or of ephemeral facts (``durable=False``: one acknowledgement, batched
    a little longer, nothing retried in order).

    The log's producer does not linger: aiokafka keeps one produce request in flight per
    broker, so records sent while one is out wait for it and leave together in the next
    (batching under load comes free), and a record sent to an idle producer leaves at once
    instead of after the linger (which every command paid twice: its request, its events)."""
    if not durable:
        return AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5)
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=0,
        request_timeout_ms=request_timeout_ms,
        max_batch_size=256 * 1024,
    )


def group_consumer(bootstrap: str, group: str, *, max_poll_records: int, **options: Any) -> AIOKafkaConsumer:
    """A member of consumer group ``group`` that commits offsets itself, after the work is
    done, and starts a new group at the beginning of its topics."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_poll_records,
        **options,
    )


async def started_producer(bootstrap: str, *, retry_every: float, **options: Any) -> AIOKafkaProducer:
    """A started :func:`producer`, retried until the broker takes it (to replace a broken one)."""
    while True:
        fresh = producer(bootstrap, **options)
        try:
            await fresh.start()
            return fresh
        except (KafkaError, OSError):
            with contextlib.suppress(Exception):
                await fresh.stop()
            await asyncio.sleep(retry_every)


async def tail(
    consumer: AIOKafkaConsumer, handle: Callable[[Batches], None], *, failure: str, max_records: int = 5000
) -> None:
    """Fetch from ``consumer`` forever and hand each fetch to ``handle``; a broker that is
    away is logged as ``failure`` and asked again (the consumer resumes where it was)."""
    while True:
        try:
            batches: Batches = await consumer.getmany(timeout_ms=200, max_records=max_records)
        except KafkaError as exc:
            log.warning(failure, error=str(exc))
            await asyncio.sleep(0.5)
            continue
        handle(batches)
