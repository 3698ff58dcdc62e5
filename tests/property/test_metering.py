"""The node's usage counters (streams/metering.py) on a real SQLite log and command service:
what a node counts is what it records, an interval is recorded at most once, a failed append
is retried later as the same interval, never merged into another; sockets are sampled at the
shared grid (a restart cannot double a peak) and an idle socket is recorded once per sample
period."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.ids import utcnow, uuid7
from adapters.kafka.node import IndexedLog, KafkaNode
from adapters.memory_store import MemoryReadStore
from adapters.sqlite_log import SqliteEventLog
from commands.service import CommandService
from domain.base import format_time
from domain.events import Event
from projections import usage
from streams.metering import Meter
from tests.support import SEALER

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


@settings(max_examples=50, deadline=None)
@given(
    st.integers(0, 999_999_999),
    st.lists(st.tuples(st.integers(1_000, 3_000_000), st.booleans()), min_size=1, max_size=60),
)
def test_an_interval_holds_the_requests_before_its_recorded_end_and_none_after_its_millisecond(
    offset_ns: int, steps: list[tuple[int, bool]]
) -> None:
    """The interval's ``end`` is the cut truncated to the millisecond: a request made by the
    recorded end is in it (or an earlier interval), one made after the end's millisecond is not,
    one made within that millisecond may be either. What tests/distributed/test_usage_kill.py
    checks a killed node's recorded reads against. Steps are a microsecond or more apart (the
    node's clock is read to the microsecond) and up to 3 ms, so cuts fall inside milliseconds."""

    async def check(tmp: Path) -> None:
        log = SqliteEventLog(tmp / "events.db")
        await log.start()
        clock = Clock()
        clock.now += offset_ns / 1e9
        meter = Meter(CommandService(log, clock=utcnow, new_id=uuid7), "n1", wall=clock, clock=clock)
        await meter.start()
        reads: list[float] = []  # the wall-clock instant each read was counted at
        for gap_ns, flush in steps:
            clock.now += gap_ns / 1e9
            if flush:
                await meter.flush()
            else:
                meter.request("t1", write=False)
                reads.append(clock.now)
        clock.now += 0.001
        await meter.close()
        counted = 0
        for event in await recorded(log):
            counted += event.payload["api_reads"]
            end = event.payload["end"]
            assert sum(1 for t in reads if t <= datetime.fromisoformat(end).timestamp()) <= counted
            assert counted <= sum(1 for t in reads if format_time(datetime.fromtimestamp(t, UTC)) <= end)
        assert counted == len(reads)
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


async def _usage(log: SqliteEventLog) -> dict[str, int]:
    """The usage read model built from ``log``: its totals for t1 over the test's hours."""
    store = MemoryReadStore()
    events = await log.read_all(after_position=0, limit=10_000)
    await store.apply(usage.NAME, [op for e in events for op in usage.project(e)], events[-1].position)
    start = datetime.fromtimestamp(HOUR, UTC)
    return await usage.period_totals(store, "t1", start, start + timedelta(hours=2))


