"""Property tests of the tenant analytics read model (projections/analytics).

A log of channel events (posts, thread replies, edits, reactions, read markers) and node usage
records of two tenants over three days is generated; what ``analytics_report`` answers is
compared with a model computed straight from the events (docs/analytics.md's definitions, one
post at a time). The read model is built as each backend builds it:

- embedded: one position order, in batches with redeliveries, into SQLite; and rebuilt by
  ``ReadStore.load`` in windows (``caas rebuild``), and in one batch into the in-memory store;
- Kafka: streams hashed onto partitions, partitions interleaved in any order and each
  re-delivered from any earlier offset (a worker killed before it committed).

Live equals rebuilt equals the model, whatever the batches, the interleaving and the redeliveries.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.memory_store import MemoryReadStore
from adapters.sqlite_store import SqliteReadStore
from domain.events import Event
from projections import analytics
from projections.ports import Key, ReadStore
from projections.usage import RangeError
from tests.property.recorded import partitioned as positions
from tests.property.recorded import recorded

TENANTS = ("t1", "t2")
USERS = ("ann", "bo.b", "c%y")  # ids may hold "." (a path to a store) and "%" (the escape)
EPOCH = datetime(2026, 1, 30, 20, tzinfo=UTC)  # three days from here cross a month boundary
SPAN = 3 * 24 * 3600
RANGES = (
    ("2026-01-30T00:00:00Z", "2026-02-03T00:00:00Z", "day"),
    ("2026-01-31T00:00:00Z", "2026-02-01T00:00:00Z", "day"),  # a middle day: the hour before, the day after
    ("2026-01-31T07:30:00+02:00", "2026-02-01T00:00:01Z", "day"),  # widened to whole days
    ("2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z", "month"),
    ("2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z", "month"),
)


@dataclass(slots=True)
class Fact:
    tenant_id: str
    stream: str
    type: str
    second: int
    payload: dict[str, Any]
    actor: str | None


def at(second: int) -> str:
    return (EPOCH + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@st.composite
def facts(draw: st.DrawFn) -> list[Fact]:
    # distinct instants (a post's order in its channel is its time's), clustered so that some
    # posts follow an hour of silence and some replies come within seconds
    centres = draw(
        st.lists(st.sampled_from((0, 3599, 7199, 86_399, 150_000)) | st.integers(0, SPAN), min_size=1, max_size=4)
    )
    near = st.tuples(st.sampled_from(centres), st.integers(0, 5400) | st.sampled_from((0, 3599, 3600))).map(sum)
    seconds = draw(st.lists(near | st.integers(0, SPAN - 1), max_size=40, unique=True))
    out: list[Fact] = []
    posted: dict[tuple[str, str], list[str]] = defaultdict(list)
    for n, second in enumerate(sorted(seconds)):
        tenant_id = draw(st.sampled_from(("t1", "t1", "t1", "t2")))
        who = draw(st.sampled_from(USERS))
        kind = draw(st.sampled_from(("post", "post", "reply", "edit", "react", "read", "usage")))
        if kind == "usage":
            payload = {"node": "n1", "start": at(second), "end": at(second + 1), "users": [who]}
            out.append(Fact(tenant_id, "usage:n1", "UsageRecorded", second, payload, None))
            continue
        cid = draw(st.sampled_from(("c1", "c1", "c2", "c3")))
        mids = posted[(tenant_id, cid)]
        actor = draw(st.sampled_from((f"user:{who}", "tenant:k1")))
        if kind in ("post", "reply") or not mids:
            payload = {"message_id": f"m{n}", "author_id": who, "text": "hi"}
            if kind == "reply" and mids:
                payload["parent_id"] = mids[0]
            mids.append(f"m{n}")
            out.append(Fact(tenant_id, f"channel:{cid}", "MessagePosted", second, payload, actor))
        elif kind == "edit":
            payload = {"message_id": draw(st.sampled_from(mids)), "text": "ho"}
            out.append(Fact(tenant_id, f"channel:{cid}", "MessageEdited", second, payload, actor))
        elif kind == "react":
            payload = {"message_id": draw(st.sampled_from(mids)), "user_id": who, "emoji": "+1"}
            out.append(Fact(tenant_id, f"channel:{cid}", "ReactionAdded", second, payload, actor))
        else:
            payload = {"user_id": who, "seq": 1}
            out.append(Fact(tenant_id, f"channel:{cid}", "ReadMarkerMoved", second, payload, actor))
    return out


def embedded(log: list[Fact]) -> list[Event]:
    return recorded(log, lambda key, i: i + 1, lambda fact: at(fact.second))


def partitioned(log: list[Fact], partitions: int) -> list[Event]:
    return recorded(log, positions(partitions), lambda fact: at(fact.second))


# --- the model: the definitions, one post at a time ------------------------------------------------
def _writer(fact: Fact) -> str | None:
    if fact.type == "MessagePosted":
        return str(fact.payload["author_id"])
    if fact.type in ("ReactionAdded", "ReadMarkerMoved"):
        return str(fact.payload["user_id"])
    return fact.actor[5:] if fact.actor and fact.actor.startswith("user:") else None


def model(log: list[Fact], tenant_id: str, start: str, end: str, granularity: str) -> dict[str, Any]:
    """The report's buckets and totals, from the facts (``start``/``end``: the whole days or
    months of the range, as the report gives them)."""

    def bucket(second: int) -> str | None:
        moment = at(second)
        label = moment[:7] if granularity == "month" else moment[:10]
        return label if start <= moment < end else None

    mine = [f for f in log if f.tenant_id == tenant_id]
    users: dict[str, set[str]] = defaultdict(set)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    channels: dict[str, set[str]] = defaultdict(set)
    waits: dict[str, list[float]] = defaultdict(list)
    started: Counter[str] = Counter()
    for fact in mine:
        label = bucket(fact.second)
        who = _writer(fact)
        if label is not None and who is not None and fact.stream.startswith("channel:"):
            users[label].add(who)
        if label is not None and fact.type == "MessagePosted":
            counts[label]["replies" if fact.payload.get("parent_id") else "messages"] += 1
            channels[label].add(fact.stream)
    for stream in {f.stream for f in mine if f.type == "MessagePosted"}:
        posts = [
            (f.second, str(f.payload["author_id"])) for f in mine if f.stream == stream and f.type == "MessagePosted"
        ]
        for i, (second, author) in enumerate(posts):
            label = bucket(second)
            if label is None or (i > 0 and second - posts[i - 1][0] < 3600):
                continue
            started[label] += 1
            other = next((s for s, a in posts[i + 1 :] if a != author), None)
            if other is not None and other - second < 24 * 3600:
                waits[label].append(float(other - second))

    def figures(labels: list[str]) -> dict[str, Any]:
        samples = [w for label in labels for w in waits[label]]
        return {
            "active_users": len(set().union(*(users[label] for label in labels))),
            "messages": sum(counts[label]["messages"] for label in labels),
            "replies": sum(counts[label]["replies"] for label in labels),
            "active_channels": len(set().union(*(channels[label] for label in labels))),
            "conversations": sum(started[label] for label in labels),
            "answered": len(samples),
            "median_first_reply_seconds": round(statistics.median(samples), 3) if samples else None,
        }

    labels = sorted({*users, *counts, *channels, *started})
    return {"buckets": {label: figures([label]) for label in labels}, "totals": figures(labels)}


def shown(report: analytics.Report, granularity: str) -> dict[str, Any]:
    """The report as the model states it: only the buckets with a figure."""
    buckets = {}
    for begin, figures in report.buckets:
        values = figures.as_dict()
        if any(values.values()):
            buckets[begin.strftime("%Y-%m" if granularity == "month" else "%Y-%m-%d")] = values
    return {"buckets": buckets, "totals": report.totals.as_dict()}


async def apply(store: ReadStore, events: list[Event]) -> None:
    if events:
        ops = [op for e in events for op in analytics.project(e)]
        await store.apply(analytics.NAME, ops, max(e.position for e in events))


async def answers(store: ReadStore, tenant_id: str) -> list[analytics.Report]:
    return [await analytics.analytics_report(store, tenant_id, analytics.parse_range(*r)) for r in RANGES]


def check(got: list[analytics.Report], log: list[Fact], tenant_id: str) -> None:
    for (start, end, granularity), report in zip(RANGES, got, strict=True):
        asked = analytics.parse_range(start, end, granularity)
        first, last = asked.start.strftime("%Y-%m-%dT%H"), asked.end.strftime("%Y-%m-%dT%H")
        assert shown(report, granularity) == model(log, tenant_id, first, last, granularity), (start, end)
        assert sum(f.messages for _, f in report.buckets) == report.totals.messages
        per_channel: Counter[str] = Counter()
        for fact in log:
            if fact.tenant_id == tenant_id and fact.type == "MessagePosted" and first <= at(fact.second) < last:
                per_channel[fact.stream[8:]] += 1
        assert [(c["channel_id"], int(c["messages"]) + int(c["replies"])) for c in report.channels] == sorted(
            per_channel.items(), key=lambda item: (-item[1], item[0])
        )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@settings(max_examples=60, deadline=None)
@given(facts(), st.data())
def test_embedded_analytics_live_with_redeliveries_equals_rebuilt_and_the_model(
    log: list[Fact], data: st.DataObject
) -> None:
    events = embedded(log)

    async def go() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            live: ReadStore = SqliteReadStore(Path(tmp) / "live.db")
            await live.start()
            done = 0
            while done < len(events):  # batches; each may re-deliver from an older checkpoint
                back = data.draw(st.integers(0, done), label="redeliver from")
                size = data.draw(st.integers(1, 8), label="batch")
                await apply(live, events[back : done + size])
                done += size
            loaded: ReadStore = SqliteReadStore(Path(tmp) / "rebuilt.db")  # caas rebuild: windows folded
            await loaded.start()
            keys: set[Key] = set()
            window = data.draw(st.integers(1, 10), label="window")
            for i in range(0, len(events), window):
                part = events[i : i + window]
                await loaded.load(
                    analytics.NAME, [op for e in part for op in analytics.project(e)], part[-1].position, keys
                )
            once = MemoryReadStore()
            await apply(once, events)
            await apply(once, events)  # a whole replay on top changes nothing
            for tenant_id in TENANTS:
                got = await answers(live, tenant_id)
                assert got == await answers(loaded, tenant_id) == await answers(once, tenant_id)
                check(got, log, tenant_id)
            await live.close()
            await loaded.close()

    run(go())


@settings(max_examples=60, deadline=None)
@given(facts(), st.integers(1, 4), st.data())
def test_kafka_analytics_any_partition_interleaving_and_redelivery_equals_the_model(
    log: list[Fact], partitions: int, data: st.DataObject
) -> None:
    from adapters.kafka.codec import decode_position

    events = partitioned(log, partitions)
    queues = {p: [e for e in events if decode_position(e.position)[0] == p] for p in range(partitions)}

    async def go() -> None:
        live = MemoryReadStore()
        done = dict.fromkeys(queues, 0)
        while any(done[p] < len(q) for p, q in queues.items()):
            p = data.draw(st.sampled_from([p for p, q in queues.items() if done[p] < len(q)]), label="partition")
            back = data.draw(st.integers(0, done[p]), label="rewind to")
            size = data.draw(st.integers(1, 5), label="batch")
            await apply(live, queues[p][back : done[p] + size])
            done[p] += size
        one_order = MemoryReadStore()
        await apply(one_order, embedded(log))
        for tenant_id in TENANTS:
            got = await answers(live, tenant_id)
            assert got == await answers(one_order, tenant_id)
            check(got, log, tenant_id)

    run(go())


async def documents(store: ReadStore, tenant_id: str, asked: analytics.AnalyticsRange) -> int:
    """The documents a report of ``asked`` reads: the range's user-days (user-months) and its
    channel-days with the day before and after it."""
    first, last = asked.start.strftime("%Y-%m-%d"), (asked.end - timedelta(days=1)).strftime("%Y-%m-%d")
    if asked.granularity == "month":
        users = await store.count("analytics_monthly", tenant_id, {"month": {"$gte": first[:7], "$lte": last[:7]}})
    else:
        users = await store.count("analytics_users", tenant_id, {"day": {"$gte": first, "$lte": last}})
    around = {"$gte": (asked.start - timedelta(days=1)).strftime("%Y-%m-%d"), "$lte": asked.end.strftime("%Y-%m-%d")}
    return users + await store.count("analytics_channels", tenant_id, {"day": around})


@settings(max_examples=40, deadline=None)
@given(facts())
def test_a_report_reading_more_than_its_documents_is_refused_and_one_within_is_whole(log: list[Fact]) -> None:
    """At ``max_docs`` equal to what a range holds the report is the unbounded one; one fewer
    and it is refused as ``range_too_large``, on both stores (the cap counts the user and the
    channel documents together)."""

    async def go() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            sqlite: ReadStore = SqliteReadStore(Path(tmp) / "read.db")
            await sqlite.start()
            memory = MemoryReadStore()
            for store in (sqlite, memory):
                await apply(store, embedded(log))
                for tenant_id in TENANTS:
                    for r in RANGES:
                        asked = analytics.parse_range(*r)
                        held = await documents(store, tenant_id, asked)
                        whole = await analytics.analytics_report(store, tenant_id, asked)
                        assert await analytics.analytics_report(store, tenant_id, asked, max(held, 1)) == whole
                        if held >= 2:  # a cap is 1 or more
                            with pytest.raises(analytics.TooManyDocuments) as refused:
                                await analytics.analytics_report(store, tenant_id, asked, held - 1)
                            assert refused.value.rule == "range_too_large"
                            assert refused.value.details == {"max_documents": held - 1}
            await sqlite.close()

    run(go())


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.none(), st.text(max_size=30), st.datetimes().map(lambda d: d.isoformat() + "Z")),
    st.one_of(st.none(), st.text(max_size=30), st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat)),
    st.sampled_from(("day", "month", "hour", "", "week")),
)
def test_any_range_is_served_or_refused_with_a_rule_never_an_exception(
    start: str | None, end: str | None, granularity: str
) -> None:
    try:
        asked = analytics.parse_range(start, end, granularity)
    except RangeError as exc:
        assert exc.message
        return
    assert asked.start < asked.end
    assert asked.start.hour == asked.start.minute == 0
    days = (asked.end - asked.start).days
    assert days <= (analytics.MAX_DAYS if granularity == "day" else 31 * analytics.MAX_MONTHS)


def test_author_keys_round_trip_and_hold_no_path_or_operator() -> None:
    for user in ("a.b", "%2E", "a%b.c", "$x", "plain"):
        key = analytics.author_key(user)
        assert "." not in key and not key.startswith("$")
        assert analytics.author_of(key) == user
