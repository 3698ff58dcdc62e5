"""The Faust read-model agent of ``caas worker``, driven by Faust's own test harness
(``agent.test_context()``: records put on the agent's channel, no broker) against a real read
store. The real-Kafka behaviour (kill -9, broker restart, store outage) is in
``tests/distributed``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import structlog

from adapters.kafka.codec import checkpoint_name, encode_position, event_value
from adapters.kafka.projectors import ProjectorAgent
from adapters.sqlite_store import SqliteReadStore
from domain.events import Event
from projections import eventindex
from streams.projector import PARKED, Projection
from tests.support import SEALER

EVENT_INDEX = Projection(eventindex.NAME, eventindex.COLLECTIONS, eventindex.project)


def registered(offset: int) -> Event:
    return Event(
        event_id=f"e{offset}",
        tenant_id="t1",
        stream=f"user:u{offset}",
        seq=1,
        position=encode_position(0, offset),
        type="UserRegistered",
        schema_version=1,
        occurred_at="2026-01-01T00:00:00.000000Z",
        payload={"name": f"u{offset}", "metadata": {}},
    )


async def test_the_agent_resumes_after_the_stores_checkpoint_and_moves_it_to_the_last_event(tmp_path: Path) -> None:
    """Offsets 0-2 are already applied (checkpoint 3) though Kafka re-delivers them (its
    committed offset lags): the agent applies only 3-5 and leaves the checkpoint at 6."""
    store = SqliteReadStore(tmp_path / "read.db")
    await store.start()
    name = checkpoint_name(EVENT_INDEX.name, 0)
    await store.apply(name, [], 3)
    projectors = ProjectorAgent("127.0.0.1:9", "t.", 1, store, [EVENT_INDEX], datadir=tmp_path / "faust", sealer=SEALER)
    try:
        async with projectors.agent.test_context() as agent:
            for offset in range(6):  # the harness numbers the records 0, 1, 2, …
                await agent.put(event_value(registered(offset)), key=b"t1/user", partition=0)
            deadline = time.monotonic() + 30
            while await store.checkpoint(name) < 6:
                assert time.monotonic() < deadline, "the batch was never applied"
                await asyncio.sleep(0.05)
        indexed = await store.find("events", "t1", {})
        assert sorted(doc["event_id"] for doc in indexed) == ["e3", "e4", "e5"]
        assert projectors.applied[(EVENT_INDEX.name, 0)] == 6
    finally:
        await store.close()


async def test_an_undecodable_record_is_parked_and_the_events_around_it_are_applied(tmp_path: Path) -> None:
    """A record no projection can read (not JSON, or JSON that is not an event) is logged as
    ``projection_parked`` with its partition and offset, and does not hold back the rest."""
    store = SqliteReadStore(tmp_path / "read.db")
    await store.start()
    name = checkpoint_name(EVENT_INDEX.name, 0)
    projectors = ProjectorAgent("127.0.0.1:9", "t.", 1, store, [EVENT_INDEX], datadir=tmp_path / "faust", sealer=SEALER)
    garbage = {2: b"\\xff not json", 4: b'{"no": "type"}'}
    before = PARKED["*"]
    try:
        with structlog.testing.capture_logs() as logs:
            async with projectors.agent.test_context() as agent:
                for offset in range(6):
                    value = garbage.get(offset) or event_value(registered(offset))
                    await agent.put(value, key=b"t1/user", partition=0)
                deadline = time.monotonic() + 30
                while await store.checkpoint(name) < 6:
                    assert time.monotonic() < deadline, f"stuck at {await store.checkpoint(name)}: {logs[-3:]}"
                    await asyncio.sleep(0.05)
        indexed = await store.find("events", "t1", {})
        assert sorted(doc["event_id"] for doc in indexed) == ["e0", "e1", "e3", "e5"]
        parked = [(e["partition"], e["offset"]) for e in logs if e["event"] == "projection_parked"]
        assert parked == [(0, 2), (0, 4)]
        assert PARKED["*"] == before + 2  # counted for /metrics as caas_projection_parked_events_total
        assert not any("not json" in str(e) for e in logs), "a record's content is never logged"
    finally:
        await store.close()
