"""Billing as the API and the command line use it: plans, the invoice preview, what Stripe told
us. Everything it remembers is in the tenant's billing stream (``domain/billing.py``).

Ports: :class:`UsageReader` (the hourly usage read model), and Stripe's two sides
(``adapters/stripe_billing.py``): :class:`UsageReporter` and :class:`WebhookVerifier`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from commands.service import CommandEnvelope, Commands, Outcome
from domain import billing, errors
from domain.base import Command, format_time
from domain.events import stream_name
from domain.plans import BILLED_METERS, Catalog, PlanChange, period_of, preview

# The default plan is in force from the beginning: a tenant never given a plan is on it.
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


class UsageReader(Protocol):
    """The usage read model: what each meter counted, per hour and per billing period."""

    async def totals(self, tenant_id: str, start: datetime, end: datetime) -> dict[str, int]:
        """Per meter, what ``[start, end)`` sums to as a billing period bills it."""
        ...

    async def buckets(self, tenant_id: str, start: datetime, end: datetime) -> dict[str, dict[datetime, int]]:
        """Per meter, each hour's value (hour start, UTC) in ``[start, end)``; hours without usage may
        be absent. ``stored_bytes`` (a level) is listed at each hour it changed in and at the first
        hour of the range (``domain.plans.gauge_value``)."""
        ...

    async def counters(self, tenant_id: str, start: datetime, end: datetime, meters: Sequence[str]) -> dict[str, int]:
        """What the quota check compares, for ``meters`` over ``[start, end)``: a summed meter's
        hours summed, ``peak_connections`` the highest sample, ``stored_bytes`` the level now
        (``mau``: :meth:`active_users`). No message sizes, no users."""
        ...

    async def active_users(self, tenant_id: str, month: str) -> set[str]:
        """The users active in the calendar month ``YYYY-MM`` (what ``mau`` counts)."""
        ...


class UsageReporter(abc.ABC):
    """Where usage is billed (Stripe's customers and Billing Meter Events). Calls may be
    retried: each carries what makes a repeat harmless at the provider."""

    @abc.abstractmethod
    async def create_customer(self, tenant_id: str, name: str, idempotency_key: str) -> str:
        """Create the tenant's customer; returns its id."""

    @abc.abstractmethod
    async def send_meter_event(
        self, event_name: str, customer_id: str, value: int, identifier: str, timestamp: datetime
    ) -> None:
        """Report ``value`` units of ``event_name`` for ``customer_id`` at ``timestamp``;
        the provider drops a second event with the same ``identifier``."""


class WebhookVerifier(abc.ABC):
    """Checks that a webhook comes from the provider."""

    @abc.abstractmethod
    def verify(self, payload: bytes, signature: str) -> dict[str, Any]:
        """The webhook event (a JSON object), if ``signature`` (``Stripe-Signature``) signs
        ``payload`` and is fresh; raises :class:`BadSignature` otherwise."""


class BadSignature(Exception):
    """A webhook whose signature is missing, wrong or too old; nothing is recorded."""


class BadPayload(Exception):
    """A validly signed webhook whose body is not a JSON object; nothing is recorded."""


class UnknownPlan(errors.NotFound):
    rule = "plan_not_found"


def billing_stream(tenant_id: str) -> str:
    return stream_name("billing", tenant_id)


class Billing:
    """Plans, previews and Stripe's reports for every tenant, over the command path."""

    def __init__(self, commands: Commands, usage: UsageReader, catalog: Catalog, clock: Callable[[], datetime]) -> None:
        self.commands = commands
        self.usage = usage
        self.catalog = catalog
        self.clock = clock

    async def state(self, tenant_id: str) -> billing.BillingState:
        found: billing.BillingState = await self.commands.state(tenant_id, billing_stream(tenant_id))
        return found

    async def history(self, tenant_id: str, state: billing.BillingState | None = None) -> list[PlanChange]:
        """The tenant's plans over time (``state``: its billing state, if already read)."""
        state = await self.state(tenant_id) if state is None else state
        return state.plan_history(self.catalog.default_plan, await self.since(tenant_id))

    async def pin_initial_plan(self, tenant_id: str) -> None:
        """Record the plan a tenant never given one is on (the deployment's default, with its
        terms as they are now) from the tenant's start, if no plan is recorded yet; from then
        on, editing the plans file or its ``default`` changes nothing the tenant was billed."""
        if (await self.state(tenant_id)).plans:
            return
        plan = self.catalog.default_plan
        since = format_time(await self.since(tenant_id))
        command = billing.ChangePlan(
            plan=plan.name, terms=plan.model_dump(mode="json"), effective_at=since, initial=True
        )
        await self.record(tenant_id, command, "system:billing")

    async def since(self, tenant_id: str) -> datetime:
        """When the tenant started: its plan history begins there (before billing: the beginning)."""
        registered = (await self.commands.tenant(tenant_id)).registered_at
        return datetime.fromisoformat(registered) if registered else BEGINNING

    async def record(self, tenant_id: str, command: Command, actor: str) -> Outcome:
        return await self.commands.execute(CommandEnvelope(tenant_id, billing_stream(tenant_id), command, actor))

    async def change_plan(self, tenant_id: str, plan: str, actor: str) -> Outcome:
        """Put the tenant on ``plan`` from now (how a change mid-period is billed: docs/plans.md)."""
        if not (await self.commands.tenant(tenant_id)).exists:
            raise errors.TenantNotFound(f"no tenant {tenant_id!r}")
        found = self.catalog.plans.get(plan)
        if found is None:
            raise UnknownPlan(f"no plan {plan!r}; plans: {', '.join(self.catalog.plans)}", plan=plan)
        await self.pin_initial_plan(tenant_id)  # what the tenant was on until now stays as it was
        command = billing.ChangePlan(
            plan=plan, terms=found.model_dump(mode="json"), effective_at=format_time(self.clock())
        )
        return await self.record(tenant_id, command, actor)

    async def preview(self, tenant_id: str) -> dict[str, Any]:
        """The current period's bill so far: the usage until now, priced as if the plan in force
        stays until the period ends."""
        period = period_of(self.clock())
        hourly = await self.usage.buckets(tenant_id, period.start, period.end)
        usage = {meter: hourly.get(meter, {}) for meter in BILLED_METERS}  # what Stripe is sent, hour by hour
        bill = preview(await self.history(tenant_id), usage, period)
        bill["period"] = {k: format_time(v) if isinstance(v, datetime) else v for k, v in bill["period"].items()}
        for line in bill["lines"]:
            line["from"], line["to"] = format_time(line["from"]), format_time(line["to"])
        return bill

    async def invoices(self, tenant_id: str) -> dict[str, Any]:
        state = await self.state(tenant_id)
        invoices = sorted(state.invoices.values(), key=lambda i: (i.get("period_start") or 0, i["id"]), reverse=True)
        return {
            "customer_id": state.customer_id,
            "payment_status": state.payment_status,
            "subscription": state.subscription,
            "invoices": invoices,
        }
