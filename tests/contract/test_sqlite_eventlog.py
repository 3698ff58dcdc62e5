"""The embedded SQLite event log: the EventLog contract, plus durability and group commit."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from adapters.sqlite_log import SqliteEventLog
from commands.ports import (
    ROW_FIELDS,
    ConcurrencyError,
    EventLog,
    Idempotency,
    IdempotencyKeyReused,
    LogUnavailable,
    event_row,
)
from domain.events import UPCASTERS, Event, register_upcaster
from tests.contract.eventlog_contract import EventLogContract, batch, dumps, new_event, same_as_appended


async def open_sqlite_log(path: Path, **options: int) -> SqliteEventLog:
    log = SqliteEventLog(path, **options)
    await log.start()
    return log


class TestSqliteEventLog(EventLogContract):
    async def open_log(self, request: pytest.FixtureRequest) -> EventLog:
        tmp_path: Path = request.getfixturevalue("tmp_path")
        return await open_sqlite_log(tmp_path / "events.db")


async def test_events_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    log = await open_sqlite_log(path)
    recorded = await log.append("t1", "channel:c1", 0, batch(1, 3), Idempotency("key-1", "fp-1"))
    recorded += await log.append("t1", "user:u1", 0, batch(1, 1, "UserRegistered"))
    await log.close()

    log = await open_sqlite_log(path)
    try:
        assert dumps(await log.read_all()) == dumps(recorded)
        assert await log.head_position() == recorded[-1].position
        found = await log.find_idempotent("t1", "key-1")
        assert found is not None and dumps(found[1]) == dumps(recorded[:3])
        with pytest.raises(IdempotencyKeyReused):
            await log.append("t1", "channel:c1", 3, batch(4, 1), Idempotency("key-1", "fp-1"))
        with pytest.raises(ConcurrencyError):
            await log.append("t1", "channel:c1", 0, batch(1, 1))
        [more] = await log.append("t1", "channel:c1", 3, batch(4, 1))
        assert (more.seq, more.position) == (4, recorded[-1].position + 1)
    finally:
        await log.close()


async def test_close_finishes_appends_already_queued(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    log = await open_sqlite_log(path)
    pending = [log.append("t1", "channel:c1", i, batch(i + 1, 1)) for i in range(50)]
    await log.close()
    results = await asyncio.gather(*pending)
    assert [e.seq for r in results for e in r] == list(range(1, 51))

    log = await open_sqlite_log(path)
    try:
        assert [e.seq for e in await log.read_stream("t1", "channel:c1")] == list(range(1, 51))
    finally:
        await log.close()


async def test_append_to_a_closed_log_fails_as_unavailable(tmp_path: Path) -> None:
    log = await open_sqlite_log(tmp_path / "events.db")
    await log.close()
    with pytest.raises(LogUnavailable):
        await log.append("t1", "channel:c1", 0, batch(1, 1))


async def test_concurrent_appends_share_group_commits_and_stay_consistent(tmp_path: Path) -> None:
    log = await open_sqlite_log(tmp_path / "events.db", max_batch=10)
    commits: list[list[Event]] = []
    log.listen(lambda events: commits.append(list(events)))
    try:
        pending = [log.append("t1", f"channel:c{i % 5}", i // 5, batch(i // 5 + 1, 1)) for i in range(500)]
        pending += [log.append("t1", "channel:c0", 0, batch(1, 1)) for _ in range(5)]  # stale: must conflict
        results = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(r, list) for r in results[:500])
        assert all(isinstance(r, ConcurrencyError) for r in results[500:])
        # every commit carries at most max_batch appends, and some carried several
        assert all(len(commit) <= 10 for commit in commits)
        assert len(commits) < 500
        assert sum(len(commit) for commit in commits) == 500
        everything = await log.read_all(limit=10_000)
        assert [e.position for e in everything] == list(range(1, 501))
        assert dumps(everything) == dumps([e for commit in commits for e in commit])
        for c in range(5):
            assert [e.seq for e in await log.read_stream("t1", f"channel:c{c}")] == list(range(1, 101))
    finally:
        await log.close()


async def test_second_log_on_the_same_file_continues_positions(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    log = await open_sqlite_log(path)
    first = await log.append("t1", "channel:c1", 0, batch(1, 2))
    await log.close()
    log = await open_sqlite_log(path)
    try:
        new = batch(1, 1)
        second = await log.append("t2", "channel:c1", 0, new)
        assert same_as_appended(second, new)
        assert second[0].position == first[-1].position + 1
    finally:
        await log.close()


async def test_snapshots_keep_the_newest_recorded_version_per_stream_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    log = await open_sqlite_log(path)
    recorded = await log.append("t1", "channel:c1", 0, batch(1, 3))
    log.save_snapshot("t1", "channel:c1", "s1", 2, b"at 2")
    log.save_snapshot("t1", "channel:c1", "s1", 1, b"at 1")  # older: does not replace the newer one
    log.save_snapshot("t1", "channel:c2", "s1", 1, b"never recorded")  # nothing to take a snapshot of
    await log.close()  # answers once the writer has stored what was queued

    log = await open_sqlite_log(path)
    try:
        snapshot = await log.read_snapshot("t1", "channel:c1", "s1")
        assert snapshot is not None
        assert (snapshot.version, snapshot.event_id, snapshot.state) == (2, recorded[1].event_id, b"at 2")
        assert await log.read_snapshot("t1", "channel:c1", "s2") is None, "another schema's snapshot"
        assert await log.read_snapshot("t1", "channel:c2", "s1") is None
        assert await log.read_snapshot("t2", "channel:c1", "s1") is None, "another tenant's stream"
    finally:
        await log.close()


async def test_rows_read_for_an_export_are_the_events_rows_upcast_too(tmp_path: Path) -> None:
    """``read_rows`` (``caas export``'s read) gives each event's row as ``read_all`` gives the
    event, filters alike, and lifts an old payload version as event reads do."""
    probe = f"ContractProbe{uuid.uuid4().hex[:8]}"
    register_upcaster(probe, 1, lambda p: {**p, "colour": p.get("color", "none")})
    log = await open_sqlite_log(tmp_path / "events.db")
    try:
        await log.append("t1", "channel:c1", 0, batch(1, 3))
        await log.append("t2", "channel:c1", 0, [new_event(1, probe, color="red")])
        await log.append("t1", "user:u1", 0, batch(1, 2, "UserRegistered"))
        for after, tenant, types in [(0, None, None), (2, None, None), (0, "t1", None), (0, None, [probe])]:
            events = await log.read_all(after, 100, tenant, types)
            rows = log.read_rows(after, 100, tenant, types)
            envelope = ROW_FIELDS[:-1]  # every field but the payload, whose JSON text is compared decoded below
            assert [dict(zip(envelope, r[:-1], strict=True)) for r in rows] == [
                dict(zip(envelope, event_row(e)[:-1], strict=True)) for e in events
            ]
            assert [json.loads(r[-1]) for r in rows] == [e.payload for e in events]
        [upcast] = log.read_rows(0, 100, None, [probe])
        assert upcast[ROW_FIELDS.index("schema_version")] == 2
        assert json.loads(upcast[-1]) == {"color": "red", "colour": "red"}
        assert log.read_rows(0, 2) == log.read_rows(0, 100)[:2]  # the limit
    finally:
        UPCASTERS.pop((probe, 1), None)


@pytest.mark.parametrize("count", [1, 63, 64, 65, 300, 511, 777])
async def test_an_append_of_any_size_reads_back_whole_and_in_order(tmp_path: Path, count: int) -> None:
    # its rows are inserted by statements of a few fixed sizes (adapters/sqlite_log.insert_rows)
    log = await open_sqlite_log(tmp_path / "events.db")
    try:
        recorded = await log.append("t1", "channel:c1", 0, batch(1, count))
        assert [e.seq for e in recorded] == list(range(1, count + 1))
        assert dumps(await log.read_all()) == dumps(recorded)
        assert [e.position for e in await log.read_all()] == list(range(1, count + 1))
    finally:
        await log.close()
