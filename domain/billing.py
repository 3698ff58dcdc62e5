"""The billing aggregate: one stream per tenant (``billing:<tenant_id>``).

It holds everything billing must remember, as events: the tenant's plan history, quota
thresholds already announced this period, its Stripe customer, how far usage has been sent to
Stripe, and what Stripe told us (invoices, payment standing, subscription). Each recording is
idempotent: a repeat (the same hour synced again, a webhook Stripe delivers twice, a threshold
crossed again in the same period) is :class:`Unchanged`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from domain.base import Command, Decision, Unchanged, format_time
from domain.events import (
    DomainEvent,
    PlanChanged,
    QuotaThresholdCrossed,
    StripeCustomerCreated,
    StripeEventRecorded,
    UsageHourSynced,
)
from domain.plans import HOUR, Plan, PlanChange

StripeKind = Literal["invoice_paid", "payment_failed", "subscription_changed"]
# Subscription statuses (Stripe's) that make a tenant past due; any other clears it.
PAST_DUE_STATUSES = frozenset({"past_due", "unpaid", "incomplete_expired"})


class ChangePlan(Command):
    plan: str
    terms: dict[str, Any]
    effective_at: str


class RecordQuotaThreshold(Command):
    meter: str
    threshold: int
    period: str
    used: int
    limit: int


class RecordStripeCustomer(Command):
    customer_id: str


class RecordUsageSynced(Command):
    hour: str
    meter_events: int


class RecordStripeEvent(Command):
    stripe_event_id: str
    kind: StripeKind
    invoice: dict[str, Any] | None = None
    subscription: dict[str, Any] | None = None


@dataclass(slots=True)
class PlanRecord:
    plan: str
    terms: dict[str, Any]
    effective_at: str
    seq: int


@dataclass(slots=True)
class BillingState:
    version: int = 0
    plans: list[PlanRecord] = field(default_factory=list)
    thresholds: dict[str, int] = field(default_factory=dict)  # "<period>/<meter>/<threshold>" -> seq
    customer_id: str | None = None
    customer_seq: int = 0
    synced_through: str | None = None  # the next hour to send (RFC 3339)
    synced_seq: int = 0
    stripe_events: dict[str, int] = field(default_factory=dict)  # Stripe event id -> seq
    payment_status: str = "ok"
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)  # invoice id -> latest
    subscription: dict[str, Any] | None = None

    @property
    def exists(self) -> bool:
        return self.version > 0

    def plan_history(self, default: Plan, since: datetime) -> list[PlanChange]:
        """The plans in force over time: ``default`` from ``since`` until the first change."""
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
        case RecordUsageSynced():
            if state.synced_through is not None and command.hour < state.synced_through:
                return Unchanged(state.synced_seq)
            return [UsageHourSynced(hour=command.hour, meter_events=command.meter_events)]
        case RecordStripeEvent():
            seen = state.stripe_events.get(command.stripe_event_id)
            if seen is not None:
                return Unchanged(seen)
            return [StripeEventRecorded(**command.model_dump(), status=_standing(state, command))]
    raise TypeError(f"not a billing command: {type(command).__name__}")


def _standing(state: BillingState, command: RecordStripeEvent) -> Literal["ok", "past_due"]:
    if command.kind == "invoice_paid":
        return "ok"
    if command.kind == "payment_failed":
        return "past_due"
    status = (command.subscription or {}).get("status")
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
        case UsageHourSynced():
            state.synced_through = format_time(datetime.fromisoformat(event.hour) + HOUR)
            state.synced_seq = state.version
        case StripeEventRecorded():
            state.stripe_events[event.stripe_event_id] = state.version
            state.payment_status = event.status
            if event.invoice is not None and event.invoice.get("id"):
                state.invoices[str(event.invoice["id"])] = dict(event.invoice)
            if event.subscription is not None:
                state.subscription = dict(event.subscription)
    return state
