"""The decider's event log on Kafka: the single writer of the partitions it owns.

Kafka has no conditional append, so the worker that owns a partition (one member of the
decider consumer group) is its only writer. It restores every stream head, idempotency key
and recent command id of the partition by reading ``events`` from the start, then decides
commands and produces their events with an idempotent, ``acks=all`` producer. Appends are
sent in call order by one sender task, so pipelined appends to a stream stay in order.

It is a stream store, not a feed: the decider's aggregates are restored from the same
partition (the events topic is its changelog) and kept in memory, and the whole log is read
by the projectors and tools, never here.
"""

from __future__ import annotations

import asyncio
from array import array
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextvars import ContextVar
from typing import Any

# aiokafka ships no type information: its clients are Any to the type checker.
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)

from adapters import tracing
from adapters.kafka.clients import producer
from adapters.kafka.codec import (
    decode_position,
    encode_position,
    event_from_record,
    event_value,
    partition_for,
    stream_key,
)
from adapters.kafka.topics import create_topic
from commands.ports import (
    ConcurrencyError,
    EventLog,
    Idempotency,
    IdempotencyKeyReused,
    Listener,
    LogUnavailable,
    NewEvent,
    StreamStore,
    recorded_fields,
)
from domain.events import Event

RECENT_COMMANDS = 200_000
REPLY_HEADER = "caas-reply"
# ``(reply_to, request_id)`` of the request a decider is deciding (set in its task): the events
# an append records carry it in a header, so the asking node's event consumer answers the
# request from the events themselves and no reply crosses the broker (:mod:`adapters.kafka.wire`).
REPLY_ROUTE: ContextVar[tuple[str, str] | None] = ContextVar("caas_reply_route", default=None)


def reply_header(route: tuple[str, str], count: int) -> list[tuple[str, bytes]]:
    """The header each of an append's ``count`` records carries to answer ``route``."""
    reply_to, request_id = route
    return [(REPLY_HEADER, f"{reply_to} {request_id} {count}".encode())]


PRODUCER_FATAL = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch, ProducerFenced)


def producer_broken(producer: AIOKafkaProducer, exc: BaseException) -> bool:
    """Whether ``producer`` must be replaced after ``exc``.

    aiokafka's idempotent producer does not reset its sequence numbers after a sequence
    error (the Java client bumps its epoch), so once a partition answers
    ``OutOfOrderSequenceNumber`` (seen after a broker restart) every later batch to it fails
    too; and some errors stop its sender task for good, failing every later send at once.
    """
    if isinstance(exc, PRODUCER_FATAL):
        return True
    task = getattr(getattr(producer, "_sender", None), "sender_task", None)
    return task is not None and task.done()


async def read_partition(bootstrap: str, topic: str, partition: int, *, start: int = 0) -> list[Event]:
    """Every event of one partition from ``start`` up to its end as of now."""
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_bytes=50 << 20)
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, start)
        events: list[Event] = []
        while start < end and await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
            for record in batch.get(tp, []):
                events.append(event_from_record(record.value, partition, record.offset))
        return events
    finally:
        await consumer.stop()


