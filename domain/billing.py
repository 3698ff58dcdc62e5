"""The billing aggregate: one stream per tenant (``billing:<tenant_id>``).

It holds everything billing must remember, as events: the tenant's plan history, quota
thresholds already announced this period, its Stripe customer, how far usage has been sent to
Stripe, and what Stripe told us (invoices, payment standing, subscription). Each recording is
idempotent: a repeat (the same hour synced again, a webhook Stripe delivers twice, a threshold
crossed again in the same period) is :class:`Unchanged`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from domain import errors
from domain.base import Command, Decision, Unchanged, format_time
from domain.events import (
    DomainEvent,
    MeterEventsAbandoned,
    MeterEventsPrepared,
    PlanChanged,
    QuotaThresholdCrossed,
    StripeCustomerCreated,
    StripeEventRecorded,
    UsageHourSynced,
    UsageWindowMoved,
)
from domain.plans import GAUGE_METERS, Plan, PlanChange

StripeKind = Literal["invoice_paid", "payment_failed", "subscription_changed"]
# Subscription statuses (Stripe's) that make a tenant past due, whatever its invoices say.
PAST_DUE_STATUSES = frozenset({"past_due", "unpaid", "incomplete_expired"})
# Sent meter hours are kept this long behind the newest one: Stripe refuses meter events older
# than 35 days, and the sync's window (34 days, moved by a day at a time) never reads further back.
SENT_RETENTION = timedelta(days=36)


class ChangePlan(Command):
    """Put the tenant on ``plan`` (with its ``terms`` as they are now) from ``effective_at``.
    ``initial``: record the plan the tenant has been on since its start (the deployment's
    default), only if no plan was ever recorded, so later edits of the plans file or of
    ``default`` change nothing already billed."""

    plan: str
    terms: dict[str, Any]
    effective_at: str
    initial: bool = False


class RecordQuotaThreshold(Command):
    meter: str
    threshold: int
    period: str
    used: int
    limit: int


class RecordStripeCustomer(Command):
    customer_id: str


class PrepareMeterEvents(Command):
    hour: str
    items: list[dict[str, Any]]
    prepared_at: str


class ConfirmMeterEvents(Command):
    hour: str


class AbandonMeterEvents(Command):
    hour: str
    reason: str


class MoveSyncWindow(Command):
    floor: str
    skipped: dict[str, int]


class RecordStripeEvent(Command):
    stripe_event_id: str
    kind: StripeKind
    created: int = 0
    invoice: dict[str, Any] | None = None
    subscription: dict[str, Any] | None = None


class SyncInProgress(errors.Conflict):
    """Meter events are prepared and not yet confirmed: confirm or abandon them first."""

    rule = "meter_events_pending"


class NothingPending(errors.Conflict):
    """No meter events are pending to confirm or abandon."""

    rule = "no_meter_events_pending"


@dataclass(slots=True)
class PlanRecord:
    plan: str
    terms: dict[str, Any]
    effective_at: str
    seq: int


@dataclass(slots=True)
class Pending:
    """Meter events recorded as about to be sent and not yet confirmed."""

    hour: str
    items: list[dict[str, Any]]
    prepared_at: str
    seq: int


@dataclass(slots=True)
class BillingState:
    version: int = 0
    plans: list[PlanRecord] = field(default_factory=list)
    thresholds: dict[str, int] = field(default_factory=dict)  # "<period>/<meter>/<threshold>" -> seq
    customer_id: str | None = None
    customer_seq: int = 0
    # hour -> meter -> value sent in all (a gauge's: the period-to-date value of its last event at the hour)
    sent: dict[str, dict[str, int]] = field(default_factory=dict)
    events: dict[str, dict[str, int]] = field(default_factory=dict)  # hour -> meter -> meter events sent
    pending: Pending | None = None
    synced_seq: int = 0  # of the last confirmation or abandonment
    floor: str | None = None  # hours before it are out of the sync
    floor_seq: int = 0
    stripe_events: dict[str, int] = field(default_factory=dict)  # Stripe event id -> seq
    payment_status: str = "ok"
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)  # invoice id -> latest by ``created``
    invoice_created: dict[str, int] = field(default_factory=dict)  # invoice id -> ``created`` of what we hold
    subscription: dict[str, Any] | None = None
    subscription_created: int = 0

    @property
    def exists(self) -> bool:
        return self.version > 0

    def plan_history(self, default: Plan, since: datetime) -> list[PlanChange]:
        """The plans in force over time: ``default`` from ``since`` until the first recorded
        change (once the initial plan is recorded, ``default`` no longer matters)."""
        changes = [PlanChange(since, default)]
        changes += [
            PlanChange(datetime.fromisoformat(r.effective_at), Plan.model_validate(r.terms)) for r in self.plans
        ]
        return changes


def threshold_key(period: str, meter: str, threshold: int) -> str:
    return f"{period}/{meter}/{threshold}"


def decide(state: BillingState, command: Command) -> Decision:
    match command:
        case ChangePlan():
            current = state.plans[-1] if state.plans else None
            if command.initial and current is not None:
                return Unchanged(state.plans[0].seq)
            if current is not None and current.plan == command.plan and current.terms == command.terms:
                return Unchanged(current.seq)
            return [PlanChanged(plan=command.plan, terms=command.terms, effective_at=command.effective_at)]
        case RecordQuotaThreshold():
            seq = state.thresholds.get(threshold_key(command.period, command.meter, command.threshold))
            if seq is not None:
                return Unchanged(seq)
            return [QuotaThresholdCrossed(**command.model_dump())]
        case RecordStripeCustomer():
            if state.customer_id is not None:  # the first customer stays the tenant's
                return Unchanged(state.customer_seq)
            return [StripeCustomerCreated(customer_id=command.customer_id)]
        case PrepareMeterEvents():
            if state.pending is not None:
                if state.pending.hour == command.hour and state.pending.items == command.items:
                    return Unchanged(state.pending.seq)
                raise SyncInProgress(f"meter events of {state.pending.hour} are pending", hour=state.pending.hour)
            return [MeterEventsPrepared(hour=command.hour, items=command.items, prepared_at=command.prepared_at)]
        case ConfirmMeterEvents():
            if state.pending is None or state.pending.hour != command.hour:
                return _settled(state, command.hour)
            return [UsageHourSynced(hour=command.hour, meter_events=len(state.pending.items))]
        case AbandonMeterEvents():
            if state.pending is None or state.pending.hour != command.hour:
                return _settled(state, command.hour)
            return [MeterEventsAbandoned(hour=command.hour, reason=command.reason)]
        case MoveSyncWindow():
            if state.floor is not None and command.floor <= state.floor:
                return Unchanged(state.floor_seq)
            return [UsageWindowMoved(floor=command.floor, skipped=command.skipped)]
        case RecordStripeEvent():
            seen = state.stripe_events.get(command.stripe_event_id)
            if seen is not None:
                return Unchanged(seen)
            after = copy.deepcopy(state)
            _apply_stripe(after, command.kind, command.created, command.invoice, command.subscription)
            return [StripeEventRecorded(**command.model_dump(), status=standing(after))]
    raise TypeError(f"not a billing command: {type(command).__name__}")


def _settled(state: BillingState, hour: str) -> Decision:
    """A confirmation or abandonment with nothing of ``hour`` pending: the repeat of one already
    recorded, or a mistake."""
    if state.synced_seq:
        return Unchanged(state.synced_seq)
    raise NothingPending(f"no meter events of {hour} are pending", hour=hour)


def _apply_stripe(
    state: BillingState,
    kind: str,
    created: int,
    invoice: dict[str, Any] | None,
    subscription: dict[str, Any] | None,
) -> None:
    """What a webhook says, by Stripe's ``created``, not by arrival: an older event about an
    invoice or the subscription than the one held changes nothing, and a paid invoice stays paid."""
    if invoice is not None and invoice.get("id"):
        invoice_id = str(invoice["id"])
        held = state.invoices.get(invoice_id)
        held_paid = held is not None and held.get("outcome") == "paid"
        paid = kind == "invoice_paid"
        if held is None or paid > held_paid or (paid == held_paid and created >= state.invoice_created[invoice_id]):
            outcome = "paid" if paid else "failed" if kind == "payment_failed" else None
            state.invoices[invoice_id] = {**invoice, "outcome": outcome}
            state.invoice_created[invoice_id] = created
    if subscription is not None and created >= state.subscription_created:
        state.subscription, state.subscription_created = dict(subscription), created


def standing(state: BillingState) -> Literal["ok", "past_due"]:
    """Past due while an invoice's last word is a failed payment, or the subscription (its
    latest state) is past due; a cancelled subscription does not clear an unpaid invoice."""
    if any(i.get("outcome") == "failed" for i in state.invoices.values()):
        return "past_due"
    status = (state.subscription or {}).get("status")
    return "past_due" if status in PAST_DUE_STATUSES else "ok"


def evolve(state: BillingState, event: DomainEvent) -> BillingState:
    """Apply one recorded event. Updates ``state`` in place and returns it."""
    state.version += 1
    match event:
        case PlanChanged():
            state.plans.append(PlanRecord(event.plan, dict(event.terms), event.effective_at, state.version))
        case QuotaThresholdCrossed():
            state.thresholds[threshold_key(event.period, event.meter, event.threshold)] = state.version
        case StripeCustomerCreated():
            state.customer_id, state.customer_seq = event.customer_id, state.version
        case MeterEventsPrepared():
            state.pending = Pending(event.hour, [dict(i) for i in event.items], event.prepared_at, state.version)
        case UsageHourSynced() | MeterEventsAbandoned():
            # a batch of an hour the window has since left is not kept: that hour's record is gone
            if state.pending is not None and (state.floor is None or state.pending.hour >= state.floor):
                _count_sent(state, state.pending)
            state.pending, state.synced_seq = None, state.version
        case UsageWindowMoved():
            state.floor, state.floor_seq = event.floor, state.version
            for hour in [h for h in state.sent if h < event.floor]:
                del state.sent[hour]
                state.events.pop(hour, None)
        case StripeEventRecorded():
            state.stripe_events[event.stripe_event_id] = state.version
            _apply_stripe(state, event.kind, event.created, event.invoice, event.subscription)
            state.payment_status = standing(state)
    return state


def _count_sent(state: BillingState, pending: Pending) -> None:
    sent, counts = state.sent.setdefault(pending.hour, {}), state.events.setdefault(pending.hour, {})
    for item in pending.items:
        meter = str(item["meter"])
        value = int(item["value"])
        sent[meter] = value if meter in GAUGE_METERS else sent.get(meter, 0) + value
        counts[meter] = max(counts.get(meter, 0), int(item["n"]) + 1)
    oldest = format_time(datetime.fromisoformat(pending.hour) - SENT_RETENTION)
    for hour in [h for h in state.sent if h < oldest]:  # Stripe would refuse them anyway
        del state.sent[hour]
        state.events.pop(hour, None)
