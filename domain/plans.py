"""Plans and pricing: what a tenant's usage costs. Pure: no I/O, integers only.

A :class:`Plan` names, per meter, a quantity included each month and either a hard cap
(``mode = "cap"``: usage stops at the included quantity) or overage priced on graduated
tiers. Money is in minor currency units (cents) as integers; a tier's price is per ``per``
units (1 cent per 1,000 messages is ``unit_price = 1, per = 1000``), so no price needs a
fraction and nothing here is a float.

:func:`preview` is the whole of pricing: a pure function of the plan history, the period's
usage totals and the period. A plan change in the middle of a period is billed by time:
each plan's included quantities and base fee count for the share of the period it was in
force (exact fractions, rounded half up once per line), and each hour's usage is priced on the
plan in force at the hour's start, with that plan's tiers and cap-or-overage choice. A tenant's
first period counts from its start (the history's first entry): it gets its plan's whole
quantities for the rest of the month.

The *gauges* (:data:`GAUGE_METERS`: ``mau``, ``peak_connections``, ``stored_bytes``) are not sums
of hours: each is priced once per period on its period value (:func:`gauge_value`: the month's
distinct active users, the period's peak, the high-water mark of the stored bytes), on the plan in
force at the end of the period (for the open period: the plan in force now), with that plan's
whole included quantity — a level has no share of time to prorate.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Mode = Literal["cap", "overage"]


class Tier(BaseModel):
    """Billable units up to ``up_to`` (counted from the first billable unit; ``None``: all the
    rest) cost ``unit_price`` minor units per ``per`` units of the meter."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    up_to: int | None = Field(default=None, ge=1)
    unit_price: int = Field(ge=0)


class MeterTerms(BaseModel):
    """How one meter is billed each month."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    included: int = Field(default=0, ge=0)
    mode: Mode = "overage"
    per: int = Field(default=1, ge=1)
    tiers: tuple[Tier, ...] = ()

    @model_validator(mode="after")
    def _tiers_ascend(self) -> MeterTerms:
        bounds = [t.up_to for t in self.tiers]
        if bounds and bounds[-1] is not None:
            raise ValueError("the last tier has no up_to: it prices everything above the others")
        if None in bounds[:-1]:
            raise ValueError("only the last tier may omit up_to")
        finite = [b for b in bounds if b is not None]
        if any(b >= c for b, c in itertools.pairwise(finite)):
            raise ValueError("tiers' up_to must ascend")
        if self.mode == "cap" and self.tiers:
            raise ValueError("a capped meter has no tiers: usage stops at its included quantity")
        return self


class Plan(BaseModel):
    """A named price list: a monthly base fee and terms per meter (a meter a plan does not
    name is neither capped nor charged)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    currency: str = Field(default="usd", pattern=r"^[a-z]{3}$")
    base_fee: int = Field(default=0, ge=0)
    meters: dict[str, MeterTerms] = Field(default_factory=dict)

    def cap(self, meter: str) -> int | None:
        """The meter's monthly hard limit, if it has one."""
        terms = self.meters.get(meter)
        return terms.included if terms is not None and terms.mode == "cap" else None


# Meters whose period figure is the sum of their hours: priced hour by hour on the plan in force
# at each hour's start, and reported to Stripe as a ``sum`` meter.
SUMMED_METERS = ("messages", "replies", "edits", "deliveries", "api_reads", "api_writes", "connection_minutes")
# Meters whose period figure is not a sum of hours (docs/plans.md): priced once per period on
# their period value, and reported to Stripe as a ``last`` meter (docs/stripe.md).
GAUGE_METERS = ("mau", "peak_connections", "stored_bytes")
BILLED_METERS = (*SUMMED_METERS, *GAUGE_METERS)

# The plan of a tenant that was never given one: usage is capped, nothing is charged.
FREE = Plan(
    name="free",
    meters={
        "messages": MeterTerms(included=10_000, mode="cap"),
        "replies": MeterTerms(included=10_000, mode="cap"),
        "edits": MeterTerms(included=5_000, mode="cap"),
        "api_writes": MeterTerms(included=50_000, mode="cap"),
    },
)