class PartitionLog(StreamStore):
    """The :class:`StreamStore` of the partitions this worker owns: it appends to them, and
    reads back the streams it recorded or restored (:meth:`record`)."""

    def __init__(self, producer: AIOKafkaProducer, bootstrap: str, topic: str, partitions: int) -> None:
        self.producer = producer
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self._heads: dict[tuple[str, str], int] = {}
        self._positions: dict[tuple[str, str], array[int]] = {}
        self._fetcher: AIOKafkaConsumer | None = None
        self._fetch_lock = asyncio.Lock()
        self._idempotency: dict[tuple[str, str], tuple[str, list[Event]]] = {}
        self._pending_keys: set[tuple[str, str]] = set()  # keys of appends not yet acknowledged
        self.head = 0
        self._commands: OrderedDict[str, list[Event]] = OrderedDict()
        self._queue: asyncio.Queue[
            tuple[str, str, Sequence[NewEvent], Idempotency | None, tuple[str, str] | None, asyncio.Future[list[Event]]]
        ] = asyncio.Queue()
        self._listeners: list[Listener] = []
        self._sender: asyncio.Task[None] | None = None
        self.broken: LogUnavailable | None = None

    async def start(self) -> None:
        self._sender = asyncio.create_task(self._send_loop(), name="caas-partition-sender")

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            self._sender = None
        if self._fetcher is not None:
            await self._fetcher.stop()
            self._fetcher = None

    def listen(self, listener: Listener) -> None:
        """Call ``listener`` with the events of every append once Kafka acknowledged them."""
        self._listeners.append(listener)

    def record(self, event: Event) -> None:
        """Learn a recorded event (while restoring, or after producing it)."""
        key = (event.tenant_id, event.stream)
        self._heads[key] = event.seq
        self.head = max(self.head, event.position)
        positions = self._positions.setdefault(key, array("q"))
        if len(positions) == event.seq - 1:
            positions.append(event.position)
        command_id = event.command_id
        if command_id is None:
            return
        events = self._commands.setdefault(command_id, [])
        if any(e.event_id == event.event_id for e in events):
            return  # restored again after the partition came back
        events.append(event)
        if len(self._commands) > RECENT_COMMANDS:
            self._commands.popitem(last=False)
        if command_id.startswith("idem:"):
            _, fingerprint, idempotency_key = command_id.split(":", 2)
            self._idempotency[(event.tenant_id, idempotency_key)] = (fingerprint, events)

    def recorded_command(self, command_id: str) -> list[Event] | None:
        """The events an already processed command recorded (for redelivered commands)."""
        return self._commands.get(command_id)

    def forget_partition(self, partition: int) -> None:
        for key in [k for k in self._heads if partition_for(stream_key(*k), self.partitions) == partition]:
            del self._heads[key]
            self._positions.pop(key, None)

    def append(
        self,
        tenant_id: str,
        stream: str,
        expected_version: int,
        events: Sequence[NewEvent],
        idempotency: Idempotency | None = None,
    ) -> asyncio.Future[list[Event]]:
        future: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        head = self._heads.get((tenant_id, stream), 0)
        if self.broken is not None:
            future.set_exception(self.broken)
        elif head != expected_version:
            future.set_exception(ConcurrencyError(f"{stream} is at version {head}, expected {expected_version}"))
        elif idempotency is not None and (
            (tenant_id, idempotency.key) in self._idempotency or (tenant_id, idempotency.key) in self._pending_keys
        ):
            future.set_exception(IdempotencyKeyReused(idempotency.key))
        else:
            self._heads[(tenant_id, stream)] = head + len(events)
            if idempotency is not None:
                pending = (tenant_id, idempotency.key)
                self._pending_keys.add(pending)
                future.add_done_callback(lambda _: self._pending_keys.discard(pending))
            self._queue.put_nowait((tenant_id, stream, events, idempotency, REPLY_ROUTE.get(), future))
        return future

    async def _send_loop(self) -> None:
        """Hand each append to the producer in call order without waiting for the broker,
        so many appends share a produce request; the acker resolves them in the same order."""
        acks: asyncio.Queue[Any] = asyncio.Queue()
        acker = asyncio.create_task(self._ack_loop(acks))
        try:
            while True:
                tenant_id, stream, events, idempotency, route, future = await self._queue.get()
                deliveries: list[tuple[Event, Any]] = []
                sent: list[tuple[Event, Any]] | BaseException = deliveries
                traced = events[0].traceparent if tracing.ON and events else None
                sending = None if traced is None else tracing.producing(tracing.DECIDER, self.topic, traced)
                try:
                    if self.broken is not None:
                        raise self.broken
                    key = stream_key(tenant_id, stream)
                    partition = partition_for(key, self.partitions)
                    headers = None if route is None else reply_header(route, len(events))
                    if events and events[0].traceparent is not None:  # the trace travels as a header too
                        headers = [*(headers or ()), *tracing.kafka_headers(events[0].traceparent)]
                    for new in events:
                        event = Event.model_construct(**recorded_fields(new, tenant_id, stream, 0))
                        delivery = await self.producer.send(
                            self.topic, event_value(event), key=key.encode(), partition=partition, headers=headers
                        )
                        deliveries.append((event, delivery))
                except (KafkaError, LogUnavailable, OSError) as exc:
                    sent = exc
                acks.put_nowait((tenant_id, stream, idempotency, future, sent, sending))
        finally:
            acker.cancel()

    async def _ack_loop(self, acks: asyncio.Queue[Any]) -> None:
        while True:
            tenant_id, stream, idempotency, future, sent, sending = await acks.get()
            if sending is not None:  # ended once the broker answered, whatever it answered
                future.add_done_callback(lambda _, span=sending: span.end())
            partition = partition_for(stream_key(tenant_id, stream), self.partitions)
            try:
                if isinstance(sent, BaseException):
                    raise sent
                if self.broken is not None:
                    raise self.broken
                recorded = []
                for event, delivery in sent:
                    meta = await delivery
                    recorded.append(event.model_copy(update={"position": encode_position(partition, meta.offset)}))
            except (KafkaError, LogUnavailable, OSError) as exc:
                # Whether the broker kept some of it is unknown: stop deciding until restored.
                self.broken = (
                    exc if isinstance(exc, LogUnavailable) else LogUnavailable(f"Kafka did not acknowledge: {exc}")
                )
                if not future.done():
                    future.set_exception(self.broken)
                continue
            for event in recorded:
                self.record(event)
            if idempotency is not None and recorded:
                self._idempotency[(tenant_id, idempotency.key)] = (idempotency.fingerprint, recorded)
            for listener in self._listeners:
                listener(recorded)
            if not future.done():
                future.set_result(recorded)

    async def read_stream(
        self, tenant_id: str, stream: str, after_seq: int = 0, limit: int | None = None
    ) -> list[Event]:
        # Aggregates are restored up front, so this only serves replays of single earlier
        # results (a retried client_msg_id, a repeated reaction): fetch them by offset.
        positions = self._positions.get((tenant_id, stream))
        if not positions:
            return []
        wanted = positions[after_seq : None if limit is None else after_seq + limit]
        return [await self._fetch(position) for position in wanted]

    async def _fetch(self, position: int) -> Event:
        partition, offset = decode_position(position)
        tp = TopicPartition(self.topic, partition)
        async with self._fetch_lock:
            if self._fetcher is None:
                self._fetcher = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
                await self._fetcher.start()
            if tp not in self._fetcher.assignment():
                self._fetcher.assign([*self._fetcher.assignment(), tp])
            self._fetcher.seek(tp, offset)
            while True:
                batch = await self._fetcher.getmany(tp, timeout_ms=1000, max_records=1)
                for record in batch.get(tp, []):
                    if record.offset == offset:
                        return event_from_record(record.value, partition, offset)

    async def find_idempotent(self, tenant_id: str, key: str) -> tuple[str, list[Event]] | None:
        return self._idempotency.get((tenant_id, key))


