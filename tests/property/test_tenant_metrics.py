"""The per-tenant counters' labels (api/tenant_metrics.py): whatever the tenants do, a family
exports at most N + 1 series; every count lands exactly once, in its tenant's series while it
has a place or in ``other``; every exported series only grows while it is exported; the
busiest tenants hold the places."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from api.tenant_metrics import KINDS, OTHER, TenantCounters

TENANTS = [f"t_{i}" for i in range(12)]
# one step: each tenant's requests, messages and deliveries since the last scrape, then seconds passing
steps = st.lists(
    st.tuples(
        st.dictionaries(st.sampled_from(TENANTS), st.tuples(*[st.integers(0, 50)] * 3), max_size=12),
        st.floats(0, 400),
    ),
    max_size=25,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def exported(counters: TenantCounters) -> dict[str, dict[str, float]]:
    """Each family's series, by tenant label, as a scrape gives them."""
    return {
        family.name: {sample.labels["tenant"]: sample.value for sample in family.samples}
        for family in counters.collect()
    }


@settings(max_examples=200, deadline=None)
@given(top=st.integers(0, 6), steps=steps)
def test_series_are_bounded_exact_and_monotonic(
    top: int, steps: list[tuple[dict[str, tuple[int, ...]], float]]
) -> None:
    clock = Clock()
    counters = TenantCounters(top=top, rerank_seconds=60.0, clock=clock)
    added = dict.fromkeys(KINDS, 0)
    dropped = dict.fromkeys(KINDS, 0.0)  # what demoted tenants' series held when they went
    before: dict[str, dict[str, float]] = {}
    for counts, seconds in steps:
        for tenant, values in counts.items():
            count = counters.of(tenant)
            for kind, value in zip(KINDS, values, strict=True):
                setattr(count, kind, getattr(count, kind) + value)
                added[kind] += value
        clock.now += seconds
        now = exported(counters)
        for kind in KINDS:
            series = now[f"caas_tenant_{kind}"]
            assert len(series) <= top + 1 and OTHER in series
            old = before.get(f"caas_tenant_{kind}", {})
            for label, value in old.items():
                if label in series:
                    assert series[label] >= value  # a counter never goes down while exported
                else:
                    dropped[kind] += value
            assert sum(series.values()) + dropped[kind] == added[kind]  # each count once
        before = now


@settings(max_examples=100, deadline=None)
@given(volumes=st.lists(st.integers(1, 1000), min_size=1, max_size=12, unique=True), top=st.integers(1, 6))
def test_the_busiest_tenants_have_the_places(volumes: list[int], top: int) -> None:
    clock = Clock()
    counters = TenantCounters(top=top, rerank_seconds=60.0, clock=clock)
    for tenant, volume in zip(TENANTS, volumes, strict=False):
        counters.of(tenant).messages += volume
    series = exported(counters)["caas_tenant_messages"]
    busiest = sorted(zip(volumes, TENANTS, strict=False), reverse=True)[:top]
    assert set(series) - {OTHER} == {tenant for _, tenant in busiest}
    # a tenant that becomes the busiest takes a place at the next re-rank, and keeps its count from then
    clock.now += 61
    counters.of("t_new").messages += 10 * max(volumes)
    assert exported(counters)["caas_tenant_messages"]["t_new"] == 10 * max(volumes)
