"""Property tests of the usage read model (projections/usage.py) and the usage aggregate.

A log of channel events and node ``UsageRecorded`` events of two tenants is generated; what
the queries answer is compared with a model computed straight from the events. It is built
the way each backend builds it:

- embedded: one position order, delivered in batches with redeliveries (a runner resuming
  from an older checkpoint), into the SQLite and the in-memory stores;
- Kafka: streams hashed onto partitions, positions ``((offset + 1) << 10) | partition``,
  partitions interleaved in any order and each re-delivered from any earlier offset (a
  worker killed before it committed), with documents sharded by partition.

Live (incremental, with redeliveries) equals rebuilt (once, in order) equals the model.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.kafka.codec import decode_position
from adapters.memory_store import MemoryReadStore
from adapters.sqlite_store import SqliteReadStore
from domain import usage as usage_aggregate
from domain.base import Unchanged
from domain.events import Event
from projections import usage
from projections.ports import ReadStore
from tests.property.recorded import partitioned as positions
from tests.property.recorded import recorded


def attachments_json(attachments: list[Any]) -> int:
    """The model's measure of attachments: the bytes of their JSON (docs/meters.md)."""
    return len(orjson.dumps(attachments)) if attachments else 0


TENANTS = ("t1", "t2")
CHANNELS = ("c1", "c2", "c3")
USERS = ("ann", "bo", "cy")
NODES = ("n1", "n2")
EPOCH = datetime(2026, 1, 31, 22, tzinfo=UTC)  # the range spans a month boundary
START, END = EPOCH, EPOCH + timedelta(hours=8)


def at(minutes: int) -> str:
    return at_second(60 * minutes)


def at_second(seconds: int) -> str:
    moment = EPOCH + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass(slots=True)
class Fact:
    tenant_id: str
    stream: str
    type: str
    minutes: int
    payload: dict[str, Any]
    actor: str | None


@st.composite
def facts(draw: st.DrawFn) -> list[Fact]:
    out: list[Fact] = []
    posted: dict[tuple[str, str], list[str]] = {}
    intervals: Counter[tuple[str, str]] = Counter()
    for n in range(draw(st.integers(0, 40))):
        tenant_id = draw(st.sampled_from(TENANTS))
        minutes = draw(st.integers(0, 8 * 60 - 1))
        who = draw(st.sampled_from(USERS))
        kind = draw(st.sampled_from(("post", "reply", "edit", "delete", "react", "usage")))
        if kind == "usage":
            node = draw(st.sampled_from(NODES))
            intervals[(tenant_id, node)] += 1
            payload = {
                "node": node,
                "start": at(intervals[(tenant_id, node)] * 7),  # a node's intervals move forward
                "end": at(intervals[(tenant_id, node)] * 7 + 1),
                "deliveries": draw(st.integers(0, 50)),
                "api_reads": draw(st.integers(0, 5)),
                "api_writes": draw(st.integers(0, 5)),
                "connection_ms": draw(st.integers(0, 200_000)),
                "connections": draw(st.integers(0, 9)),
                # a sample instant of the shared grid (every 10 s here), in any hour of the range, or
                # one of a few that many nodes share (their sockets add up; a node's alone is less)
                "sample_at": draw(
                    st.one_of(
                        st.none(),
                        st.integers(0, 8 * 360 - 1).map(lambda k: at_second(10 * k)),
                        st.sampled_from((0, 3590, 3600, 7200 + 60)).map(at_second),
                    )
                ),
                "users": draw(st.lists(st.sampled_from(USERS), max_size=2, unique=True)),
            }
            out.append(Fact(tenant_id, f"usage:{node}", "UsageRecorded", minutes, payload, None))
            continue
        cid = draw(st.sampled_from(CHANNELS))
        mids = posted.setdefault((tenant_id, cid), [])
        actor = draw(st.sampled_from((f"user:{who}", "tenant:k1")))
        if kind in ("post", "reply") or not mids:
            mid = f"m{n}"
            payload: dict[str, Any] = {"message_id": mid, "author_id": who, "text": draw(st.text(max_size=6))}
            if kind == "reply" and mids:
                payload["parent_id"] = mids[0]
            if draw(st.booleans()):
                payload["attachments"] = [{"type": "image", "url": "https://x/" + "y" * draw(st.integers(0, 5))}]
            mids.append(mid)
            out.append(Fact(tenant_id, f"channel:{cid}", "MessagePosted", minutes, payload, actor))
        elif kind == "edit":
            mid = draw(st.sampled_from(mids))
            text = draw(st.text(max_size=6))
            payload = {"message_id": mid, "text": text}
            out.append(Fact(tenant_id, f"channel:{cid}", "MessageEdited", minutes, payload, actor))
        elif kind == "delete":
            mid = draw(st.sampled_from(mids))
            out.append(Fact(tenant_id, f"channel:{cid}", "MessageDeleted", minutes, {"message_id": mid}, actor))
        else:
            payload = {"message_id": draw(st.sampled_from(mids)), "user_id": who, "emoji": "+1"}
            out.append(Fact(tenant_id, f"channel:{cid}", "ReactionAdded", minutes, payload, actor))
    return out


