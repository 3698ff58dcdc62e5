"""Property tests of time travel (``projections.timetravel``): a channel ``as_of`` a point is
what a fold of the log up to that point gives, whatever the point, however the timeline was
brought up to date, and through the same queries that render the live read model.

Histories come from the real deciders (``tests.property.strategies``); the fold they are
compared with is the chat projection applied by the in-memory read store, a complete
implementation of the read-store port.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from adapters.memory_store import MemoryReadStore
from domain.base import format_time
from domain.events import Event
from projections import chat
from projections.ports import DocReader, ReadStoreUnavailable
from projections.queries import ChatQueries
from projections.timetravel import AsOf, ChannelTooLarge, Point, Timeline, TimeTravel, version_bytes
from tests.property.strategies import USERS, Draw, envelopes, pick, play

TENANT, CHANNEL = "t1", "c1"


@st.composite
def logs(draw: Draw[Any], max_steps: int = 40) -> list[Event]:
    """One channel's stream as a log records it: positions increase with gaps (other streams
    write in between), times as the deciders' clock gave them (several events may share one)."""
    events = envelopes(TENANT, CHANNEL, play(draw, draw(st.integers(1, max_steps)), careful=True))
    position, out = 0, []
    for event in events:
        position += draw(st.integers(1, 5))
        out.append(event.model_copy(update={"position": position}))
    return out


async def folded(events: list[Event]) -> MemoryReadStore:
    """The chat read model of ``events``, applied as a projector applies them."""
    store = MemoryReadStore()
    for event in events:
        await store.apply(chat.NAME, chat.project(event), event.position)
    return store


async def rendered(reader: DocReader, user_id: str | None) -> dict[str, Any]:
    """Everything the channel routes render from a reader: the channel (as the tenant and as a
    member sees it), pages of history both ways, the members and a thread."""
    queries = ChatQueries(reader, receipts_up_to=3)
    newest, cursor = await queries.messages(TENANT, CHANNEL, before_seq=None, after_seq=None, limit=2)
    older = await queries.messages(TENANT, CHANNEL, before_seq=cursor, after_seq=None, limit=50) if cursor else None
    oldest = await queries.messages(TENANT, CHANNEL, before_seq=None, after_seq=0, limit=3)
    threads = [await queries.thread(TENANT, CHANNEL, m["message_id"], 10) for m in newest]
    return {
        "channel": await queries.channel(TENANT, CHANNEL, None),
        "as_member": await queries.channel(TENANT, CHANNEL, user_id),
        "pages": (newest, cursor, older, oldest),
        "threads": threads,
        "members": await queries.member_details(TENANT, CHANNEL),
        "other_tenant": await queries.channel("t2", CHANNEL, None),
    }


async def documents(reader: DocReader, store: MemoryReadStore) -> dict[str, Any]:
    """Every document the fold left, read back through ``reader`` by its id."""
    found: dict[str, Any] = {}
    for collection, docs in store.dump().items():
        for tenant_id, ident in docs:
            found[f"{collection}/{ident}"] = await reader.get(collection, tenant_id, ident)
    return found


def timeline_of(events: list[Event], chunks: list[int]) -> Timeline:
    """A timeline brought up to date in several reads of the given sizes."""
    timeline, start = Timeline(TENANT, CHANNEL), 0
    for size in [*chunks, len(events)]:
        timeline.extend(events[start : start + size])
        start = min(len(events), start + size)
    return timeline


@settings(max_examples=120, deadline=None)
@given(events=logs(), data=st.data())
def test_as_of_a_position_equals_a_fold_of_the_log_up_to_it(events: list[Event], data: st.DataObject) -> None:
    chunks = data.draw(st.lists(st.integers(0, 8), max_size=4), label="reads")
    timeline = timeline_of(events, chunks)
    cut = data.draw(st.integers(0, len(events)), label="events included")
    # any position from this event's up to (not including) the next one's falls here
    low = events[cut - 1].position if cut else 0
    high = events[cut].position - 1 if cut < len(events) else low + 100
    position = data.draw(st.integers(low, high), label="as_of position")
    user_id = pick(data.draw, USERS)

    async def check() -> None:
        point = timeline.locate(AsOf(position=position))
        if cut == 0:
            assert point is None
            return
        assert point == Point(cut, events[cut - 1].position, events[cut - 1].occurred_at)
        store = await folded(events[:cut])
        past = timeline.at(point)
        assert await documents(past, store) == await documents(store, store)
        assert await rendered(past, user_id) == await rendered(store, user_id)

    asyncio.run(check())


