"""The token buckets behind ``429 rate_limited``: what a tenant can spend, alone on one node
or sharing the configured rate out between the cluster's live API nodes."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from api.errors import ApiError
from api.limits import Limits, RateLimiter, quota, retry_after
from commands.auth import Principal

rates = st.floats(min_value=0.5, max_value=1000, allow_nan=False)
bursts = st.integers(min_value=1, max_value=500)
shares = st.integers(min_value=1, max_value=8)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@given(rate=rates, burst=bursts, share=shares)
def test_a_fresh_bucket_allows_its_share_of_the_burst_at_once_then_refuses(rate: float, burst: int, share: int) -> None:
    clock = Clock()
    limiter = RateLimiter(rate, burst, clock=clock)
    allowed = 0
    while limiter.take("tenant", share=share) == 0.0:
        allowed += 1
        assert allowed <= burst, "a bucket never allows more than the whole burst at once"
    assert allowed == max(1, math.floor(burst / share))


@given(rate=rates, burst=bursts, share=shares, steps=st.lists(st.floats(0, 2, allow_nan=False), max_size=50))
def test_over_any_schedule_a_share_never_spends_more_than_its_burst_plus_its_rate(
    rate: float, burst: int, share: int, steps: list[float]
) -> None:
    clock = Clock()
    limiter = RateLimiter(rate, burst, clock=clock)
    allowed = 0
    for step in steps:
        clock.now += step
        while limiter.take("tenant", share=share) == 0.0:
            allowed += 1
    elapsed = sum(steps)
    assert allowed <= max(1, burst / share) + elapsed * rate / share + 1e-6


@given(burst=bursts, share=shares)
def test_the_retry_after_a_refusal_is_when_a_token_is_back(burst: int, share: int) -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, burst, clock=clock)
    while (wait := limiter.take("tenant", share=share)) == 0.0:
        pass
    clock.now += int(retry_after(wait))  # what the Retry-After header tells the client
    assert limiter.take("tenant", share=share) == 0.0


def test_limits_share_tenant_buckets_between_live_nodes_but_not_user_buckets() -> None:
    nodes = [1]
    limits = Limits(
        user_writes=(0.001, 10), tenant_writes=(0.001, 100), tenant_reads=(0.001, 40), ws_frames=(1, 1),
        nodes=lambda: nodes[0],
    )  # fmt: skip

    def reads_allowed(tenant: str) -> int:
        who = Principal(kind="tenant", tenant_id=tenant)
        allowed = 0
        while True:
            try:
                limits.check(who, write=False)
            except ApiError as exc:
                assert exc.code == "rate_limited"
                return allowed
            allowed += 1

    assert reads_allowed("alone") == 40
    nodes[0] = 4  # three more nodes came up: this one enforces a quarter
    assert reads_allowed("shared") == 10
    user = Principal(kind="user", tenant_id="t", user_id="u")
    for _ in range(10):  # the user's own bucket (10) is per node, whatever the node count
        limits.check(user, write=True)
    try:
        limits.check(user, write=True)
        raise AssertionError("the eleventh write was allowed")
    except ApiError as exc:
        assert exc.details["scope"] == "user writes"


@given(rate=rates, burst=bursts, share=shares, steps=st.lists(st.floats(0, 5, allow_nan=False), max_size=40))
def test_the_ratelimit_headers_state_what_the_bucket_will_do(
    rate: float, burst: int, share: int, steps: list[float]
) -> None:
    """``RateLimit-Remaining`` is at least 1 exactly when the next request is allowed, never above
    ``RateLimit-Limit``; ``RateLimit-Reset`` is 0 exactly when the bucket is full, and after that
    many seconds it is."""
    clock = Clock()
    limiter = RateLimiter(rate, burst, clock=clock)
    for step in steps:
        clock.now += step
        _, bucket = limiter.spend("tenant", share=share)
        state = quota(bucket)
        assert 0 <= state.remaining <= state.limit
        assert (state.reset == 0) == (bucket.tokens >= bucket.burst)
        refill = bucket.tokens + state.reset * bucket.rate
        assert refill >= bucket.burst - 1e-9 * bucket.burst
        allowed = limiter.take("tenant", share=share) == 0.0  # the next request, at the same instant
        assert allowed == (state.remaining >= 1)
