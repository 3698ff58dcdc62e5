"""``caas worker``: the deciders and projectors of the distributed backend.

Deciders form one consumer group on the command topic. Each owns some partitions: when
they are assigned it restores their aggregates by reading the same partitions of the
event topic from the start (the event topic is the changelog), then decides commands in
order, produces their events (idempotent producer, ``acks=all``), answers the API node
on the reply topic and commits the command offsets. A command redelivered after a crash
is recognised by its ``command_id`` in the restored events and answered with the events it
already recorded, so at-least-once delivery never appends twice.

Projectors form another group on the event topic and apply the chat read model and the
event index to MongoDB, one checkpoint per projection and partition, stored with the data.
Every attempt at a batch is bounded in time, and a watch compares each partition's applied
offset with its end offset: a lag that stops shrinking is logged as ``projection_stalled``
(:class:`streams.projector.StallWatch`, the same rule API nodes apply for ``/readyz``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from adapters.ids import utcnow, uuid7
from adapters.kafka.codec import decode_position, event_from_record, partition_for
from adapters.kafka.log import PartitionLog, producer_broken, read_partition
from adapters.kafka.topics import ensure_topics
from adapters.kafka.wire import COMMANDS, error_reply
from commands.ports import Idempotency, LogUnavailable
from commands.service import CommandService, Outcome
from domain.events import Event
from projections.ports import ReadStore, ReadStoreRefused
from streams.projector import Projection, StallWatch, ops_for, watch

log = structlog.get_logger("caas.worker")


def producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=1,
        request_timeout_ms=10_000,
        max_batch_size=256 * 1024,
    )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: DeciderWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.worker.release({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.worker.restore({tp.partition for tp in assigned})


class DeciderWorker:
    def __init__(self, bootstrap: str, prefix: str, partitions: int) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.partitions = partitions
        self.owned: set[int] = set()
        self._inflight: set[asyncio.Task[Any]] = set()
        self._settled = asyncio.Event()  # no restore in progress
        self._settled.set()
        self._uncommitted: dict[Any, int] = {}  # TopicPartition -> next offset, decided but not committed
        self._commit_wake = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.topics = await ensure_topics(self.bootstrap, self.prefix, self.partitions)
        self.producer = producer(self.bootstrap)
        await self.producer.start()
        self._new_log()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=f"{self.prefix}deciders",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=2000,
            heartbeat_interval_ms=1000,  # a joining or leaving worker is noticed within a second
        )
        await self.consumer.start()
        self.consumer.subscribe([self.topics["commands"]], listener=_Rebalance(self))

    def _new_log(self) -> None:
        self.log = PartitionLog(self.producer, self.bootstrap, self.topics["events"], self.partitions)
        self.service = CommandService(self.log, clock=utcnow, new_id=uuid7, cache_size=1 << 62)
        asyncio.get_running_loop().create_task(self.log.start())

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.consumer.stop()
        await self.log.close()
        with contextlib.suppress(Exception):
            await self.producer.stop()

    def _owned_by(self, partitions: set[int]) -> Any:
        return lambda tenant_id, stream: partition_for(f"{tenant_id}/{stream}", self.partitions) in partitions

    async def restore(self, partitions: set[int]) -> None:
        """Rebuild the aggregates of newly assigned partitions from the event topic."""
        self._settled.clear()
        try:
            for partition in sorted(partitions):
                events = await read_partition(self.bootstrap, self.topics["events"], partition)
                for event in events:
                    self.service.restore(event)
                    self.log.record(event)
                log.info("partition_restored", partition=partition, events=len(events))
            self.owned |= partitions
        finally:
            self._settled.set()

    async def release(self, partitions: set[int]) -> None:
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        await self._commit()  # the partition's next owner starts after what was decided here
        self.owned -= partitions
        self.service.clear(keep=self._owned_by(self.owned))
        for partition in partitions:
            self.log.forget_partition(partition)

    async def _recover(self) -> None:
        """After Kafka failed to acknowledge, restore owned partitions from what it kept."""
        log.warning("decider_recovering", error=str(self.log.broken))
        await self.log.close()
        with contextlib.suppress(Exception):
            await self.producer.stop()
        while True:
            try:
                self.producer = producer(self.bootstrap)
                await self.producer.start()
                break
            except (KafkaError, OSError):
                await asyncio.sleep(1)
        self._new_log()
        owned, self.owned = self.owned, set()
        await self.restore(owned)

    async def run(self) -> None:
        committer = asyncio.create_task(self._committer())
        try:
            await self._run()
        finally:
            committer.cancel()

    async def _run(self) -> None:
        """Decide each fetched batch, then fetch the next one at once: the replies' delivery
        and the offset commit happen in the background, so one broker round trip (the events'
        ``acks=all``) is all a batch waits for."""
        while True:
            if self.log.broken is not None:
                await self._recover()
            batches = await self.consumer.getmany(timeout_ms=200, max_records=2000)
            for tp, records in batches.items():
                if tp.partition not in self.owned:
                    if tp in self.consumer.assignment():
                        # Assigned, but the fetcher ran ahead of the restore: fetch these again
                        # once the aggregates are back (skipping them would lose the commands
                        # until the next rebalance).
                        self.consumer.seek(tp, records[0].offset)
                        await self._settled.wait()
                    continue  # else revoked since the fetch: its next owner decides them
                tasks = [asyncio.create_task(self.handle(record.value)) for record in records]
                self._inflight.update(tasks)
                replies = await asyncio.gather(*tasks)
                self._inflight.difference_update(tasks)
                try:
                    deliveries = [
                        await self.producer.send(
                            self.topics["replies"],
                            orjson.dumps(reply),
                            key=reply_to.encode(),
                            partition=partition_for(reply_to, self.partitions),
                        )
                        for reply_to, reply in replies
                    ]
                    self._in_background(self._delivered(deliveries))
                except KafkaError as exc:
                    self._reply_failed(exc)
                # The events are acknowledged: a redelivery from here on is answered from them.
                self._uncommitted[tp] = records[-1].offset + 1
                self._commit_wake.set()

    def _in_background(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _delivered(self, deliveries: list[Any]) -> None:
        results = await asyncio.gather(*deliveries, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            self._reply_failed(failed[0])

    def _reply_failed(self, exc: BaseException) -> None:
        """The nodes time out (503) and clients retry; a producer Kafka has fenced is renewed."""
        log.warning("replies_not_sent", error=str(exc))
        if self.log.broken is None and producer_broken(self.producer, exc):
            self.log.broken = LogUnavailable(f"Kafka refuses our producer: {exc!r}")

    async def _committer(self) -> None:
        while True:
            await self._commit_wake.wait()
            await self._commit()

    async def _commit(self) -> None:
        self._commit_wake.clear()
        offsets, self._uncommitted = self._uncommitted, {}
        assigned = self.consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            # Rebalanced meanwhile, or the broker is away: the partition's next owner gets
            # these commands again and answers them from the events they recorded.
            log.warning("commit_failed", error=str(exc))

    async def handle(self, value: bytes) -> tuple[str, dict[str, Any]]:
        message: dict[str, Any] = orjson.loads(value)
        reply: dict[str, Any] = {"request_id": message["request_id"]}
        try:
            outcome = await self.decide(message)
            reply.update(ok=True, replayed=outcome.replayed, events=[e.model_dump() for e in outcome.events])
        except Exception as exc:
            reply.update(ok=False, error=error_reply(exc))
        return message["reply_to"], reply

    async def decide(self, message: dict[str, Any]) -> Outcome:
        recorded = self.log.recorded_command(message["command_id"])
        if recorded is not None:  # redelivered after a crash: answer, append nothing
            return Outcome(list(recorded), replayed=True)
        command = COMMANDS[message["type"]].model_validate(message["command"])
        idem = message.get("idempotency")
        return await self.service.execute(
            message["tenant_id"],
            message["stream"],
            command,
            actor=message.get("actor"),
            correlation_id=message.get("correlation_id"),
            idempotency=Idempotency(idem["key"], idem["fingerprint"]) if idem else None,
            command_id=message["command_id"],
        )


class _ProjectorRebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: ProjectorWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            for projection in self.worker.projections:
                self.worker.stalls.forget(projection.name, tp.partition)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        for tp in assigned:
            marks = {p.name: await self.worker.checkpoint(p.name, tp.partition) for p in self.worker.projections}
            self.worker.applied.update({(name, tp.partition): after + 1 for name, after in marks.items()})
            after = min(marks.values())
            self.worker.consumer.seek(tp, after + 1 if after >= 0 else 0)


# An attempt at applying a batch is cut short (and the batch applied in halves) after this
# many store timeouts: the last resort should anything under it not time out.
BATCH_TIMEOUTS = 6


class ProjectorWorker:
    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        partitions: int,
        store: ReadStore,
        projections: list[Projection],
        *,
        store_timeout: float = 10.0,
        stall_seconds: float = 30.0,
    ):
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.partitions = partitions
        self.store = store
        self.projections = projections
        self.batch_timeout = store_timeout * BATCH_TIMEOUTS
        self.applied: dict[tuple[str, int], int] = {}  # (projection, partition) -> next offset to apply
        self.stalls = StallWatch(stall_seconds)

    @staticmethod
    def checkpoint_name(projection: str, partition: int) -> str:
        return f"{projection}@p{partition}"

    async def checkpoint(self, projection: str, partition: int) -> int:
        """The last applied offset of ``partition`` (-1 if none)."""
        return await self.store.checkpoint(self.checkpoint_name(projection, partition)) - 1

    async def start(self) -> None:
        self.topics = await ensure_topics(self.bootstrap, self.prefix, self.partitions)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=f"{self.prefix}projectors",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=5000,
        )
        await self.consumer.start()
        self.consumer.subscribe([self.topics["events"]], listener=_ProjectorRebalance(self))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.consumer.stop()

    async def run(self) -> None:
        watching = asyncio.create_task(watch(self.observe))
        try:
            await self._run()
        finally:
            watching.cancel()

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, records in batches.items():
                events = [event_from_record(r.value, tp.partition, r.offset) for r in records]
                for projection in self.projections:
                    name = self.checkpoint_name(projection.name, tp.partition)
                    await project(self.store, projection, name, events, timeout=self.batch_timeout)
                    self.applied[(projection.name, tp.partition)] = records[-1].offset + 1
                with contextlib.suppress(KafkaError, TimeoutError):
                    async with asyncio.timeout(self.batch_timeout):  # the store's checkpoint is what counts
                        await self.consumer.commit({tp: records[-1].offset + 1})

    async def observe(self) -> None:
        """Each assigned partition's lag: its end offset minus what is applied."""
        assigned = list(self.consumer.assignment())
        try:
            async with asyncio.timeout(5):
                ends = await self.consumer.end_offsets(assigned)
        except (KafkaError, TimeoutError):  # the broker is away: the end as last fetched
            ends = {tp: self.consumer.highwater(tp) or 0 for tp in assigned}
        for tp, end in ends.items():
            for projection in self.projections:
                applied = self.applied.get((projection.name, tp.partition), 0)
                self.stalls.observe(projection.name, tp.partition, applied, max(end - applied, 0))