async def iterate_events(
    bootstrap: str,
    topic: str,
    partitions: int,
    *,
    after_position: int = 0,
    since_ms: int | None = None,
    batch: int = 5000,
) -> AsyncIterator[list[Event]]:
    """Every event of the topic up to its end as of now, partition by partition, in
    batches. ``since_ms`` starts each partition at the first record at or after that time
    (offsets-for-times); ``after_position`` skips what a reader already has."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_bytes=50 << 20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = {tp: max(0, (after_position >> 10) - 1) for tp in tps}
        if since_ms is not None:
            found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
            starts = {tp: max(starts[tp], found[tp].offset if found[tp] else ends[tp]) for tp in tps}
        for tp in tps:
            consumer.seek(tp, starts[tp])
            while await consumer.position(tp) < ends[tp]:
                records = (await consumer.getmany(tp, timeout_ms=1000, max_records=batch)).get(tp, [])
                events = [event_from_record(r.value, tp.partition, r.offset) for r in records if r.offset < ends[tp]]
                events = [e for e in events if e.position > after_position]
                if events:
                    yield events
    finally:
        await consumer.stop()


class KafkaEventLog(EventLog):
    """An :class:`EventLog` that owns every partition of an event topic: appends take the
    deciders' single-writer path (a :class:`PartitionLog`), reads scan the topic.

    Scanning makes stream reads cost the size of the topic, so the running system does not
    read this way (deciders keep their aggregates restored, API nodes read the event index);
    it serves tools, and proves the whole log on Kafka keeps the same contract as the
    embedded one.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int = 1) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self._listeners: list[Listener] = []
        self._writer: PartitionLog | None = None  # made in start(), whose producer needs the running loop

    @property
    def writer(self) -> PartitionLog:
        if self._writer is None:
            raise LogUnavailable("the Kafka event log is not started")
        return self._writer

    async def start(self) -> None:
        await create_topic(self.bootstrap, self.topic, self.partitions)
        kafka = producer(self.bootstrap)
        await kafka.start()
        writer = PartitionLog(kafka, self.bootstrap, self.topic, self.partitions)
        for partition in range(self.partitions):
            for event in await read_partition(self.bootstrap, self.topic, partition):
                writer.record(event)
        for listener in self._listeners:
            writer.listen(listener)
        await writer.start()
        self._writer = writer

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()
            await writer.producer.stop()

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)
        if self._writer is not None:
            self._writer.listen(listener)

    def append(
        self,
        tenant_id: str,
        stream: str,
        expected_version: int,
        events: Sequence[NewEvent],
        idempotency: Idempotency | None = None,
    ) -> asyncio.Future[list[Event]]:
        return self.writer.append(tenant_id, stream, expected_version, events, idempotency)

    async def find_idempotent(self, tenant_id: str, key: str) -> tuple[str, list[Event]] | None:
        return await self.writer.find_idempotent(tenant_id, key)

    async def _scan(self) -> list[Event]:
        found: list[Event] = []
        async for batch in iterate_events(self.bootstrap, self.topic, self.partitions):
            found.extend(batch)
        return found

    async def read_stream(
        self, tenant_id: str, stream: str, after_seq: int = 0, limit: int | None = None
    ) -> list[Event]:
        events = [
            e for e in await self._scan() if e.tenant_id == tenant_id and e.stream == stream and e.seq > after_seq
        ]
        events.sort(key=lambda e: e.seq)
        return events if limit is None else events[:limit]

    async def read_all(
        self,
        after_position: int = 0,
        limit: int = 1000,
        tenant_id: str | None = None,
        types: Sequence[str] | None = None,
    ) -> list[Event]:
        events = [
            e
            for e in await self._scan()
            if e.position > after_position
            and (tenant_id is None or e.tenant_id == tenant_id)
            and (not types or e.type in types)
        ]
        events.sort(key=lambda e: e.position)
        return events[:limit]

    async def head_position(self) -> int:
        return self.writer.head
