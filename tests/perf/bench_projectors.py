"""Benchmark: the read-model processors on Faust vs the aiokafka projector they replaced.

The same events (generated through the real write path, as ``bench_rebuild`` does, then
produced once to ``<prefix>events`` by a raw aiokafka producer, keyed and encoded as the
deciders write them) are projected twice into MongoDB (FerretDB here), each run into a fresh
database: (a) :class:`AiokafkaProjectors`, the aiokafka consumer-group projector ``caas
worker`` ran before (kept here as the baseline), and (b) ``caas worker``'s Faust agent
(:class:`adapters.kafka.projectors.ProjectorAgent`). Both apply the chat read model and the
event index through the same rule (:func:`adapters.kafka.projectors.project`), batches of
the same size; each run ends when every projection has applied every partition's end offset.

    .venv/bin/python -m tests.perf.bench_projectors [--events 200000] [--partitions 2] [--faust-first]

Needs ``eval "$(infra/services env)"`` (CAAS_KAFKA_BOOTSTRAP, CAAS_MONGO_URL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from adapters.kafka.codec import checkpoint_mark, checkpoint_name, event_from_record, event_value, stream_key
from adapters.kafka.projectors import BATCH, ProjectorAgent, project
from adapters.kafka.topics import ensure_topics
from adapters.mongo_store import MongoReadStore
from adapters.sqlite_log import SqliteEventLog
from api.bootstrap import DISTRIBUTED_PROJECTIONS
from streams.projector import Projection
from tests.perf.bench_rebuild import generate
from tests.perf.common import Workdir, figure, log, machine, run_async

TARGET_RATIO = 0.8  # issue 9: Faust at least 0.8x the aiokafka projector


class AiokafkaProjectors:
    """The baseline: ``caas worker``'s projector before Faust (an aiokafka consumer group that
    seeks to the MongoDB checkpoints on assignment and commits after each applied batch),
    without its stall watch."""

    def __init__(self, bootstrap: str, topic: str, group: str, store: MongoReadStore, projections: list[Projection]):
        self.store = store
        self.projections = projections
        self.applied: dict[tuple[str, int], int] = {}  # (projection, partition) -> next offset to apply
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=BATCH,
        )
        self.topic = topic

    async def start(self) -> None:
        worker = self

        class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                pass

            async def on_partitions_assigned(self, assigned: Any) -> None:
                for tp in assigned:
                    marks = [
                        await worker.store.checkpoint(checkpoint_name(p.name, tp.partition)) for p in worker.projections
                    ]
                    for p, mark in zip(worker.projections, marks, strict=True):
                        worker.applied[(p.name, tp.partition)] = mark
                    worker.consumer.seek(tp, min(marks))

        await self.consumer.start()
        self.consumer.subscribe([self.topic], listener=Rebalance())

    async def run(self) -> None:
        await self.start()
        while True:
            batches = await self.consumer.getmany(timeout_ms=200, max_records=BATCH)
            for tp, records in batches.items():
                events = [event_from_record(r.value, tp.partition, r.offset) for r in records]
                for projection in self.projections:
                    name = checkpoint_name(projection.name, tp.partition)
                    await project(self.store, projection, name, events, timeout=60.0)
                    self.applied[(projection.name, tp.partition)] = checkpoint_mark(events[-1])
                await self.consumer.commit({tp: records[-1].offset + 1})

    async def close(self) -> None:
        await self.consumer.stop()


async def produce(bootstrap: str, topic: str, partitions: int, log_path: Path) -> dict[int, int]:
    """Every event of the SQLite log to ``topic`` as the deciders write them; the end offsets."""
    source = SqliteEventLog(log_path)
    await source.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5)
    await producer.start()
    after = 0
    try:
        while events := await source.read_all(after_position=after, limit=5000):
            sent = [
                await producer.send(topic, event_value(e), key=stream_key(e.tenant_id, e.stream).encode())
                for e in events
            ]
            await asyncio.gather(*sent)
            after = events[-1].position
    finally:
        await producer.stop()
        await source.close()
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await probe.start()
    try:
        ends = await probe.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    finally:
        await probe.stop()
    return {tp.partition: end for tp, end in ends.items()}


async def until_applied(applied: dict[tuple[str, int], int], ends: dict[int, int], projections: list[str]) -> None:
    while not all(applied.get((p, part), 0) >= end for p in projections for part, end in ends.items()):
        await asyncio.sleep(0.05)


async def measure(name: str, runner: Any, ends: dict[int, int], events: int, projections: list[str]) -> dict[str, Any]:
    """Run ``runner`` (it starts itself) from an empty database until it has applied
    everything; events/s."""
    started = time.perf_counter()
    task = asyncio.create_task(runner.run())
    try:
        await until_applied(runner.applied, ends, projections)
        seconds = time.perf_counter() - started
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await runner.close()
    log(f"projectors: {name} applied {events} events in {seconds:.1f}s")
    return {"seconds": round(seconds, 2), "events_per_second": round(events / seconds)}


async def bench(events: int, partitions: int, work: Path, faust_first: bool = False) -> dict[str, Any]:
    bootstrap, mongo = os.environ["CAAS_KAFKA_BOOTSTRAP"], os.environ["CAAS_MONGO_URL"]
    prefix = f"bp{uuid.uuid4().hex[:8]}."
    topics = await ensure_topics(bootstrap, prefix, partitions)
    log(f"projectors: generating ~{events} events through CommandService + SqliteEventLog")
    head = await generate(work / "events.db", events)
    ends = await produce(bootstrap, topics["events"], partitions, work / "events.db")
    total = sum(ends.values())
    log(f"projectors: {total} events on {topics['events']} ({partitions} partitions, head position {head})")
    projections = list(DISTRIBUTED_PROJECTIONS.values())
    names = [p.name for p in projections]
    out: dict[str, Any] = {"events": total, "partitions": partitions, "batch": BATCH, "projections": names}

    async def aiokafka() -> None:
        store = MongoReadStore(mongo, f"{prefix.rstrip('.')}_aiokafka", timeout=30.0)
        await store.start()
        baseline = AiokafkaProjectors(bootstrap, topics["events"], f"{prefix}aiokafka-projectors", store, projections)
        out["aiokafka"] = await measure("aiokafka", baseline, ends, total, names)
        await store.close()

    async def faust() -> None:
        store = MongoReadStore(mongo, f"{prefix.rstrip('.')}_faust", timeout=30.0)
        await store.start()
        agent = ProjectorAgent(
            bootstrap, prefix, partitions, store, projections, datadir=work / "faust", store_timeout=30.0
        )
        out["faust"] = await measure("faust", agent, ends, total, names)
        await store.close()

    out["order"] = ["faust", "aiokafka"] if faust_first else ["aiokafka", "faust"]
    for runner in (faust, aiokafka) if faust_first else (aiokafka, faust):
        await runner()
    return out


def run(events: int = 200_000, partitions: int = 2, faust_first: bool = False) -> dict[str, Any]:
    with Workdir() as work:
        result = run_async(bench(events, partitions, work, faust_first))
    faust, aiokafka = result["faust"]["events_per_second"], result["aiokafka"]["events_per_second"]
    result["ratio_faust_to_aiokafka"] = round(faust / aiokafka, 3)
    log(f"projectors: faust {faust}/s, aiokafka {aiokafka}/s, ratio {result['ratio_faust_to_aiokafka']}")
    result["figures"] = [
        figure("projector_faust_vs_aiokafka", result["ratio_faust_to_aiokafka"], "x", target=TARGET_RATIO,
               limit=f"aiokafka projector {aiokafka} events/s, same events, same run"),
        figure("projector_faust_throughput", faust, "events/s", target=TARGET_RATIO * aiokafka,
               limit=f"aiokafka projector {aiokafka} events/s", ratio_to=aiokafka),
    ]  # fmt: skip
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--faust-first", action="store_true", help="run the Faust agent before the aiokafka baseline")
    args = p.parse_args()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is the JSON's
    out = {"machine": machine(), "projectors": run(args.events, args.partitions, args.faust_first)}
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
