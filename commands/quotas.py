"""Quotas on the write path: a hard-capped meter at its limit refuses further writes of its kind.

The check must cost a write almost nothing, so each node keeps, per tenant, what the usage
read model said at most ``ttl`` seconds ago about the plan's *capped* meters only (their
hourly counters this period: no message sizes, no users), plus what this node itself
admitted since: a dictionary lookup and a comparison on the hot path, one small read-model
query per tenant per ``ttl``. A node also counts everything it admitted this period, so on one
node the check never falls behind what that node let through, whatever the flush and projection
lag (:func:`used_of`). Other nodes' writes reach the view through the read model, so a cluster
can get past a cap by what the other nodes admit within that lag; docs/quotas.md has the numbers.
If the read model cannot be read, the last view stands (writes go on). Reads are never checked,
and one tenant's quota never touches another's.

The gauges are capped on what they measure now (docs/quotas.md): ``stored_bytes`` on the level
(the read model's per-shard totals, plus the bytes of the posts this node admitted since; a write
that adds nothing, such as an edit that does not grow its message, is never refused);
``mau`` on the month's active users (the view keeps their ids: a user already active always
writes on, a new one is refused at the cap); ``peak_connections`` on the tenant's sockets open in
the cluster now (:meth:`Quotas.admit_socket`, asked by the websocket endpoint).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NoReturn

import structlog

from commands.billing import Billing
from domain import billing
from domain.base import format_time
from domain.plans import Period, included, limits, period_of

THRESHOLDS = (80, 100)
# What a write adds to the stored bytes: a number, or a reading of it awaited only at the cap.
Adds = int | Callable[[], Awaitable[int]]
log = structlog.get_logger("caas.quotas")


class QuotaExceeded(Exception):
    """A capped meter is at its limit for the period."""

    def __init__(self, meter: str, limit: int, used: int, resets_at: str) -> None:
        super().__init__(
            f"the {meter} quota of this billing period ({limit}) is used up; it resets at {resets_at}, "
            "or change the tenant's plan"
        )
        self.meter, self.limit, self.used, self.resets_at = meter, limit, used, resets_at


class PaymentRequired(Exception):
    """The tenant is past due and the deployment lets past-due tenants only read."""


@dataclass(slots=True)
class _View:
    period: Period
    expires: float
    limits: dict[str, int]
    included: dict[str, int]
    used: dict[str, int]
    past_due: bool
    admitted: dict[str, int] = field(default_factory=dict)  # by this node since the read
    local: dict[str, int] = field(default_factory=dict)  # by this node this period
    users: set[str] = field(default_factory=set)  # active this month, at the read (``mau`` watched)
    new_users: set[str] = field(default_factory=set)  # made active by this node since the read
    local_users: set[str] = field(default_factory=set)  # admitted by this node this period

    def mau(self) -> int:
        """The month's active users: the read's plus this node's new ones, and never fewer than
        the users this node alone admitted this period."""
        return max(len(self.users) + len(self.new_users), len(self.local_users))

    def active(self, user: str) -> bool:
        return user in self.users or user in self.new_users or user in self.local_users

    def stored(self) -> int:
        """The stored bytes: the level read, plus what this node's posts added since."""
        return self.used.get("stored_bytes", 0) + self.admitted.get("stored_bytes", 0)


def used_of(read: int, since_read: int, local: int) -> int:
    """What a capped meter is taken to have used: the read model's figure plus this node's
    writes since the read, and never less than what this node alone admitted this period (the
    read model may not show this node's writes yet: its meters flush every few seconds)."""
    return max(read + since_read, local)


