"""``caas billing sync``: report every closed hour of usage to Stripe, and every later increase.

Per tenant: create its Stripe customer if it has none (with an idempotency key derived from
the tenant, then recorded as ``StripeCustomerCreated``, so it is created once). Then compare
the usage read model's hours in the sync window with what the billing stream says was sent,
and send each difference (:func:`increases`) as new meter events, hour by hour:

1. record ``MeterEventsPrepared`` (the exact events: meter, value, number, identifier);
2. send them; 3. record ``UsageHourSynced``.

A meter event's ``identifier`` is a digest of (tenant, meter, hour, n), ``n`` numbering that
meter hour's events: usage that reaches the read model after its hour was sent (a node's retried
flush, a usage worker that was down) goes out as event ``n + 1``, never lost, never merged into
an identifier Stripe already holds. A run killed between 1 and 3 leaves the events recorded:
the next run sends exactly the same ones again (Stripe drops a repeated identifier for 24 hours),
or, if they are older than :data:`RESEND_WITHIN`, records them abandoned and logs an error for an
operator: counting twice is worse than checking Stripe by hand.

The gauges (``mau``, ``peak_connections``, ``stored_bytes``) are not sums: Stripe bills them with
the ``last`` formula (the value of the period's last event), so what is sent for them is the
*period-to-date* value (:func:`gauge_reports`): at a closed hour, the month's distinct active users
so far, the peak so far, the high-water mark of the stored bytes so far — only when it grew past
what was sent for that period, and never at an hour before the last one sent for it, so the
events of a gauge in a period rise in value as they rise in time (and the event numbered ``n`` of
a meter hour is stamped ``n`` seconds into the hour: two events never share a timestamp). The
last event of a period carries its value, whichever order Stripe takes "last" in.

The window is ``[max(tenant's start, now - WINDOW), closed)``: Stripe refuses meter events more
than 35 days old, so hours leaving the window with usage never sent are recorded as skipped
(``UsageWindowMoved``) and logged, and the sync goes on with the rest. An hour is *closed*
``settle`` after it ends; the caller also checks the usage projection caught up with the log.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from commands.billing import Billing, UsageReporter
from domain import billing
from domain.base import format_time
from domain.plans import GAUGE_METERS, HOUR, SUMMED_METERS, gauge_value, hour_of, period_of

ACTOR = "system:billing-sync"
WINDOW = timedelta(days=34)  # a day inside Stripe's 35
RESEND_WITHIN = timedelta(hours=23)  # an hour inside Stripe's 24 of identifier deduplication

log = structlog.get_logger("caas.billing")


def identifier(tenant_id: str, meter: str, hour: datetime, n: int) -> str:
    """The meter event's identifier: one per (tenant, meter, hour, n), always the same."""
    digest = hashlib.sha256(f"{tenant_id}\n{meter}\n{format_time(hour)}\n{n}".encode()).hexdigest()
    return f"caas_{digest[:40]}"


def window_floor(since: datetime, now: datetime) -> datetime:
    """The first hour the sync may still send: the tenant's start, at most ``WINDOW`` ago."""
    return max(hour_of(since), hour_of(now - WINDOW))


def increases(
    usage: Mapping[str, Mapping[datetime, int]], sent: Mapping[str, Mapping[str, int]]
) -> dict[datetime, dict[str, int]]:
    """Hour -> {meter: usage not yet sent} of the summed meters, hours in order, zeros left out.

    ``sent`` is the billing stream's hour (RFC 3339) -> meter -> value sent. Usage never goes
    down (counters only grow; an hour's connection minutes are rounded down from growing time),
    so a value below what was sent is left alone rather than sent negative.
    """
    out: dict[datetime, dict[str, int]] = {}
    for meter in SUMMED_METERS:
        for hour, value in (usage.get(meter) or {}).items():
            more = value - sent.get(format_time(hour), {}).get(meter, 0)
            if more > 0:
                out.setdefault(hour, {})[meter] = more
    return {hour: dict(sorted(out[hour].items())) for hour in sorted(out)}


