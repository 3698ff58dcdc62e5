"""What an API node meters itself, and how it records it in the log.

Deliveries (event frames written to sockets), API requests, connection time and the open
sockets happen on an API node and nowhere in the log. The node counts them in memory on the
hot path (an attribute increment on the tenant's :class:`Tally`) and records each tenant's
counts as ``UsageRecorded`` events on the stream ``usage:<node_id>`` of that tenant, through
the normal command path (so it works on both backends).

**When.** The node closes an interval at every wall-clock multiple of ``interval``, at every
*sample instant* (a multiple of ``sample_every`` seconds since the epoch: the grid every node
shares) and at every hour start (so an interval never spans two hours and belongs to the hour
of its start), and on a graceful shutdown. A tenant's counts are recorded:

- at a sample instant, an hour start or a shutdown: if it has anything at all to bill, or
  sockets open (their count at the sample instant is part of the record);
- at any other boundary: only if something happened in it (deliveries, requests, a socket
  opened or closed, a user newly seen). The connection time of sockets that merely stayed
  open waits for the next sample instant, so an idle socket costs one event per sample
  period (a minute by default), not one per interval.

A tenant with no sockets and nothing new records nothing.

**Never twice.** The interval's start names it: a node's intervals for a tenant only move
forward, so the usage aggregate records an interval at most once (a retried append after a
timeout that did write records nothing; :mod:`domain.usage`). An append that fails is retried
at the next flush, oldest first, never merged into a later interval (merging could count a
written one twice).

**Peaks.** ``connections`` is a sample: the sockets the node held open at the sample instant
``sample_at``. The read model sums the samples of one instant over nodes; the peak is the
highest such sum. Every node samples the same instants, so a socket is counted once per
instant whichever node holds it, and a node that restarts (with a new node id) cannot add a
second sample of the same sockets to the same instant. It is a sampled peak: a burst between
two sample instants is not seen (an undercount, never an overcount).

A node killed with ``kill -9`` loses what it had not recorded: at most one interval of
deliveries and requests, one sample period of the connection time of sockets that stayed open
(plus any intervals whose appends were still failing). Usage is undercounted then, never
overcounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from commands.service import CommandEnvelope, Commands
from domain.base import format_time
from domain.events import stream_name
from domain.usage import RecordUsage

log = structlog.get_logger("caas.metering")

MAX_BACKLOG = 360  # intervals per tenant kept while appends fail (an hour at 10 s); older are dropped


@dataclass(slots=True)
class Tally:
    """One tenant's counters on this node, since the last flush. Plain attributes: the hot
    path adds to them directly."""

    deliveries: int = 0
    api_reads: int = 0
    api_writes: int = 0
    connection_ms: float = 0.0  # socket time not yet recorded
    open: int = 0  # sockets open now
    changed: bool = False  # a socket opened or closed since the last record
    start: str = ""  # the first interval not yet recorded (its counts are held over)
    since: float = 0.0  # monotonic time ``connection_ms`` was brought up to
    users: dict[str, int] = field(default_factory=dict)  # connected users -> open sockets
    new_users: set[str] = field(default_factory=set)  # connected this month, not yet reported
    reported: set[str] = field(default_factory=set)  # reported this month by this node
    month: str = ""

    def accrue(self, now: float) -> None:
        self.connection_ms += self.open * (now - self.since) * 1000
        self.since = now

    def busy(self) -> bool:
        """Something happened since the last record (recorded at the next boundary)."""
        return bool(self.deliveries or self.api_reads or self.api_writes or self.changed or self.new_users)

    def idle(self) -> bool:
        """Nothing to record and no socket open: the tally can go."""
        return not (self.busy() or self.open or self.connection_ms >= 1)


class Meter:
    """The node's usage counters, flushed as ``UsageRecorded`` events (see the module doc)."""

    def __init__(
        self,
        commands: Commands,
        node_id: str,
        *,
        interval: float = 10.0,
        sample_every: int = 60,
        enabled: bool = True,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.commands = commands
        self.node_id = node_id
        self.interval = interval
        self.sample_every = sample_every
        self.enabled = enabled
        self.wall = wall
        self.clock = clock
        self.tallies: dict[str, Tally] = {}
        self.backlog: dict[str, list[RecordUsage]] = {}
        self.started = 0.0  # wall time the current interval started
        self.recorded = 0  # intervals recorded (tests wait on it)
        self.sampled = 0.0  # the last sample instant taken
        self._task: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()

    # the hot path -----------------------------------------------------------------------
    def tally(self, tenant_id: str) -> Tally | None:
        """The tenant's counters (``None`` when metering is off): callers add to them."""
        if not self.enabled:
            return None
        found = self.tallies.get(tenant_id)
        if found is None:
            found = self.tallies[tenant_id] = Tally(since=self.clock())
        return found

    def request(self, tenant_id: str, write: bool) -> None:
        """An API request of the tenant was authenticated."""
        tally = self.tally(tenant_id)
        if tally is not None:
            if write:
                tally.api_writes += 1
            else:
                tally.api_reads += 1

    def opened(self, tenant_id: str, user_id: str) -> None:
        tally = self.tally(tenant_id)
        if tally is None:
            return
        tally.accrue(self.clock())
        tally.open += 1
        tally.changed = True
        tally.users[user_id] = tally.users.get(user_id, 0) + 1
        if user_id not in tally.reported:
            tally.new_users.add(user_id)

    def closed(self, tenant_id: str, user_id: str) -> None:
        tally = self.tally(tenant_id)
        if tally is None:
            return
        tally.accrue(self.clock())
        tally.open -= 1
        tally.changed = True
        left = tally.users.pop(user_id, 0) - 1
        if left > 0:
            tally.users[user_id] = left

    # flushing ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.started = self.wall()
        if self.enabled:
            self._task = asyncio.create_task(self._run(), name="caas-metering")

    async def close(self) -> None:
        """Stop, recording what was counted since the last flush (a graceful shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            await self.flush()

    def next_boundary(self, now: float) -> float:
        """The next flush: the next multiple of the interval, sample instant or hour start,
        whichever comes first."""
        step = math.floor(now / self.interval + 1e-9) * self.interval + self.interval
        sample = (math.floor(now + 1e-6) // self.sample_every + 1) * self.sample_every
        return min(step, float(sample), math.floor(now / 3600) * 3600 + 3600)

    def on_grid(self, moment: float) -> bool:
        """Whether ``moment`` is a sample instant or an hour start."""
        whole = round(moment)
        return abs(moment - whole) < 1e-6 and (whole % self.sample_every == 0 or whole % 3600 == 0)

    async def _run(self) -> None:
        boundary = 0.0
        while True:
            # never the same boundary twice, even if the timer woke a hair before the wall clock
            boundary = self.next_boundary(max(self.wall(), boundary))
            await asyncio.sleep(max(boundary - self.wall(), 0.0))
            try:
                await self.flush(boundary)
            except Exception as exc:  # never let a failed flush stop the meter
                log.warning("usage_flush_failed", error=str(exc))

    async def flush(self, boundary: float | None = None) -> None:
        """Close the current interval now; ``boundary`` is the wall-clock instant the flush was
        due (``None``: off the grid, as on a shutdown), and names the sample taken if it is a
        sample instant. Queue the tallies due a record (see the module doc), then record every
        queued interval, oldest first per tenant."""
        async with self._flushing:
            end = self.wall()  # the interval ends where the counts were actually cut
            begin, until = _iso(self.started), _iso(end)
            if until <= begin:  # within the same millisecond: the interval would have no name of its own
                return
            self.started = end
            sample = boundary is not None and boundary > self.sampled and self.on_grid(boundary)
            if sample and boundary is not None:
                self.sampled = boundary  # one sample per instant, whatever calls flush
            month = begin[:7]
            now = self.clock()
            for tenant_id, tally in self.tallies.items():
                tally.accrue(now)
                if tally.month != month:  # a new month: everyone connected is active again
                    tally.month, tally.reported = month, set()
                    tally.new_users |= set(tally.users)
                tally.start = tally.start or begin
                due = tally.busy() or ((sample or boundary is None) and (tally.open or tally.connection_ms >= 1))
                if not due:
                    continue  # held over: connection time of sockets that only stayed open
                command = RecordUsage(
                    node=self.node_id,
                    start=tally.start,
                    end=until,
                    deliveries=tally.deliveries,
                    api_reads=tally.api_reads,
                    api_writes=tally.api_writes,
                    connection_ms=int(tally.connection_ms),
                    connections=tally.open if sample else 0,
                    sample_at=_iso(boundary) if sample and boundary is not None else None,
                    users=sorted(tally.new_users),
                )
                tally.reported |= tally.new_users
                tally.deliveries = tally.api_reads = tally.api_writes = 0
                tally.connection_ms -= int(tally.connection_ms)  # keep the fraction of a millisecond
                tally.changed, tally.start, tally.new_users = False, "", set()
                queue = self.backlog.setdefault(tenant_id, [])
                queue.append(command)
                if len(queue) > MAX_BACKLOG:
                    dropped = queue.pop(0)
                    log.error("usage_dropped", tenant_id=tenant_id, start=dropped.start, reason="backlog full")
            self.tallies = {t: tally for t, tally in self.tallies.items() if not tally.idle()}
            results = await asyncio.gather(*(self._record(t) for t in list(self.backlog)), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    log.warning("usage_record_failed", error=str(result))

    async def _record(self, tenant_id: str) -> None:
        queue = self.backlog[tenant_id]
        stream = stream_name("usage", self.node_id)
        while queue:
            command = queue[0]
            await self.commands.execute(
                CommandEnvelope(
                    tenant_id,
                    stream,
                    command,
                    actor="system:metering",
                    command_id=f"usage:{self.node_id}:{tenant_id}:{command.start}",
                )
            )
            queue.pop(0)
            self.recorded += 1
        del self.backlog[tenant_id]


def _iso(moment: float) -> str:
    return format_time(datetime.fromtimestamp(moment, UTC))