def events_of(log: list[Fact], position: Any) -> list[Event]:
    """The facts as recorded events; ``position(stream key, index)`` gives each its position."""
    return recorded(log, position, lambda fact: at(fact.minutes))


# --- the model: usage computed straight from the facts -------------------------------------------
def model(log: list[Fact], tenant_id: str) -> dict[str, int]:
    totals: Counter[str] = Counter()
    samples: Counter[str] = Counter()  # sample instant -> sockets summed over nodes
    active: dict[tuple[str, str], str] = {}  # (month, user) -> first hour
    sizes: dict[tuple[str, str], list[int]] = {}  # message -> [text bytes, attachment bytes, live]
    conn_ms = 0

    def seen(user: str, moment: str) -> None:
        key = (moment[:7], user)
        active[key] = min(active.get(key, moment[:13]), moment[:13])

    def stored() -> int:
        return sum(t + a for t, a, live in sizes.values() if live)

    for fact in (f for f in log if f.tenant_id == tenant_id):
        p, moment = fact.payload, at(fact.minutes)

        if fact.type == "UsageRecorded":
            for name in ("deliveries", "api_reads", "api_writes"):
                totals[name] += p[name]
            conn_ms += p["connection_ms"]
            if p["sample_at"] is not None:
                samples[p["sample_at"]] += p["connections"]
            for user in p["users"]:
                seen(user, p["start"])
            continue
        key = (fact.stream, p["message_id"])
        if fact.type == "MessagePosted":
            totals["replies" if p.get("parent_id") else "messages"] += 1
            attachments = p.get("attachments") or []
            sizes[key] = [len(p["text"].encode()), attachments_json(attachments), 1]
            seen(p["author_id"], moment)
        elif fact.type == "MessageEdited":
            totals["edits"] += 1
            sizes[key][0] = len(p["text"].encode())
        elif fact.type == "MessageDeleted":
            sizes[key][2] = 0
        if fact.type == "ReactionAdded":
            seen(p["user_id"], moment)
        elif fact.type != "MessagePosted" and fact.actor and fact.actor.startswith("user:"):
            seen(fact.actor[5:], moment)
    totals["connection_minutes"] = conn_ms // 60_000
    totals["peak_connections"] = max(samples.values(), default=0)
    totals["mau"] = len(active)
    totals["stored_bytes"] = stored()
    return {meter: totals[meter] for meter in usage.METERS}


def stored_levels(log: list[Fact], tenant_id: str) -> list[int]:
    """The stored bytes at the end of each hour of the range: each post, edit and delete moves
    them (in log order) by the change it made, in the hour it happened."""
    changes: Counter[str] = Counter()
    sizes: dict[tuple[str, str], list[int]] = {}
    for fact in (f for f in log if f.tenant_id == tenant_id and f.type.startswith("Message")):
        p, key = fact.payload, (fact.stream, fact.payload["message_id"])
        before = sum(t + a for t, a, live in sizes.values() if live)
        if fact.type == "MessagePosted":
            sizes[key] = [len(p["text"].encode()), attachments_json(p.get("attachments") or []), 1]
        elif fact.type == "MessageEdited":
            sizes[key][0] = len(p["text"].encode())
        else:
            sizes[key][2] = 0
        changes[at(fact.minutes)[:13]] += sum(t + a for t, a, live in sizes.values() if live) - before
    hours = [usage.format_hour(START + timedelta(hours=h)) for h in range(8)]
    return [sum(v for hour, v in changes.items() if hour <= h) for h in hours]


# --- building the read model as each backend does ------------------------------------------------
def embedded(log: list[Fact]) -> list[Event]:
    return events_of(log, lambda key, i: i + 1)


def partitioned(log: list[Fact], partitions: int) -> list[Event]:
    return events_of(log, positions(partitions))


def partition(position: int) -> int:
    return decode_position(position)[0]


async def apply(store: ReadStore, project: Any, events: list[Event]) -> None:
    if events:
        await store.apply(usage.NAME, [op for e in events for op in project(e)], max(e.position for e in events))


SUB_RANGES = ((0, 2), (1, 3), (2, 7), (3, 4), (5, 8))  # hours of the range; 22:00 + 2 is the next day


