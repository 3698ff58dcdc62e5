"""The read-model processors of ``caas worker``: a Faust app with one agent on the event topic.

The agent applies the chat read model and the event index to MongoDB in batches
(``stream.noack_take``), one checkpoint per projection and partition
(:func:`~adapters.kafka.codec.checkpoint_name`), stored with the data. A batch goes through
the rule both backends share (:func:`streams.projector.project`: retried while the store is
away, cut in halves when an attempt takes too long, an event the store refuses parked).

Where a projection is, is its checkpoint in MongoDB, not the group's committed offset: the
agent reads it when it first sees a partition and skips what it holds (position guards make a
re-application harmless anyway). The batch's events are acked only once it is applied, so
Faust commits an offset only past applied events; a crash before the commit re-delivers,
never skips. (``noack_take`` rather than ``take``: ``take`` acks a batch in a ``finally``,
so a cancelled apply would be acked too.)

A watch compares each partition's applied offset with its end offset: a lag that stops
shrinking is logged as ``projection_stalled`` (:class:`streams.projector.StallWatch`, the
rule API nodes apply for ``/readyz``). The app runs inside ``caas worker``'s event loop,
started as a service (no :class:`faust.Worker`: that would take over signals and logging),
with no tables, no web server and no topic declarations (:func:`ensure_topics` makes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust
import structlog
from faust.types import EventT, StreamT

from adapters import tracing
from adapters.kafka.clients import GROUP_METADATA_MAX_AGE_MS
from adapters.kafka.codec import checkpoint_mark, checkpoint_name, event_from_record
from adapters.kafka.topics import create_topic, ensure_topics
from commands.ports import Listener
from commands.sealing import Sealer
from domain.events import Event
from projections.ports import ReadStore
from streams import projector
from streams.projector import PARKED, Projection, StallWatch, count_parked, watch

log = structlog.get_logger("caas.projector")


async def project(
    store: ReadStore, projection: Projection, checkpoint: str, events: list[Event], *, timeout: float | None = None
) -> None:
    """Apply consecutive ``events`` of one partition and move ``checkpoint`` (that partition's)
    past them, by the shared rule (:func:`streams.projector.project`)."""
    await projector.project(store, projection, checkpoint, events, mark=checkpoint_mark, timeout=timeout)


# An attempt at applying a batch is cut short (and the batch applied in halves) after this
# many store timeouts: the last resort should anything under it not time out.
BATCH_TIMEOUTS = 6
BATCH = 2000  # events per batch: what one bulk write to MongoDB takes comfortably
WITHIN = 0.1  # seconds a partial batch waits for more events


def faust_app(bootstrap: str, group: str, partitions: int, datadir: Path) -> faust.App:
    """A Faust app for read-model processors only: consumer group ``group``, no tables, no
    web server, no topic creation, offsets committed once a second or every batch."""
    return faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=str(datadir),
        autodiscover=False,
        web_enabled=False,
        topic_allow_declare=False,
        topic_partitions=partitions,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        stream_recovery_delay=0.0,  # no tables to recover: start on an assignment at once
        stream_buffer_maxsize=2 * BATCH,
        broker_commit_every=BATCH,
        broker_commit_interval=1.0,
        # aiokafka's defaults, as the deciders have: a worker killed hands its partitions over
        # after 10 s, not Faust's 60 s
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        # the events topic rediscovered within seconds of a broker restart (clients.py)
        consumer_metadata_max_age_ms=GROUP_METADATA_MAX_AGE_MS,
    )


class ProjectorAgent:
    """The projections as one Faust agent over ``<prefix>events``, in consumer group
    ``<prefix>projectors`` (the group the aiokafka projectors used)."""

    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        partitions: int,
        store: ReadStore,
        projections: list[Projection],
        *,
        datadir: Path,
        store_timeout: float = 10.0,
        stall_seconds: float = 30.0,
        batch: int = BATCH,
        listeners: Sequence[Listener] = (),
        sealer: Sealer,
    ):
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.partitions = partitions
        self.store = store
        self.projections = projections
        self.batch = batch
        self.listeners = list(listeners)  # told of each partition's batch once every read model applied it
        self.sealer = sealer  # opens the events' personal fields for every projection but the event index
        self.batch_timeout = store_timeout * BATCH_TIMEOUTS
        self.applied: dict[tuple[str, int], int] = {}  # (projection, partition) -> next offset to apply
        self.stalls = StallWatch(stall_seconds)
        self.observed: list[dict[str, Any]] = []  # the last observe()'s entries, per projection and partition
        self.progressed_at = time.monotonic()  # a batch applied, or nothing left to apply
        count_parked(projections)
        self.app = faust_app(bootstrap, f"{prefix}projectors", partitions, datadir)
        self.topic = self.app.topic(
            f"{prefix}events", key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )
        self.agent = self.app.agent(self.topic, name="read-models")(self.process)
        self.app.on_partitions_revoked.connect(self._revoked)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await self.app.stop()

    async def run(self) -> None:
        """Start the app, then watch for stalls until cancelled or until the app stops (it
        crashed). Starting may take a while (joining the group waits for a member that died
        to time out), so it runs beside the deciders rather than before them."""
        await ensure_topics(self.bootstrap, self.prefix, self.partitions)
        # Faust's partition assignor elects a leader through this topic; it may not declare it itself.
        await create_topic(self.bootstrap, f"{self.app.conf.id}-__assignor-__leader", 1)
        self.app.conf.datadir.parent.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
        await self.app.start()
        watching = asyncio.create_task(watch(self.observe))
        try:
            await self.app.wait_until_stopped()
            if self.app.crash_reason is not None:
                raise RuntimeError("the read-model processors stopped") from self.app.crash_reason
        finally:
            watching.cancel()

    async def process(self, stream: StreamT[bytes]) -> None:
        """The agent: apply each batch, then ack its events (so their offsets may be committed)."""
        assert isinstance(stream, faust.Stream)  # noack_take is not in the StreamT interface
        async for batch in stream.noack_take(self.batch, within=WITHIN):
            events: Sequence[EventT[Any]] = batch  # noack_take yields the events themselves
            try:
                await self.apply(events)
            except Exception as exc:
                # Faust would restart the agent past this batch, and the next one would move the
                # checkpoints over it. Stop the app instead: the worker exits, and its restart
                # resumes from the checkpoints, which never passed an unapplied event.
                log.exception("projection_crashed", events=len(events))
                await self.app.crash(exc)
                raise
            for event in events:
                await stream.ack(event)
            self.progressed_at = time.monotonic()

    async def apply(self, records: Sequence[EventT[Any]]) -> None:
        """Apply a batch (records of any partitions, each partition's in order)."""
        partitions: dict[int, list[Event]] = {}
        for record in records:
            tp, offset = record.message.tp, record.message.offset
            try:
                event = event_from_record(record.value, tp.partition, offset)
            except Exception as exc:  # no projection can ever apply it; holding it would stall every tenant
                log.error(
                    "projection_parked",
                    projection="*",
                    partition=tp.partition,
                    offset=offset,
                    error=f"undecodable record: {type(exc).__name__}: {str(exc)[:200]}",
                )
                PARKED["*"] += 1
                continue
            partitions.setdefault(tp.partition, []).append(event)
        for partition, events in partitions.items():
            opened = await self._open(events)
            with tracing.of_events(tracing.PROJECTOR, "project", events, partition=partition):
                for projection in self.projections:
                    await self.apply_partition(projection, partition, events if projection.sealed else opened)
            for listener in self.listeners:
                listener(opened)

    async def _open(self, events: list[Event]) -> list[Event]:
        """``events`` opened; while the key store cannot give a key this process never held (a
        database outage), wait and try again, as a write to the read store would: the projection
        stands still (the stall watch reports it) and goes on when the store answers. Crashing
        instead would stop the worker for good where nothing restarts it."""
        delay = 0.2
        while True:
            try:
                return await self.sealer.open(events)
            except Exception as exc:
                log.warning("event_keys_unavailable", events=len(events), retry_in=delay, error=repr(exc)[:200])
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def apply_partition(self, projection: Projection, partition: int, events: list[Event]) -> None:
        key = (projection.name, partition)
        if key not in self.applied:  # first seen since assigned: resume from the checkpoint
            self.applied[key] = await self.checkpoint(checkpoint_name(projection.name, partition))
        fresh = [event for event in events if checkpoint_mark(event) > self.applied[key]]
        if fresh:
            name = checkpoint_name(projection.name, partition)
            with tracing.of_events(tracing.PROJECTOR, f"store.apply {projection.name}", fresh):
                await project(self.store, projection, name, fresh, timeout=self.batch_timeout)
            self.applied[key] = checkpoint_mark(fresh[-1])

    async def checkpoint(self, name: str) -> int:
        """The next offset to apply, as the store holds it; asked again while the store is away."""
        delay = 0.1
        while True:
            try:
                async with asyncio.timeout(self.batch_timeout):
                    return await self.store.checkpoint(name)
            except Exception as exc:
                log.warning("projection_failed", checkpoint=name, error=str(exc) or "timed out", retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """A partition that moved to another worker starts from its checkpoint if it comes back
        (the signal's argument: the revoked partitions)."""
        [revoked] = args
        for tp in revoked:
            for projection in self.projections:
                self.applied.pop((projection.name, tp.partition), None)
                self.stalls.forget(projection.name, tp.partition)

    async def observe(self) -> None:
        """Each assigned partition's lag: its end offset minus what is applied."""
        consumer = self.app.consumer
        assigned = [tp for tp in consumer.assignment() if tp.topic == self.topic.get_topic_name()]
        try:
            async with asyncio.timeout(5):
                ends = await consumer.highwaters(*assigned)
        except Exception:  # the broker is away: the end as last fetched
            ends = {tp: consumer.highwater(tp) or 0 for tp in assigned}
        observed = []
        for tp, end in ends.items():
            for projection in self.projections:
                applied = self.applied.get((projection.name, tp.partition))
                if applied is None:  # not read yet: the store's word (0 if it is away)
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(5):
                            applied = await self.store.checkpoint(checkpoint_name(projection.name, tp.partition))
                applied = applied or 0
                observed.append(self.stalls.observe(projection.name, tp.partition, applied, max(end - applied, 0)))
        self.observed = observed
        if all(entry["lag_events"] == 0 for entry in observed):
            self.progressed_at = time.monotonic()

    def status(self) -> dict[str, Any]:
        """As last observed (every second): each projection's lag and stall per partition, the
        group's lag per partition (its slowest projection's), and the agent's health: up while
        the app and the agent run, and how long since it applied a batch or had none to apply."""
        consumers = [
            {
                "consumer": "projectors",
                "partition": partition,
                "lag": max(e["lag_events"] for e in self.observed if e["partition"] == partition),
            }
            for partition in sorted({e["partition"] for e in self.observed})
        ]
        app, agent = self.app, self.agent
        up = bool(app.started and agent.started and not app.crashed and not agent.crashed and not app.should_stop)
        health = {"processor": "read-models", "up": up, "progress_age_seconds": time.monotonic() - self.progressed_at}
        return {"projections": self.observed, "consumers": consumers, "processors": [health]}