@settings(max_examples=80, deadline=None)
@given(events=logs(), data=st.data())
def test_as_of_a_time_includes_every_event_recorded_by_then(events: list[Event], data: st.DataObject) -> None:
    timeline = timeline_of(events, [])
    moment = pick(data.draw, [e.occurred_at for e in events] + ["2025-12-31T23:59:59.999Z", "2099-01-01T00:00:00.000Z"])
    included = [e for e in events if e.occurred_at <= moment]

    async def check() -> None:
        point = timeline.locate(AsOf(time=moment))
        if not included:
            assert point is None
            return
        assert point is not None and point.seq == len(included)  # a prefix: times never go back in a stream
        store = await folded(included)
        assert await rendered(timeline.at(point), "u1") == await rendered(store, "u1")

    asyncio.run(check())


@settings(max_examples=60, deadline=None)
@given(events=logs(), data=st.data())
def test_as_of_at_or_after_the_head_equals_the_live_read_model(events: list[Event], data: st.DataObject) -> None:
    """The cache reads the log in pages and only what is new on each ask; past the head it
    answers what the live read model (every event applied) answers."""
    assume(events)  # a history whose every command was refused records nothing
    split = data.draw(st.integers(0, len(events)), label="events recorded before the first ask")
    page = data.draw(st.integers(1, 7), label="page")
    recorded = events[:split]

    async def read_stream(tenant_id: str, stream: str, after_seq: int, limit: int | None) -> list[Event]:
        assert (tenant_id, stream) == (TENANT, f"channel:{CHANNEL}")
        tail = [e for e in recorded if e.seq > after_seq]
        return tail if limit is None else tail[:limit]

    async def check() -> None:
        travel = TimeTravel(read_stream, page=page)
        await travel.timeline(TENANT, CHANNEL)
        recorded.extend(events[split:])
        past = await travel.view(TENANT, CHANNEL, AsOf(position=events[-1].position + 1))
        assert past is not None
        reader, point = past
        assert point.seq == len(events)
        live = await folded(events)
        assert await rendered(reader, "u2") == await rendered(live, "u2")
        late = await travel.view(TENANT, CHANNEL, AsOf(time=format_time_after(events[-1].occurred_at)))
        assert late is not None and late[1] == point

    asyncio.run(check())


def format_time_after(moment: str) -> str:
    """A time a day after ``moment``."""
    return format_time(datetime.fromisoformat(moment) + timedelta(days=1))