async def answers(store: ReadStore, tenant_id: str) -> tuple[dict[str, int], Any, Any, Any, Any]:
    totals = await usage.period_totals(store, tenant_id, START, END)
    buckets = await usage.usage_buckets(store, tenant_id, START, END)
    daily = await usage.usage_report(store, tenant_id, START, END, "day")
    hourly = await usage.usage_report(store, tenant_id, START, END, "hour", ["stored_bytes", "messages"])
    parts = [
        (
            await usage.stored_bytes_at(store, tenant_id, START + timedelta(hours=i, minutes=30)),
            await usage.current_totals(
                store, tenant_id, START + timedelta(hours=i), START + timedelta(hours=j), ["messages", "stored_bytes"]
            ),
        )
        for i, j in SUB_RANGES
    ]
    return totals, buckets, daily, hourly, parts


def check_stored(got: Any, log: list[Fact], tenant_id: str) -> None:
    """The stored bytes at the end of every hour, and at the end of every hour in which they
    changed (usage_buckets), are the model's levels."""
    levels = stored_levels(log, tenant_id)
    assert [values["stored_bytes"] for _, values in got[3].buckets] == levels
    for hour, level in got[1]["stored_bytes"].items():
        assert level == levels[int((hour - START).total_seconds()) // 3600]
    # ranges that start or end inside the range's days read the same levels and counts
    messages = [values["messages"] for _, values in got[3].buckets]
    for (i, j), (at, part) in zip(SUB_RANGES, got[4], strict=True):
        assert at == levels[i], "stored_bytes_at: the level at the end of the last hour starting before it"
        assert part == {"messages": sum(messages[i:j]), "stored_bytes": levels[j - 1]}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@settings(max_examples=60, deadline=None)
@given(facts(), st.data())
def test_embedded_usage_live_with_redeliveries_equals_rebuilt_and_the_model(
    log: list[Fact], data: st.DataObject
) -> None:
    events = embedded(log)
    project = usage.projector(usage.single_order)

    async def check() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            live: ReadStore = SqliteReadStore(Path(tmp) / "read.db")
            await live.start()
            done = 0
            while done < len(events):  # batches; each may re-deliver from an older checkpoint
                back = data.draw(st.integers(0, done), label="redeliver from")
                size = data.draw(st.integers(1, 8), label="batch")
                await apply(live, project, events[back : done + size])
                done += size
            rebuilt = MemoryReadStore()
            await apply(rebuilt, project, events)
            await apply(rebuilt, project, events)  # a whole replay on top changes nothing
            for tenant_id in TENANTS:
                got = await answers(live, tenant_id)
                assert got == await answers(rebuilt, tenant_id)
                assert got[0] == model(log, tenant_id)
                check_stored(got, log, tenant_id)
                assert sum(got[2].totals[m] for m in ("messages", "replies", "edits")) == sum(
                    v for m in ("messages", "replies", "edits") for v in got[1][m].values()
                )
            await live.close()

    run(check())


@settings(max_examples=60, deadline=None)
@given(facts(), st.integers(1, 4), st.data())
def test_kafka_usage_any_partition_interleaving_and_redelivery_equals_the_model(
    log: list[Fact], partitions: int, data: st.DataObject
) -> None:
    events = partitioned(log, partitions)
    project = usage.projector(partition)
    queues = {p: [e for e in events if partition(e.position) == p] for p in range(partitions)}

    async def check() -> None:
        live = MemoryReadStore()
        done = dict.fromkeys(queues, 0)
        while any(done[p] < len(q) for p, q in queues.items()):
            p = data.draw(st.sampled_from([p for p, q in queues.items() if done[p] < len(q)]), label="partition")
            back = data.draw(st.integers(0, done[p]), label="rewind to")  # a re-delivery after a crash
            size = data.draw(st.integers(1, 5), label="batch")
            await apply(live, project, queues[p][back : done[p] + size])
            done[p] += size
        rebuilt = MemoryReadStore()
        await apply(rebuilt, project, events)
        one_order = MemoryReadStore()  # the same log on the embedded backend
        await apply(one_order, usage.projector(usage.single_order), embedded(log))
        for tenant_id in TENANTS:
            got = await answers(live, tenant_id)
            assert got == await answers(rebuilt, tenant_id) == await answers(one_order, tenant_id)
            assert got[0] == model(log, tenant_id)
            check_stored(got, log, tenant_id)

    run(check())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=12))
def test_a_node_interval_is_recorded_at_most_once(starts: list[int]) -> None:
    """Retried or out-of-order intervals of one node record nothing: usage is never counted twice."""
    state, recorded = usage_aggregate.UsageState(), []
    for minute in starts:
        command = usage_aggregate.RecordUsage(node="n1", start=at(minute), end=at(minute + 1), deliveries=1)
        decision = usage_aggregate.decide(state, command)
        if isinstance(decision, Unchanged):
            assert recorded and minute <= max(recorded)
            continue
        assert not recorded or minute > max(recorded)
        for event in decision:
            usage_aggregate.evolve(state, event)
        recorded.append(minute)
    assert recorded == sorted(set(recorded))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from(("hour", "day", "month")))
