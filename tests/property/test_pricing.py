"""Property tests of pricing: the invoice preview is a pure function of plan history, usage and
period. Tiers, caps, month boundaries (leap years included) and plan changes mid-month, for the
summed meters and the gauges (``mau``, ``peak_connections``, ``stored_bytes``)."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.plans import (
    BILLED_METERS,
    FREE,
    GAUGE_METERS,
    HOUR,
    SUMMED_METERS,
    MeterTerms,
    Period,
    Plan,
    PlanChange,
    PlansError,
    Tier,
    Usage,
    gauge_value,
    graduated,
    half_up,
    hour_of,
    included,
    limits,
    parse_plans,
    period_of,
    preview,
)
from projections.usage import METERS as ALL_METERS

SETTINGS = settings(max_examples=200, deadline=None)
COUNTED = ("messages", "replies", "edits", "api_writes")
METERS = (*COUNTED, *GAUGE_METERS)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

moments = st.datetimes(
    min_value=datetime(2000, 2, 1), max_value=datetime(2200, 12, 31), timezones=st.just(UTC)
)  # fmt: skip


@st.composite
def tier_lists(draw: st.DrawFn) -> tuple[Tier, ...]:
    bounds = sorted(draw(st.sets(st.integers(1, 5000), max_size=3)))
    prices = draw(st.lists(st.integers(0, 500), min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    return tuple(Tier(up_to=b, unit_price=p) for b, p in zip([*bounds, None], prices, strict=True))


@st.composite
def terms(draw: st.DrawFn) -> MeterTerms:
    if draw(st.booleans()):
        return MeterTerms(included=draw(st.integers(0, 10_000)), mode="cap")
    return MeterTerms(
        included=draw(st.integers(0, 10_000)), per=draw(st.sampled_from([1, 10, 1000])), tiers=draw(tier_lists())
    )


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    meters = draw(st.dictionaries(st.sampled_from(METERS), terms(), max_size=len(METERS)))
    return Plan(name=draw(st.sampled_from(["a", "b", "c"])), base_fee=draw(st.integers(0, 100_000)), meters=meters)


usages = st.dictionaries(st.sampled_from(METERS), st.integers(0, 50_000))


def hourly(usage: dict[str, int], period: Period) -> Usage:
    """Period totals as the usage of the period's first hour (a gauge's period value too: the
    month's users first active then, the peak then, the stored bytes' level at its end, never
    changed after)."""
    return {meter: {period.start: value} for meter, value in usage.items()}


def bill_of(history: list[PlanChange], usage: dict[str, int], period: Period) -> dict[str, object]:
    return preview(history, hourly(usage, period), period)


def without_times(bill: dict[str, object]) -> dict[str, object]:
    lines = [{k: v for k, v in line.items() if k not in ("from", "to")} for line in bill["lines"]]  # type: ignore[attr-defined]
    return {**bill, "lines": lines}


def reference_amount(billable: int, terms: MeterTerms) -> int:
    """Unit by unit: the marginal price of each billable unit, summed, over ``per``, rounded up."""
    total, floor = 0, 0
    for unit in range(1, billable + 1):
        for tier in terms.tiers:
            if tier.up_to is None or unit <= tier.up_to:
                total += tier.unit_price
                break
            floor = tier.up_to
    del floor
    return -(-total // terms.per)


@SETTINGS
@given(moment=moments)
def test_every_moment_is_in_exactly_one_calendar_month(moment: datetime) -> None:
    period = period_of(moment)
    assert period.start <= moment < period.end
    assert period.start.day == 1 and period.start.hour == 0
    days = calendar.monthrange(moment.year, moment.month)[1]
    assert period.end - period.start == timedelta(days=days)
    assert period_of(period.end).start == period.end  # months tile: the next one starts where this ends
    assert period_of(period.end - timedelta(microseconds=1)) == period
    assert period_of(hour_of(moment)) == period  # an hour never straddles two months


@pytest.mark.parametrize(("year", "days"), [(2028, 29), (2100, 28), (2000, 29), (2027, 28)])
def test_february_has_its_leap_year_length(year: int, days: int) -> None:
    period = period_of(datetime(year, 2, 10, tzinfo=UTC))
    assert period.seconds == days * 86_400
    assert len(range(0, period.seconds, 3600)) == days * 24


@SETTINGS
@given(plan=plans(), usage=usages, moment=moments)
def test_preview_is_a_pure_function_of_its_inputs(plan: Plan, usage: dict[str, int], moment: datetime) -> None:
    history = [PlanChange(EPOCH, plan)]
    period = period_of(moment)
    first = bill_of(history, usage, period)
    again = bill_of(list(history), dict(reversed(list(usage.items()))), period_of(period.start))
    assert first == again
    assert first["total"] == first["base_fee"] + sum(line["amount"] for line in first["lines"])
    assert all(isinstance(line["amount"], int) and line["amount"] >= 0 for line in first["lines"])


@SETTINGS
@given(plan=plans(), usage=usages, moment=moments)
def test_one_plan_all_month_includes_exactly_its_quantities(
    plan: Plan, usage: dict[str, int], moment: datetime
) -> None:
    bill = bill_of([PlanChange(EPOCH, plan)], usage, period_of(moment))
    assert bill["base_fee"] == plan.base_fee
    for line in bill["lines"]:
        terms = plan.meters.get(line["meter"], MeterTerms())
        assert line["included"] == (terms.included if line["meter"] in plan.meters else 0)
        over = max(line["used"] - line["included"], 0)
        if terms.mode == "cap":
            assert line["amount"] == 0 and line["billable"] == 0 and line["over_cap"] == over
        else:
            assert line["billable"] == (over if terms.tiers else 0)  # a meter without tiers is free past its quantity
            assert sum(t["units"] for t in line["tiers"]) == line["billable"]
            assert line["amount"] == reference_amount(over, terms)


@SETTINGS
@given(plan=plans(), usage=usages, more=usages, moment=moments)
def test_more_usage_never_costs_less(plan: Plan, usage: dict[str, int], more: dict[str, int], moment: datetime) -> None:
    bigger = {m: usage.get(m, 0) + more.get(m, 0) for m in set(usage) | set(more)}
    history, period = [PlanChange(EPOCH, plan)], period_of(moment)
    assert bill_of(history, bigger, period)["total"] >= bill_of(history, usage, period)["total"]  # type: ignore[operator]


@SETTINGS
@given(old=plans(), new=plans(), usage=usages, moment=moments, fraction=st.fractions(0, 1))
def test_a_change_mid_month_prorates_included_quantities_and_fee_by_time(
    old: Plan, new: Plan, usage: dict[str, int], moment: datetime, fraction: Fraction
) -> None:
    period = period_of(moment)
    at = hour_of(period.start + (period.end - period.start) * float(fraction))
    at = min(max(at, period.start), period.end)
    history = [PlanChange(EPOCH, old), PlanChange(at, new)]
    bill = bill_of(history, usage, period)
    share_old = Fraction(int((at - period.start).total_seconds()), period.seconds)
    expected_fee = share_old * old.base_fee + (1 - share_old) * new.base_fee
    assert abs(bill["base_fee"] - expected_fee) <= Fraction(1, 2)
    quantities = included(history, period)
    final = new if at < period.end else old
    for meter in set(old.meters) | set(new.meters):
        a = old.meters[meter].included if meter in old.meters else 0
        b = new.meters[meter].included if meter in new.meters else 0
        if meter in GAUGE_METERS:  # the plan in force at the end, its whole quantity
            assert quantities[meter] == (final.meters[meter].included if meter in final.meters else 0)
            continue
        assert min(a, b) <= quantities[meter] <= max(a, b)
        assert abs(quantities[meter] - (share_old * a + (1 - share_old) * b)) <= Fraction(1, 2)
    assert bill["plan"] == (new.name if at < period.end else old.name)  # the plan in force at the end
    if at == period.start:
        assert bill == bill_of([PlanChange(EPOCH, new)], usage, period)
    if at == period.end:
        assert bill == bill_of([PlanChange(EPOCH, old)], usage, period)


def test_a_change_on_the_29th_of_february_of_a_leap_year_splits_by_days() -> None:
    old = Plan(name="a", base_fee=2900, meters={"messages": MeterTerms(included=2900)})
    new = Plan(name="b", base_fee=0, meters={"messages": MeterTerms(included=0)})
    period = period_of(datetime(2028, 2, 1, tzinfo=UTC))
    history = [PlanChange(EPOCH, old), PlanChange(datetime(2028, 2, 29, tzinfo=UTC), new)]
    bill = bill_of(history, {}, period)
    assert bill["base_fee"] == 2800  # 28 of 29 days on the old plan
    assert included(history, period)["messages"] == 2800


def test_graduated_tiers_price_each_unit_at_its_tier() -> None:
    pro = Plan(
        name="pro",
        meters={
            "messages": MeterTerms(
                included=100,
                per=10,
                tiers=(Tier(up_to=10, unit_price=5), Tier(up_to=30, unit_price=3), Tier(unit_price=1)),
            )
        },
    )
    line = bill_of([PlanChange(EPOCH, pro)], {"messages": 145}, period_of(EPOCH))["lines"][0]  # type: ignore[index]
    assert [t["units"] for t in line["tiers"]] == [10, 20, 15]
    assert line["amount"] == -(-(10 * 5 + 20 * 3 + 15 * 1) // 10)  # 125 / 10, rounded up once: 13


def test_capped_limits_come_from_the_plan_at_the_end_of_the_period() -> None:
    period = period_of(datetime(2026, 4, 1, tzinfo=UTC))
    assert limits([PlanChange(EPOCH, FREE)], period)["messages"] == 10_000
    paid = Plan(name="pro", meters={"messages": MeterTerms(included=1000)})
    assert "messages" not in limits([PlanChange(EPOCH, FREE), PlanChange(period.start + HOUR, paid)], period)


def test_plans_file_is_validated_with_messages_that_say_what_to_fix() -> None:
    catalog = parse_plans(
        """
        default = "pro"
        [plans.pro]
        base_fee = 4900
        [plans.pro.meters.messages]
        included = 100000
        per = 1000
        tiers = [{up_to = 1000, unit_price = 50}, {unit_price = 30}]
        """,
        METERS,
    )
    assert catalog.default_plan.meters["messages"].tiers[1].up_to is None
    assert "free" in catalog.plans
    for bad, says in [
        ("[plans.x.meters.nope]\nincluded = 1", "unknown meter"),
        ("[plans.x.meters.messages]\ntiers = [{up_to = 5, unit_price = 1}]", "last tier"),
        ("[plans.x.meters.messages]\nmode = 'cap'\ntiers = [{unit_price = 1}]", "capped meter"),
        ("default = 'gold'", "not defined"),
        ("[plans.x]\ncurrency = 'eur'\nbase_fee = 1\n[plans.y]\nbase_fee = 1", "currencies"),
        ("plans = [", "not TOML"),
        ("[plans.x.meters.mau]\nincluded = 5\nmode = 'cap'\ntiers = [{unit_price = 1}]", "capped meter"),
    ]:
        with pytest.raises(PlansError, match=says):
            parse_plans(bad, ALL_METERS)
    gauges = parse_plans(
        """
        [plans.g.meters.mau]
        included = 500
        tiers = [{unit_price = 40}]
        [plans.g.meters.peak_connections]
        included = 100
        mode = "cap"
        [plans.g.meters.stored_bytes]
        included = 1000000000
        per = 1000000000
        tiers = [{unit_price = 10}]
        """,
        ALL_METERS,
    ).plans["g"]
    assert gauges.cap("peak_connications") is None and gauges.cap("peak_connections") == 100


@SETTINGS
@given(plan=plans(), then=plans(), usage=usages, moment=moments, offset=st.integers(0, 27 * 24 - 1))
def test_a_tenant_that_starts_mid_month_counts_from_its_start(
    plan: Plan, then: Plan, usage: dict[str, int], moment: datetime, offset: int
) -> None:
    period = period_of(moment)
    start = period.start + offset * HOUR
    alone = bill_of([PlanChange(start, plan)], usage, period)
    assert without_times(alone) == without_times(bill_of([PlanChange(EPOCH, plan)], usage, period))  # whole plan
    # a change a second after the start: the first plan's second barely counts
    bill = bill_of([PlanChange(start, plan), PlanChange(start + timedelta(seconds=1), then)], usage, period)
    assert abs(bill["base_fee"] - then.base_fee) <= 1


@SETTINGS
@given(
    old=plans(),
    new=plans(),
    before=usages,
    after=usages,
    moment=moments,
    fraction=st.fractions(Fraction(1, 100), Fraction(99, 100)),
)
def test_each_plan_prices_the_usage_of_its_own_hours(
    old: Plan, new: Plan, before: dict[str, int], after: dict[str, int], moment: datetime, fraction: Fraction
) -> None:
    """A downgrade late in the month does not turn the month's overage into uncharged usage: the
    hours before the change are priced on the old plan with its share of the quantities."""
    period = period_of(moment)
    at = hour_of(period.start + (period.end - period.start) * float(fraction)) + HOUR
    history = [PlanChange(EPOCH, old), PlanChange(at, new)]
    usage: Usage = {m: {period.start: v} for m, v in before.items()}
    for meter, value in after.items():
        usage.setdefault(meter, {})[at] = value  # type: ignore[index]
    bill = preview(history, usage, period)
    share_old = Fraction(int((at - period.start).total_seconds()), period.seconds)
    for plan, share, used_in in [(old, share_old, before), (new, 1 - share_old, after)]:
        lines = {
            x["meter"]: x
            for x in bill["lines"]
            if x["plan"] == plan.name and x["from"] == (period.start if plan is old else at)
        }
        for meter, terms in plan.meters.items():
            if meter in GAUGE_METERS:
                continue
            line = lines[meter]
            assert line["used"] == used_in.get(meter, 0)
            assert line["included"] == half_up(share * terms.included)
            over = max(line["used"] - line["included"], 0)
            expected = graduated(over, terms)[1] if terms.mode == "overage" and terms.tiers else 0
            assert line["amount"] == expected
            assert line["over_cap"] == (over if terms.mode == "cap" else 0)
    # a gauge: one line on the period value, priced on the plan in force at the end (the new one)
    # with its whole included quantity, however late in the month the change came
    for meter in GAUGE_METERS:
        found = [x for x in bill["lines"] if x["meter"] == meter]
        a, b = before.get(meter, 0), after.get(meter, 0)
        value = a + b if meter == "mau" else max(a, b)
        if meter not in new.meters and not value:
            assert found == []
            continue
        (line,) = found
        terms = new.meters.get(meter, MeterTerms())
        assert (line["plan"], line["from"], line["to"]) == (new.name, period.start, period.end)
        assert line["used"] == value and line["included"] == (terms.included if meter in new.meters else 0)
        over = max(value - line["included"], 0)
        assert line["amount"] == (graduated(over, terms)[1] if terms.mode == "overage" and terms.tiers else 0)
        assert line["over_cap"] == (over if terms.mode == "cap" else 0)
    assert bill["total"] == bill["base_fee"] + sum(x["amount"] for x in bill["lines"])


@SETTINGS
@given(plan=plans(), usage=usages, moment=moments, hours=st.lists(st.integers(0, 27 * 24), min_size=1, max_size=5))
def test_within_one_plan_it_does_not_matter_which_hours_the_usage_fell_in(
    plan: Plan, usage: dict[str, int], moment: datetime, hours: list[int]
) -> None:
    """For every meter whose hours add up: the summed ones, and ``mau`` (each user counted in the
    hour of their first activity of the month)."""
    usage = {m: v for m, v in usage.items() if m not in ("peak_connections", "stored_bytes")}
    period = period_of(moment)
    spread: Usage = {}
    for meter, value in usage.items():  # the same totals, split across some hours of the period
        parts = [value // len(hours)] * len(hours)
        parts[0] += value - sum(parts)
        spread[meter] = {}
        for offset, part in zip(hours, parts, strict=True):
            cell = spread[meter]
            cell[period.start + offset * HOUR] = cell.get(period.start + offset * HOUR, 0) + part  # type: ignore[index]
    history = [PlanChange(EPOCH, plan)]
    assert preview(history, spread, period) == bill_of(history, usage, period)
    outside = {m: {period.end: v, period.start - HOUR: v} for m, v in usage.items()}
    assert preview(history, outside, period)["total"] == bill_of(history, {}, period)["total"]


def test_the_billable_meters_are_meters_of_the_usage_model() -> None:
    assert set(SUMMED_METERS) | set(GAUGE_METERS) == set(BILLED_METERS) == set(ALL_METERS)
    assert not set(SUMMED_METERS) & set(GAUGE_METERS)


@st.composite
def level_changes(draw: st.DrawFn) -> tuple[int, dict[int, int]]:
    """A stored-bytes level carried into a month and its changes: hour offset -> change."""
    opening = draw(st.integers(0, 10_000))
    changes = draw(st.dictionaries(st.integers(0, 28 * 24 - 1), st.integers(-5_000, 5_000), max_size=20))
    return opening, changes


@SETTINGS
@given(changed=level_changes(), moment=moments, through=st.integers(1, 28 * 24))
def test_stored_bytes_are_priced_on_the_high_water_mark_of_end_of_hour_levels(
    changed: tuple[int, dict[int, int]], moment: datetime, through: int
) -> None:
    """The sparse levels the usage model lists (an hour when the level changed, and the period's
    first hour) give the same high-water mark as the level at the end of every hour."""
    opening, changes = changed
    period = period_of(moment)
    dense, sparse, level = [], {}, opening
    for offset in range(through):
        if offset in changes:
            level = max(level + changes[offset], 0)
        dense.append(level)
        if offset in changes or offset == 0:
            sparse[period.start + offset * HOUR] = level
    cut = period.start + through * HOUR
    assert gauge_value("stored_bytes", sparse, period, cut) == max(dense)
    assert gauge_value("stored_bytes", sparse, period, cut) >= dense[-1]  # never below the level at the end
    # an hour of another month never counts
    assert gauge_value("stored_bytes", {**sparse, period.end: 10**9, period.start - HOUR: 10**9}, period, cut) == max(
        dense
    )


@SETTINGS
@given(
    values=st.dictionaries(st.integers(-48, 31 * 24 + 48), st.integers(0, 1000), max_size=30),
    moment=moments,
    cuts=st.lists(st.integers(0, 31 * 24), min_size=2, max_size=2),
)
def test_period_to_date_gauges_only_grow_within_a_month_and_start_again_at_the_next(
    values: dict[int, int], moment: datetime, cuts: list[int]
) -> None:
    period = period_of(moment)
    hours = {period.start + offset * HOUR: value for offset, value in values.items()}
    early, late = sorted(period.start + c * HOUR for c in cuts)
    inside = [v for h, v in hours.items() if period.start <= h < period.end]
    for meter in GAUGE_METERS:
        assert gauge_value(meter, hours, period, early) <= gauge_value(meter, hours, period, late)
        assert gauge_value(meter, hours, period) == (sum(inside) if meter == "mau" else max(inside, default=0))
        assert gauge_value(meter, hours, period, period.start) == 0
    after = period_of(period.end)  # the next month counts only its own hours
    assert gauge_value("mau", hours, after) == sum(v for h, v in hours.items() if after.start <= h < after.end)


@SETTINGS
@given(old=plans(), new=plans(), value=st.integers(0, 50_000), moment=moments, fraction=st.fractions(0, 1))
def test_a_gauge_is_priced_once_on_the_plan_in_force_at_the_end_of_the_period(
    old: Plan, new: Plan, value: int, moment: datetime, fraction: Fraction
) -> None:
    period = period_of(moment)
    at = min(max(hour_of(period.start + (period.end - period.start) * float(fraction)), period.start), period.end)
    history = [PlanChange(EPOCH, old), PlanChange(at, new)]
    final = new if at < period.end else old
    bill = bill_of(history, dict.fromkeys(GAUGE_METERS, value), period)
    for meter in GAUGE_METERS:
        (line,) = [x for x in bill["lines"] if x["meter"] == meter] or [None]
        if line is None:
            assert value == 0 and meter not in final.meters
            continue
        terms = final.meters.get(meter, MeterTerms())
        assert line["plan"] == final.name and line["used"] == value
        assert line["included"] == (terms.included if meter in final.meters else 0)
        over = max(value - line["included"], 0)
        assert line["amount"] == (reference_amount(over, terms) if terms.mode == "overage" and terms.tiers else 0)
        assert line["over_cap"] == (over if terms.mode == "cap" else 0)
        alone = bill_of([PlanChange(EPOCH, final)], dict.fromkeys(GAUGE_METERS, value), period)
        assert [x for x in alone["lines"] if x["meter"] == meter] == [line]  # whatever came before
    if "stored_bytes" in final.meters and final.meters["stored_bytes"].mode == "cap":
        assert limits(history, period)["stored_bytes"] == final.meters["stored_bytes"].included
