"""The usage read model's queries: the interface billing, quotas, ``GET /v1/usage`` and
``caas usage`` code against (documents: :mod:`projections.usage.projection`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from domain.base import format_time
from projections.ports import Doc, ReadStore
from projections.usage.projection import COUNTERS, METERS
from projections.usage.ranges import Granularity, bucket_start, ceil_hour, format_hour, next_bucket, parse_hour


@dataclass(slots=True)
class Hourly:
    """The raw hourly figures of a range, before rounding: ``connection_ms`` not minutes,
    ``peaks`` per hour as ``{sample second: sockets summed over nodes}``."""

    counters: dict[str, dict[str, int]]  # meter (COUNTERS + connection_ms) -> hour -> value
    peaks: dict[str, dict[str, int]]  # hour -> second of the hour -> sockets
    mau: dict[str, int]  # hour -> users first active in their month in that hour
    stored: dict[str, int]  # hour -> bytes of messages created then, stored at the range's end

    def peak(self, hour: str) -> int:
        return max(self.peaks.get(hour, {}).values(), default=0)


def _known(meters: Iterable[str]) -> list[str]:
    names = list(meters)
    unknown = [m for m in names if m not in METERS]
    if unknown:
        raise ValueError(f"unknown meters: {', '.join(unknown)}")
    return names


async def _hourly(store: ReadStore, tenant_id: str, start: datetime, end: datetime, meters: Iterable[str]) -> Hourly:
    wanted = set(meters)
    lo, hi = format_hour(ceil_hour(start)), format_hour(ceil_hour(end))
    out = Hourly({name: {} for name in (*COUNTERS, "connection_ms")}, {}, {}, {})
    if lo >= hi:
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
        for doc in await _live_messages(store, tenant_id, {"hour": span}, end):
            out.stored[doc["hour"]] = out.stored.get(doc["hour"], 0) + _bytes(doc)
    return out


async def _live_messages(store: ReadStore, tenant_id: str, filter: Doc, at: datetime) -> list[Doc]:
    moment = format_time(at)
    docs = await store.find("usage_messages", tenant_id, filter)
    return [d for d in docs if d.get("deleted_at") is None or d["deleted_at"] >= moment]


def _bytes(doc: Doc) -> int:
    return int(doc.get("text_bytes", 0)) + int(doc.get("attachment_bytes", 0))


def _value(hourly: Hourly, meter: str, hours: Iterable[str]) -> int:
    """One meter over a group of hours: sums, except ``peak_connections`` (the highest sample)
    and ``connection_minutes`` (the summed time, in whole minutes rounded down)."""
    if meter == "peak_connections":
        return max((hourly.peak(h) for h in hours), default=0)
    if meter == "connection_minutes":
        return sum(hourly.counters["connection_ms"].get(h, 0) for h in hours) // 60_000
    if meter == "mau":
        return sum(hourly.mau.get(h, 0) for h in hours)
    if meter == "stored_bytes":
        return sum(hourly.stored.get(h, 0) for h in hours)
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
    per hour (sum ``connection_minutes`` of :func:`period_totals` for a period instead);
    ``stored_bytes`` of an hour is the bytes of the messages created in it that are still
    stored at ``end``.
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
    """Bytes of the messages created before ``at`` and not deleted before it (current sizes)."""
    docs = await _live_messages(store, tenant_id, {"hour": {"$lt": format_hour(ceil_hour(at))}}, at)
    return sum(_bytes(d) for d in docs)


async def current_totals(
    store: ReadStore, tenant_id: str, start: datetime, end: datetime, meters: Sequence[str]
) -> dict[str, int]:
    """:func:`period_totals` of only ``meters`` (in that order): reads only the documents those
    meters need, so a quota check of, say, ``messages`` and ``api_writes`` reads the period's
    hour documents and nothing else (no user or message documents)."""
    names = _known(meters)
    hourly = await _hourly(store, tenant_id, start, end, [m for m in names if m != "stored_bytes"])
    hours = _hours_of(hourly)
    totals = {meter: _value(hourly, meter, hours) for meter in names if meter != "stored_bytes"}
    if "stored_bytes" in names:
        totals["stored_bytes"] = await stored_bytes_at(store, tenant_id, end)
    return {meter: totals[meter] for meter in names}


async def period_totals(store: ReadStore, tenant_id: str, start: datetime, end: datetime) -> dict[str, int]:
    """What a billing period ``[start, end)`` sums to, per meter.

    Counters are sums; ``connection_minutes`` is the period's connection time in whole
    minutes, rounded down; ``peak_connections`` the most sockets open at one sample instant of
    the period (summed over nodes); ``mau`` the users whose first activity of their calendar
    month falls in the period (for a period of whole calendar months: each month's distinct
    active users, summed); ``stored_bytes`` the bytes stored at ``end``. Periods are taken in
    whole hours (an hour belongs to the period its start is in).
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
        buckets.append((cursor, {meter: _value(hourly, meter, hours) for meter in names}))
        cursor = next_bucket(cursor, granularity)
    totals = {meter: _value(hourly, meter, every) for meter in names if meter != "stored_bytes"}
    if "stored_bytes" in names:
        totals["stored_bytes"] = await stored_bytes_at(store, tenant_id, end)
    return Report(buckets, {meter: totals[meter] for meter in names})
