"""Snapshots are exactly equivalent to folding the log.

For random histories of every aggregate, decided by the real deciders: folding every event
gives the same state as decoding a snapshot of the state after some prefix and folding the
rest. The prefix is folded from the events as decided (the command service snapshots the
state it evolved in memory); the rest and the reference from the events as the log returns
them (JSON payloads, validated again). Equal means equal dataclasses, reprs and encodings,
so dict order and tuples-versus-lists count too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from commands import snapshots
from commands.repository import AGGREGATES
from domain import channel as ch
from domain import tenant, user
from domain.base import Command, Unchanged
from domain.errors import DomainError
from domain.events import EVENT_TYPES, DomainEvent
from tests.property.strategies import Draw, histories, pick

KEYS = ("k1", "k2", "k3")
ORIGINS = ("https://a.example", "https://b.example", "http://localhost:3000")
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def logged(event: DomainEvent) -> DomainEvent:
    """``event`` as a log hands it back: its JSON payload, validated again."""
    return EVENT_TYPES[event.type].model_validate_json(event.model_dump_json())


def play(decide: Callable[[Any, Command], Any], evolve: Callable[[Any, DomainEvent], Any], state: Any,
         commands: list[Command]) -> list[DomainEvent]:  # fmt: skip
    """The events the commands record, each decided against the state so far."""
    events: list[DomainEvent] = []
    for command in commands:
        try:
            decision = decide(state, command)
        except DomainError:
            continue
        if isinstance(decision, Unchanged):
            continue
        for event in decision:
            evolve(state, event)
            events.append(event)
    return events


@st.composite
def tenant_commands(draw: Draw[Any]) -> list[Command]:
    def one(n: int) -> Command:
        match draw(st.integers(0, 5)):
            case 0:
                return tenant.RegisterTenant(name=f"t{n}", key_id=pick(draw, KEYS), key_hash=f"h{n}")
            case 1:
                return tenant.IssueApiKey(key_id=pick(draw, KEYS), key_hash=f"h{n}", name=f"key {n}")
            case 2:
                return tenant.RevokeApiKey(key_id=pick(draw, KEYS))
            case 3:
                return tenant.RotateSigningKey()
            case _:
                return tenant.SetAllowedOrigins(origins=draw(st.lists(st.sampled_from(ORIGINS), max_size=4)))

    return [tenant.RegisterTenant(name="acme", key_id="k0", key_hash="h0")] + [
        one(n) for n in range(draw(st.integers(0, 30)))
    ]


@st.composite
def user_commands(draw: Draw[Any]) -> list[Command]:
    def one(n: int) -> Command:
        if draw(st.booleans()):
            return user.RegisterUser(
                name=pick(draw, ("Ann", "Bob")), metadata=draw(st.dictionaries(st.text(max_size=4), json_values))
            )
        status = pick(draw, ("online", "away", "offline"))
        return user.RecordPresence(status=status, last_seen_at=f"2026-01-01T00:00:{n:02d}.000Z")

    return [one(n) for n in range(draw(st.integers(0, 30)))]


def check_equivalent(kind: str, events: list[DomainEvent], split: int) -> None:
    aggregate = AGGREGATES[kind]
    split = min(split, len(events))
    reference = aggregate.new()
    for event in events:
        aggregate.evolve(reference, logged(event))
    prefix = aggregate.new()
    for event in events[:split]:
        aggregate.evolve(prefix, event)
    restored = snapshots.decode(aggregate.new, snapshots.encode(prefix))
    assert repr(restored) == repr(prefix)  # repr shows dict order and tuples apart from lists
    for event in events[split:]:
        aggregate.evolve(restored, logged(event))
    assert restored == reference
    assert repr(restored) == repr(reference)
    assert snapshots.encode(restored) == snapshots.encode(reference)


@settings(max_examples=200, deadline=None)
@given(histories(max_steps=60), st.integers(0, 80))
def test_a_channel_restored_from_a_snapshot_equals_the_channel_folded_from_the_log(history: Any, split: int) -> None:
    check_equivalent("channel", history.events, split)


@settings(max_examples=100, deadline=None)
@given(tenant_commands(), st.integers(0, 40))
def test_a_tenant_restored_from_a_snapshot_equals_the_tenant_folded_from_the_log(
    commands: list[Command], split: int
) -> None:
    check_equivalent("tenant", play(tenant.decide, tenant.evolve, tenant.TenantState(), commands), split)


@settings(max_examples=100, deadline=None)
@given(user_commands(), st.integers(0, 40))
def test_a_user_restored_from_a_snapshot_equals_the_user_folded_from_the_log(
    commands: list[Command], split: int
) -> None:
    check_equivalent("user", play(user.decide, user.evolve, user.UserState(), commands), split)


@dataclass
class Inner:
    seq: int


@dataclass
class Before:
    version: int = 0
    items: dict[str, Inner] = field(default_factory=dict)


@dataclass
class Renamed:
    version: int = 0
    things: dict[str, Inner] = field(default_factory=dict)


@dataclass
class Retyped:
    version: int = 0
    items: dict[str, tuple[int, int]] = field(default_factory=dict)


def test_the_schema_changes_with_the_shape_of_a_state() -> None:
    """A snapshot is read back only under the schema it was written with; a state that
    gained, lost or retyped a field (however deep) gets another schema."""

    schemas = {snapshots.schema(cls) for cls in (Before, Renamed, Retyped)}
    assert len(schemas) == 3
    assert all(s.startswith(f"{snapshots.FORMAT}-") for s in schemas)
    assert len({snapshots.schema(a.new) for a in AGGREGATES.values()}) == len(AGGREGATES)
    assert all(dataclasses.is_dataclass(a.new) for a in AGGREGATES.values())


def test_a_channel_snapshot_keeps_tuple_keys_tuples_and_order() -> None:
    state = ch.ChannelState(version=9, name="c", members={"b": "owner", "a": "member"})
    state.messages["m2"] = ch.MessageState("a", 4, None, reactions={("👍", "b"): 6, ("ok", "a"): 5})
    state.messages["m1"] = ch.MessageState("b", 5, "m2", deleted_seq=8)
    state.client_msg_ids[("a", "c1")] = 4
    state.muted["a"] = (None, 7)
    state.read_markers["b"] = (4, 9)
    restored = snapshots.decode(ch.ChannelState, snapshots.encode(state))
    assert restored == state
    assert list(restored.members) == ["b", "a"] and list(restored.messages) == ["m2", "m1"]
    assert list(restored.messages["m2"].reactions) == [("👍", "b"), ("ok", "a")]
    assert restored.muted["a"] == (None, 7) and isinstance(restored.read_markers["b"], tuple)
