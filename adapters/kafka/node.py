"""An API node of the distributed backend.

- Commands go to the command topic, keyed by stream, and the node awaits the decider's
  answer on its own partition of the reply topic (``LogUnavailable`` → 503 if none comes).
- The node consumes every partition of the event topic: it keeps a read-only replica of
  the aggregates (for authentication and membership checks, so a revoked API key stops
  working on every node as soon as the event arrives) and feeds its websocket hub.
- Stream and log reads come from the event index in MongoDB; ``min_position`` waits on the
  projectors' checkpoints there, so it works across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import orjson
import structlog

# aiokafka ships no type information: its clients are Any to the type checker.
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from adapters import tracing
from adapters.ids import uuid7
from adapters.kafka.clients import CONSUMER_ERRORS, Batches, producer, started_producer, stopped, tailing
from adapters.kafka.codec import decode_position, event_from_record, partition_for, stream_key
from adapters.kafka.log import REPLY_HEADER, producer_broken
from adapters.kafka.topics import ensure_topics
from adapters.kafka.wire import CommandRequest, outcome_of
from commands.ports import EventHistory, Listener, LogUnavailable
from commands.repository import AggregateRepository
from commands.sealing import SEALED, Sealer
from commands.service import CommandEnvelope, Commands, Outcome
from domain.events import Event, StreamId
from projections import eventindex
from projections.ports import ReadStore
from streams.projector import StallWatch, checkpoint_name

log = structlog.get_logger("caas.node")

USAGE_STREAM = "usage:"  # the streams of UsageRecorded (domain.usage), one per node and tenant
COMMAND_REQUEST_TIMEOUT_MS = 5000  # how long the producer may take to deliver one command
REPLICA_STREAMS_DROPPED = Counter(
    "caas_replica_streams_dropped_total",
    "Streams an API node dropped from its replica because it could not apply one of their events"
    " (the node then reports not ready until restarted)",
)


def _stream_of(key: bytes | None) -> tuple[str, str] | None:
    """``(tenant_id, stream)`` of an event record's key (:func:`stream_key`), if it has one."""
    if not key:
        return None
    tenant_id, _, stream = key.decode(errors="replace").partition("/")
    return (tenant_id, stream) if stream else None


