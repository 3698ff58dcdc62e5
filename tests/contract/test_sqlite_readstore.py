"""The embedded SQLite read store against the ReadStore contract, and the embedded runner's
rule for an event the store refuses."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
import structlog

from adapters.sqlite_log import SqliteEventLog
from adapters.sqlite_store import SqliteReadStore
from api.observability import exposition
from commands.ports import NewEvent
from domain.events import Event
from projections.ports import Op, ReadStore, ReadStoreRefused
from streams.projector import PARKED, REFUSALS_BEFORE_PARKING, Projection, ProjectionRunner
from tests.contract.readstore_contract import THINGS, ReadStoreContract, fields


class TestSqliteReadStore(ReadStoreContract):
    async def open_store(self, request: pytest.FixtureRequest) -> ReadStore:
        tmp_path: Path = request.getfixturevalue("tmp_path")
        store = SqliteReadStore(tmp_path / "read.db")
        await store.start()
        return store

    async def test_a_value_json_cannot_hold_is_refused_and_the_store_stays_usable(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        with pytest.raises(ReadStoreRefused):  # retrying the same write cannot help
            await store.apply(projection, [Op(THINGS, tenant, "big", 1, set={"n": 2**70})], 1)
        assert await store.checkpoint(projection) == 0
        assert await store.get(THINGS, tenant, "big") is None
        await store.apply(projection, [Op(THINGS, tenant, "ok", 2, set={"n": 1})], 2)
        assert fields(await store.get(THINGS, tenant, "ok")) == {"n": 1}


def tally(event: Event) -> list[Op]:
    """A read model with one document per event: its number, or (asked to) one beyond 64 bits,
    which no JSON document the SQLite store writes can hold. The log itself refuses such a
    value in a payload, so a projection is the only way one reaches the store."""
    n = 2**70 if event.payload.get("overflow") else event.payload["n"]
    return [Op(THINGS, event.tenant_id, event.event_id, event.position, set={"n": n})]


def new_event(n: int, **payload: object) -> NewEvent:
    return NewEvent(f"e{n}", n, "Tallied", 1, "2026-01-01T00:00:00.000Z", None, None, None, None, {"n": n, **payload})


async def test_the_embedded_runner_parks_the_one_event_the_store_refuses_and_applies_the_rest(tmp_path: Path) -> None:
    """The rule the Kafka projectors follow (tests/contract/test_mongo_readstore.py), in process."""
    log, store = SqliteEventLog(tmp_path / "events.db"), SqliteReadStore(tmp_path / "read.db")
    await log.start()
    await store.start()
    runner = ProjectionRunner(log, store, [Projection("tallies", (THINGS,), tally)])
    before = PARKED["tallies"]
    try:
        recorded = await log.append("t1", "tally:a", 0, [new_event(1), new_event(2, overflow=True), new_event(3)])
        head = recorded[-1].position
        with structlog.testing.capture_logs() as logs:
            await runner.start()
            deadline = time.monotonic() + 30
            while runner.applied < head:  # before the rule: the runner retries the batch forever
                assert time.monotonic() < deadline, f"the runner is stuck at {runner.applied} of {head}: {logs[-3:]}"
                await asyncio.sleep(0.05)
        assert await store.checkpoint("tallies") == head
        assert fields(await store.get(THINGS, "t1", "e1")) == {"n": 1}
        assert fields(await store.get(THINGS, "t1", "e3")) == {"n": 3}
        assert await store.get(THINGS, "t1", "e2") is None
        parked = [e for e in logs if e["event"] == "projection_parked"]
        assert [(p["projection"], p["stream"], p["seq"], p["position"]) for p in parked] == [
            ("tallies", "tally:a", 2, recorded[1].position)
        ]
        refused = [e for e in logs if e["event"] == "projection_refused"]
        assert len(refused) == REFUSALS_BEFORE_PARKING - 1  # the fifth refusal parks it
        # counted for /metrics (docs/operations.md: the CaasEventsParked alert)
        assert PARKED["tallies"] == before + 1
        assert f'caas_projection_parked_events_total{{projection="tallies"}} {before + 1:.1f}' in exposition().decode()
    finally:
        await runner.close()
        await log.close()
        await store.close()


OLD_SQLITE_PARAMETERS = 999  # SQLite before 3.32: the bound a Python linked against one has


async def test_batches_past_an_older_sqlites_parameter_limit_are_applied_in_statements_within_it(
    tmp_path: Path,
) -> None:
    store = SqliteReadStore(tmp_path / "read.db")
    await store.start()
    try:
        store._db().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, OLD_SQLITE_PARAMETERS)  # as such a build has it
        many = 2 * OLD_SQLITE_PARAMETERS  # documents of 3 columns: six times the limit in one batch
        ops = [Op(THINGS, "t1", f"d{n}", n + 1, set={"n": n}) for n in range(many)]
        await store.apply_many([("tallies", ops, many), ("copies", ops, many)])
        again = [Op(THINGS, "t1", f"d{n}", many + n + 1, inc={"n": 1}) for n in range(many)]
        await store.apply_many([("tallies", again, 2 * many)])  # read back and written again
        assert (await store.checkpoint("tallies"), await store.checkpoint("copies")) == (2 * many, many)
        assert fields(await store.get(THINGS, "t1", "d0")) == {"n": 1}
        assert fields(await store.get(THINGS, "t1", f"d{many - 1}")) == {"n": many}
    finally:
        await store.close()