class Quotas:
    """Per-tenant views of usage against the plan's caps, refreshed every ``ttl`` seconds."""

    def __init__(
        self,
        billing_service: Billing,
        *,
        ttl: float,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float],
        past_due_read_only: bool = False,
        settle: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """``settle``: wait, bounded, until the usage read model holds every write this node has
        made; a tenant with a ``stored_bytes`` cap reads its level only after it (see :meth:`_read`)."""
        self.billing = billing_service
        self.settle = settle
        self.ttl = ttl
        self.clock = clock
        self.monotonic = monotonic
        self.past_due_read_only = past_due_read_only
        self._views: dict[str, _View] = {}
        self._refreshing: dict[str, asyncio.Future[_View]] = {}
        self._announced: set[str] = set()  # thresholds asked for this period (cleared at the next)
        self._announced_period = ""
        self._tasks: set[asyncio.Task[None]] = set()

    async def admit(
        self, tenant_id: str, meters: Sequence[str], *, user: str | None = None, stored: Adds | None = None
    ) -> None:
        """Count one write of each of ``meters``, or raise :class:`QuotaExceeded` (nothing counted)
        if one of them is capped and used up, :class:`PaymentRequired` if the tenant may only read.

        ``user``: the user the write makes active this month (``mau`` refuses a user not active
        yet at its cap). ``stored``: the bytes the write adds to the stored bytes (``stored_bytes``
        at its cap refuses a write that adds any; a callable is awaited only then)."""
        view = await self._view(tenant_id)
        if view.past_due and self.past_due_read_only:
            raise PaymentRequired("the tenant's payment is past due: it can read but not write until it is paid")
        for meter in meters:
            limit = view.limits.get(meter)
            if limit is None:
                continue
            used = used_of(view.used.get(meter, 0), view.admitted.get(meter, 0), view.local.get(meter, 0))
            if used >= limit:
                self._refuse(tenant_id, view, meter, used)
        grows = 0
        limit = view.limits.get("stored_bytes")
        if stored is not None and limit is not None:
            at_cap = view.stored() >= limit
            if at_cap or isinstance(stored, int):
                grows = stored if isinstance(stored, int) else await stored()
            if at_cap and grows > 0:
                self._refuse(tenant_id, view, "stored_bytes", view.stored())
        watching_users = user is not None and "mau" in view.included
        new_user = watching_users and user is not None and not view.active(user)
        limit = view.limits.get("mau")
        if new_user and limit is not None and view.mau() >= limit:
            self._refuse(tenant_id, view, "mau", view.mau())
        for meter in meters:
            view.admitted[meter] = view.admitted.get(meter, 0) + 1
            view.local[meter] = view.local.get(meter, 0) + 1
        if grows > 0:
            view.admitted["stored_bytes"] = view.admitted.get("stored_bytes", 0) + grows
        if watching_users and user is not None:
            if new_user:
                view.new_users.add(user)
            view.local_users.add(user)

    async def admit_socket(self, tenant_id: str, user: str, open_sockets: Callable[[], int]) -> None:
        """Admit a new websocket of ``user``, or raise :class:`QuotaExceeded`: ``peak_connections``
        capped and the tenant's open sockets (``open_sockets()``, counted only then) at the limit,
        or ``mau`` capped at its limit and ``user`` not active this month. Nothing is counted: the
        socket counts once open, the user once the node records it connected."""
        view = await self._view(tenant_id)
        limit = view.limits.get("peak_connections")
        if limit is not None:
            sockets = open_sockets()
            if sockets >= limit:
                self._refuse(tenant_id, view, "peak_connections", sockets)
        limit = view.limits.get("mau")
        if limit is not None and not view.active(user) and view.mau() >= limit:
            self._refuse(tenant_id, view, "mau", view.mau())
        if "mau" in view.included:
            view.local_users.add(user)

    def _refuse(self, tenant_id: str, view: _View, meter: str, used: int) -> NoReturn:
        self._announce(tenant_id, view, meter, used)
        raise QuotaExceeded(meter, view.limits[meter], used, format_time(view.period.end))

    def release(self, tenant_id: str, meters: Sequence[str]) -> None:
        """Uncount one write of each of ``meters`` admitted by :meth:`admit` (the request was
        refused by a later check)."""
        view = self._views.get(tenant_id)
        if view is None:
            return
        for meter in meters:
            for counts in (view.admitted, view.local):
                if counts.get(meter, 0) > 0:
                    counts[meter] -= 1

    def forget(self, tenant_id: str) -> None:
        """Read the tenant's plan and usage again at its next write (its plan changed); what this
        node admitted this period still counts."""
        view = self._views.get(tenant_id)
        if view is not None:
            view.expires = float("-inf")

    async def _view(self, tenant_id: str) -> _View:
        view = self._views.get(tenant_id)
        now = self.monotonic()
        if view is not None and view.expires > now and view.period.end > self.clock():
            return view
        running = self._refreshing.get(tenant_id)
        if running is None:  # one read per tenant, however many writes wait for it
            running = self._refreshing[tenant_id] = asyncio.ensure_future(self._read(tenant_id))
            running.add_done_callback(lambda _: self._refreshing.pop(tenant_id, None))
        return await asyncio.shield(running)

    async def _read(self, tenant_id: str) -> _View:
        period = period_of(self.clock())
        last = self._views.get(tenant_id)
        try:
            await self.billing.pin_initial_plan(tenant_id)
        except Exception as exc:  # recorded at a later read; the default plan applies meanwhile
            log.warning("initial_plan_not_recorded", tenant_id=tenant_id, error=repr(exc))
        state = await self.billing.state(tenant_id)
        history = await self.billing.history(tenant_id, state)
        caps = limits(history, period)
        quantities = included(history, period)
        watched = sorted({*caps, *(m for m, q in quantities.items() if q > 0)})  # caps, and thresholds
        same = last is not None and last.period == period
        users: set[str] = set()
        if self.settle is not None and last is not None and "stored_bytes" in last.limits:
            # The level is read afresh and what this node admitted since the last read is dropped,
            # so the read must already hold those posts, or a lagging projection would let the
            # node admit them again. Only tenants with a stored-bytes cap pay for the wait.
            await self.settle()
        try:
            used = await self.billing.usage.counters(tenant_id, period.start, period.end, watched)
            if "mau" in watched:  # the month's active users: one read of its user documents
                users = await self.billing.usage.active_users(tenant_id, period.label)
                used["mau"] = len(users)
        except Exception as exc:  # the read store is down: the last view's figures, not a failed write
            log.warning("quota_usage_unreadable", tenant_id=tenant_id, error=repr(exc))
            used = dict(last.used) if last is not None and same else {}
            if last is not None and same:
                used = {m: used.get(m, 0) + last.admitted.get(m, 0) for m in set(used) | set(last.admitted)}
                users = last.users | last.new_users
        local = dict(last.local) if last is not None and same else {}
        view = _View(
            period,
            self.monotonic() + self.ttl,
            caps,
            quantities,
            used,
            state.payment_status == "past_due",
            local=local,
            users=users,
            local_users=set(last.local_users) if last is not None and same else set(),
        )
        self._views[tenant_id] = view
        for meter in watched:
            figure = view.mau() if meter == "mau" else used_of(used.get(meter, 0), 0, local.get(meter, 0))
            self._announce(tenant_id, view, meter, figure)
        return view

    def _announce(self, tenant_id: str, view: _View, meter: str, used: int) -> None:
        """Record each threshold ``used`` has reached, once per period (the decider drops a
        repeat from another node; this node asks at most once)."""
        if view.period.label != self._announced_period:
            self._announced, self._announced_period = set(), view.period.label
        quantity = view.included.get(meter, 0)
        if quantity <= 0:
            return
        for threshold in THRESHOLDS:
            key = f"{tenant_id}/{billing.threshold_key(view.period.label, meter, threshold)}"
            if used * 100 < threshold * quantity or key in self._announced:
                continue
            self._announced.add(key)
            command = billing.RecordQuotaThreshold(
                meter=meter, threshold=threshold, period=view.period.label, used=used, limit=quantity
            )
            task = asyncio.ensure_future(self._record(tenant_id, command, key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _record(self, tenant_id: str, command: billing.RecordQuotaThreshold, key: str) -> None:
        try:
            await self.billing.record(tenant_id, command, "system:quotas")
        except Exception as exc:  # asked again at the next refresh
            self._announced.discard(key)
            log.warning("quota_threshold_not_recorded", tenant_id=tenant_id, meter=command.meter, error=repr(exc))

    async def close(self) -> None:
        for task in list(self._tasks):
            await asyncio.gather(task, return_exceptions=True)