class IndexedLog(EventHistory):
    """An API node's history of the log: streams and tenants read from the event index (a
    read model the workers keep in MongoDB); new events and the head come from the node's
    consumer of the event topic (:meth:`KafkaNode._replicate`)."""

    def __init__(self, store: ReadStore, sealer: Sealer) -> None:
        self.store = store
        self.sealer = sealer  # the index holds events as recorded: personal fields sealed, opened here
        self.listeners: list[Listener] = []
        self.head = 0

    async def start(self) -> None:
        """Nothing to open: the read store and the node's consumer are started by the backend."""

    async def close(self) -> None:
        """Nothing to release (see :meth:`start`)."""

    def listen(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def recorded(self, events: Sequence[Event]) -> None:
        """Learn newly recorded events (in position order per partition) and hand them on.

        Each listener is called on its own: one that raises is logged and counted
        (:data:`CONSUMER_ERRORS`, stage ``listener``) and costs the others nothing."""
        self.head = max(self.head, events[-1].position)
        for listener in self.listeners:
            try:
                listener(events)
            except Exception:
                log.exception("event_listener_failed", listener=getattr(listener, "__qualname__", repr(listener)))
                CONSUMER_ERRORS.labels("events", "listener").inc()

    async def read_stream(
        self, tenant_id: str, stream: str, after_seq: int = 0, limit: int | None = None
    ) -> list[Event]:
        docs = await self.store.find(
            "events", tenant_id, {"stream": stream, "seq": {"$gt": after_seq}}, sort=[("seq", 1)], limit=limit
        )
        return await self.sealer.open([eventindex.to_event(d) for d in docs])

    async def read_tenant(
        self, tenant_id: str, after_position: int = 0, limit: int = 1000, types: Sequence[str] | None = None
    ) -> list[Event]:
        flt: dict[str, Any] = {"position": {"$gt": after_position}}
        if types:
            flt["type"] = {"$in": list(types)}
        docs = await self.store.find("events", tenant_id, flt, sort=[("position", 1)], limit=limit)
        return await self.sealer.open([eventindex.to_event(d) for d in docs])

    async def head_position(self) -> int:
        return self.head


class Progress:
    """``min_position`` across processes: waits on the projectors' checkpoints in the store,
    and on this node's replica (queries check membership and roles there).

    The status compares each projection's checkpoint with the end of each partition as this
    node's replica has consumed it, and judges stalls by the shared rule (a lag whose
    checkpoint has not moved for ``stall_seconds``), so the node that serves the queries
    reports a projector that stopped, wherever that projector runs."""

    def __init__(
        self,
        store: ReadStore,
        projections: Sequence[str],
        node: KafkaNode,
        *,
        stall_seconds: float = 30.0,
    ) -> None:
        self.store = store
        self.projections = list(projections)
        self.node = node
        self.applied = 0
        self.stalls = StallWatch(stall_seconds)

    async def applied_offset(self, partition: int) -> int:
        marks = [await self.store.checkpoint(checkpoint_name(name, partition)) for name in self.projections]
        return min(marks) - 1

    async def status(self) -> dict[str, Any]:
        """Each projection's lag on every partition, to its end as this node has seen it."""
        ends = {p: self.node.replica_offset(p) for p in range(self.node.partitions)}
        projections = []
        for partition, end in ends.items():
            if end < 0:
                continue  # nothing recorded there yet
            for name in self.projections:
                applied = await self.store.checkpoint(checkpoint_name(name, partition)) - 1
                projections.append(self.stalls.observe(name, partition, applied, max(end - applied, 0)))
        behind = [sum(p["lag_events"] for p in projections if p["projection"] == n) for n in self.projections]
        return {"projection_lag_events": max(behind, default=0), "projections": projections}

    async def wait_for(self, position: int, timeout: float) -> bool:
        partition, offset = decode_position(position)
        deadline = time.monotonic() + timeout
        while True:
            replica_ready = self.node.replica_offset(partition) >= offset
            if replica_ready and await self.applied_offset(partition) >= offset:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)


KEY_LOAD_DELAYS = (0.1, 0.2, 0.4, 0.8, 1.6)  # seconds between asks of a key store that is away: about 3 s


class KeysUnavailable(Exception):
    """The keys of a sealed event could not be loaded (the key store did not answer)."""


