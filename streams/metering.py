"""What an API node meters itself, and how it records it in the log.

Deliveries (event frames written to sockets), API requests, connection time and peak
concurrent connections happen on an API node and nowhere in the log. The node counts them in
memory on the hot path (an attribute increment on the tenant's :class:`Tally`) and, every
``interval`` seconds (at wall-clock multiples of it, and at each hour start) and on a graceful
shutdown, records each tenant's counts as one ``UsageRecorded`` event on the stream
``usage:<node_id>`` of that tenant, through the normal command path (so it works on both
backends). The interval's start names it: a node's intervals only move forward, so the usage
aggregate records an interval at most once (a retried append after a timeout that did write
records nothing; :mod:`domain.usage`). An append that fails is retried at the next flush, oldest
first, never merged into a later interval (merging could count a written one twice).

A node killed with ``kill -9`` loses what it had not flushed: at most one interval of its
counts (plus any intervals whose appends were still failing). Usage is undercounted then,
never overcounted.
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

EVENT_FRAME = '{"type":"event"'  # how every channel event frame starts (streams/fanout.py)
MAX_BACKLOG = 360  # intervals per tenant kept while appends fail (an hour at 10 s); older are dropped


@dataclass(slots=True)
class Tally:
    """One tenant's counters on this node, since the last flush. Plain attributes: the hot
    path adds to them directly."""

    deliveries: int = 0
    api_reads: int = 0
    api_writes: int = 0
    connection_ms: float = 0.0  # socket time closed into this interval
    open: int = 0  # sockets open now
    peak: int = 0  # the most open at once since the last flush
    since: float = 0.0  # monotonic time ``connection_ms`` was brought up to
    users: dict[str, int] = field(default_factory=dict)  # connected users -> open sockets
    new_users: set[str] = field(default_factory=set)  # connected this month, not yet reported
    reported: set[str] = field(default_factory=set)  # reported this month by this node
    month: str = ""

    def accrue(self, now: float) -> None:
        self.connection_ms += self.open * (now - self.since) * 1000
        self.since = now

    def empty(self) -> bool:
        return not (self.deliveries or self.api_reads or self.api_writes or self.connection_ms or self.peak)


class Meter:
    """The node's usage counters, flushed as ``UsageRecorded`` events (see the module doc)."""

    def __init__(
        self,
        commands: Commands,
        node_id: str,
        *,
        interval: float = 10.0,
        enabled: bool = True,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.commands = commands
        self.node_id = node_id
        self.interval = interval
        self.enabled = enabled
        self.wall = wall
        self.clock = clock
        self.tallies: dict[str, Tally] = {}
        self.backlog: dict[str, list[RecordUsage]] = {}
        self.started = 0.0  # wall time the current interval started
        self.recorded = 0  # intervals recorded (tests wait on it)
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
        tally.peak = max(tally.peak, tally.open)
        tally.users[user_id] = tally.users.get(user_id, 0) + 1
        if user_id not in tally.reported:
            tally.new_users.add(user_id)

    def closed(self, tenant_id: str, user_id: str) -> None:
        tally = self.tally(tenant_id)
        if tally is None:
            return
        tally.accrue(self.clock())
        tally.open -= 1
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
        """The next flush: the next multiple of the interval, or the next hour start if sooner
        (an interval never spans two hours, so it belongs to the hour of its start)."""
        step = math.floor(now / self.interval + 1e-9) * self.interval + self.interval
        return min(step, math.floor(now / 3600) * 3600 + 3600)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(max(self.next_boundary(self.wall()) - self.wall(), 0.0))
            try:
                await self.flush()
            except Exception as exc:  # never let a failed flush stop the meter
                log.warning("usage_flush_failed", error=str(exc))

    async def flush(self) -> None:
        """Close the current interval: queue each tenant's counts, then record every queued
        interval, oldest first per tenant."""
        async with self._flushing:
            end = self.wall()
            begin, until = _iso(self.started), _iso(end)
            if until <= begin:  # within the same millisecond: the interval would have no name of its own
                return
            self.started = end
            month = begin[:7]
            now = self.clock()
            for tenant_id, tally in self.tallies.items():
                tally.accrue(now)
                if tally.month != month:  # a new month: everyone connected is active again
                    tally.month, tally.reported = month, set()
                    tally.new_users |= set(tally.users)
                if tally.empty() and not tally.new_users:
                    continue
                command = RecordUsage(
                    node=self.node_id,
                    start=begin,
                    end=until,
                    deliveries=tally.deliveries,
                    api_reads=tally.api_reads,
                    api_writes=tally.api_writes,
                    connection_ms=int(tally.connection_ms),
                    peak_connections=tally.peak,
                    users=sorted(tally.new_users),
                )
                tally.reported |= tally.new_users
                tally.deliveries = tally.api_reads = tally.api_writes = 0
                tally.connection_ms -= int(tally.connection_ms)  # keep the fraction of a millisecond
                tally.peak, tally.new_users = tally.open, set()
                queue = self.backlog.setdefault(tenant_id, [])
                queue.append(command)
                if len(queue) > MAX_BACKLOG:
                    dropped = queue.pop(0)
                    log.error("usage_dropped", tenant_id=tenant_id, start=dropped.start, reason="backlog full")
            self.tallies = {t: tally for t, tally in self.tallies.items() if tally.open or not tally.empty()}
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
