"""The node's usage counters (streams/metering.py) on a real SQLite log and command service:
what a node counts is what it records, an interval is recorded at most once, and a failed
append is retried later as the same interval, never merged into another."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.ids import utcnow, uuid7
from adapters.sqlite_log import SqliteEventLog
from commands.service import CommandService
from domain.events import Event
from streams.metering import Meter

HOUR = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class Clock:
    def __init__(self) -> None:
        self.now = HOUR + 5.0

    def __call__(self) -> float:
        return self.now


async def recorded(log: SqliteEventLog) -> list[Event]:
    return await log.read_all(after_position=0, limit=10_000, types=["UsageRecorded"])


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(("read", "write", "open", "close", "deliver", "flush")), st.sampled_from(("t1", "t2"))
        ),
        max_size=40,
    )
)
def test_what_a_node_counts_is_what_it_records_once(steps: list[tuple[str, str]]) -> None:
    async def check(tmp: Path) -> None:
        log = SqliteEventLog(tmp / "events.db")
        await log.start()
        clock = Clock()
        meter = Meter(CommandService(log, clock=utcnow, new_id=uuid7), "n1", wall=clock, clock=clock)
        await meter.start()
        expected = {"t1": [0, 0, 0, 0], "t2": [0, 0, 0, 0]}  # reads, writes, deliveries, connection ms
        open_ = {"t1": 0, "t2": 0}
        for kind, tenant in steps:
            clock.now += 1.5
            for t in open_:
                expected[t][3] += int(open_[t] * 1500)
            if kind == "read" or kind == "write":
                meter.request(tenant, write=kind == "write")
                expected[tenant][0 if kind == "read" else 1] += 1
            elif kind == "open":
                meter.opened(tenant, "u1")
                open_[tenant] += 1
            elif kind == "close" and open_[tenant]:
                meter.closed(tenant, "u1")
                open_[tenant] -= 1
            elif kind == "deliver":
                tally = meter.tally(tenant)
                assert tally is not None
                tally.deliveries += 1
                expected[tenant][2] += 1
            elif kind == "flush":
                await meter.flush()
                await meter.flush()  # nothing new in the same instant: records nothing
        clock.now += 1.0
        for t in open_:
            expected[t][3] += int(open_[t] * 1000)
        await meter.close()  # a graceful shutdown records the last interval
        events = await recorded(log)
        for tenant, (reads, writes, deliveries, ms) in expected.items():
            mine = [e.payload for e in events if e.tenant_id == tenant]
            assert sum(p["api_reads"] for p in mine) == reads
            assert sum(p["api_writes"] for p in mine) == writes
            assert sum(p["deliveries"] for p in mine) == deliveries
            assert abs(sum(p["connection_ms"] for p in mine) - ms) <= len(mine) + 1  # rounding to whole ms
            starts = [p["start"] for p in mine]
            assert starts == sorted(set(starts)), "each interval once, in order"
        await log.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(check(Path(tmp)))


def test_a_failed_append_is_retried_as_the_same_interval(tmp_path: Path) -> None:
    async def check() -> None:
        log = SqliteEventLog(tmp_path / "events.db")
        await log.start()
        clock = Clock()
        service = CommandService(log, clock=utcnow, new_id=uuid7)
        meter = Meter(service, "n1", wall=clock, clock=clock)
        await meter.start()
        meter.request("t1", write=True)
        await log.close()  # the log is away: the append fails
        clock.now += 10
        await meter.flush()
        assert meter.backlog and not await _safe_recorded(tmp_path)
        await log.start()
        meter.request("t1", write=False)
        clock.now += 10
        await meter.flush()  # the first interval, then the second, each once
        events = await recorded(log)
        assert [(e.payload["api_writes"], e.payload["api_reads"]) for e in events] == [(1, 0), (0, 1)]
        assert events[0].payload["end"] == events[1].payload["start"]
        await meter.close()
        await log.close()

    asyncio.run(check())


async def _safe_recorded(tmp: Path) -> list[Event]:
    log = SqliteEventLog(tmp / "events.db")
    await log.start()
    try:
        return await recorded(log)
    finally:
        await log.close()


def test_peaks_hold_the_most_sockets_open_at_once_in_an_interval(tmp_path: Path) -> None:
    async def check() -> None:
        log = SqliteEventLog(tmp_path / "events.db")
        await log.start()
        clock = Clock()
        meter = Meter(CommandService(log, clock=utcnow, new_id=uuid7), "n1", wall=clock, clock=clock)
        await meter.start()
        for user in ("a", "b", "c"):
            meter.opened("t1", user)
        meter.closed("t1", "a")
        meter.closed("t1", "b")
        clock.now += 10
        await meter.flush()
        clock.now += 10
        await meter.flush()  # c is still connected: the next interval's peak is 1
        await meter.close()
        events = await recorded(log)
        assert [e.payload["peak_connections"] for e in events] == [3, 1]
        assert events[0].payload["users"] == ["a", "b", "c"] and events[1].payload["users"] == []
        await log.close()

    asyncio.run(check())
