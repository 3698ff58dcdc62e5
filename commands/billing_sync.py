"""``caas billing sync``: report every closed hour of usage to Stripe, each meter hour once.

Per tenant: create its Stripe customer if it has none (with an idempotency key derived from
the tenant, then recorded as ``StripeCustomerCreated``, so it is created once); then, from
the hour after the last one recorded as synced up to the last closed hour, send each hour's
meters as Billing Meter Events and record ``UsageHourSynced`` after each hour's batch. A
meter event's ``identifier`` is a digest of (tenant, meter, hour), so the one hour that can be
sent twice, the hour in flight when a sync was killed, is dropped by Stripe the second time;
an hour recorded as synced is never sent again.

An hour is *closed* ``settle`` after it ends: by then the nodes have flushed their counters
and the usage projection has applied them (docs/stripe.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from commands.billing import BEGINNING, Billing, PaymentProvider
from domain import billing
from domain.base import format_time
from domain.plans import HOUR, hour_of

ACTOR = "system:billing-sync"
# Meters whose period total is the sum of their hours: what a Stripe meter with the ``sum``
# aggregation can bill. The others (peak connections, monthly active users, bytes stored) are
# priced by CAAS's preview but not reported hour by hour.
SUMMED_METERS = ("messages", "replies", "edits", "deliveries", "api_reads", "api_writes", "connection_minutes")

log = structlog.get_logger("caas.billing")


def identifier(tenant_id: str, meter: str, hour: datetime) -> str:
    """The meter event's identifier: the same for the same (tenant, meter, hour), always."""
    digest = hashlib.sha256(f"{tenant_id}\n{meter}\n{format_time(hour)}".encode()).hexdigest()
    return f"caas_{digest[:40]}"


@dataclass(slots=True)
class SyncReport:
    tenants: int = 0
    customers_created: int = 0
    hours: int = 0
    meter_events: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "tenants": self.tenants,
            "customers_created": self.customers_created,
            "hours": self.hours,
            "meter_events": self.meter_events,
        }


class BillingSync:
    """Sends usage to a :class:`PaymentProvider` and records how far it got."""

    def __init__(
        self, billing_service: Billing, provider: PaymentProvider, *, settle: timedelta, prefix: str = "caas_"
    ) -> None:
        self.billing = billing_service
        self.provider = provider
        self.settle = settle
        self.prefix = prefix

    async def run(self, tenants: AsyncIterable[tuple[str, str]]) -> SyncReport:
        """Sync every ``(tenant_id, name)``; a tenant that fails is logged and skipped (the next
        run resumes it where its record says)."""
        report = SyncReport()
        async for tenant_id, name in tenants:
            report.tenants += 1
            try:
                await self.tenant(tenant_id, name, report)
            except Exception as exc:
                log.warning("billing_sync_failed", tenant_id=tenant_id, error=repr(exc))
        return report

    async def tenant(self, tenant_id: str, name: str, report: SyncReport) -> None:
        state = await self.billing.state(tenant_id)
        customer = state.customer_id
        if customer is None:
            created = await self.provider.create_customer(tenant_id, name, f"caas-customer-{tenant_id}")
            await self.billing.record(tenant_id, billing.RecordStripeCustomer(customer_id=created), ACTOR)
            customer = (await self.billing.state(tenant_id)).customer_id or created
            report.customers_created += 1
        closed = hour_of(self.billing.clock() - self.settle)  # hours starting before it have ended and settled
        start = datetime.fromisoformat(state.synced_through) if state.synced_through else BEGINNING
        if start >= closed:
            return
        buckets = await self.billing.usage.buckets(tenant_id, start, closed)
        last = None
        for hour, values in _by_hour(buckets).items():
            for meter, value in values.items():
                event = f"{self.prefix}{meter}"
                await self.provider.send_meter_event(event, customer, value, identifier(tenant_id, meter, hour), hour)
            await self.billing.record(
                tenant_id, billing.RecordUsageSynced(hour=format_time(hour), meter_events=len(values)), ACTOR
            )
            report.hours += 1
            report.meter_events += len(values)
            last = hour
        if last is None or last < closed - HOUR:  # the empty hours since are done too
            await self.billing.record(
                tenant_id, billing.RecordUsageSynced(hour=format_time(closed - HOUR), meter_events=0), ACTOR
            )


def _by_hour(buckets: Mapping[str, Mapping[datetime, int]]) -> dict[datetime, dict[str, int]]:
    """Hour -> {meter: value} of the summed meters, hours in order, zero values left out."""
    hours: dict[datetime, dict[str, int]] = {}
    for meter in SUMMED_METERS:
        for hour, value in (buckets.get(meter) or {}).items():
            if value > 0:
                hours.setdefault(hour, {})[meter] = value
    return {hour: dict(sorted(hours[hour].items())) for hour in sorted(hours)}
