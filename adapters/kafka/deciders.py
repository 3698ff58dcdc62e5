"""The deciders of ``caas worker``: one consumer group on the command topic.

Each decider owns some partitions: when they are assigned it restores their aggregates by
reading the same partitions of the event topic from the start (the event topic is the
changelog), then decides commands in order, produces their events (idempotent producer,
``acks=all``) and commits the command offsets. A node that asked for it (:mod:`.wire`) is
answered by the events themselves: each carries the request in a header, and the node's
consumer of the event topic, which it runs anyway for its replica and its sockets, resolves the
request from them. Refusals and replays, which record nothing, are answered on the reply topic. A
command redelivered after a crash is recognised by its ``command_id`` in the restored events
and answered with the events it already recorded, so at-least-once delivery never appends
twice. A refusal leaves nothing to recognise it by, so it is sent only once its command's
offset is committed: no redelivery decides it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NamedTuple

import structlog

# aiokafka ships no type information: its clients are Any to the type checker.
from aiokafka import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from opentelemetry.trace import SpanKind

from adapters import tracing
from adapters.ids import utcnow, uuid7
from adapters.kafka.clients import group_consumer, producer, started_producer
from adapters.kafka.codec import partition_for
from adapters.kafka.log import REPLY_ROUTE, PartitionLog, producer_broken, read_partition
from adapters.kafka.topics import ensure_topics
from adapters.kafka.wire import answered_by_events, decode_request, encode_reply, request_from
from commands.ports import IdempotencyKeyReused, LogUnavailable
from commands.repository import AggregateRepository
from commands.sealing import Sealer, SealingStore
from commands.service import CommandService, Outcome
from domain.errors import DomainError
from streams.projector import StallWatch, watch

log = structlog.get_logger("caas.worker")
COMMIT_INTERVAL = 0.2  # seconds between two commits of the command offsets (CAAS_DECIDER_COMMIT_SECONDS)


class Reply(NamedTuple):
    """A request's answer on the reply topic: its outcome, or the error that refused it."""

    reply_to: str
    request_id: str
    answer: Outcome | BaseException
    replay_only: bool = False

    @property
    def refusal(self) -> bool:
        """Whether it refuses the command for good (a rule, a reused key), having recorded
        nothing: decided again later, the command might be recorded after all. (A command
        that may only be replayed never records; the other errors say "retry".)"""
        return isinstance(self.answer, DomainError | IdempotencyKeyReused) and not self.replay_only

    def encode(self) -> bytes:
        return encode_reply(self.request_id, self.answer)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka's listener is Any to mypy
    def __init__(self, worker: DeciderWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.worker.release({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.worker.restore({tp.partition for tp in assigned})


class DeciderWorker:
    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        partitions: int,
        *,
        commit_interval: float = COMMIT_INTERVAL,
        stall_seconds: float = 30.0,
        sealer: Sealer,
    ) -> None:
        self.bootstrap = bootstrap
        self.sealer = sealer  # personal fields: opened from the command topic, sealed before they are appended
        self.prefix = prefix
        self.partitions = partitions
        self.commit_interval = commit_interval
        self.owned: set[int] = set()
        self._inflight: set[asyncio.Task[Reply | None]] = set()
        self._settled = asyncio.Event()  # no restore in progress
        self._settled.set()
        self._uncommitted: dict[Any, int] = {}  # TopicPartition -> next offset, decided but not committed
        self._commit_wake = asyncio.Event()
        self._committed: dict[Any, int] = {}  # TopicPartition -> the highest offset this decider committed
        self._committing = asyncio.Lock()  # one commit at a time: a retried older one never lands after a newer
        self._background: set[asyncio.Task[None]] = set()
        # commands being decided, by command_id: a copy delivered meanwhile (a producer's retry
        # the broker could not deduplicate, a redelivery) waits for the first, appends nothing
        self._deciding: dict[str, asyncio.Future[Outcome]] = {}
        self.decided: dict[int, int] = {}  # partition -> the next command offset to decide
        self.stalls = StallWatch(stall_seconds, subject="decider")
        self.looped_at = time.monotonic()  # the decide loop's last turn (its liveness)
        self.running = False

    async def start(self) -> None:
        self.topics = await ensure_topics(self.bootstrap, self.prefix, self.partitions)
        self.producer = producer(self.bootstrap)
        await self.producer.start()
        self._new_log()
        self.consumer = group_consumer(
            self.bootstrap,
            f"{self.prefix}deciders",
            max_poll_records=2000,
            heartbeat_interval_ms=1000,  # a joining or leaving worker is noticed within a second
        )
        await self.consumer.start()
        self.consumer.subscribe([self.topics["commands"]], listener=_Rebalance(self))

    def _new_log(self) -> None:
        self.log = PartitionLog(self.producer, self.bootstrap, self.topics["events"], self.partitions)
        store = SealingStore(self.log, self.sealer)
        # every aggregate of the owned partitions, restored from the event topic (its changelog)
        self.aggregates = AggregateRepository(store, cache_size=None)
        self.service = CommandService(store, clock=utcnow, new_id=uuid7, repository=self.aggregates)
        asyncio.get_running_loop().create_task(self.log.start())

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._commit()  # what the committer had not committed yet
        with contextlib.suppress(Exception):
            await self.consumer.stop()
        await self.log.close()
        with contextlib.suppress(Exception):
            await self.producer.stop()

    def _owned_by(self, partitions: set[int]) -> Callable[[str, str], bool]:
        return lambda tenant_id, stream: partition_for(f"{tenant_id}/{stream}", self.partitions) in partitions

    async def restore(self, partitions: set[int]) -> None:
        """Rebuild the aggregates of newly assigned partitions from the event topic."""
        self._settled.clear()
        try:
            for partition in sorted(partitions):
                events = await read_partition(self.bootstrap, self.topics["events"], partition)
                for event, opened in zip(events, await self.sealer.open(events), strict=True):
                    self.aggregates.restore(opened)
                    self.log.record(event)  # as recorded: a redelivered command is answered with it
                log.info("partition_restored", partition=partition, events=len(events))
            self.owned |= partitions
        finally:
            self._settled.set()

    async def release(self, partitions: set[int]) -> None:
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        await self._commit()  # the partition's next owner starts after what was decided here
        self.owned -= partitions
        self.aggregates.clear(keep=self._owned_by(self.owned))
        for partition in partitions:
            self.log.forget_partition(partition)
            self.decided.pop(partition, None)
            self.stalls.forget("deciders", partition)

    async def _recover(self) -> None:
        """After Kafka failed to acknowledge, restore owned partitions from what it kept."""
        log.warning("decider_recovering", error=str(self.log.broken))
        await self.log.close()
        with contextlib.suppress(Exception):
            await self.producer.stop()
        self.producer = await started_producer(self.bootstrap, retry_every=1)
        self._new_log()
        owned, self.owned = self.owned, set()
        await self.restore(owned)

    async def run(self) -> None:
        committer = asyncio.create_task(self._committer())
        watching = asyncio.create_task(watch(self.status))  # a stall is logged even if no one scrapes
        self.running = True
        try:
            await self._run()
        finally:
            self.running = False
            committer.cancel()
            watching.cancel()

    async def status(self) -> dict[str, Any]:
        """Per owned partition the commands not decided yet (to the end the last fetch saw) and
        whether that lag is stalled (:class:`StallWatch`: behind, and nothing decided for
        ``stall_seconds``); the decide loop's health (``/metrics`` of ``caas worker``)."""
        consumers, deciders = [], []
        for tp in self.consumer.assignment():
            end = self.consumer.highwater(tp)
            if end is None or tp.partition not in self.owned:
                continue
            done = self.decided.get(tp.partition)
            if done is None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2):
                        done = await self.consumer.position(tp)
            if done is None:
                continue
            lag = max(end - done, 0)
            consumers.append({"consumer": "deciders", "partition": tp.partition, "lag": lag})
            deciders.append(self.stalls.observe("deciders", tp.partition, done, lag))
        age = time.monotonic() - self.looped_at
        health = {"processor": "deciders", "up": self.running, "progress_age_seconds": age}
        return {"consumers": consumers, "deciders": deciders, "processors": [health]}

    async def _run(self) -> None:
        """Decide each fetched batch, then fetch the next one at once: the replies' delivery
        and the offset commit happen in the background, so one broker round trip (the events'
        ``acks=all``) is all a batch waits for (a batch with a refusal also waits for its
        commit, :meth:`_settled_refusals`)."""
        while True:
            if self.log.broken is not None:
                await self._recover()
            self.looped_at = time.monotonic()
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
                tasks = [asyncio.create_task(self.handle(record.value, record.headers)) for record in records]
                self._inflight.update(tasks)
                replies = [reply for reply in await asyncio.gather(*tasks) if reply is not None]
                self._inflight.difference_update(tasks)
                # The events are acknowledged: a redelivery from here on is answered from them.
                self._uncommitted[tp] = self.decided[tp.partition] = records[-1].offset + 1
                refusals = [reply for reply in replies if reply.refusal]
                if not refusals:
                    await self._reply(replies)
                    self._commit_wake.set()
                    continue
                await self._reply([reply for reply in replies if not reply.refusal])
                await self._reply(await self._settled_refusals(tp, records[-1].offset + 1, refusals))

    async def _settled_refusals(self, tp: Any, end: int, refusals: list[Reply]) -> list[Reply]:
        """``refusals``, once the batch that decided them (up to offset ``end``) is committed,
        by this call's commit or by the background one that took its offset first.

        A refusal records nothing, so a redelivery (this decider killed before its commit)
        would be decided again, against a later state, and might be recorded after its
        client was told it was refused. So a batch with a refusal is committed at once, and
        its refusals are sent only then; if the commit fails they are sent as "unavailable"
        (503: retry), which is true: the command may yet be decided again."""
        await self._commit()
        if self._committed.get(tp, -1) >= end:
            return refusals
        undecided = LogUnavailable("the decider could not commit its refusal (it may decide the command again); retry")
        return [reply._replace(answer=undecided) for reply in refusals]

    async def _reply(self, replies: Sequence[Reply]) -> None:
        """Send ``replies`` to the nodes that asked; their delivery is awaited in the background."""
        if not replies:
            return
        try:
            deliveries = [
                await self.producer.send(
                    self.topics["replies"],
                    reply.encode(),
                    key=reply.reply_to.encode(),
                    partition=partition_for(reply.reply_to, self.partitions),
                )
                for reply in replies
            ]
            self._in_background(self._delivered(deliveries))
        except KafkaError as exc:
            self._reply_failed(exc)

    def _in_background(self, coroutine: Coroutine[Any, Any, None]) -> None:
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
        """Commit what was decided, at most every ``commit_interval``: a commit is a request
        to the broker, and one per fetched batch cost as much as the batch's events.
        Committing later never loses a command: a redelivered one is answered from the events
        it recorded (:meth:`decide`). (A refusal records nothing: its batch is committed at
        once, :meth:`_settled_refusals`.)"""
        while True:
            await self._commit_wake.wait()
            await self._commit()
            await asyncio.sleep(self.commit_interval)

    async def _commit(self) -> None:
        """Commit the offsets decided so far (:attr:`_committed` says which landed): one commit
        at a time, and never an offset below one committed already (the client retries a
        commit on its own, so an older one could otherwise land after a newer one and move the
        group back, and a refused command would then be decided again after a crash)."""
        async with self._committing:
            self._commit_wake.clear()
            offsets, self._uncommitted = self._uncommitted, {}
            assigned = self.consumer.assignment()
            offsets = {
                tp: offset for tp, offset in offsets.items() if tp in assigned and offset > self._committed.get(tp, -1)
            }
            if not offsets:
                return
            try:
                await self.consumer.commit(offsets)
            except KafkaError as exc:
                # Rebalanced meanwhile, or the broker is away: the partition's next owner gets
                # these commands again and answers them from the events they recorded.
                log.warning("commit_failed", error=str(exc))
                return
            for tp, offset in offsets.items():
                self._committed[tp] = max(self._committed.get(tp, -1), offset)

    async def handle(self, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> Reply | None:
        """Decide one request: its reply, or ``None`` when the events it recorded answer it;
        a refusal is answered, never raised."""
        request_id, reply_to, message = decode_request(value)
        in_events = answered_by_events(message)
        if in_events:  # this task's appends carry the request (REPLY_ROUTE is per task)
            REPLY_ROUTE.set((reply_to, request_id))
        answer: Outcome | BaseException
        try:
            answer, appended = await (self.decide_traced(message, headers) if tracing.ON else self.decide(message))
        except Exception as exc:
            answer, appended = exc, False
        if in_events and appended:
            return None  # recorded by this task's append: the events carry the answer
        if isinstance(answer, Outcome):  # the reply topic holds no personal field in clear either
            try:
                answer = Outcome(await self.sealer.reseal(answer.events), answer.replayed)
            except Exception as exc:
                answer = exc
        return Reply(reply_to, request_id, answer, bool(message.get("replay_only")))

    async def decide_traced(
        self, message: dict[str, Any], headers: Sequence[tuple[str, bytes]]
    ) -> tuple[Outcome, bool]:
        """:meth:`decide` in a span that continues the sender's trace (the record's
        ``traceparent`` header, else the request's); the events it records keep this span's."""
        name = str(message.get("type"))
        with tracing.span(
            tracing.DECIDER,
            f"decide {name}",
            parent=tracing.header_value(headers) or message.get("traceparent"),
            kind=SpanKind.CONSUMER,
            attributes={"caas.command": name, "caas.tenant_id": str(message.get("tenant_id"))},
        ) as current:
            message["traceparent"] = tracing.traceparent(current)
            return await self.decide(message)

    async def decide(self, message: dict[str, Any]) -> tuple[Outcome, bool]:
        """The command's outcome, and whether this call appended it.

        A copy of a request (redelivered after a crash, or delivered twice while the first
        copy is decided) appends nothing and is answered what that request recorded: not as a
        replay, since its client made no second request, and the node takes whichever answer
        comes first (these on the reply topic, or the first copy's events). A replay is a
        later request answered from an earlier one's record (an Idempotency-Key used again, a
        ``client_msg_id`` posted again), which the command service says."""
        command_id = message["command_id"]
        recorded = self.log.recorded_command(command_id)
        if recorded is not None:  # redelivered after a crash: answer, append nothing
            return Outcome(list(recorded), replayed=False), False
        deciding = self._deciding.get(command_id)
        if deciding is not None:  # delivered twice while the first is being decided
            return await asyncio.shield(deciding), False
        message["command"] = await self.sealer.open_command(
            message["tenant_id"], str(message.get("type")), message["command"], command_id
        )
        future = self._deciding[command_id] = asyncio.ensure_future(
            self.service.execute(request_from(message).envelope)
        )
        try:
            outcome = await asyncio.shield(future)
        finally:
            if self._deciding.get(command_id) is future:
                del self._deciding[command_id]
        return outcome, not outcome.replayed
