"""Quotas on the write path: a hard-capped meter at its limit refuses further writes of its kind.

The check must cost a write almost nothing, so each node keeps, per tenant, what the usage
read model said at most ``ttl`` seconds ago plus what this node itself admitted since: a
dictionary lookup and a comparison on the hot path, one read-model query per tenant per
``ttl``. The view lags the truth by the usage projection (the meters' flush and the
projector) and by other nodes' writes within ``ttl``, so a tenant can get past its cap by what
the whole cluster admits in that window; docs/quotas.md has the numbers. Reads are never
checked, and one tenant's quota never touches another's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from commands.billing import Billing, billing_stream
from domain import billing
from domain.base import format_time
from domain.plans import Period, included, limits, period_of

THRESHOLDS = (80, 100)
log = structlog.get_logger("caas.quotas")


class QuotaExceeded(Exception):
    """A capped meter is at its limit for the period."""

    def __init__(self, meter: str, limit: int, used: int, resets_at: str) -> None:
        super().__init__(
            f"the {meter} quota of this billing period ({limit}) is used up; it resets at {resets_at}, "
            "or change the tenant's plan"
        )
        self.meter, self.limit, self.used, self.resets_at = meter, limit, used, resets_at


class PaymentRequired(Exception):
    """The tenant is past due and the deployment lets past-due tenants only read."""


@dataclass(slots=True)
class _View:
    period: Period
    expires: float
    limits: dict[str, int]
    included: dict[str, int]
    used: dict[str, int]
    past_due: bool
    admitted: dict[str, int] = field(default_factory=dict)  # by this node since the read


class Quotas:
    """Per-tenant views of usage against the plan's caps, refreshed every ``ttl`` seconds."""

    def __init__(
        self,
        billing_service: Billing,
        *,
        ttl: float,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float],
        past_due_read_only: bool = False,
    ) -> None:
        self.billing = billing_service
        self.ttl = ttl
        self.clock = clock
        self.monotonic = monotonic
        self.past_due_read_only = past_due_read_only
        self._views: dict[str, _View] = {}
        self._refreshing: dict[str, asyncio.Future[_View]] = {}
        self._announced: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def admit(self, tenant_id: str, meters: Sequence[str]) -> None:
        """Count one write of each of ``meters``, or raise :class:`QuotaExceeded` (nothing counted)
        if one of them is capped and used up, :class:`PaymentRequired` if the tenant may only read."""
        view = await self._view(tenant_id)
        if view.past_due and self.past_due_read_only:
            raise PaymentRequired("the tenant's payment is past due: it can read but not write until it is paid")
        for meter in meters:
            limit = view.limits.get(meter)
            if limit is None:
                continue
            used = view.used.get(meter, 0) + view.admitted.get(meter, 0)
            if used >= limit:
                self._announce(tenant_id, view, meter, used)
                raise QuotaExceeded(meter, limit, used, format_time(view.period.end))
        for meter in meters:
            view.admitted[meter] = view.admitted.get(meter, 0) + 1

    def forget(self, tenant_id: str) -> None:
        """Read the tenant's plan and usage again at its next write (its plan changed)."""
        self._views.pop(tenant_id, None)

    async def _view(self, tenant_id: str) -> _View:
        view = self._views.get(tenant_id)
        now = self.monotonic()
        if view is not None and view.expires > now and view.period.end > self.clock():
            return view
        running = self._refreshing.get(tenant_id)
        if running is None:  # one read per tenant, however many writes wait for it
            running = self._refreshing[tenant_id] = asyncio.ensure_future(self._read(tenant_id))
            running.add_done_callback(lambda _: self._refreshing.pop(tenant_id, None))
        return await asyncio.shield(running)

    async def _read(self, tenant_id: str) -> _View:
        period = period_of(self.clock())
        state: billing.BillingState = await self.billing.commands.state(tenant_id, billing_stream(tenant_id))
        history = state.plan_history(self.billing.catalog.default_plan, await self.billing.since(tenant_id))
        used = await self.billing.usage.totals(tenant_id, period.start, period.end)
        view = _View(
            period,
            self.monotonic() + self.ttl,
            limits(history, period),
            included(history, period),
            used,
            state.payment_status == "past_due",
        )
        self._views[tenant_id] = view
        for meter in view.included:
            self._announce(tenant_id, view, meter, used.get(meter, 0))
        return view

    def _announce(self, tenant_id: str, view: _View, meter: str, used: int) -> None:
        """Record each threshold ``used`` has reached, once per period (the decider drops a
        repeat from another node; this node asks at most once)."""
        quantity = view.included.get(meter, 0)
        if quantity <= 0:
            return
        for threshold in THRESHOLDS:
            key = f"{tenant_id}/{billing.threshold_key(view.period.label, meter, threshold)}"
            if used * 100 < threshold * quantity or key in self._announced:
                continue
            self._announced.add(key)
            command = billing.RecordQuotaThreshold(
                meter=meter, threshold=threshold, period=view.period.label, used=used, limit=quantity
            )
            task = asyncio.ensure_future(self._record(tenant_id, command, key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _record(self, tenant_id: str, command: billing.RecordQuotaThreshold, key: str) -> None:
        try:
            await self.billing.record(tenant_id, command, "system:quotas")
        except Exception as exc:  # asked again at the next refresh
            self._announced.discard(key)
            log.warning("quota_threshold_not_recorded", tenant_id=tenant_id, meter=command.meter, error=repr(exc))

    async def close(self) -> None:
        for task in list(self._tasks):
            await asyncio.gather(task, return_exceptions=True)