def test_sockets_are_sampled_at_the_shared_grid_and_a_restart_does_not_double_a_peak(tmp_path: Path) -> None:
    """Node n1 holds 3 sockets, then 1; it shuts down and its sockets reconnect to n2 (a new
    node id, as after a restart) within the same minute: the peak is 3, never 1 + n2's 3."""

    async def check() -> None:
        log = SqliteEventLog(tmp_path / "events.db")
        await log.start()
        clock = Clock()  # HOUR + 5 s
        service = CommandService(log, clock=utcnow, new_id=uuid7)
        n1 = Meter(service, "n1", wall=clock, clock=clock)
        await n1.start()
        for user in ("a", "b", "c"):
            n1.opened("t1", user)
        clock.now = HOUR + 10  # an interval boundary, not a sample instant: no sample
        await n1.flush(n1.next_boundary(HOUR + 5))
        n1.closed("t1", "a")
        n1.closed("t1", "b")
        clock.now = HOUR + 60
        assert n1.next_boundary(HOUR + 50) == HOUR + 60 and n1.on_grid(HOUR + 60)
        await n1.flush(HOUR + 60)  # a sample instant: 1 socket open
        clock.now = HOUR + 65
        n1.closed("t1", "c")
        await n1.close()  # a graceful shutdown, off the grid: no sample
        n2 = Meter(service, "n2", wall=clock, clock=clock)
        await n2.start()
        for user in ("a", "b", "c"):
            n2.opened("t1", user)
        clock.now = HOUR + 120
        await n2.flush(HOUR + 120)
        await n2.close()
        events = await recorded(log)
        samples = [(e.payload["node"], e.payload["sample_at"], e.payload["connections"]) for e in events]
        assert [s for s in samples if s[1] is not None] == [
            ("n1", "2026-01-01T00:01:00.000Z", 1),
            ("n2", "2026-01-01T00:02:00.000Z", 3),
        ]
        assert (await _usage(log))["peak_connections"] == 3
        await log.close()

    asyncio.run(check())


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 5), st.integers(1, 30))
def test_an_idle_socket_is_recorded_once_per_sample_period_not_every_interval(sockets: int, minutes: int) -> None:
    """Sockets that only stay open: nothing is recorded at the 10 s boundaries between sample
    instants, one record per minute carries the minute's connection time and the sample, and
    the connection time adds up exactly."""

    async def check(tmp: Path) -> None:
        log = SqliteEventLog(tmp / "events.db")
        await log.start()
        clock = Clock()
        clock.now = HOUR
        meter = Meter(CommandService(log, clock=utcnow, new_id=uuid7), "n1", wall=clock, clock=clock)
        await meter.start()
        for user in range(sockets):
            meter.opened("t1", f"u{user}")
        moment = HOUR
        while moment < HOUR + 60 * minutes:
            moment = meter.next_boundary(moment)
            clock.now = moment
            await meter.flush(moment)
        events = await recorded(log)
        # the opening is news (recorded at the first 10 s boundary); then one record a minute
        assert len(events) == minutes + 1 and events[0].payload["end"] == "2026-01-01T00:00:10.000Z"
        assert events[0].payload["users"] == sorted(f"u{u}" for u in range(sockets))
        sampled = events[1:]
        assert [e.payload["connections"] for e in sampled] == [sockets] * minutes
        assert all(e.payload["sample_at"] == e.payload["end"] for e in sampled)
        assert sum(e.payload["connection_ms"] for e in events) == sockets * 60_000 * minutes
        assert (await _usage(log))["peak_connections"] == sockets
        await log.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(check(Path(tmp)))


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 30))
def test_an_api_nodes_replica_keeps_no_usage_aggregates(restarts: int) -> None:
    """Each node process records on streams of its own (``usage:<node>``); a Kafka node's
    replica, kept forever, holds none of them, whatever the number of restarts."""
    node = KafkaNode("127.0.0.1:9", "t-", 1, IndexedLog(MemoryReadStore(), SEALER))

    def event(stream: str, seq: int, type_: str, payload: dict[str, object]) -> Event:
        return Event(
            event_id=f"e{seq}-{stream}", tenant_id="t1", stream=stream, seq=seq, position=seq, type=type_,
            schema_version=1, occurred_at="2026-01-01T00:00:00.000Z", actor=None, payload=payload,
        )  # fmt: skip

    assert node._restore(event("tenant:t1", 1, "TenantRegistered", {"name": "T"}))
    for n in range(restarts):
        start = f"2026-01-01T00:00:{n:02d}.000Z"
        payload = {"node": f"n{n}", "start": start, "end": start, "deliveries": 1}
        assert node._restore(event(f"usage:n{n}", 1, "UsageRecorded", payload))
    assert [key for key, _ in node.replica.cached()] == [("t1", "tenant:t1")]
