"""The Kafka clients CAAS uses, built one way: producers, and consumers tailed forever."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog

# aiokafka ships no type information: its clients are Any to the type checker.
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter

log = structlog.get_logger("caas.kafka")
CONSUMER_ERRORS = Counter(
    "caas_kafka_consumer_errors_total",
    "What a tailing consumer could not handle and went past: a fetched batch (stage=batch), one record"
    " (stage=record) or one listener's call (stage=listener), each logged with its exception",
    ["consumer", "stage"],
)

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


# How often a group member reads the cluster's metadata even when nothing failed (the client's
# default is 5 minutes). A group that rebalanced while the broker was still loading its topics
# after a restart was assigned none of a topic it had not seen yet, and only a metadata refresh
# that shows the topic makes the member rejoin: its work stood still until then.
GROUP_METADATA_MAX_AGE_MS = 5000


def group_consumer(bootstrap: str, group: str, *, max_poll_records: int, **options: Any) -> AIOKafkaConsumer:
    """A member of consumer group ``group`` that commits offsets itself, after the work is
    done, and starts a new group at the beginning of its topics."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_poll_records,
        metadata_max_age_ms=GROUP_METADATA_MAX_AGE_MS,
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


def tailing(
    consumer: AIOKafkaConsumer, handle: Callable[[Batches], Awaitable[None] | None], *, name: str
) -> asyncio.Task[None]:
    """:func:`tail` as a task named ``caas-<name>``; should it ever end other than by being
    cancelled, that is logged (``consumer_stopped``), and :func:`stopped` says so."""
    task = asyncio.create_task(tail(consumer, handle, name=name), name=f"caas-{name}")
    task.add_done_callback(_stopped)
    return task


def _stopped(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        log.error("consumer_stopped", consumer=task.get_name(), exc_info=task.exception())


def stopped(tasks: Iterable[asyncio.Task[None]]) -> list[str]:
    """The names of the :func:`tailing` tasks that are no longer running."""
    return [task.get_name() for task in tasks if task.done()]


async def tail(
    consumer: AIOKafkaConsumer,
    handle: Callable[[Batches], Awaitable[None] | None],
    *,
    name: str,
    max_records: int = 5000,
) -> None:
    """Fetch from ``consumer`` forever and hand each fetch to ``handle``.

    A broker that is away is logged (``consumer_fetch_failed``) and asked again: the consumer
    resumes where it was. A fetch ``handle`` fails on is logged with its exception
    (``consumer_batch_failed``), counted (:data:`CONSUMER_ERRORS`) and gone past: what a
    consumer cannot handle once it will not handle on a second try, and a consumer that stopped
    would leave every later record unread (on an API node: every command unanswered)."""
    while True:
        try:
            batches: Batches = await consumer.getmany(timeout_ms=200, max_records=max_records)
        except KafkaError as exc:
            log.warning("consumer_fetch_failed", consumer=name, error=str(exc))
            await asyncio.sleep(0.5)
            continue
        try:
            handled = handle(batches)
            if handled is not None:
                await handled
        except Exception:
            records = sum(len(records) for records in batches.values())
            log.exception("consumer_batch_failed", consumer=name, records=records)
            CONSUMER_ERRORS.labels(name, "batch").inc()