class PlansError(ValueError):
    """A plans file that cannot be used; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Catalog:
    """The plans a deployment offers, and the one new tenants start on."""

    plans: Mapping[str, Plan]
    default: str

    @property
    def default_plan(self) -> Plan:
        return self.plans[self.default]


def parse_plans(text: str, meters: Collection[str]) -> Catalog:
    """The catalog of a plans file (TOML), with the built-in ``free`` plan unless it defines
    its own. ``meters`` are the meter names a plan may price.

    ::

        default = "free"            # optional; the plan of tenants never given one
        [plans.pro]
        base_fee = 4900             # minor units a month
        [plans.pro.meters.messages]
        included = 100000
        mode = "overage"            # or "cap"
        per = 1000
        tiers = [{up_to = 1000, unit_price = 50}, {unit_price = 30}]
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlansError(f"the plans file is not TOML: {exc}") from None
    unknown = set(data) - {"default", "plans"}
    if unknown:
        raise PlansError(f"unknown top-level key(s) {sorted(unknown)}; a plans file has default and [plans.<name>]")
    plans: dict[str, Plan] = {FREE.name: FREE}
    for name, body in (data.get("plans") or {}).items():
        try:
            plans[name] = Plan.model_validate({"name": name, **body})
        except (ValidationError, TypeError) as exc:
            raise PlansError(f"plan {name!r}: {exc}") from None
        strange = set(plans[name].meters) - set(meters)
        if strange:
            raise PlansError(f"plan {name!r} prices unknown meter(s) {sorted(strange)}; meters: {', '.join(meters)}")
        unbillable = set(plans[name].meters) - set(BILLED_METERS)
        if unbillable:
            raise PlansError(
                f"plan {name!r} names meter(s) {sorted(unbillable)} that cannot be billed; plans cap and "
                f"price {', '.join(BILLED_METERS)} (docs/plans.md)"
            )
    currencies = {p.currency for p in plans.values() if p.base_fee or any(t.tiers for t in p.meters.values())}
    if len(currencies) > 1:
        raise PlansError(f"plans charge in several currencies {sorted(currencies)}; use one")
    default = data.get("default", FREE.name)
    if default not in plans:
        raise PlansError(f"default plan {default!r} is not defined; plans: {', '.join(plans)}")
    return Catalog(plans, default)


def builtin_catalog() -> Catalog:
    return Catalog({FREE.name: FREE}, FREE.name)


# --- periods --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Period:
    """A billing period: a calendar month in UTC, ``[start, end)``."""

    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        return f"{self.start.year:04d}-{self.start.month:02d}"

    @property
    def seconds(self) -> int:
        return int((self.end - self.start).total_seconds())


def period_of(moment: datetime) -> Period:
    """The calendar month (UTC) that holds ``moment``."""
    moment = moment.astimezone(UTC)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    end = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
    return Period(start, end)