def test_a_cache_over_budget_drops_the_channels_asked_least_recently() -> None:
    streams = {c: [_created(c, n) for n in range(1, 4)] for c in ("a", "b", "c")}

    async def read_stream(tenant_id: str, stream: str, after_seq: int, limit: int | None) -> list[Event]:
        return [e for e in streams[stream.partition(":")[2]] if e.seq > after_seq][:limit]

    async def check() -> None:
        one = (await TimeTravel(read_stream).timeline(TENANT, "a")).size  # the three are the same size
        travel = TimeTravel(read_stream, budget=2 * one + one // 2)
        for channel in ("a", "b", "a", "c"):
            assert (await travel.timeline(TENANT, channel)).head_seq == 3
        assert list(travel._timelines) == [(TENANT, "a"), (TENANT, "c")]  # b was asked least recently
        assert travel.kept == 2 * one  # a running total of the timelines kept
        assert set(travel._locks) == {(TENANT, "a"), (TENANT, "c")}  # no lock for a channel dropped

    asyncio.run(check())


def _created(channel: str, seq: int) -> Event:
    payload: dict[str, Any] = (
        {"name": channel, "kind": "group"} if seq == 1 else {"user_id": f"u{seq}", "role": "member"}
    )
    return Event(
        event_id=f"{channel}{seq}",
        tenant_id=TENANT,
        stream=f"channel:{channel}",
        seq=seq,
        position=seq,
        type="ChannelCreated" if seq == 1 else "MemberAdded",
        schema_version=1,
        occurred_at=f"2026-01-01T00:00:0{seq}.000Z",
        payload=payload,
    )


def _said(channel: str, seq: int, type: str, payload: dict[str, Any]) -> Event:
    return _created(channel, seq).model_copy(update={"event_id": f"{channel}{seq}", "type": type, "payload": payload})


def _stream(channel: str, tail: list[tuple[str, dict[str, Any]]]) -> list[Event]:
    head = [_created(channel, 1)]
    return head + [_said(channel, n, type, payload) for n, (type, payload) in enumerate(tail, start=2)]


def test_the_budget_counts_bytes_a_long_text_edited_and_a_long_reaction_list() -> None:
    """A version's cost is its size, not one: an edit keeps the whole new text, a reaction a new
    copy of the emoji's user list; a version that only moves a counter costs the constant."""
    long = "x" * 60_000
    edits = _stream("e", [("MessagePosted", {"message_id": "m", "author_id": "u2", "text": long})]
                    + [("MessageEdited", {"message_id": "m", "text": f"{long}{n}"}) for n in range(10)])  # fmt: skip
    reactions = _stream("r", [("MessagePosted", {"message_id": "m", "author_id": "u2", "text": "hi"})]
                        + [("ReactionAdded", {"message_id": "m", "emoji": "+1", "user_id": f"u{n}"})
                           for n in range(300)])  # fmt: skip
    edited, reacted = Timeline(TENANT, "e"), Timeline(TENANT, "r")
    assert edited.extend(edits) and reacted.extend(reactions)
    assert edited.size > 11 * 60_000  # eleven texts of 60 KB kept
    assert reacted.size > 8 * 300 * 301 // 2  # 1 + 2 + … + 300 slots of user lists kept
    small = {"_id": "c", "head_seq": 2, "name": "c"}
    assert version_bytes({**small, "head_seq": 3}, small) < version_bytes({**small, "name": long}, small)


def test_a_channel_over_the_budget_is_refused_and_never_folded_again() -> None:
    streams = {"big": _stream("big", [("MessagePosted", {"message_id": f"m{n}", "author_id": "u2", "text": "y" * 5000})
                                      for n in range(20)]),
               "small": _stream("small", [])}  # fmt: skip
    reads: list[str] = []

    async def read_stream(tenant_id: str, stream: str, after_seq: int, limit: int | None) -> list[Event]:
        reads.append(stream)
        return [e for e in streams[stream.partition(":")[2]] if e.seq > after_seq][:limit]

    async def check() -> None:
        travel = TimeTravel(read_stream, budget=50_000, page=4)
        await travel.timeline(TENANT, "small")
        for _ in range(3):
            with pytest.raises(ChannelTooLarge):
                await travel.timeline(TENANT, "big")
        assert reads.count("channel:big") < 20 // 4 + 1  # read (and folded) once, up to the budget, not per ask
        assert list(travel._timelines) == [(TENANT, "small")] and set(travel._locks) == {(TENANT, "small")}
        assert travel.kept == travel._timelines[(TENANT, "small")].size  # the refused fold is not counted

    asyncio.run(check())


def test_at_most_two_first_folds_run_at_once() -> None:
    streams = {c: [_created(c, n) for n in range(1, 4)] for c in ("a", "b", "c", "d")}
    reading: list[str] = []
    release = asyncio.Event()

    async def read_stream(tenant_id: str, stream: str, after_seq: int, limit: int | None) -> list[Event]:
        reading.append(stream)
        await release.wait()
        return [e for e in streams[stream.partition(":")[2]] if e.seq > after_seq][:limit]

    async def check() -> None:
        travel = TimeTravel(read_stream, folds=2)
        asks = [asyncio.create_task(travel.timeline(TENANT, c)) for c in streams]
        for _ in range(100):  # let every ask run as far as it can (no fold can finish: the log waits)
            await asyncio.sleep(0)
        assert len(reading) == 2
        release.set()
        assert [t.head_seq for t in await asyncio.gather(*asks)] == [3, 3, 3, 3]
        assert len(reading) == 4

    asyncio.run(check())


def test_an_event_read_before_the_one_ahead_of_it_is_read_again_not_a_500() -> None:
    """The Kafka backend's event index may show seq 3 before seq 2 of the same batch is written:
    the fold stops at the gap and reads again; a gap that stays is a retryable unavailable."""
    stream = [_created("a", n) for n in range(1, 6)]
    torn = {"times": 2}

    async def read_stream(tenant_id: str, name: str, after_seq: int, limit: int | None) -> list[Event]:
        events = [e for e in stream if e.seq > after_seq][:limit]
        if torn["times"]:
            torn["times"] -= 1
            events = [e for e in events if e.seq != 3]
        return events

    async def check() -> None:
        travel = TimeTravel(read_stream)
        assert (await travel.timeline(TENANT, "a")).head_seq == 5
        torn["times"] = 1_000
        stream.extend(_created("a", n) for n in range(6, 8))
        fresh = TimeTravel(read_stream)
        with pytest.raises(ReadStoreUnavailable):
            await fresh.timeline(TENANT, "a")
        assert fresh.kept == 0 and not fresh._locks

    asyncio.run(check())