def gauge_reports(
    usage: Mapping[str, Mapping[datetime, int]],
    sent: Mapping[str, Mapping[str, int]],
    floor: datetime,
    closed: datetime,
) -> dict[datetime, dict[str, int]]:
    """Hour -> {gauge: its period-to-date value at the end of that hour} to send now, for the
    hours in ``[floor, closed)``, hours in order.

    ``usage`` holds the gauges' hourly values (``domain.plans.gauge_value``) from the start of the
    period of ``floor`` at the latest (and ``stored_bytes`` listed at that first hour); ``sent`` is
    the billing stream's hour -> meter -> value sent (a gauge's: the value of the last event sent at
    that hour). Per gauge and period, a value is sent at an hour when it differs from the last value
    sent in the period, and only at or after the last hour sent in the period, so the event Stripe's
    ``last`` takes — the latest by timestamp and by arrival alike — always carries the period's
    value so far. A value that changed late is sent at the newest closed hour, which carries it too;
    that includes a lower one: usage that arrives late can lower the stored bytes' high-water mark
    (a delete projected after the hour was sent), and the correction is sent like any change."""
    out: dict[datetime, dict[str, int]] = {}
    if floor >= closed:
        return out
    sent_hours = sorted((datetime.fromisoformat(key), values) for key, values in sent.items())
    for meter in GAUGE_METERS:
        hours = dict(usage.get(meter) or {})
        period = period_of(floor)
        while period.start < closed:
            if meter == "stored_bytes" and period.start not in hours:  # the level carried into the period
                before = [h for h in hours if h < period.start]
                if before:
                    hours[period.start] = hours[max(before)]
            mine = [(h, v[meter]) for h, v in sent_hours if meter in v and period.start <= h < period.end]
            last = mine[-1][1] if mine else 0  # what Stripe's last event of the period says now
            first = max(floor, period.start, max((h for h, _ in mine), default=period.start))
            changed = sorted({h for h in hours if first <= h < min(period.end, closed)} | {first})
            for hour in changed:
                if hour >= min(period.end, closed):
                    continue
                value = gauge_value(meter, hours, period, hour + HOUR)
                if value != last:
                    out.setdefault(hour, {})[meter] = last = value
            period = period_of(period.end)
    return {hour: dict(sorted(out[hour].items())) for hour in sorted(out)}


def event_time(meter: str, hour: datetime, n: int) -> datetime:
    """A meter event's timestamp: its hour's start; a gauge's ``n``-th event of the hour ``n``
    seconds later, so that Stripe's ``last`` is the one sent last (within the hour)."""
    return hour + timedelta(seconds=min(n, 3599)) if meter in GAUGE_METERS else hour


@dataclass(slots=True)
class SyncReport:
    tenants: int = 0
    customers_created: int = 0
    hours: int = 0
    meter_events: int = 0
    skipped_hours: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "tenants": self.tenants,
            "customers_created": self.customers_created,
            "hours": self.hours,
            "meter_events": self.meter_events,
            "skipped_hours": self.skipped_hours,
            "failed": self.failed,
        }


