"""Property tests of the retention decision (domain/retention.py) and of the deciders that
record retention, legal holds and shredded days: a held channel is never due, a day is due
exactly when all of it is older than the retention, a channel's override wins, and the deciders
record each hold and each shredded day once."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import channel as ch
from domain import errors, tenant, user
from domain.base import Actor, Unchanged, format_time
from domain.events import ChannelDayShredded, LegalHoldPlaced, LegalHoldReleased, RetentionSet
from domain.retention import (
    DAY,
    PlaceLegalHold,
    ReleaseLegalHold,
    Retention,
    SetRetention,
    ShredChannelDay,
    effective,
    parse_day,
)

SETTINGS = settings(max_examples=200, deadline=None)
moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))
days_kept = st.integers(min_value=1, max_value=3650)
maybe_days = st.none() | days_kept
day_strategy = st.dates(min_value=date(2019, 1, 1), max_value=date(2030, 1, 1))


@SETTINGS
@given(day=day_strategy, now=moments, days=maybe_days)
def test_a_held_channel_is_never_due_and_hides_nothing(day: date, now: datetime, days: int | None) -> None:
    held = Retention(days, held=True)
    assert not held.day_due(day, now)
    assert held.cutoff(now) is None
    assert not held.hidden(datetime.combine(day, time(), UTC), now)


@SETTINGS
@given(day=day_strategy, now=moments, days=days_kept)
def test_a_day_is_due_iff_all_of_it_is_older_than_the_retention(day: date, now: datetime, days: int) -> None:
    policy = Retention(days)
    start = datetime.combine(day, time(), UTC)
    last_instant = start + DAY - timedelta(microseconds=1)
    assert policy.day_due(day, now) == (now - (start + DAY) >= timedelta(days=days))
    # due means every message of the day is hidden; not due means its last instant is still shown
    assert policy.day_due(day, now) == policy.hidden(last_instant, now)
    if policy.day_due(day, now):
        assert policy.hidden(start, now)


@SETTINGS
@given(recorded=moments, now=moments, days=days_kept)
def test_a_message_is_hidden_iff_older_than_n_days(recorded: datetime, now: datetime, days: int) -> None:
    assert Retention(days).hidden(recorded, now) == (now - recorded > timedelta(days=days))


@SETTINGS
@given(tenant_days=maybe_days, channel_days=maybe_days, held=st.booleans())
def test_the_channels_override_wins(tenant_days: int | None, channel_days: int | None, held: bool) -> None:
    policy = effective(tenant_days, channel_days, held)
    assert policy.days == (channel_days if channel_days is not None else tenant_days)
    assert policy.held == held


@SETTINGS
@given(now=moments, days=maybe_days)
def test_no_retention_keeps_everything(now: datetime, days: int | None) -> None:
    forever = Retention(None)
    assert forever.cutoff(now) is None
    assert not forever.day_due((now - 10_000 * DAY).date(), now)


ACTOR = Actor("tenant", "k1")


def _channel() -> ch.ChannelState:
    state = ch.ChannelState()
    for event in ch.decide(state, ch.CreateChannel(actor=ACTOR, name="c", kind="group", members=["u1"])):  # type: ignore[union-attr]
        ch.evolve(state, event)
    return state


def _apply(state: ch.ChannelState, command: ch.Command) -> ch.Decision:
    decision = ch.decide(state, command)
    if not isinstance(decision, Unchanged):
        for event in decision:
            ch.evolve(state, event)
    return decision


commands = st.lists(
    st.one_of(
        st.builds(PlaceLegalHold, reason=st.sampled_from(["case 1", "case 2"])),
        st.builds(ReleaseLegalHold, reason=st.just("done")),
        st.builds(SetRetention, days=maybe_days),
        st.builds(
            lambda day, days, held: ShredChannelDay(
                day=day.isoformat(), now=format_time(datetime(2031, 1, 1, tzinfo=UTC)), days=days, held=held
            ),
            day_strategy,
            maybe_days,
            st.booleans(),
        ),
    ),
    max_size=30,
)


@SETTINGS
@given(history=commands)
def test_the_channel_records_holds_retention_and_shredded_days_once(history: list[ch.Command]) -> None:
    state = _channel()
    for command in history:
        before = (state.hold_seq, state.retention_days, dict(state.shredded_days))
        try:
            decision = _apply(state, command)
        except errors.DomainError:
            assert (state.hold_seq, state.retention_days, dict(state.shredded_days)) == before
            if isinstance(command, ReleaseLegalHold):
                assert not before[0]  # only releasing no hold is refused
            if isinstance(command, ShredChannelDay):  # refused: held, no retention, or not past it
                policy = Retention(command.days, command.held or bool(before[0]))
                assert not policy.day_due(parse_day(command.day), datetime.fromisoformat(command.now))
            continue
        match command:
            case PlaceLegalHold():
                assert state.legal_hold
                assert isinstance(decision, Unchanged) == bool(before[0])
            case ReleaseLegalHold():
                assert not state.legal_hold and decision == [LegalHoldReleased(reason="done")]
            case SetRetention():
                assert state.retention_days == command.days
                assert isinstance(decision, Unchanged) or decision == [RetentionSet(days=command.days)]
            case ShredChannelDay():
                seen = command.day in before[2]
                assert seen or not before[0], "a held channel is never shredded (a day shredded before stays so)"
                assert command.day in state.shredded_days
                assert (
                    decision == Unchanged(before[2][command.day])
                    if seen
                    else decision == [ChannelDayShredded(day=command.day)]
                )


def test_a_user_hold_is_placed_once_and_released_once() -> None:
    state = user.UserState()
    for event in user.decide(state, user.RegisterUser(name="Ann")):  # type: ignore[union-attr]
        user.evolve(state, event)
    placed = user.decide(state, PlaceLegalHold(reason="litigation"))
    assert placed == [LegalHoldPlaced(reason="litigation")]
    user.evolve(state, placed[0])  # type: ignore[index]
    assert state.legal_hold
    assert user.decide(state, PlaceLegalHold(reason="again")) == Unchanged(state.hold_seq)
    released = user.decide(state, ReleaseLegalHold(reason=""))
    user.evolve(state, released[0])  # type: ignore[index]
    assert not state.legal_hold
    with pytest.raises(errors.NotFound):
        user.decide(state, ReleaseLegalHold(reason=""))


def test_a_tenant_default_of_the_same_days_is_recorded_once() -> None:
    state = tenant.TenantState()
    registered = tenant.decide(state, tenant.RegisterTenant(name="t", key_id="k", key_hash="h"))
    for event in registered:  # type: ignore[union-attr]
        tenant.evolve(state, event)
    first = tenant.decide(state, SetRetention(days=30))
    tenant.evolve(state, first[0])  # type: ignore[index]
    assert tenant.decide(state, SetRetention(days=30)) == Unchanged(state.retention_seq)
    with pytest.raises(errors.Invalid):
        tenant.decide(state, SetRetention(days=0))