def test_report_buckets_tile_the_hours_of_the_range(n: int, granularity: usage.Granularity) -> None:
    """Every hour starting in ``[from, to)`` falls in exactly one bucket; buckets are contiguous."""
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(hours=n % 20_000, minutes=n % 60)
    end = start + timedelta(hours=1 + n % 2000)
    report = run(usage.usage_report(MemoryReadStore(), "t1", start, end, granularity))
    starts = [b for b, _ in report.buckets]
    assert all(usage.next_bucket(a, granularity) == b for a, b in itertools.pairwise(starts))
    hour = usage.ceil_hour(start)
    if hour >= end:
        return
    assert starts and starts[0] <= hour < usage.next_bucket(starts[0], granularity)
    last = usage.ceil_hour(end) - timedelta(hours=1)
    assert starts[-1] <= last < usage.next_bucket(starts[-1], granularity)


# --- the one range parser of GET /v1/usage and caas usage ------------------------------------------
EDGES = (
    "0001-01-01T00:00:00+01:00",  # before the first instant datetime can hold, once in UTC
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "9999-12-31T23:30:00Z",  # an hour up from here overflows
    "9999-12-01T00:00:00Z",  # a month on from here overflows
    "9000-01-01T00:00:01Z",
    "2026-01-01T00:00:00",  # no zone
    "2026-13-01T00:00:00Z",
    "yesterday",
    "",
)
TIMES = st.one_of(
    st.sampled_from(EDGES),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.text(max_size=30),
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(st.none(), TIMES),
    st.one_of(st.none(), TIMES),
    st.sampled_from(("hour", "day", "month", "week", "")),
    st.one_of(st.none(), st.sampled_from(("messages,mau", "", "bogus", "peak_connections,messages"))),
)
def test_any_range_is_served_or_refused_with_a_rule_never_an_exception(
    start: str | None, end: str | None, granularity: str, meters: str | None
) -> None:
    """Whatever the query says, the parser answers a range or a RangeError; a range it answers
    is one every query can step through (buckets and hours up to its end) without overflow."""
    try:
        asked = usage.parse_range(start, end, granularity, meters, usage.METERS)
    except usage.RangeError as exc:
        assert exc.message and (exc.rule is None or exc.rule in RULES)
        return
    assert usage.EARLIEST <= asked.start < asked.end <= usage.LATEST
    report = run(usage.usage_report(MemoryReadStore(), "t1", asked.start, asked.end, asked.granularity, asked.meters))
    assert report.buckets and usage.next_bucket(report.buckets[-1][0], asked.granularity) >= asked.end


RULES = {"out_of_range", "empty_range", "unknown_granularity", "range_too_large", "unknown_meter"}


def test_the_edges_of_the_calendar_are_refused_as_out_of_range() -> None:
    for raw in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00Z", "9999-12-01T00:00:00Z", "1969-12-31T23:59:59Z"):
        try:
            usage.parse_time(raw, "from")
        except usage.RangeError as exc:
            assert exc.rule == "out_of_range" and exc.details["latest"] == "9000-01-01T00:00:00.000Z"
        else:
            raise AssertionError(f"{raw} was accepted")
    near = usage.parse_range("8999-11-30T00:00:00Z", "9000-01-01T00:00:00Z", "month", None, usage.METERS)
    report = run(usage.usage_report(MemoryReadStore(), "t1", near.start, near.end, "month"))
    assert [b for b, _ in report.buckets][-1] == datetime(8999, 12, 1, tzinfo=UTC)


LEVEL_DAYS = ("2026-02-26", "2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02")
LEVEL_HOURS = ("00", "06", "07", "08", "22", "23")
level_cells = st.tuples(st.sampled_from(LEVEL_DAYS), st.sampled_from(LEVEL_HOURS))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(level_cells, st.integers(-50, 50), max_size=12), st.lists(level_cells, max_size=15),
       st.integers(0, 1000))  # fmt: skip
def test_stored_levels_at_any_ends_are_the_start_level_plus_the_changes_up_to_each(
    changes: dict[tuple[str, str], int], ends: list[tuple[str, str]], at_end: int
) -> None:
    """``Days.levels``, which walks days and opens a day's hours only when an end falls inside
    it, equals summing every change up to each end."""
    stored: dict[str, dict[str, int]] = {}
    for (day, hour), change in changes.items():
        stored.setdefault(day, {})[hour] = change
    days = usage.Days({}, {}, {}, stored, at_end)
    start = at_end - sum(changes.values())
    ordered = sorted(set(ends))
    assert days.levels(ordered) == [start + sum(v for cell, v in changes.items() if cell <= end) for end in ordered]
