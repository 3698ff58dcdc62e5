"""``caas replay`` and ``caas rebuild`` on the distributed backend: the event topic read from
the start, with the cluster's processes stopped or running."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime

from adapters.kafka.codec import decode_position
from adapters.kafka.log import iterate_events
from adapters.mongo_store import MongoReadStore, swap_in
from commands.sealing import Sealer
from domain.events import Event
from projections.ports import Key, ReadStoreUnavailable
from streams.projector import Projection, bulk_allocation, checkpoint_name, ops_for


async def replay(
    bootstrap: str,
    topic: str,
    partitions: int,
    *,
    after_position: int,
    tenant_id: str | None,
    types: Sequence[str],
    since: str | None,
    sealer: Sealer,
) -> AsyncIterator[list[Event]]:
    """The topic's events in batches, partition by partition, personal fields opened; ``since``
    (an RFC 3339 time) seeks each partition by offsets-for-times."""
    since_ms = int(datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp() * 1000) if since else None
    async for batch in iterate_events(bootstrap, topic, partitions, after_position=after_position, since_ms=since_ms):
        wanted = [
            e for e in batch if (tenant_id is None or e.tenant_id == tenant_id) and (not types or e.type in types)
        ]
        yield await sealer.open(wanted)


async def _bulk_load(
    fresh: MongoReadStore, name: str, projection: Projection, window: list[Event], loaded: set[Key]
) -> None:
    """Bulk-load a window of one partition's events into the fresh collections, retried: a
    slow database (FerretDB in tests) must not abort a rebuild."""
    partition, offset = decode_position(window[-1].position)
    for attempt in range(5):
        try:
            await fresh.load(checkpoint_name(name, partition), ops_for(projection, window, 0), offset + 1, loaded)
            return
        except ReadStoreUnavailable:
            if attempt == 4:
                raise
            await asyncio.sleep(1 + attempt)


async def rebuild(
    bootstrap: str,
    topic: str,
    partitions: int,
    mongo_url: str,
    database: str,
    projections: Mapping[str, Projection],
    *,
    window_size: int,
    sealer: Sealer,
) -> AsyncIterator[tuple[str, int, float]]:
    """Rebuild each of ``projections`` from the event topic into fresh collections, then swap
    them in; yields ``(projection, events, seconds)`` as each is done.

    Events are folded ``window_size`` at a time into whole documents and bulk-loaded
    (``insert_many``, and replaces for documents an earlier window wrote)."""
    live = MongoReadStore(mongo_url, database)
    fresh = MongoReadStore(mongo_url, database, prefix="rebuild_")
    await live.start()
    await fresh.start()
    try:
        for name, projection in projections.items():
            with bulk_allocation():
                await fresh.drop(name, projection.collections)
                started, count = time.perf_counter(), 0
                loaded: set[Key] = set()  # documents already in the fresh collections
                window: list[Event] = []  # one partition's events (a window has one checkpoint)
                async for recorded in iterate_events(bootstrap, topic, partitions, batch=5000):
                    events = recorded if projection.sealed else await sealer.open(recorded)
                    if window and decode_position(window[-1].position)[0] != decode_position(events[0].position)[0]:
                        await _bulk_load(fresh, name, projection, window, loaded)
                        window = []
                    window += events
                    count += len(events)
                    while len(window) >= window_size:
                        await _bulk_load(fresh, name, projection, window[:window_size], loaded)
                        window = window[window_size:]
                if window:
                    await _bulk_load(fresh, name, projection, window, loaded)
                await swap_in(fresh, live, name, projection.collections)
            yield name, count, time.perf_counter() - started
    finally:
        await live.close()
        await fresh.close()
