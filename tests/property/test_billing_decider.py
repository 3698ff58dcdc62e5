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
    st.builds(
        billing.PrepareMeterEvents,
        hour=hours,
        items=st.lists(
            st.builds(
                dict,
                meter=st.sampled_from(["messages", "edits"]),
                value=st.integers(1, 50),
                n=st.integers(0, 3),
                identifier=st.sampled_from(["caas_a", "caas_b"]),
            ),
            min_size=1,
            max_size=2,
            unique_by=lambda i: i["meter"],
        ),
        prepared_at=hours,
    ),
    st.builds(billing.ConfirmMeterEvents, hour=hours),
    st.builds(billing.AbandonMeterEvents, hour=hours, reason=st.just("too old")),
    st.builds(billing.MoveSyncWindow, floor=hours, skipped=st.dictionaries(st.just("messages"), st.integers(0, 9))),
    st.builds(
        billing.RecordStripeEvent,
        stripe_event_id=st.sampled_from(["evt_1", "evt_2", "evt_3"]),
        kind=st.sampled_from(["invoice_paid", "payment_failed", "subscription_changed"]),
        created=st.integers(0, 5),
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
        try:
            decision = billing.decide(state, command)
        except billing.SyncInProgress:
            assert state.pending is not None and isinstance(command, billing.PrepareMeterEvents)
            continue
        except billing.NothingPending:
            assert state.synced_seq == 0
            continue
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


def apply(state: billing.BillingState, command: Command) -> None:
    try:
        decision = billing.decide(state, command)
    except (billing.SyncInProgress, billing.NothingPending):
        return
    if not isinstance(decision, Unchanged):
        for event in decision:
            billing.evolve(state, event)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(commands, max_size=40))
def test_what_was_sent_only_grows_by_what_was_prepared_and_the_first_customer_stays(steps: list[Command]) -> None:
    state = billing.BillingState()
    first_customer = None
    for command in steps:
        before = copy.deepcopy(state)
        apply(state, command)
        if before.pending is not None and state.pending is None:  # confirmed or abandoned: counted once
            for item in before.pending.items:
                hour, meter = before.pending.hour, item["meter"]
                if state.floor is None or hour >= state.floor:
                    assert state.sent[hour][meter] == before.sent.get(hour, {}).get(meter, 0) + item["value"]
                    assert state.events[hour][meter] >= item["n"] + 1
        elif not isinstance(command, billing.MoveSyncWindow):
            assert state.sent == before.sent  # nothing else changes what was sent
        if before.pending is not None and state.pending is not None:
            assert state.pending == before.pending  # a pending batch is never replaced
        if before.floor is not None:
            assert state.floor is not None and state.floor >= before.floor
            assert all(hour >= state.floor for hour in state.sent)
        if first_customer is None:
            first_customer = state.customer_id
        assert state.customer_id == first_customer


webhooks = st.lists(
    st.tuples(
        st.sampled_from(["invoice_paid", "payment_failed", "subscription_changed"]),
        st.sampled_from(["in_1", "in_2"]),
        st.sampled_from(["active", "past_due", "canceled", "unpaid"]),
    ),
    max_size=8,
)


def stripe_command(n: int, kind: str, invoice: str, status: str) -> billing.RecordStripeEvent:
    is_invoice = kind != "subscription_changed"
    return billing.RecordStripeEvent(
        stripe_event_id=f"evt_{n}",
        kind=kind,  # type: ignore[arg-type]
        created=1000 + n,  # Stripe's order: the list's
        invoice={"id": invoice, "status": "x"} if is_invoice else None,
        subscription=None if is_invoice else {"id": "sub_1", "status": status},
    )


@settings(max_examples=200, deadline=None)
@given(events=webhooks, order=st.randoms(use_true_random=False))
def test_standing_follows_stripes_order_not_the_arrival_order(
    events: list[tuple[str, str, str]], order: object
) -> None:
    commands_ = [stripe_command(n, *e) for n, e in enumerate(events)]
    in_order, shuffled = billing.BillingState(), billing.BillingState()
    for command in commands_:
        apply(in_order, command)
    arrival = list(commands_)
    order.shuffle(arrival)  # type: ignore[attr-defined]
    for command in arrival:
        apply(shuffled, command)
    assert shuffled.payment_status == in_order.payment_status
    assert shuffled.invoices == in_order.invoices and shuffled.subscription == in_order.subscription
    # the reference: an invoice whose last word (by created) is a failed payment, and never paid,
    # or a subscription whose latest status is past due, makes the tenant past due
    failed = {}
    for kind, invoice, _ in events:
        if kind == "invoice_paid":
            failed[invoice] = False
        elif kind == "payment_failed" and failed.get(invoice) is not False:
            failed[invoice] = True
    subscription = [status for kind, _, status in events if kind == "subscription_changed"]
    late = subscription[-1] in billing.PAST_DUE_STATUSES if subscription else False
    assert in_order.payment_status == ("past_due" if any(failed.values()) or late else "ok")


def test_a_cancelled_subscription_does_not_clear_an_unpaid_invoice() -> None:
    state = billing.BillingState()
    apply(state, stripe_command(1, "payment_failed", "in_1", ""))
    apply(state, stripe_command(2, "subscription_changed", "", "canceled"))
    assert state.payment_status == "past_due"
    apply(state, stripe_command(3, "invoice_paid", "in_1", ""))
    assert state.payment_status == "ok"
    apply(state, stripe_command(0, "payment_failed", "in_1", ""))  # a late failure of a paid invoice
    assert state.payment_status == "ok"


@settings(max_examples=100, deadline=None)
@given(first=st.sampled_from(["free", "pro"]), then=st.sampled_from(["free", "pro"]))
def test_the_initial_plan_is_recorded_once_and_never_after_a_change(first: str, then: str) -> None:
    state = billing.BillingState()
    initial = billing.ChangePlan(plan=first, terms={"name": first}, effective_at=format_time(BASE), initial=True)
    apply(state, initial)
    assert [p.plan for p in state.plans] == [first]
    assert isinstance(billing.decide(state, initial.model_copy(update={"plan": then})), Unchanged)
    apply(state, billing.ChangePlan(plan=then, terms={"name": then, "x": 1}, effective_at=format_time(BASE)))
    assert isinstance(billing.decide(state, initial), Unchanged)
    assert len(state.plans) == 2
