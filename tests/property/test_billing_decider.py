"""Property tests of the billing aggregate: every recording is idempotent, and the recorded
events alone rebuild the state (through JSON, as the log gives them back)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from commands import snapshots
from domain import billing
from domain.base import Command, Unchanged, format_time
from domain.events import EVENT_TYPES, DomainEvent
from domain.plans import FREE

BASE = datetime(2026, 1, 1, tzinfo=UTC)
hours = st.integers(0, 48).map(lambda h: format_time(BASE + timedelta(hours=h)))

commands = st.one_of(
    st.builds(
        billing.ChangePlan,
        plan=st.sampled_from(["free", "pro"]),
        terms=st.sampled_from([FREE.model_dump(mode="json"), {"name": "pro", "base_fee": 10}]),
        effective_at=hours,
    ),
    st.builds(
        billing.RecordQuotaThreshold,
        meter=st.sampled_from(["messages", "edits"]),
        threshold=st.sampled_from([80, 100]),
        period=st.sampled_from(["2026-01", "2026-02"]),
        used=st.integers(0, 100),
        limit=st.just(100),
    ),
    st.builds(billing.RecordStripeCustomer, customer_id=st.sampled_from(["cus_1", "cus_2"])),
    st.builds(billing.RecordUsageSynced, hour=hours, meter_events=st.integers(0, 10)),
    st.builds(
        billing.RecordStripeEvent,
        stripe_event_id=st.sampled_from(["evt_1", "evt_2", "evt_3"]),
        kind=st.sampled_from(["invoice_paid", "payment_failed", "subscription_changed"]),
        invoice=st.one_of(st.none(), st.builds(dict, id=st.sampled_from(["in_1", "in_2"]), status=st.just("paid"))),
        subscription=st.one_of(st.none(), st.builds(dict, status=st.sampled_from(["active", "past_due"]))),
    ),
)


def through_log(event: DomainEvent) -> DomainEvent:
    return EVENT_TYPES[event.type].model_validate(event.model_dump(mode="json"))


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(commands, max_size=30))
def test_replay_equals_incremental_and_repeats_record_nothing(steps: list[Command]) -> None:
    state, recorded = billing.BillingState(), []
    for command in steps:
        decision = billing.decide(state, command)
        if isinstance(decision, Unchanged):
            assert 1 <= decision.seq <= state.version
            continue
        for event in decision:
            billing.evolve(state, event)
            recorded.append(event)
        before = copy.deepcopy(state)
        assert isinstance(billing.decide(state, command), Unchanged)  # the same command again: nothing new
        assert state == before
    replayed = billing.BillingState()
    for event in recorded:
        billing.evolve(replayed, through_log(event))
    assert replayed == state
    assert snapshots.decode(billing.BillingState, snapshots.encode(state)) == state


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(commands, max_size=30))
def test_synced_progress_only_moves_forward_and_the_first_customer_stays(steps: list[Command]) -> None:
    state = billing.BillingState()
    first_customer = None
    for command in steps:
        before = state.synced_through
        decision = billing.decide(state, command)
        if not isinstance(decision, Unchanged):
            for event in decision:
                billing.evolve(state, event)
        if before is not None:
            assert state.synced_through is not None and state.synced_through >= before
        if first_customer is None:
            first_customer = state.customer_id
        assert state.customer_id == first_customer