class BillingSync:
    """Sends usage to a :class:`UsageReporter` and records what it sends before and after."""

    def __init__(self, billing_service: Billing, reporter: UsageReporter, *, settle: timedelta, prefix: str) -> None:
        if settle < timedelta(0):
            raise ValueError("settle is a duration, at least 0")
        self.billing = billing_service
        self.reporter = reporter
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
                report.failed += 1
                log.warning("billing_sync_failed", tenant_id=tenant_id, error=repr(exc))
        return report

    async def tenant(self, tenant_id: str, name: str, report: SyncReport) -> None:
        await self.billing.pin_initial_plan(tenant_id)
        state = await self.billing.state(tenant_id)
        customer = state.customer_id
        if customer is None:
            created = await self.reporter.create_customer(tenant_id, name, f"caas-customer-{tenant_id}")
            await self.billing.record(tenant_id, billing.RecordStripeCustomer(customer_id=created), ACTOR)
            customer = (await self.billing.state(tenant_id)).customer_id or created
            report.customers_created += 1
        now = self.billing.clock()
        if state.pending is not None:
            await self._finish(tenant_id, customer, state.pending, now, report)
            state = await self.billing.state(tenant_id)
        closed = hour_of(now - self.settle)  # hours starting before it have ended and settled
        since = await self.billing.since(tenant_id)
        previous = datetime.fromisoformat(state.floor) if state.floor else hour_of(since)
        floor = max(window_floor(since, now), previous)  # the window never moves back
        if previous >= closed:
            return
        start = min(previous, period_of(floor).start)  # the gauges count from their period's start
        read = await self.billing.usage.buckets(tenant_id, start, closed)
        usage = {meter: {h: v for h, v in read.get(meter, {}).items() if h >= previous} for meter in SUMMED_METERS}
        todo = increases(usage, state.sent)
        late = {hour: values for hour, values in todo.items() if hour < floor}
        if late or state.floor is None or previous + timedelta(days=1) <= floor:
            skipped: dict[str, int] = {}
            for values in late.values():
                for meter, value in values.items():
                    skipped[meter] = skipped.get(meter, 0) + value
            if skipped:
                log.error(
                    "billing_usage_too_old_for_stripe", tenant_id=tenant_id, before=format_time(floor), units=skipped
                )
            report.skipped_hours += len(late)
            moved = billing.MoveSyncWindow(floor=format_time(floor), skipped=skipped)
            await self.billing.record(tenant_id, moved, ACTOR)
        counts = state.events
        for hour, values in gauge_reports(read, state.sent, floor, closed).items():
            todo[hour] = dict(sorted({**todo.get(hour, {}), **values}.items()))
        for hour, values in sorted(todo.items()):
            if hour < floor:
                continue
            key = format_time(hour)
            items = [
                {
                    "meter": meter,
                    "value": value,
                    "n": (n := counts.get(key, {}).get(meter, 0)),
                    "identifier": identifier(tenant_id, meter, hour, n),
                }
                for meter, value in values.items()
            ]
            command = billing.PrepareMeterEvents(hour=key, items=items, prepared_at=format_time(self.billing.clock()))
            await self.billing.record(tenant_id, command, ACTOR)
            pending = (await self.billing.state(tenant_id)).pending
            assert pending is not None
            await self._finish(tenant_id, customer, pending, self.billing.clock(), report)

    async def _finish(
        self, tenant_id: str, customer: str, pending: billing.Pending, now: datetime, report: SyncReport
    ) -> None:
        """Send the recorded events (again, after a crash) and confirm them; or abandon them if
        they are too old for Stripe to recognise a repeat."""
        if now - datetime.fromisoformat(pending.prepared_at) > RESEND_WITHIN:
            log.error(
                "billing_meter_events_abandoned",
                tenant_id=tenant_id,
                hour=pending.hour,
                identifiers=[i["identifier"] for i in pending.items],
                hint="check these identifiers in Stripe's meter events; they count as sent",
            )
            reason = f"unconfirmed since {pending.prepared_at}, past Stripe's identifier deduplication"
            await self.billing.record(tenant_id, billing.AbandonMeterEvents(hour=pending.hour, reason=reason), ACTOR)
            return
        hour = datetime.fromisoformat(pending.hour)
        for item in pending.items:
            event = f"{self.prefix}{item['meter']}"
            at = event_time(str(item["meter"]), hour, int(item["n"]))
            await self.reporter.send_meter_event(event, customer, int(item["value"]), str(item["identifier"]), at)
        await self.billing.record(tenant_id, billing.ConfirmMeterEvents(hour=pending.hour), ACTOR)
        report.hours += 1
        report.meter_events += len(pending.items)