class KafkaNode(Commands):
    """The write side as an API node sees it: commands out, replies and events in."""

    def __init__(self, bootstrap: str, prefix: str, partitions: int, log: IndexedLog, *, timeout: float = 5.0) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.partitions = partitions
        self.timeout = timeout
        self.node_id = f"node-{uuid7()}"
        self.log = log
        # every aggregate the node checks (tenants, users, channels, billing), restored from the
        # event topic: the replica never reads a stream. Usage streams are left out: only the
        # deciders judge them, and each node process starts streams of its own (usage:<node>),
        # which a replica kept forever would accumulate restart after restart.
        self.replica = AggregateRepository(None, cache_size=None)
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}
        self._reply_prefix = f"{self.node_id} ".encode()  # how a reply header to this node starts
        self._answering: dict[str, list[Event]] = {}  # request_id -> its events seen so far
        self._applied: dict[int, int] = {}
        self._applied_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._renewing: asyncio.Task[None] | None = None
        self.stale: set[tuple[str, str]] = set()  # streams dropped from the replica (see _take)

    async def start(self) -> None:
        self.topics = await ensure_topics(self.bootstrap, self.prefix, self.partitions)
        self.producer = producer(self.bootstrap, request_timeout_ms=COMMAND_REQUEST_TIMEOUT_MS)
        await self.producer.start()
        replies = TopicPartition(self.topics["replies"], partition_for(self.node_id, self.partitions))
        self.replies = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self.replies.start()
        self.replies.assign([replies])
        await self.replies.seek_to_end(replies)
        await self.replies.position(replies)
        self.events = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, max_poll_records=5000
        )
        await self.events.start()
        parts = [TopicPartition(self.topics["events"], p) for p in range(self.partitions)]
        self.events.assign(parts)
        await self.events.seek_to_beginning(*parts)
        ends = await self.events.end_offsets(parts)
        while [tp for tp, end in ends.items() if await self.events.position(tp) < end]:
            batches = await self.events.getmany(timeout_ms=200, max_records=5000)
            self._replicate(batches, publish=False, keys=await self._load_keys(batches))
        self._tasks = [
            tailing(self.replies, self._answer, name="replies"),
            tailing(self.events, self._replicate_live, name="events"),
        ]

    async def _replicate_live(self, batches: Batches) -> None:
        self._replicate(batches, publish=True, keys=await self._load_keys(batches))

    async def _load_keys(self, batches: Batches) -> dict[tuple[str, str], bytes] | None:
        """The keys of the sealed events of ``batches`` (:meth:`Sealer.pin`), for :meth:`_take`
        to open them with. A key store that is away is asked again (:data:`KEY_LOAD_DELAYS`);
        ``None`` if it never answers: those events are then not applied (their streams are
        dropped, see :meth:`_take`), never applied as erased, which would hold live users and
        messages as erased on this node (a deny policy on metadata failing open)."""
        sealed = []
        for tp, records in batches.items():
            for r in records:
                if r.value and b'"sealed"' in r.value:
                    with contextlib.suppress(Exception):  # undecodable: :meth:`_take` skips it
                        sealed.append(event_from_record(r.value, tp.partition, r.offset))
        if not sealed:
            return {}
        for delay in (*KEY_LOAD_DELAYS, None):
            try:
                return await self.log.sealer.pin(sealed)
            except Exception as exc:
                log.warning("event_keys_unavailable", error=f"{type(exc).__name__}: {str(exc)[:200]}")
                if delay is None:
                    return None
                await asyncio.sleep(delay)
        return None

    async def close(self) -> None:
        for task in [*self._tasks, *([self._renewing] if self._renewing else [])]:
            task.cancel()
        for client in (self.replies, self.events, self.producer):
            with contextlib.suppress(Exception):
                await client.stop()

    def _replicate(self, batches: Batches, *, publish: bool, keys: dict[tuple[str, str], bytes] | None) -> None:
        """Evolve the replica by fetched events, answer the requests they record, and
        (``publish``) hand them to the listeners: only once every partition's records are in
        the replica, so a listener cannot cost another partition its updates."""
        published: list[list[Event]] = []
        for tp, records in batches.items():
            taken = [(r, event) for r in records if (event := self._take(r, tp.partition, keys)) is not None]
            self._applied[tp.partition] = records[-1].offset
            self._applied_changed.set()
            if not taken:
                continue
            if self._waiting:
                self._answer_from(taken)
            published.append([event for _, event in taken])
        for events in published:
            if publish:
                self.log.recorded(events)
            else:
                self.log.head = max(self.log.head, events[-1].position)

    def _take(self, record: Any, partition: int, keys: dict[tuple[str, str], bytes] | None) -> Event | None:
        """The event of ``record``, evolved into the replica; ``None`` if this node cannot
        decode it (logged with the exception, counted): one unreadable record must not cost
        the rest of its batch, nor stop the consumer, which answers every command of this node.

        The replica of a stream that missed one of its events would stay as it was for good
        (every later event of it comes after a gap): that stream is dropped from the replica
        (checks on it then find no such aggregate, and refuse) and the node reports itself not
        ready (:meth:`check`) until it restarts and reads the log again. An event that decodes
        but does not apply is still handed on: it answers its request, and listeners get it.
        So is a sealed event whose keys could not be loaded (``keys`` ``None``): applied as
        erased it would hold a live user or message as erased here for good."""
        try:
            event = event_from_record(record.value, partition, record.offset)
            if SEALED in event.payload:
                if keys is None:
                    raise KeysUnavailable(f"the key store did not answer for event {event.event_id}")
                event = self.log.sealer.open_event(event, pinned=keys)
        except Exception:
            log.exception("event_record_skipped", partition=partition, offset=record.offset)
            CONSUMER_ERRORS.labels("events", "record").inc()
            stream = _stream_of(record.key)
            if stream is not None:
                self._stale(*stream)
            return None
        if not self._apply(event):
            log.error(
                "replica_gap", tenant_id=event.tenant_id, stream=event.stream, seq=event.seq, position=event.position
            )
            self._stale(event.tenant_id, event.stream)
        return event

    def _apply(self, event: Event) -> bool:
        """:meth:`_restore`; an event the replica cannot apply (of a type or shape this node
        does not know) is logged and counted, and its stream dropped from the replica."""
        try:
            return self._restore(event)
        except Exception:
            log.exception("event_not_applied", tenant_id=event.tenant_id, stream=event.stream, seq=event.seq)
            CONSUMER_ERRORS.labels("events", "record").inc()
            self._stale(event.tenant_id, event.stream)
            return True  # dropped, and reported: nothing to wait for

    def _stale(self, tenant_id: str, stream: str) -> None:
        """Drop ``stream`` from the replica: it missed an event (see :meth:`_take`)."""
        self.replica.forget(tenant_id, stream)
        if (tenant_id, stream) not in self.stale:
            log.error("replica_stream_dropped", tenant_id=tenant_id, stream=stream)
            REPLICA_STREAMS_DROPPED.inc()
        self.stale.add((tenant_id, stream))

    def _answer_from(self, taken: list[tuple[Any, Event]]) -> None:
        """Resolve the requests of this node whose events these are (:mod:`.wire`): once all
        the events of a request's append are in, which the header counts."""
        for record, event in taken:
            for key, value in record.headers:
                if key != REPLY_HEADER or not value.startswith(self._reply_prefix):
                    continue
                _, request_id, count = value.decode().split(" ")
                if request_id not in self._waiting:
                    continue  # answered on the reply topic already, or given up
                seen = self._answering.setdefault(request_id, [])
                seen.append(event)
                if len(seen) == int(count):
                    del self._answering[request_id]
                    future = self._waiting.pop(request_id)
                    if not future.done():
                        future.set_result(Outcome(seen, replayed=False))

    def _restore(self, event: Event) -> bool:
        """Evolve the replica by ``event`` (see :meth:`AggregateRepository.restore`); a usage
        event is not kept (nothing on a node reads usage aggregates) and counts as applied."""
        if event.stream.startswith(USAGE_STREAM):
            return True
        return self.replica.restore(event)

    def _answer(self, batches: Batches) -> None:
        """Resolve the commands awaiting the replies addressed to this node."""
        for records in batches.values():
            for record in records:
                if record.key != self.node_id.encode():
                    continue
                reply = orjson.loads(record.value)
                future = self._waiting.pop(reply["request_id"], None)
                if future is not None and not future.done():
                    try:
                        future.set_result(outcome_of(reply))
                    except Exception as exc:  # the refusal it carries
                        future.set_exception(exc)

    def replica_offset(self, partition: int) -> int:
        """The last offset of ``partition`` of the event topic the replica has applied (-1 if none)."""
        return self._applied.get(partition, -1)

    def consumer_lag(self) -> list[dict[str, Any]]:
        """Per partition of the event topic, the records this node's consumer has not applied
        yet, to the end its last fetch saw (partitions it has seen no end of are left out)."""
        found = []
        for partition in range(self.partitions):
            end = self.events.highwater(TopicPartition(self.topics["events"], partition))
            if end is not None:
                lag = max(end - self.replica_offset(partition) - 1, 0)
                found.append({"consumer": "node", "partition": partition, "lag": lag})
        return found

    def presence_statuses(self) -> dict[tuple[str, str], str]:
        """Every user's last durable presence status, from the replica."""
        found = {}
        for (tenant_id, stream), state in self.replica.cached():
            name = StreamId.parse(stream)
            if name.kind == "user" and state.status != "offline":
                found[(tenant_id, name.id)] = state.status
        return found

    def tenants(self) -> list[tuple[str, str]]:
        """Every registered tenant's ``(tenant_id, name)``, from the replica."""
        return [
            (tenant_id, state.name)
            for (tenant_id, stream), state in self.replica.cached()
            if StreamId.parse(stream).kind == "tenant" and state.name is not None
        ]

    async def check(self) -> None:
        """Raise if a consumer of this node stopped (its replies and events answer every
        command: each would time out), or if the broker does not answer a metadata request."""
        dead = stopped(self._tasks)
        if dead:
            raise LogUnavailable(f"this node's consumer {', '.join(dead)} stopped (see its log); restart the node")
        if self.stale:
            raise LogUnavailable(
                f"this node's replica missed events of {len(self.stale)} stream(s) (see replica_stream_dropped"
                " in its log); restart the node"
            )
        await self.producer.client.fetch_all_metadata()

    # --- the Commands protocol -------------------------------------------------------------
    async def state(self, tenant_id: str, stream: str) -> Any:
        return await self.replica.get(tenant_id, stream)

    async def execute(self, envelope: CommandEnvelope) -> Outcome:
        request_id = envelope.command_id or uuid7()
        command = dataclasses.replace(envelope, command_id=request_id)
        sending = tracing.producing(tracing.NODE, self.topics["commands"]) if tracing.ON else None
        if sending is not None:  # the decider continues the trace from the span that sent the request
            command = dataclasses.replace(command, traceparent=tracing.traceparent(sending))
        request = CommandRequest(request_id, self.node_id, command, in_events=True)
        fields = await self.log.sealer.seal_command(
            envelope.tenant_id,
            envelope.stream,
            type(envelope.command).__name__,
            envelope.command.model_dump(mode="json"),
            request_id,
        )
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        key = stream_key(envelope.tenant_id, envelope.stream)
        deadline = asyncio.get_running_loop().time() + self.timeout  # one bound for sending and the reply
        try:
            try:
                await asyncio.wait_for(
                    self._send_command(
                        request.encode(fields),
                        key.encode(),
                        partition_for(key, self.partitions),
                        tracing.kafka_headers(command.traceparent),
                    ),
                    self.timeout,
                )
            finally:
                if sending is not None:
                    sending.end()
            outcome = await asyncio.wait_for(future, max(deadline - asyncio.get_running_loop().time(), 0.0))
        except (TimeoutError, KafkaError) as exc:
            raise LogUnavailable(
                "the command was not acknowledged in time; retry with the same Idempotency-Key"
            ) from exc
        finally:
            self._waiting.pop(request_id, None)
            self._answering.pop(request_id, None)
        outcome = Outcome(await self.log.sealer.open(outcome.events), outcome.replayed)  # a reply's are sealed
        # Read your own write: apply the outcome's events to this node's replica now (those that
        # answered from the event consumer are in it already; a reply's will be seen again and
        # skipped); wait for the consumer only when an earlier event of the stream is not in yet.
        if all([self._apply(event) for event in outcome.events]):
            self.log.head = max(self.log.head, outcome.last.position)
        else:
            await self._seen(outcome.last.position)
        return outcome

    async def _send_command(self, value: bytes, key: bytes, partition: int, headers: list[tuple[str, bytes]]) -> None:
        if self._renewing is not None:
            await asyncio.wait({self._renewing})  # a timeout cancels this wait, never the renewal
        producer = self.producer
        try:
            await producer.send_and_wait(
                self.topics["commands"], value, key=key, partition=partition, headers=headers or None
            )
        except KafkaError as exc:
            if producer_broken(producer, exc) and producer is self.producer and self._renewing is None:
                self._renewing = asyncio.create_task(self._renew_producer(producer))
            raise

    async def _renew_producer(self, dead: AIOKafkaProducer) -> None:
        """Replace a producer that can no longer deliver (:func:`producer_broken`); without
        this the node would answer 503 to every command until restarted."""
        log.warning("command_producer_renewed")
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(dead.stop(), self.timeout)
            self.producer = await started_producer(
                self.bootstrap, retry_every=0.5, request_timeout_ms=COMMAND_REQUEST_TIMEOUT_MS
            )
        finally:
            self._renewing = None

    async def _seen(self, position: int, timeout: float = 2.0) -> None:
        """Wait until this node's replica has the event, so the caller reads its own write."""
        partition, offset = decode_position(position)
        deadline = time.monotonic() + timeout
        while self._applied.get(partition, -1) < offset and time.monotonic() < deadline:
            self._applied_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._applied_changed.wait(), deadline - time.monotonic())
