"""The projectors of ``caas worker``: one consumer group on the event topic.

They apply the chat read model and the event index to MongoDB, one checkpoint per projection
and partition (:func:`~adapters.kafka.codec.checkpoint_name`), stored with the data. A batch
goes through the rule both backends share (:func:`streams.projector.project`: retried while
the store is away, cut in halves when an attempt takes too long, an event the store refuses
parked). A watch compares each partition's applied offset with its end offset: a lag that
stops shrinking is logged as ``projection_stalled`` (:class:`streams.projector.StallWatch`,
the rule API nodes apply for ``/readyz``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

# aiokafka ships no type information: its clients are Any to the type checker.
from aiokafka import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from adapters.kafka.clients import group_consumer
from adapters.kafka.codec import checkpoint_mark, checkpoint_name, event_from_record
from adapters.kafka.topics import ensure_topics
from domain.events import Event
from projections.ports import ReadStore
from streams import projector
from streams.projector import Projection, StallWatch, watch


async def project(
    store: ReadStore, projection: Projection, checkpoint: str, events: list[Event], *, timeout: float | None = None
) -> None:
    """Apply consecutive ``events`` of one partition and move ``checkpoint`` (that partition's)
    past them, by the shared rule (:func:`streams.projector.project`)."""
    await projector.project(store, projection, checkpoint, events, mark=checkpoint_mark, timeout=timeout)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka's listener is Any to mypy
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

    async def checkpoint(self, projection: str, partition: int) -> int:
        """The last applied offset of ``partition`` (-1 if none)."""
        return await self.store.checkpoint(checkpoint_name(projection, partition)) - 1

    async def start(self) -> None:
        self.topics = await ensure_topics(self.bootstrap, self.prefix, self.partitions)
        self.consumer = group_consumer(self.bootstrap, f"{self.prefix}projectors", max_poll_records=5000)
        await self.consumer.start()
        self.consumer.subscribe([self.topics["events"]], listener=_Rebalance(self))

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
                    name = checkpoint_name(projection.name, tp.partition)
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