REFUSALS_BEFORE_PARKING = 5


async def project(
    store: ReadStore, projection: Projection, checkpoint: str, events: list[Event], *, timeout: float | None = None
) -> None:
    """Apply ``events`` (consecutive, of one partition) and move ``checkpoint`` past them.

    While the store is unreachable the batch is retried with backoff: Kafka keeps the events
    and nothing is skipped. An attempt that takes longer than ``timeout`` (the store hangs in
    a way its own timeout missed, or the batch is too big for a slow store) is cut short and
    the batch applied in halves (the ops are position-guarded, so what the cut-short attempt
    did apply is applied again as a no-op).
    When the store answers but refuses the writes, the batch is applied one event at a
    time so only the offending event is held back; an event refused
    :data:`REFUSALS_BEFORE_PARKING` times is parked (logged as ``projection_parked`` with its
    coordinates) and the projection moves on, instead of stalling every tenant of the
    partition behind one document. ``caas rebuild`` re-applies a parked event once the store
    can hold it.
    """
    end = decode_position(events[-1].position)[1] + 1  # checkpoints hold offset + 1
    delay, refusals = 0.1, 0
    while True:
        try:
            async with asyncio.timeout(timeout):
                await store.apply(checkpoint, ops_for(projection, events, 0), end)
            return
        except ReadStoreRefused as exc:
            if len(events) > 1:
                for event in events:
                    await project(store, projection, checkpoint, [event], timeout=timeout)
                return
            refused: str | None = str(exc)
        except TimeoutError:
            if len(events) > 1:  # too slow as a whole, or hung: halves, so retrying cannot livelock
                log.warning("projection_batch_timeout", projection=projection.name, events=len(events))
                half = len(events) // 2
                await project(store, projection, checkpoint, events[:half], timeout=timeout)
                await project(store, projection, checkpoint, events[half:], timeout=timeout)
                return
            log.warning("projection_failed", projection=projection.name, error="timed out", retry_in=delay)
            refused = None
        except Exception as exc:  # the database is down or hangs: retry this batch
            log.warning("projection_failed", projection=projection.name, error=str(exc), retry_in=delay)
            refused = None
        if refused is not None:
            with contextlib.suppress(Exception):
                await store.checkpoint(checkpoint)  # a refusal counts only while the store answers reads
                refusals += 1
            if refusals >= REFUSALS_BEFORE_PARKING and events:
                [event] = events
                log.error(
                    "projection_parked",
                    projection=projection.name,
                    tenant_id=event.tenant_id,
                    stream=event.stream,
                    seq=event.seq,
                    position=event.position,
                    type=event.type,
                    error=refused,
                )
                events, refusals = [], 0  # only the checkpoint moves
                continue
            log.warning("projection_refused", projection=projection.name, error=refused, refusals=refusals)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def run_worker(
    bootstrap: str, prefix: str, partitions: int, store: ReadStore, projections: list[Projection], **projector: float
) -> None:
    """``projector``: :class:`ProjectorWorker`'s ``store_timeout`` and ``stall_seconds``."""
    deciders = DeciderWorker(bootstrap, prefix, partitions)
    projectors = ProjectorWorker(bootstrap, prefix, partitions, store, projections, **projector)
    await store.start()
    await deciders.start()
    await projectors.start()
    log.info("worker_started", partitions=partitions)
    try:
        await asyncio.gather(deciders.run(), projectors.run())
    finally:
        await deciders.close()
        await projectors.close()
        await store.close()
