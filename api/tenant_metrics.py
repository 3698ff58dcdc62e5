"""Per-tenant request, message and delivery counters with a bounded number of label values.

A label per tenant would give Prometheus one series per tenant and counter: unbounded. Here
each counter family labels only its **top N tenants by recent volume** (``CAAS_METRICS_TENANT_TOP``,
20 by default) and counts every other tenant under ``tenant="other"``: at most N + 1 series per
family, whatever the number of tenants.

**The hot path** adds 1 to an attribute of the tenant's :class:`TenantCount` (a dict lookup and
an increment, like the usage meter's tally): no Prometheus child, no lock, no ranking.

**A scrape** (:meth:`TenantCounters.collect`) folds what was counted since the previous one:

1. Each tenant's *score* is its volume with exponential decay (half-life: the re-rank interval,
   ``CAAS_METRICS_TENANT_RERANK_SECONDS``, 300 s by default), so the ranking follows recent
   volume, not the process's lifetime.
2. Every re-rank interval the top N scores are chosen again. A tenant that holds a place keeps
   it unless a challenger's score is :data:`HOLD` times its own (no flapping between two tenants
   of about the same volume). Between re-ranks a free place (fewer than N tenants labelled) is
   given at once to the best-scoring tenant without one: a deployment with at most N tenants
   labels each from its first scrape.
3. The counts are added to the tenant's own series if it has a place, else to ``other``.

A labelled series counts from its tenant's promotion; a demoted tenant's series is dropped
(its later counts go to ``other``) and starts from 0 if it is promoted again: every series is a
monotonic counter, and the sum of the families' ``rate()`` over all labels is exact.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

OTHER = "other"
KINDS = ("requests", "messages", "deliveries")
HELP = {
    "requests": "Authenticated HTTP requests of a tenant (API key, user token or portal session), by top tenant",
    "messages": "Messages posted by a tenant through this node, by top tenant",
    "deliveries": "Event frames written to a tenant's websockets by this node, by top tenant",
}
HOLD = 1.25  # a challenger takes a labelled tenant's place only with this many times its score
FORGOTTEN = 0.01  # a decayed score below this is dropped


@dataclass(slots=True)
class TenantCount:
    """One tenant's counts since the last scrape. Plain attributes: the hot path adds to them."""

    requests: int = 0
    messages: int = 0
    deliveries: int = 0


class TopTenants:
    """One counter family's labels: its top ``top`` tenants by decayed volume, and ``other``."""

    def __init__(self, top: int, rerank_seconds: float, now: float) -> None:
        self.top = top
        self.every = rerank_seconds
        self.scores: dict[str, float] = {}
        self.labelled: dict[str, int] = {}  # tenant -> count since it was given its place
        self.other = 0
        self.at = self.ranked_at = now

    def add(self, counts: dict[str, int], now: float) -> None:
        """Fold ``counts`` (tenant -> count since the last fold) into the scores and the series."""
        decay = 0.5 ** (max(now - self.at, 0.0) / self.every)
        self.at = now
        if decay < 1.0:
            self.scores = {t: s * decay for t, s in self.scores.items() if s * decay >= FORGOTTEN}
        for tenant, n in counts.items():
            self.scores[tenant] = self.scores.get(tenant, 0.0) + n
        if now - self.ranked_at >= self.every:
            self.rerank()
            self.ranked_at = now
        else:
            self.fill()
        for tenant, n in counts.items():
            if tenant in self.labelled:
                self.labelled[tenant] += n
            else:
                self.other += n

    def rerank(self) -> None:
        held = self.labelled
        weight = lambda t: self.scores[t] * (HOLD if t in held else 1.0)  # noqa: E731
        chosen = heapq.nlargest(self.top, self.scores, key=weight)
        self.labelled = {t: held.get(t, 0) for t in chosen}

    def fill(self) -> None:
        free = self.top - len(self.labelled)
        if free <= 0:
            return
        waiting = (t for t in self.scores if t not in self.labelled)
        for tenant in heapq.nlargest(free, waiting, key=self.scores.__getitem__):
            self.labelled[tenant] = 0


class TenantCounters(Collector):
    """The three per-tenant counter families of this process (a Prometheus collector)."""

    def __init__(self, top: int = 20, rerank_seconds: float = 300.0, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.counts: dict[str, TenantCount] = {}  # one small object per tenant seen, kept
        self.configure(top, rerank_seconds)

    def configure(self, top: int, rerank_seconds: float) -> None:
        """Start the rankings afresh with ``top`` places (``caas serve`` reads them from its settings)."""
        now = self.clock()
        self.rankings = {kind: TopTenants(top, rerank_seconds, now) for kind in KINDS}

    def of(self, tenant_id: str) -> TenantCount:
        """The tenant's counts (the hot path adds to them; a socket holds its tenant's)."""
        found = self.counts.get(tenant_id)
        if found is None:
            found = self.counts[tenant_id] = TenantCount()
        return found

    def fold(self) -> None:
        now = self.clock()
        added: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
        for tenant, count in self.counts.items():
            if count.requests:
                added["requests"][tenant], count.requests = count.requests, 0
            if count.messages:
                added["messages"][tenant], count.messages = count.messages, 0
            if count.deliveries:
                added["deliveries"][tenant], count.deliveries = count.deliveries, 0
        for kind, ranking in self.rankings.items():
            ranking.add(added[kind], now)

    def collect(self) -> Iterator[CounterMetricFamily]:
        self.fold()
        for kind, ranking in self.rankings.items():
            family = CounterMetricFamily(f"caas_tenant_{kind}", HELP[kind], labels=["tenant"])
            for tenant, count in ranking.labelled.items():
                family.add_metric([tenant], count)
            family.add_metric([OTHER], ranking.other)
            yield family


TENANTS = TenantCounters()
