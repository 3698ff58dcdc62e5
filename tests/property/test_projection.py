"""Property tests of the chat projection: replay equals incremental, duplicates are no-ops,
and what the queries render agrees with a model computed straight from the events.

Histories come from the real deciders (so the events are ones the system can record),
for several channels and two tenants, interleaved into one log with positions.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.memory_store import MemoryReadStore
from adapters.sqlite_store import SqliteReadStore
from domain import user
from domain.events import Event
from projections import chat
from projections.ports import ReadStore
from projections.queries import ChatQueries
from tests.property.strategies import Draw, chance, envelopes, pick, play

STREAMS = (("t1", "c1"), ("t1", "c2"), ("t2", "c1"))
TENANTS = ("t1", "t2")


@dataclass(slots=True)
class Scenario:
    """A log: channel (and user) streams of two tenants, interleaved, positions 1..n."""

    events: list[Event]

    def __repr__(self) -> str:
        lines = [f"{e.position}. {e.tenant_id} {e.stream}#{e.seq} {e.type} {e.payload}" for e in self.events]
        return "Scenario(\n  " + "\n  ".join(lines) + "\n)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def user_stream(draw: Draw[Any], tenant_id: str, user_id: str) -> list[Event]:
    state, events = user.UserState(), []
    for n in range(draw(st.integers(0, 3))):
        decision = user.decide(state, user.RegisterUser(name=pick(draw, ("Ada", "Grace")), metadata={"n": n % 2}))
        if isinstance(decision, list):
            for event in decision:
                user.evolve(state, event)
                events.append(
                    Event(
                        event_id=f"{tenant_id}/{user_id}/{state.version}",
                        tenant_id=tenant_id,
                        stream=f"user:{user_id}",
                        seq=state.version,
                        position=0,
                        type=event.type,
                        schema_version=1,
                        occurred_at=f"2026-01-01T00:00:0{n}.000Z",
                        payload=event.model_dump(mode="json"),
                    )
                )
    return events


@st.composite
def scenarios(draw: Draw[Any], max_steps: int = 25) -> Scenario:
    streams = [envelopes(t, c, play(draw, draw(st.integers(0, max_steps)), careful=True)) for t, c in STREAMS]
    streams += [user_stream(draw, "t1", u) for u in ("u1", "u2")]
    pending = [deque(s) for s in streams if s]
    order: list[Event] = []
    while pending:
        stream = pick(draw, pending)
        for _ in range(draw(st.integers(1, 4))):
            if stream:
                order.append(stream.popleft())
        pending = [s for s in pending if s]
    return Scenario([e.model_copy(update={"position": n}) for n, e in enumerate(order, start=1)])


@st.composite
def deliveries(draw: Draw[Any], count: int) -> list[list[int]]:
    """At-least-once, in-order delivery of ``count`` events as batches of indexes: batches may
    start before the checkpoint, repeat events, and whole earlier batches may come again."""
    batches: list[list[int]] = []
    applied = 0
    while applied < count:
        start = applied - draw(st.integers(0, min(applied, 4)))
        end = draw(st.integers(applied + 1, min(count, applied + 6)))
        batch = list(range(start, end))
        for _ in range(draw(st.integers(0, 2))):
            first = draw(st.integers(0, len(batch) - 1))
            batch.insert(draw(st.integers(first + 1, len(batch))), batch[first])
        batches.append(batch)
        applied = end
        if chance(draw, 3):
            batches.append(pick(draw, batches))
    return batches


def ops(events: list[Event]) -> list[Any]:
    return [op for event in events for op in chat.project(event)]


async def deliver(store: ReadStore, events: list[Event], batches: list[list[int]]) -> None:
    for batch in batches:
        chunk = [events[i] for i in batch]
        await store.apply(chat.NAME, ops(chunk), max(e.position for e in chunk))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- the model -----------------------------------------------------------------------------------
@dataclass(slots=True)
class MessageModel:
    message_id: str
    seq: int
    author_id: str
    text: str | None
    parent_id: str | None
    created_at: str
    edited_at: str | None = None
    deleted: bool = False
    reactions: dict[str, list[str]] = field(default_factory=dict)
    reply_count: int = 0

    def rendered(self) -> dict[str, Any]:
        reactions = {emoji: users for emoji, users in self.reactions.items() if users}
        return {
            "message_id": self.message_id,
            "seq": self.seq,
            "author_id": self.author_id,
            "text": self.text,
            "parent_id": self.parent_id,
            "created_at": self.created_at,
            "edited_at": self.edited_at,
            "deleted": self.deleted,
            "reactions": reactions,
            "reply_count": self.reply_count,
        }


@dataclass(slots=True)
class ChannelModel:
    """What a user should see in one channel, computed directly from its events."""

    created: dict[str, Any] | None = None
    head_seq: int = 0
    members: dict[str, tuple[str, str]] = field(default_factory=dict)  # user -> (role, joined_at)
    markers: dict[str, int] = field(default_factory=dict)
    messages: dict[str, MessageModel] = field(default_factory=dict)
    last_top_level: str | None = None

    def apply(self, e: Event) -> None:
        p = e.payload
        self.head_seq = e.seq
        match e.type:
            case "ChannelCreated":
                self.created = {"name": p["name"], "kind": p["kind"], "e2e": p["e2e"], "created_by": p["created_by"]}
            case "MemberAdded":
                self.members[p["user_id"]] = (p["role"], e.occurred_at)
            case "MemberRoleChanged":
                self.members[p["user_id"]] = (p["role"], self.members[p["user_id"]][1])
            case "MemberRemoved" | "MemberBanned":
                self.members.pop(p["user_id"], None)
            case "MessagePosted":
                mid = p["message_id"]
                self.messages[mid] = MessageModel(mid, e.seq, p["author_id"], p["text"], p["parent_id"], e.occurred_at)
                if p["parent_id"] is None:
                    self.last_top_level = mid
                else:
                    self.messages[p["parent_id"]].reply_count += 1
            case "MessageEdited":
                message = self.messages[p["message_id"]]
                message.text, message.edited_at = p["text"], e.occurred_at
            case "MessageDeleted":
                message = self.messages[p["message_id"]]
                message.deleted, message.text, message.reactions = True, None, {}
            case "ReactionAdded":
                users = self.messages[p["message_id"]].reactions.setdefault(p["emoji"], [])
                if p["user_id"] not in users:
                    users.append(p["user_id"])
            case "ReactionRemoved":
                users = self.messages[p["message_id"]].reactions.get(p["emoji"], [])
                if p["user_id"] in users:
                    users.remove(p["user_id"])
            case "ReadMarkerMoved":
                self.markers[p["user_id"]] = p["seq"]

    def timeline(self) -> list[dict[str, Any]]:
        top = [m for m in self.messages.values() if m.parent_id is None]
        return [m.rendered() for m in sorted(top, key=lambda m: -m.seq)]

    def thread(self, message_id: str) -> list[str]:
        replies = [m for m in self.messages.values() if m.parent_id == message_id]
        return [m.message_id for m in sorted(replies, key=lambda m: m.seq)]

    def member_list(self) -> list[dict[str, str]]:
        ordered = sorted(self.members.items(), key=lambda item: (item[1][1], item[0]))
        return [{"user_id": u, "role": role} for u, (role, _) in ordered]

    def unread(self, user_id: str) -> int:
        marker = self.markers.get(user_id, 0)
        return sum(
            1
            for m in self.messages.values()
            if m.parent_id is None and not m.deleted and m.author_id != user_id and m.seq > marker
        )


def model_of(events: list[Event]) -> dict[tuple[str, str], ChannelModel]:
    models = {key: ChannelModel() for key in STREAMS}
    for event in events:
        if event.stream_type == "channel":
            models[(event.tenant_id, event.stream_id)].apply(event)
    return models


MESSAGE_FIELDS = tuple(MessageModel("", 0, "", "", None, "").rendered())


async def check_against_model(store: ReadStore, events: list[Event], page: int) -> None:
    """Every rendered view of every channel agrees with the model of ``events``."""
    queries = ChatQueries(store)
    models = model_of(events)
    for (tenant_id, cid), model in models.items():
        channel = await queries.channel(tenant_id, cid, None)
        if model.created is None:
            assert channel is None
            continue
        assert channel is not None
        assert {k: channel[k] for k in model.created} == model.created
        assert channel["head_seq"] == model.head_seq
        assert channel["members"] == model.member_list()
        last = model.messages[model.last_top_level].rendered() if model.last_top_level else None
        assert _view(channel["last_message"]) == last

        timeline, cursor = await queries.messages(tenant_id, cid, before_seq=None, after_seq=None, limit=10_000)
        assert [_view(m) for m in timeline] == model.timeline()
        assert cursor is None
        for message in timeline:
            thread = await queries.thread(tenant_id, cid, message["message_id"], limit=10_000)
            assert [r["message_id"] for r in thread] == model.thread(message["message_id"])
            assert all(_view(r) == model.messages[r["message_id"]].rendered() for r in thread)

        # paging backwards and forwards visits every top-level message once, in order
        seen, before = [], None
        while True:
            chunk, before = await queries.messages(tenant_id, cid, before_seq=before, after_seq=None, limit=page)
            seen += [m["message_id"] for m in chunk]
            if before is None:
                break
        assert seen == [m["message_id"] for m in model.timeline()]
        seen, after = [], 0
        while after is not None:
            chunk, after = await queries.messages(tenant_id, cid, before_seq=None, after_seq=after, limit=page)
            seen += [m["message_id"] for m in chunk]
        assert seen == [m["message_id"] for m in reversed(model.timeline())]

        for user_id in model.members:
            mine = await queries.channel(tenant_id, cid, user_id)
            assert mine is not None and mine["unread_count"] == model.unread(user_id), user_id
    for tenant_id in TENANTS:
        listed = await queries.channels_of_tenant(tenant_id, None, 100)
        created = sorted(c for (t, c), m in models.items() if t == tenant_id and m.created is not None)
        assert [c["channel_id"] for c in listed] == created
        for user_id in ("u1", "u2", "u3", "u4", "u5"):
            joined = {c for (t, c), m in models.items() if t == tenant_id and user_id in m.members}
            listed = await queries.channels_of_user(tenant_id, user_id, 100)
            assert {c["channel_id"] for c in listed} == joined


def _view(message: dict[str, Any] | None) -> dict[str, Any] | None:
    if message is None:
        return None
    return {k: message.get(k) for k in MESSAGE_FIELDS}


# --- properties ---------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(scenarios())
def test_applying_the_log_in_one_batch_equals_applying_it_event_by_event(scenario: Scenario) -> None:
    events = scenario.events
    whole, one_by_one = MemoryReadStore(), MemoryReadStore()
    run(deliver(whole, events, [list(range(len(events)))] if events else []))
    run(deliver(one_by_one, events, [[i] for i in range(len(events))]))
    assert whole.dump() == one_by_one.dump()


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_redelivered_and_duplicated_events_change_nothing(data: st.DataObject) -> None:
    events = data.draw(scenarios(), label="scenario").events
    batches = data.draw(deliveries(len(events)), label="batches")
    once, again = MemoryReadStore(), MemoryReadStore()
    run(deliver(once, events, [list(range(len(events)))] if events else []))
    run(deliver(again, events, batches))
    assert again.dump() == once.dump()
    assert run(again.checkpoint(chat.NAME)) == len(events)


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_rendered_channels_and_timelines_agree_with_a_model_of_the_events(data: st.DataObject) -> None:
    events = data.draw(scenarios(), label="scenario").events
    cut = data.draw(st.integers(0, len(events)), label="events applied so far")
    page = data.draw(st.integers(1, 4), label="page size")
    store = MemoryReadStore()

    async def scenario() -> None:
        await deliver(store, events, [[i] for i in range(cut)])
        await check_against_model(store, events[:cut], page)

    run(scenario())


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_sqlite_read_model_under_redelivery_equals_the_memory_one_and_the_model(data: st.DataObject) -> None:
    events = data.draw(scenarios(), label="scenario").events
    batches = data.draw(deliveries(len(events)), label="batches")
    page = data.draw(st.integers(1, 4), label="page size")

    async def scenario(path: Path) -> None:
        reference = MemoryReadStore()
        await deliver(reference, events, [[i] for i in range(len(events))])
        stores = [SqliteReadStore(path / "whole.db"), SqliteReadStore(path / "redelivered.db")]
        for store in stores:
            await store.start()
        try:
            await deliver(stores[0], events, [list(range(len(events)))] if events else [])
            await deliver(stores[1], events, batches)
            for store in stores:
                for collection in chat.COLLECTIONS:
                    for tenant_id in TENANTS:
                        expected = await reference.find(collection, tenant_id, {})
                        assert await store.find(collection, tenant_id, {}) == expected, collection
                assert await store.checkpoint(chat.NAME) == len(events)
                await check_against_model(store, events, page)
        finally:
            for store in stores:
                await store.close()

    with tempfile.TemporaryDirectory() as tmp:
        run(scenario(Path(tmp)))
