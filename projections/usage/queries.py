"""The usage read model's queries: the interface billing, quotas, ``GET /v1/usage`` and
``caas usage`` code against (documents: :mod:`projections.usage.projection`)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import accumulate

from projections.ports import ReadStore
from projections.usage.projection import COUNTERS, METERS, _size
from projections.usage.ranges import Granularity, bucket_start, ceil_hour, format_hour, next_bucket, parse_hour


@dataclass(slots=True)
class Hourly:
    """The raw hourly figures of a range, before rounding: ``connection_ms`` not minutes,
    ``peaks`` per hour as ``{sample second: sockets summed over nodes}``."""

    counters: dict[str, dict[str, int]]  # meter (COUNTERS + connection_ms) -> hour -> value
    peaks: dict[str, dict[str, int]]  # hour -> second of the hour -> sockets
    mau: dict[str, int]  # hour -> users first active in their month in that hour
    stored: dict[str, int] = field(default_factory=dict)  # hour -> change of the stored bytes in it
    stored_at_end: int = 0  # the stored bytes at the end of the range's last hour
    # the hours of ``stored`` in order, and the sum of their changes up to each (built on first use)
    _changed: list[str] = field(default_factory=list, init=False, repr=False, compare=False)
    _sums: list[int] = field(default_factory=list, init=False, repr=False, compare=False)

    def peak(self, hour: str) -> int:
        return max(self.peaks.get(hour, {}).values(), default=0)

    def stored_after(self, hours: Iterable[str]) -> int:
        """The stored bytes at the end of the last of ``hours`` (at the range's start if none).

        One bisect over the changes' running sums: a report asks this once per bucket, and
        summing every later change each time made a year of hourly buckets quadratic."""
        last = max(hours, default="")
        if len(self._sums) != len(self.stored) + 1:
            self._changed = sorted(self.stored)
            self._sums = list(accumulate((self.stored[hour] for hour in self._changed), initial=0))
        later = self._sums[-1] - self._sums[bisect_right(self._changed, last)]
        return self.stored_at_end - later


def _known(meters: Iterable[str]) -> list[str]:
    names = list(meters)
    unknown = [m for m in names if m not in METERS]
    if unknown:
        raise ValueError(f"unknown meters: {', '.join(unknown)}")
    return names


async def _hourly(
    store: ReadStore, tenant_id: str, start: datetime, end: datetime, meters: Iterable[str], *, force: bool = False
) -> Hourly:
    """The hours starting in ``[start, end)`` (``force``: read the stored-bytes level at
    ``end`` even if no hour starts in the range)."""
    wanted = set(meters)
    lo, hi = format_hour(ceil_hour(start)), format_hour(ceil_hour(end))
    out = Hourly({name: {} for name in (*COUNTERS, "connection_ms")}, {}, {})
    if lo >= hi and not force:
        return out
    span = {"$gte": lo, "$lt": hi}
    if wanted & {*COUNTERS, "connection_minutes", "peak_connections"}:
        for doc in await store.find("usage", tenant_id, {"hour": span}):
            hour = doc["hour"]
            for name, values in out.counters.items():
                value = doc.get(name)
                if value:
                    values[hour] = values.get(hour, 0) + value
            for second, sockets in (doc.get("samples") or {}).items():
                seconds = out.peaks.setdefault(hour, {})
                seconds[second] = seconds.get(second, 0) + sockets
    if "mau" in wanted:
        first: dict[tuple[str, str], str] = {}
        for doc in await store.find("usage_users", tenant_id, {"month": {"$gte": lo[:7], "$lte": hi[:7]}}):
            key = (doc["month"], doc["user_id"])
            hour = doc["first_hour"]
            if key not in first or hour < first[key]:
                first[key] = hour
        for hour in first.values():
            if lo <= hour < hi:
                out.mau[hour] = out.mau.get(hour, 0) + 1
    if "stored_bytes" in wanted:
        later = 0  # the changes after the range: taken off the total to give the level at its end
        for doc in await store.find("usage_stored", tenant_id, {"hour": {"$gte": lo}}):
            hour, change = doc["hour"], int(doc.get("bytes") or 0)
            if hour >= hi:
                later += change
            else:
                out.stored[hour] = out.stored.get(hour, 0) + change
        out.stored_at_end = await _stored_now(store, tenant_id) - later
    return out


async def _stored_now(store: ReadStore, tenant_id: str) -> int:
    """The running total: one document per shard."""
    return sum(int(doc.get("bytes") or 0) for doc in await store.find("usage_bytes", tenant_id, {}))


def _value(hourly: Hourly, meter: str, hours: Iterable[str]) -> int:
    """One meter over a group of hours: sums, except ``peak_connections`` (the highest sample),
    ``connection_minutes`` (the summed time, in whole minutes rounded down) and ``stored_bytes``
    (the level at the end of the group's last hour)."""
    if meter == "peak_connections":
        return max((hourly.peak(h) for h in hours), default=0)
    if meter == "connection_minutes":
        return sum(hourly.counters["connection_ms"].get(h, 0) for h in hours) // 60_000
    if meter == "mau":
        return sum(hourly.mau.get(h, 0) for h in hours)
    if meter == "stored_bytes":
        return hourly.stored_after(hours)
    return sum(hourly.counters[meter].get(h, 0) for h in hours)


def _hours_of(hourly: Hourly) -> set[str]:
    hours = set(hourly.peaks) | set(hourly.mau) | set(hourly.stored)
    for values in hourly.counters.values():
        hours |= set(values)
    return hours


async def usage_buckets(
    store: ReadStore, tenant_id: str, start: datetime, end: datetime, meters: Sequence[str] = METERS
) -> dict[str, dict[datetime, int]]:
    """Meter -> {hour start (UTC, aware) -> value} for the hours starting in ``[start, end)``.

    Sparse: an hour missing from a meter's map is 0. ``connection_minutes`` is rounded down
    per hour (sum ``connection_minutes`` of :func:`period_totals` for a period instead).
    ``stored_bytes`` is a level: the bytes stored at the end of each hour in which they changed
    (an hour not listed has the level of the last listed hour before it; zero levels are left
    out like any zero).
    """
    names = _known(meters)
    hourly = await _hourly(store, tenant_id, start, end, names)
    hours = sorted(_hours_of(hourly))
    out: dict[str, dict[datetime, int]] = {}
    for meter in names:
        values = {}
        for hour in hours:
            value = _value(hourly, meter, (hour,))
            if value:
                values[parse_hour(hour)] = value
        out[meter] = values
    return out


async def stored_bytes_at(store: ReadStore, tenant_id: str, at: datetime) -> int:
    """The bytes stored at the end of the last hour that starts before ``at``: the running
    total less the changes of the hours after (reads no message)."""
    return (await _hourly(store, tenant_id, at, at, ["stored_bytes"], force=True)).stored_at_end


async def current_totals(
    store: ReadStore, tenant_id: str, start: datetime, end: datetime, meters: Sequence[str]
) -> dict[str, int]:
    """:func:`period_totals` of only ``meters`` (in that order): reads only the documents those
    meters need, so a quota check of, say, ``messages`` and ``api_writes`` reads the period's
    hour documents and nothing else (no user or message documents)."""
    names = _known(meters)
    hourly = await _hourly(store, tenant_id, start, end, names, force=True)
    hours = _hours_of(hourly)
    totals = {meter: _value(hourly, meter, hours) for meter in names if meter != "stored_bytes"}
    if "stored_bytes" in names:
        totals["stored_bytes"] = hourly.stored_at_end
    return {meter: totals[meter] for meter in names}


async def period_totals(store: ReadStore, tenant_id: str, start: datetime, end: datetime) -> dict[str, int]:
    """What a billing period ``[start, end)`` sums to, per meter.

    Counters are sums; ``connection_minutes`` is the period's connection time in whole
    minutes, rounded down; ``peak_connections`` the most sockets open at one sample instant of
    the period (summed over nodes); ``mau`` the users whose first activity of their calendar
    month falls in the period (for a period of whole calendar months: each month's distinct
    active users, summed); ``stored_bytes`` the bytes stored at the end of the period's last
    hour (the running total less later hours' changes). Periods are taken in whole hours (an
    hour belongs to the period its start is in).
    """
    return await current_totals(store, tenant_id, start, end, METERS)


@dataclass(frozen=True, slots=True)
class Report:
    """A range's usage in buckets of one granularity, every bucket listed (zeros included)."""

    buckets: list[tuple[datetime, dict[str, int]]]
    totals: dict[str, int]


async def usage_report(
    store: ReadStore,
    tenant_id: str,
    start: datetime,
    end: datetime,
    granularity: Granularity,
    meters: Sequence[str] = METERS,
) -> Report:
    """``GET /v1/usage``: the hours of ``[start, end)`` grouped by ``granularity`` (buckets
    start at ``start``'s hour, day or month, in UTC) and the range's totals as
    :func:`period_totals` defines them."""
    names = _known(meters)
    hourly = await _hourly(store, tenant_id, start, end, names)
    groups: dict[datetime, list[str]] = {}
    every = _hours_of(hourly)
    for hour in every:
        groups.setdefault(bucket_start(parse_hour(hour), granularity), []).append(hour)
    buckets = []
    cursor = bucket_start(ceil_hour(start), granularity)
    while cursor < end:
        hours = groups.get(cursor, [])
        values = {meter: _value(hourly, meter, hours) for meter in names}
        if "stored_bytes" in names:  # a level: at the bucket's end, changed in it or not
            last = min(next_bucket(cursor, granularity), ceil_hour(end)) - timedelta(hours=1)
            values["stored_bytes"] = hourly.stored_after([format_hour(last)])
        buckets.append((cursor, values))
        cursor = next_bucket(cursor, granularity)
    totals = {meter: _value(hourly, meter, every) for meter in names if meter != "stored_bytes"}
    if "stored_bytes" in names:
        totals["stored_bytes"] = hourly.stored_at_end
    return Report(buckets, {meter: totals[meter] for meter in names})


# --- billing's reads of the gauges (docs/plans.md, docs/quotas.md) ------------------------------
async def billing_buckets(
    store: ReadStore, tenant_id: str, start: datetime, end: datetime, meters: Sequence[str] = METERS
) -> dict[str, dict[datetime, int]]:
    """:func:`usage_buckets`, with ``stored_bytes`` also listed at the range's first hour (its
    level at that hour's end, changed in it or not): the level carried into a billing period, so
    that a period's high-water mark can be read off these hours alone
    (``domain.plans.gauge_value``)."""
    out = await usage_buckets(store, tenant_id, start, end, meters)
    first = ceil_hour(start)
    if "stored_bytes" in meters and first < end and first not in out["stored_bytes"]:
        level = await stored_bytes_at(store, tenant_id, first + timedelta(hours=1))
        if level:
            out["stored_bytes"] = {first: level, **out["stored_bytes"]}
    return out


async def stored_bytes_now(store: ReadStore, tenant_id: str) -> int:
    """The bytes stored now: the per-shard running totals (one document per shard)."""
    return await _stored_now(store, tenant_id)


async def active_users(store: ReadStore, tenant_id: str, month: str) -> set[str]:
    """The users active in ``month`` (``YYYY-MM``): one read of the month's user documents."""
    return {str(doc["user_id"]) for doc in await store.find("usage_users", tenant_id, {"month": month})}


def posted_bytes(text: str, attachments: Sequence[object]) -> int:
    """What a posted message adds to the stored bytes (the projection's own measure)."""
    return len(text.encode()) + _size(attachments)


async def edit_growth(store: ReadStore, tenant_id: str, channel_id: str, message_id: str, text: str) -> int:
    """What an edit to ``text`` would add to the stored bytes: one read of the message's usage
    document (0 if the read model does not know the message, or it is deleted)."""
    doc = await store.get("usage_messages", tenant_id, f"{channel_id}/{message_id}")
    if doc is None or doc.get("deleted_at"):
        return 0
    return len(text.encode()) - int(doc.get("text_bytes") or 0)
