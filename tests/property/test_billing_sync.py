"""Property tests of the sync's pure parts: what to send (:func:`increases`), from where
(:func:`window_floor`), under which identifiers; and the quota check's figure (``used_of``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from commands.billing_sync import WINDOW, identifier, increases, window_floor
from commands.quotas import used_of
from domain.base import format_time
from domain.plans import HOUR, SUMMED_METERS, hour_of

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
