"""The sealing codec (commands/sealing.py): what is sealed opens as it was; once any of its keys is
destroyed, or the box is tampered with or moved to another event, it reads as erased, never as an
exception or as anything else."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.memory_keys import MemoryKeyStore
from commands.keys import Keyring, MasterKey
from commands.ports import NewEvent
from commands.sealing import ERASED, PERSONAL, SEALED, Sealer, erased
from domain.events import Event, mentions_in

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
metadata = st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=4)
attachments = st.lists(st.fixed_dictionaries({"type": st.just("file"), "url": st.text(max_size=30)}), max_size=2)


@st.composite
def personal_events(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    """``(stream, type, payload)`` of an event that carries personal fields."""
    kind = draw(st.sampled_from(sorted(PERSONAL)))
    if kind.startswith("User"):
        return "user:u1", kind, {"name": draw(st.text(max_size=30)), "metadata": draw(metadata)}
    payload: dict[str, Any] = {"message_id": "m1", "text": draw(st.text(max_size=60)), "author_id": "u1"}
    if kind == "MessagePosted":
        # mentions as the decider (and the v1 upcaster, which every open of these v1 records runs) derives them
        payload.update(attachments=draw(attachments), parent_id=None, mentions=mentions_in(payload["text"]))
    return "channel:c1", kind, payload


def new(stream: str, kind: str, payload: dict[str, Any], event_id: str = "e1") -> NewEvent:
    return NewEvent(event_id, 1, kind, 1, "2026-12-03T10:00:00.000Z", None, None, None, None, payload)


def recorded(tenant: str, stream: str, event: NewEvent) -> Event:
    return Event(
        event_id=event.event_id, tenant_id=tenant, stream=stream, seq=1, position=1, type=event.type,
        schema_version=1, occurred_at=event.occurred_at, payload=event.payload,
    )  # fmt: skip


async def seal_and_open(
    stream: str, kind: str, payload: dict[str, Any], destroy: str | None, tamper: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    store = MemoryKeyStore()
    master = MasterKey.generate()
    sealer = Sealer(Keyring(store, master))
    event = new(stream, kind, payload)
    await sealer.prepare("t1", stream, [event])
    [sealed] = sealer.seal("t1", stream, [event])
    stored = dict(sealed.payload)
    if destroy is not None:
        keys = stored.get(SEALED, {}).get("keys", [])
        if keys:
            await store.destroy("t1", keys[0] if destroy == "first" else keys[-1])
    if tamper == "box" and SEALED in stored:
        box = stored[SEALED]["box"]
        stored[SEALED] = {**stored[SEALED], "box": box[:-4] + ("AAAA" if box[-4:] != "AAAA" else "BBBB")}
    elif tamper == "garbage" and SEALED in stored:
        stored[SEALED] = {"keys": stored[SEALED]["keys"], "box": "not base64!"}
    moved = "e2" if tamper == "moved" else "e1"
    reader = Sealer(Keyring(store, master))  # another process: nothing cached
    [opened] = await reader.open([recorded("t1", stream, new(stream, kind, stored, moved))])
    return stored, opened.payload


@settings(max_examples=150, deadline=None)
@given(personal_events())
def test_what_is_sealed_opens_as_it_was_and_is_not_in_the_record(event: tuple[str, str, dict[str, Any]]) -> None:
    stream, kind, payload = event
    stored, opened = asyncio.run(seal_and_open(stream, kind, payload, None, None))
    assert opened == payload
    personal = {k: v for k, v in payload.items() if k in PERSONAL[kind]}
    if any(personal.values()):  # something to seal: none of it is left in the record
        assert set(stored) & set(PERSONAL[kind]) == set() and SEALED in stored
    else:
        assert stored == payload  # an e2e channel's message carries no text: nothing sealed


@settings(max_examples=150, deadline=None)
@given(personal_events(), st.sampled_from([None, "first", "last"]), st.sampled_from([None, "box", "garbage", "moved"]))
def test_a_destroyed_key_or_a_damaged_box_reads_as_erased(
    event: tuple[str, str, dict[str, Any]], destroy: str | None, tamper: str | None
) -> None:
    stream, kind, payload = event
    stored, opened = asyncio.run(seal_and_open(stream, kind, payload, destroy, tamper))
    if SEALED not in stored or (destroy is None and tamper is None):
        assert opened == payload
    else:
        assert opened == erased(kind, stored) and opened[ERASED] is True
        assert all(opened[f] == empty for f, empty in PERSONAL[kind].items())
        kept = {k: v for k, v in payload.items() if k not in PERSONAL[kind]}
        assert {k: opened[k] for k in kept} == kept  # ids, author, parent: the envelope's facts stay


@settings(max_examples=50, deadline=None)
@given(personal_events())
def test_an_event_sealed_after_its_key_was_destroyed_is_recorded_erased(event: tuple[str, str, dict[str, Any]]) -> None:
    stream, kind, payload = event

    async def run() -> dict[str, Any]:
        store = MemoryKeyStore()
        sealer = Sealer(Keyring(store, MasterKey.generate()))
        await store.destroy("t1", "user:u1")
        record = new(stream, kind, payload)
        await sealer.prepare("t1", stream, [record])
        return sealer.seal("t1", stream, [record])[0].payload

    stored = asyncio.run(run())
    if any(payload.get(f) for f in PERSONAL[kind]):
        assert stored == erased(kind, payload)
    else:
        assert stored == payload
