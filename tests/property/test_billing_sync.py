"""Property tests of the sync's pure parts: what to send (:func:`increases` for the summed meters,
:func:`gauge_reports` for the gauges), from where (:func:`window_floor`), under which identifiers;
and the quota check's figure (``used_of``)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from commands.billing_sync import WINDOW, event_time, gauge_reports, identifier, increases, window_floor
from commands.quotas import used_of
from domain.base import format_time
from domain.plans import GAUGE_METERS, HOUR, SUMMED_METERS, gauge_value, hour_of, period_of

SETTINGS = settings(max_examples=200, deadline=None)
BASE = datetime(2026, 3, 1, tzinfo=UTC)
hours = st.integers(0, 72).map(lambda h: BASE + h * HOUR)
meters = st.sampled_from([*SUMMED_METERS, "mau", "peak_connections", "stored_bytes"])
usages = st.dictionaries(meters, st.dictionaries(hours, st.integers(0, 1000), max_size=6), max_size=4)
sents = st.dictionaries(
    hours.map(format_time),
    st.dictionaries(st.sampled_from(SUMMED_METERS), st.integers(0, 1000), max_size=3),
    max_size=6,
)


@SETTINGS
@given(usage=usages, sent=sents)
def test_what_is_sent_after_the_increases_is_the_usage_never_less_than_before(
    usage: dict[str, dict[datetime, int]], sent: dict[str, dict[str, int]]
) -> None:
    todo = increases(usage, sent)
    assert list(todo) == sorted(todo)
    for values in todo.values():
        assert values and all(v > 0 for v in values.values())
        assert set(values) <= set(SUMMED_METERS)  # only summed meters go to Stripe
    for meter in SUMMED_METERS:
        for hour, value in (usage.get(meter) or {}).items():
            before = sent.get(format_time(hour), {}).get(meter, 0)
            after = before + todo.get(hour, {}).get(meter, 0)
            assert after == max(value, before)
    # once sent, nothing more: a second run sends nothing
    done = {format_time(h): dict(v) for h, v in todo.items()}
    for key, values in sent.items():
        for meter, value in values.items():
            done.setdefault(key, {})[meter] = done.get(key, {}).get(meter, 0) + value
    assert increases(usage, done) == {}


@SETTINGS
@given(usage=usages, more=usages, sent=sents)
def test_late_usage_is_sent_as_the_difference(
    usage: dict[str, dict[datetime, int]], more: dict[str, dict[datetime, int]], sent: dict[str, dict[str, int]]
) -> None:
    grown: dict[str, dict[datetime, int]] = {}
    for source in (usage, more):
        for meter, values in source.items():
            for hour, value in values.items():
                grown.setdefault(meter, {})[hour] = grown.get(meter, {}).get(hour, 0) + value
    first = increases(usage, {})
    recorded = {format_time(h): dict(v) for h, v in first.items()}
    second = increases(grown, recorded)
    for meter in SUMMED_METERS:
        for hour, value in (more.get(meter) or {}).items():
            assert second.get(hour, {}).get(meter, 0) == value


@SETTINGS
@given(since=hours, now=st.integers(0, 90 * 24).map(lambda h: BASE + h * HOUR + timedelta(minutes=7)))
def test_the_window_starts_at_the_tenants_start_and_never_before_stripes_limit(since: datetime, now: datetime) -> None:
    floor = window_floor(since, now)
    assert floor == hour_of(floor)
    assert floor >= hour_of(since)
    assert now - floor <= WINDOW + HOUR < timedelta(days=35)  # every hour sent is one Stripe accepts


@SETTINGS
@given(tenant=st.sampled_from(["t1", "t2"]), meter=meters, hour=hours, n=st.integers(0, 5))
def test_identifiers_are_stable_and_each_increase_has_its_own(tenant: str, meter: str, hour: datetime, n: int) -> None:
    assert identifier(tenant, meter, hour, n) == identifier(tenant, meter, hour, n)
    assert identifier(tenant, meter, hour, n) != identifier(tenant, meter, hour, n + 1)
    assert identifier(tenant, meter, hour, n) != identifier(tenant, meter, hour + HOUR, n)
    assert len(identifier(tenant, meter, hour, n)) <= 100  # Stripe's limit


@SETTINGS
@given(read=st.integers(0, 10_000), since=st.integers(0, 100), local=st.integers(0, 10_000))
def test_a_node_never_counts_less_than_it_admitted(read: int, since: int, local: int) -> None:
    used = used_of(read, since, local)
    assert used >= local and used >= read + since
    assert used == max(read + since, local)


# the gauges: hours around a month's end, so that periods change under the sync
EDGE = datetime(2026, 3, 30, tzinfo=UTC)
edge_hours = st.integers(0, 96).map(lambda h: EDGE + h * HOUR)
gauge_usages = st.fixed_dictionaries(
    {meter: st.dictionaries(edge_hours, st.integers(1, 1000), max_size=8) for meter in GAUGE_METERS}
)


def grown(
    usage: dict[str, dict[datetime, int]], more: dict[str, dict[datetime, int]]
) -> dict[str, dict[datetime, int]]:
    """Usage after more arrived late: more users first active in some hours, higher samples,
    higher levels (what a node's retried flush or a lagging projection adds)."""
    out = {meter: dict(hours) for meter, hours in usage.items()}
    for meter, hours in more.items():
        for hour, value in hours.items():
            cell = out.setdefault(meter, {})
            cell[hour] = cell.get(hour, 0) + value if meter == "mau" else max(cell.get(hour, 0), value)
    return out


def stored_dense(usage: dict[str, dict[datetime, int]], start: datetime) -> dict[str, dict[datetime, int]]:
    """The usage model's listing: stored bytes also at the read's first hour (its level there)."""
    levels = usage.get("stored_bytes", {})
    if start not in levels:
        before = [h for h in levels if h < start]
        levels = {**({start: levels[max(before)]} if before else {}), **levels}
    return {**usage, "stored_bytes": levels}


@SETTINGS
@given(
    first=gauge_usages,
    more=gauge_usages,
    cuts=st.lists(st.integers(1, 97), min_size=2, max_size=2),
    floor_at=st.integers(0, 40),
)
def test_gauges_send_the_period_to_date_value_and_stripes_last_event_is_the_periods_value(
    first: dict[str, dict[datetime, int]], more: dict[str, dict[datetime, int]], cuts: list[int], floor_at: int
) -> None:
    """Two sync runs, the second after late usage: whichever order Stripe's ``last`` takes (by
    timestamp, or by arrival), the last event of each gauge in each period is its period value
    so far — lowered too, when late usage lowered it (a stored-bytes level listed late, below the
    one carried before); no event repeats the one before it; a third run sends nothing."""
    closed1, closed2 = sorted(EDGE + c * HOUR for c in cuts)
    floor = EDGE + floor_at * HOUR
    start = period_of(floor).start
    sent: dict[str, dict[str, int]] = {}
    counts: dict[str, dict[str, int]] = {}
    stripe: list[tuple[str, datetime, int, datetime]] = []  # (meter, timestamp, value, hour)

    def run(usage: dict[str, dict[datetime, int]], closed: datetime) -> int:
        todo = gauge_reports(stored_dense(usage, start), sent, floor, closed)
        assert list(todo) == sorted(todo)
        for hour, values in todo.items():
            assert floor <= hour < closed and set(values) <= set(GAUGE_METERS)
            key = format_time(hour)
            for meter, value in values.items():
                n = counts.setdefault(key, {}).get(meter, 0)
                counts[key][meter] = n + 1
                sent.setdefault(key, {})[meter] = value  # as the billing stream records a gauge: its last value
                stripe.append((meter, event_time(meter, hour, n), value, hour))
        return sum(len(v) for v in todo.values())

    run(first, closed1)
    later = grown(first, more)
    run(later, closed2)
    assert run(later, closed2) == 0  # nothing twice
    if floor >= closed2:
        assert stripe == []
        return
    for meter in GAUGE_METERS:
        period = period_of(floor)
        while period.start < closed2:
            mine = [e for e in stripe if e[0] == meter and period.start <= e[3] < period.end]
            # the period's value so far (hours before the floor included: they are carried)
            truth = gauge_value(meter, stored_dense(later, period.start)[meter], period, closed2)
            values = [e[2] for e in mine]
            assert all(a != b for a, b in itertools.pairwise(values))  # each event of a period changes the value
            stamps = [e[1] for e in mine]
            assert stamps == sorted(set(stamps)) and all(period.start <= t < period.end for t in stamps)
            assert (values[-1] if values else 0) == truth, (meter, period.label, mine, truth)
            period = period_of(period.end)


@SETTINGS
@given(meter=st.sampled_from(GAUGE_METERS), hour=hours, n=st.integers(0, 10_000))
def test_a_gauges_events_of_one_hour_have_timestamps_in_that_hour_in_their_order(
    meter: str, hour: datetime, n: int
) -> None:
    assert hour <= event_time(meter, hour, n) < hour + HOUR
    assert event_time(meter, hour, n) <= event_time(meter, hour, n + 1)
    assert all(event_time(m, hour, n) == hour for m in SUMMED_METERS)
