"""Token buckets: per tenant and per user on HTTP commands and queries, per socket on
websocket frames. In memory on each API node. With ``CAAS_RATE_LIMIT_SCOPE=cluster`` (the
default) a node gives each tenant bucket 1/N of the configured rate and burst, N being the
live API nodes it hears heartbeats from, so a tenant whose requests the load balancer spreads
over the nodes gets the configured rate in total, not N times it. User buckets stay per node
(a user's requests usually ride one connection); with ``node`` every bucket is per node."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from api.errors import ApiError
from commands.auth import Principal


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; one token per request."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def take(self, now: float, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens; 0 if allowed, else the seconds until it would be."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


class RateLimiter:
    """Buckets by key, the least recently used forgotten beyond ``max_keys``."""

    def __init__(
        self, rate: float, burst: float, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def take(self, key: Hashable, cost: float = 1.0, *, share: int = 1) -> float:
        """Spend from ``key``'s bucket, which holds ``1/share`` of the rate and burst."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        bucket.rate, bucket.burst = self.rate / share, max(self.burst / share, cost)
        return bucket.take(now, cost)

    def bucket(self) -> TokenBucket:
        """A standalone bucket with this limiter's rate (for one socket)."""
        return TokenBucket(self.rate, self.burst, self.clock())


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


class Limits:
    """The HTTP limits of one node, from settings."""

    def __init__(
        self,
        *,
        user_writes: tuple[float, float],
        tenant_writes: tuple[float, float],
        tenant_reads: tuple[float, float],
        ws_frames: tuple[float, float],
        nodes: Callable[[], int] = lambda: 1,
    ) -> None:
        self.nodes = nodes  # live API nodes sharing the tenant buckets
        self.user_writes = RateLimiter(*user_writes)
        self.tenant_writes = RateLimiter(*tenant_writes)
        self.tenant_reads = RateLimiter(*tenant_reads)
        self.ws_frames = RateLimiter(*ws_frames)

    def check(self, who: Principal, *, write: bool) -> None:
        """Raise ``429 rate_limited`` if the caller's tenant or user is over its rate."""
        if not write:
            wait = self.tenant_reads.take(who.tenant_id, share=max(1, self.nodes()))
            scope = "tenant reads"
        else:
            wait = self.tenant_writes.take(who.tenant_id, share=max(1, self.nodes()))
            scope = "tenant writes"
            if not wait and who.kind == "user":
                wait = self.user_writes.take((who.tenant_id, who.user_id))
                scope = "user writes"
        if wait:
            raise ApiError(
                "rate_limited",
                f"too many requests ({scope}); retry after {retry_after(wait)} s",
                headers={"Retry-After": retry_after(wait)},
                scope=scope,
                retry_after=round(wait, 3),
            )
