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

import orjson
from starlette.types import Send

from api.errors import ApiError
from api.observability import EARLY_REFUSALS
from api.security import NO_QUOTA, SECURITY_HEADERS, Quota
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
        return self.spend(key, cost, share=share)[0]

    def spend(self, key: Hashable, cost: float = 1.0, *, share: int = 1) -> tuple[float, TokenBucket]:
        """:meth:`take`, and the bucket it spent from (for the ``RateLimit-*`` headers)."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        bucket.rate, bucket.burst = self.rate / share, max(self.burst / share, cost)
        return bucket.take(now, cost), bucket

    def bucket(self) -> TokenBucket:
        """A standalone bucket with this limiter's rate (for one socket)."""
        return TokenBucket(self.rate, self.burst, self.clock())


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


def quota(bucket: TokenBucket) -> Quota:
    """A bucket as the ``RateLimit-*`` headers state it: requests it holds when full, requests
    left now, whole seconds until it is full again."""
    missing = max(0.0, bucket.burst - bucket.tokens)
    reset = math.ceil(missing / bucket.rate) if bucket.rate > 0 else 0
    return Quota(max(1, int(bucket.burst)), max(0, int(bucket.tokens)), reset)


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nodes = nodes  # live API nodes sharing the tenant buckets
        self.user_writes = RateLimiter(*user_writes, clock=clock)
        self.tenant_writes = RateLimiter(*tenant_writes, clock=clock)
        self.tenant_reads = RateLimiter(*tenant_reads, clock=clock)
        self.ws_frames = RateLimiter(*ws_frames, clock=clock)
        self.refused = Refused(clock=clock)

    def check(self, who: Principal, *, write: bool, credential: str = "") -> Quota:
        """Raise ``429 rate_limited`` if the caller's tenant or user is over its rate; else the
        quota of the bucket that will refuse first (fewest whole requests left; on a tie the
        later to refill), so ``RateLimit-Remaining`` more requests at once all pass. A
        refused ``credential`` (the Authorization header) is remembered until its bucket has
        a token again, so :class:`RefuseLimited` refuses its repeats before any other work.

        A user token is told only of its own bucket: no headers on reads (they draw on the
        tenant's shared bucket alone), and on writes the user's own ``RateLimit-Limit`` (never
        the tenant's share of this node), with what is left of the bucket that binds first."""
        if not write:
            wait, bucket = self.tenant_reads.spend(who.tenant_id, share=max(1, self.nodes()))
            scope = "tenant reads"
        else:
            wait, bucket = self.tenant_writes.spend(who.tenant_id, share=max(1, self.nodes()))
            scope = "tenant writes"
            if not wait and who.kind == "user":
                wait, user = self.user_writes.spend((who.tenant_id, who.user_id))
                if wait or tighter(user, bucket):
                    bucket, scope = user, "user writes"
        state = quota(bucket)
        if who.kind == "user":
            state = state._replace(limit=max(1, int(self.user_writes.burst))) if write else NO_QUOTA
        if wait:
            if credential:
                now = self.user_writes.clock()
                full = now + (bucket.burst - bucket.tokens) / bucket.rate
                self.refused.note(credential, write, scope, now + wait, state.limit, full)
            raise ApiError(
                "rate_limited",
                f"too many requests ({scope}); retry after {retry_after(wait)} s",
                headers={"Retry-After": retry_after(wait), **state.headers()},
                scope=scope,
                retry_after=round(wait, 3),
            )
        return state


def tighter(mine: TokenBucket, shared: TokenBucket) -> bool:
    """Whether ``mine`` refuses no later than ``shared``: no more whole requests left, and on a
    tie no sooner full (the fuller bucket by ratio may hold fewer requests)."""
    a, b = quota(mine), quota(shared)
    return (a.remaining, -a.reset) <= (b.remaining, -b.reset)


class Refused:
    """Credentials over their rate, each until its bucket has a token again.

    Keyed by the exact Authorization header and by reads or writes: the header was
    authenticated when the refusal was decided, so a repeat within the wait is refused
    whatever route it asks for (every route of that kind draws on the same buckets).
    """

    def __init__(self, *, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self.clock = clock
        # until when it is refused, the limit's scope, the bucket's size, and when it is full again
        self._until: OrderedDict[tuple[str, bool], tuple[float, str, int, float]] = OrderedDict()

    def note(self, credential: str, write: bool, scope: str, until: float, limit: int, full: float) -> None:
        """Refuse ``credential`` until the monotonic time ``until``; its bucket holds ``limit``
        requests and is full again at ``full`` (absolute, so each refusal states its own reset)."""
        self._until[(credential, write)] = (until, scope, limit, full)
        self._until.move_to_end((credential, write))
        if len(self._until) > self.max_keys:
            self._until.popitem(last=False)

    def wait(self, credential: str, write: bool) -> tuple[float, str, Quota]:
        """Seconds the credential must still wait (0 if none), the limit's scope, and its
        quota now (no request left; the seconds until the bucket is full, counted from now)."""
        found = self._until.get((credential, write))
        if found is None:
            return 0.0, "", NO_QUOTA
        until, scope, limit, full = found
        now = self.clock()
        if until <= now:
            del self._until[(credential, write)]
            return 0.0, "", NO_QUOTA
        state = Quota(limit, 0, max(0, math.ceil(full - now))) if limit else NO_QUOTA
        return until - now, scope, state


async def refuse_early(send: Send, wait: float, scope: str, state: Quota, request_id: bytes) -> None:
    """The ``429 rate_limited`` a request whose credential was refused for its rate a moment ago
    gets at once (``api.edge.Edge``), without routing, authentication or reading its body. A
    flooding client then costs the node little more than parsing its requests, which keeps other
    tenants' latency close to unloaded."""
    EARLY_REFUSALS.inc()
    after = retry_after(wait)
    body = orjson.dumps({"error": {
        "code": "rate_limited",
        "message": f"too many requests ({scope}); retry after {after} s",
        "details": {"scope": scope, "retry_after": round(wait, 3)},
    }})  # fmt: skip
    await send({"type": "http.response.start", "status": 429, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", after.encode()),
        (b"x-request-id", request_id),
        *state.raw_headers(),
        *SECURITY_HEADERS,
    ]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
