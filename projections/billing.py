"""The billing read model: which tenant a Stripe customer belongs to.

Stripe's webhooks name a customer, not a tenant; this index answers the webhook endpoint.
It is the one document kept outside any tenant's scope (``PLATFORM``, a scope no tenant id
can take: tenant ids start with a letter or digit).

- ``stripe_customers/<customer_id>`` (scope ``PLATFORM``): ``tenant``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from domain.events import Event
from domain.plans import SUMMED_METERS, Period, gauge_value
from projections import usage
from projections.ports import Op, ReadStore

NAME = "billing"
COLLECTIONS = ("stripe_customers",)
PLATFORM = "_platform"


def project(event: Event) -> list[Op]:
    if event.type != "StripeCustomerCreated":
        return []
    customer = event.payload["customer_id"]
    return [Op("stripe_customers", PLATFORM, customer, event.position, set={"tenant": event.tenant_id})]


async def tenant_of(store: ReadStore, customer_id: str) -> str | None:
    doc = await store.get("stripe_customers", PLATFORM, customer_id)
    return str(doc["tenant"]) if doc is not None else None


class StoreUsage:
    """The :class:`~commands.billing.UsageReader` of a read store: the usage read model's queries."""

    def __init__(self, store: ReadStore) -> None:
        self.store = store

    async def totals(self, tenant_id: str, start: datetime, end: datetime) -> dict[str, int]:
        return await usage.period_totals(self.store, tenant_id, start, end)

    async def buckets(self, tenant_id: str, start: datetime, end: datetime) -> dict[str, dict[datetime, int]]:
        return await usage.billing_buckets(self.store, tenant_id, start, end)

    async def counters(self, tenant_id: str, start: datetime, end: datetime, meters: Sequence[str]) -> dict[str, int]:
        hourly = [m for m in meters if m in SUMMED_METERS or m == "peak_connections"]
        out: dict[str, int] = {}
        if hourly:  # one read of the period's hour documents
            hours = await usage.usage_buckets(self.store, tenant_id, start, end, hourly)
            for meter in hourly:
                values = hours.get(meter, {})
                out[meter] = (
                    gauge_value(meter, values, Period(start, end))
                    if meter not in SUMMED_METERS
                    else sum(values.values())
                )
        if "stored_bytes" in meters:  # the level now: the per-shard totals, nothing else
            out["stored_bytes"] = await usage.stored_bytes_now(self.store, tenant_id)
        return out

    async def active_users(self, tenant_id: str, month: str) -> set[str]:
        return await usage.active_users(self.store, tenant_id, month)