def hour_of(moment: datetime) -> datetime:
    """The start of the UTC hour that holds ``moment``."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


HOUR = timedelta(hours=1)


# --- pricing --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PlanChange:
    """``plan`` is in force from ``at`` until the next change."""

    at: datetime
    plan: Plan


def in_force(history: Sequence[PlanChange], moment: datetime) -> Plan:
    """The plan in force at ``moment``: the last change at or before it (the first change's
    plan before any)."""
    found = history[0].plan
    for change in history:
        if change.at <= moment:
            found = change.plan
    return found


def shares(history: Sequence[PlanChange], period: Period) -> list[tuple[Plan, Fraction]]:
    """Each plan in force during ``period`` with its share of the billed time: the period, or
    from the first change (the tenant's start) if that falls inside it."""
    if not history:
        raise ValueError("a plan history has at least one plan")
    start = min(max(period.start, history[0].at), period.end - timedelta(seconds=1))
    billed = int((period.end - start).total_seconds())
    out: list[tuple[Plan, Fraction]] = []
    cuts = sorted({start, *(c.at for c in history if start < c.at < period.end), period.end})
    for begin, finish in itertools.pairwise(cuts):
        seconds = int((finish - begin).total_seconds())
        out.append((in_force(history, begin), Fraction(seconds, billed)))
    return out


def half_up(value: Fraction) -> int:
    return int((value + Fraction(1, 2)) // 1)


def final_plan(history: Sequence[PlanChange], period: Period) -> Plan:
    """The plan in force at the end of ``period`` (of an open period: the plan in force now,
    the history holding no change after now)."""
    return in_force(history, period.end - timedelta(microseconds=1))


def included(history: Sequence[PlanChange], period: Period) -> dict[str, int]:
    """Each meter's included quantity for ``period``: a summed meter's prorated by time across
    plan changes; a gauge's, the whole quantity of the plan in force at the period's end."""
    names = {m for change in history for m in change.plan.meters}
    parts = shares(history, period)
    final = final_plan(history, period)
    out = {}
    for meter in sorted(names):
        if meter in GAUGE_METERS:
            out[meter] = final.meters[meter].included if meter in final.meters else 0
            continue
        exact = sum((share * (p.meters[meter].included if meter in p.meters else 0) for p, share in parts), Fraction())
        out[meter] = half_up(exact)
    return out


def limits(history: Sequence[PlanChange], period: Period) -> dict[str, int]:
    """The hard limit of each capped meter (by the plan in force at the period's end)."""
    final = final_plan(history, period)
    quantities = included(history, period)
    return {m: quantities.get(m, 0) for m, t in final.meters.items() if t.mode == "cap"}


def graduated(billable: int, terms: MeterTerms) -> tuple[list[dict[str, Any]], int]:
    """``billable`` units across the tiers: the units of each tier, and the amount (the exact
    sum over tiers divided by ``per``, rounded up once)."""
    rows: list[dict[str, Any]] = []
    floor, left, numerator = 0, billable, 0
    for tier in terms.tiers:
        room = left if tier.up_to is None else min(left, tier.up_to - floor)
        rows.append({"up_to": tier.up_to, "unit_price": tier.unit_price, "units": room})
        numerator += room * tier.unit_price
        left -= room
        if tier.up_to is not None:
            floor = tier.up_to
    return rows, -(-numerator // terms.per)


Usage = Mapping[str, Mapping[datetime, int]]  # meter -> hour start (UTC) -> value


def gauge_value(meter: str, hours: Mapping[datetime, int], period: Period, through: datetime | None = None) -> int:
    """A gauge's value for the hours of ``period`` that start before ``through`` (default: the
    period's end) — its period-to-date value at the end of the last of them.

    The hourly values are those of the usage read model: ``mau`` the users whose first activity
    of the month fell in the hour (so their sum is the month's distinct active users);
    ``peak_connections`` the hour's highest sample; ``stored_bytes`` the level at the end of the
    hour, listed for every hour it changed in *and for the period's first hour* (the level carried
    into the period), an hour not listed having the level of the last listed one before it. So
    ``mau`` sums, and the other two take the highest: the peak, and the high-water mark of the
    end-of-hour levels.
    """
    end = period.end if through is None else min(through, period.end)
    values = [value for hour, value in hours.items() if period.start <= hour < end]
    if meter == "mau":
        return sum(values)
    return max(values, default=0)


def segments(history: Sequence[PlanChange], period: Period) -> list[tuple[datetime, datetime, Plan, Fraction]]:
    """The period cut where the plan changes: ``(begin, end, plan, share of the billed time)``."""
    start = min(max(period.start, history[0].at), period.end - timedelta(seconds=1))
    cuts = sorted({start, *(c.at for c in history if start < c.at < period.end), period.end})
    parts = shares(history, period)
    return [
        (begin, end, plan, share) for (begin, end), (plan, share) in zip(itertools.pairwise(cuts), parts, strict=True)
    ]


def segment_usage(usage: Usage, cuts: Sequence[tuple[datetime, datetime]], period: Period) -> list[dict[str, int]]:
    """Each segment's usage: an hour counts in the segment its start is in (an hour before the
    first segment, in the first; hours outside the period, nowhere)."""
    out: list[dict[str, int]] = [{} for _ in cuts]
    for meter, hours in usage.items():
        for hour, value in hours.items():
            if not period.start <= hour < period.end or value <= 0:
                continue
            index = next((n for n, (_, end) in enumerate(cuts) if hour < end), len(cuts) - 1)
            out[index][meter] = out[index].get(meter, 0) + value
    return out


def _line(meter: str, plan: Plan, begin: datetime, end: datetime, used: int, free: int) -> dict[str, Any]:
    terms = plan.meters.get(meter, MeterTerms())
    over = max(used - free, 0)
    billable = over if terms.mode == "overage" and terms.tiers else 0
    tiers, amount = graduated(billable, terms)
    capped = over if terms.mode == "cap" else 0
    line: dict[str, Any] = {"meter": meter, "plan": plan.name, "from": begin, "to": end, "mode": terms.mode}
    line |= {"used": used, "included": free, "billable": billable, "over_cap": capped}
    return {**line, "tiers": tiers, "amount": amount}


def preview(history: Sequence[PlanChange], usage: Usage, period: Period) -> dict[str, Any]:
    """The period's bill: per stretch of the period on one plan (a *segment*), a line per summed
    meter (used, included, billable, tiers, amount) priced on that segment's plan with the usage of
    its hours; one line per gauge for the whole billed period, on its period value
    (:func:`gauge_value`) and the plan in force at the period's end with its whole included
    quantity; the prorated base fee, and the total, all integers in minor units.

    Each segment's included quantities are its plan's, times its share of the billed time (rounded
    half up per line): switching plans neither doubles nor loses what is included, and usage is
    priced on the plan in force when it happened. A capped meter is never charged, even for usage
    that got past its cap (the cap is enforced from a read model that lags the writes by seconds):
    we do not bill what we should have refused.
    """
    final = final_plan(history, period)
    parts = segments(history, period)
    summed = {m: hours for m, hours in usage.items() if m not in GAUGE_METERS}
    used_by = segment_usage(summed, [(begin, end) for begin, end, _, _ in parts], period)
    base = half_up(sum((share * plan.base_fee for _, _, plan, share in parts), Fraction()))
    lines: list[dict[str, Any]] = []
    for (begin, end, plan, share), used_in in zip(parts, used_by, strict=True):
        for meter in sorted({m for m in plan.meters if m not in GAUGE_METERS} | {m for m, v in used_in.items() if v}):
            free = half_up(share * plan.meters[meter].included) if meter in plan.meters else 0
            lines.append(_line(meter, plan, begin, end, used_in.get(meter, 0), free))
    billed_from = parts[0][0]
    for meter in GAUGE_METERS:
        used = gauge_value(meter, usage.get(meter) or {}, period)
        if meter in final.meters or used:
            free = final.meters[meter].included if meter in final.meters else 0
            lines.append(_line(meter, final, billed_from, period.end, used, free))
    return {
        "period": {"start": period.start, "end": period.end, "label": period.label},
        "plan": final.name,
        "plans": [plan.name for _, _, plan, _ in parts],
        "currency": final.currency,
        "base_fee": base,
        "lines": lines,
        "total": base + sum(line["amount"] for line in lines),
    }
