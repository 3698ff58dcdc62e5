"""The usage read model's queries: the interface billing, quotas, ``GET /v1/usage`` and
``caas usage`` code against (documents: :mod:`projections.usage.projection`)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from domain.base import format_time
from projections.ports import ReadStore
from projections.usage.projection import COUNTERS, METERS, attachments_size, text_size
from projections.usage.ranges import Granularity, bucket_start, ceil_hour, format_hour, next_bucket

Cells = dict[str, dict[str, int]]  # day (YYYY-MM-DD) -> hour of the day (HH) -> value
_NONE: dict[str, int] = {}
_HOURS = [timedelta(hours=hour) for hour in range(24)]
_HH = [f"{hour:02d}" for hour in range(24)]
_ZERO = itertools.repeat(0)  # the default of every lookup of a map over a day's hours
_ZEROS = [0] * 24


@dataclass(slots=True)
class Days:
    """A range's figures per UTC day and hour, merged over shards, before rounding
    (``connection_ms`` not minutes). Only the hours of the range are in it."""

    counters: dict[str, Cells]  # meter (COUNTERS + connection_ms) -> cells
    peaks: Cells  # the most sockets at one sample instant of each hour (summed over nodes)
    mau: Cells  # users first active in their month in each hour
    stored: Cells = field(default_factory=dict)  # the change of the stored bytes in each hour
    stored_at_end: int = 0  # the stored bytes at the end of the range's last hour
    _daily: dict[str, dict[str, int]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _cells: Sequence[tuple[str, str]] = field(default=(), init=False, repr=False, compare=False)
    _cell_runs: list[tuple[str, list[str]]] = field(default_factory=list, init=False, repr=False, compare=False)

    def hours(self) -> list[tuple[str, str]]:
        """Every (day, hour) with a figure, in order."""
        cells: set[tuple[str, str]] = set()
        for table in (*self.counters.values(), self.peaks, self.mau, self.stored):
            for day, hours in table.items():
                cells.update((day, hour) for hour in hours)
        return sorted(cells)

    def days(self) -> set[str]:
        found: set[str] = set()
        for table in (*self.counters.values(), self.peaks, self.mau, self.stored):
            found.update(table)
        return found

    def _table(self, meter: str) -> Cells:
        if meter == "peak_connections":
            return self.peaks
        if meter == "mau":
            return self.mau
        return self.counters["connection_ms" if meter == "connection_minutes" else meter]

    def daily(self, meter: str) -> dict[str, int]:
        """Each day's figure of ``meter`` (the highest hour for peaks, milliseconds for
        connection minutes, else the sum), worked out once per meter."""
        found = self._daily.get(meter)
        if found is None:
            whole = max if meter == "peak_connections" else sum
            found = self._daily[meter] = {
                day: whole(hours.values()) for day, hours in self._table(meter).items() if hours
            }
        return found

    def value(self, meter: str, days: Iterable[str]) -> int:
        """One meter over whole ``days``: sums, except ``peak_connections`` (the highest
        sample) and ``connection_minutes`` (the summed time, in whole minutes rounded down).
        Not ``stored_bytes``, a level (:meth:`levels`)."""
        daily = self.daily(meter)
        if meter == "peak_connections":
            return max((daily.get(day, 0) for day in days), default=0)
        total = sum(daily.get(day, 0) for day in days)
        return total // 60_000 if meter == "connection_minutes" else total

    def column(self, meter: str, cells: Sequence[tuple[str, str]]) -> list[int]:
        """One meter in each of the hours ``cells``, a day's hours at a time (a year of hours is
        8,760; a day's are looked up by ``map`` in C)."""
        table, out = self._table(meter), list[int]()
        for day, hours in self._runs(cells):
            found = table.get(day)
            out.extend(map(found.get, hours, _ZERO) if found else _ZEROS[: len(hours)])
        return [value // 60_000 for value in out] if meter == "connection_minutes" else out

    def _runs(self, cells: Sequence[tuple[str, str]]) -> list[tuple[str, list[str]]]:
        """``cells`` as runs of one day's hours (worked out once per list of cells)."""
        if self._cells is not cells:
            runs: list[tuple[str, list[str]]] = []
            for day, hour in cells:
                if runs and runs[-1][0] == day:
                    runs[-1][1].append(hour)
                else:
                    runs.append((day, [hour]))
            self._cells, self._cell_runs = cells, runs
        return self._cell_runs

    def levels(self, ends: Iterable[tuple[str, str]]) -> list[int]:
        """The stored bytes at the end of each of the (ascending) ``ends`` (day, hour): the
        range's start level plus the changes up to each, one pass over the days (a day with an
        end inside it gets its running sums by hour, once)."""
        totals = {day: sum(hours.values()) for day, hours in self.stored.items()}
        days = sorted(totals)
        level = self.stored_at_end - sum(totals.values())  # at the start of ``days[i]``
        out: list[int] = []
        i, running_day, running = 0, "", list[int]()
        for day, hour in ends:
            while i < len(days) and days[i] < day:
                level += totals[days[i]]
                i += 1
            hours = self.stored.get(day)
            if not hours:
                out.append(level)
            elif hour == "23":  # a whole day: its total
                out.append(level + totals[day])
            else:
                if running_day != day:
                    running_day, running, total = day, [], 0
                    for hh in _HH:
                        total += hours.get(hh, 0)
                        running.append(total)
                out.append(level + running[int(hour)])
        return out


def _known(meters: Iterable[str]) -> list[str]:
    names = list(meters)
    unknown = [m for m in names if m not in METERS]
    if unknown:
        raise ValueError(f"unknown meters: {', '.join(unknown)}")
    return names


def _within(day: str, hours: dict[str, int], lo: str, hi: str) -> dict[str, int]:
    """The hours of a day's map that lie in ``[lo, hi)`` (all of them on a day inside it)."""
    if lo[:10] < day < hi[:10]:
        return hours
    return {h: v for h, v in hours.items() if lo <= f"{day}T{h}" < hi}


def _merge(into: Cells, day: str, hours: dict[str, int]) -> None:
    mine = into.get(day)
    if mine is None:  # the map of a document just read: no one else holds it
        into[day] = hours
        return
    for hour, value in hours.items():
        mine[hour] = mine.get(hour, 0) + value


async def _days(
    store: ReadStore, tenant_id: str, start: datetime, end: datetime, meters: Iterable[str], *, force: bool = False
) -> Days:
    """The hours starting in ``[start, end)`` (``force``: read the stored-bytes level at
    ``end`` even if no hour starts in the range)."""
    wanted = set(meters)
    lo, hi = format_hour(ceil_hour(start)), format_hour(ceil_hour(end))
    out = Days({name: {} for name in (*COUNTERS, "connection_ms")}, {}, {})
    if lo >= hi and not force:
        return out
    span = {"$gte": lo[:10], "$lte": format_hour(ceil_hour(end) - timedelta(hours=1))[:10]}  # the range's days
    if lo < hi and wanted & {*COUNTERS, "connection_minutes"}:
        for doc in await store.find("usage", tenant_id, {"day": span}):
            day = doc["day"]
            for name, cells in out.counters.items():
                hours = doc.get(name)
                if hours:
                    _merge(cells, day, _within(day, hours, lo, hi))
    if lo < hi and "peak_connections" in wanted:
        out.peaks = await _peaks(store, tenant_id, span, lo, hi)
    if "mau" in wanted and lo < hi:
        first: dict[tuple[str, str], str] = {}  # (month, user) -> the first hour, over shards
        for doc in await store.find("usage_users", tenant_id, {"month": {"$gte": lo[:7], "$lte": hi[:7]}}):
            key, hour = (doc["month"], doc["user_id"]), doc["first_hour"]
            seen = first.get(key)
            if seen is None or hour < seen:
                first[key] = hour
        for hour, users in Counter(hour for hour in first.values() if lo <= hour < hi).items():
            out.mau.setdefault(hour[:10], {})[hour[11:13]] = users
    if "stored_bytes" in wanted:
        later = 0  # the changes after the range: taken off the total to give the level at its end
        for doc in await store.find("usage_stored", tenant_id, {"day": {"$gte": lo[:10]}}):
            day, hours = doc["day"], doc.get("bytes") or {}
            if day > hi[:10]:
                later += sum(hours.values())
                continue
            if day == hi[:10]:
                later += sum(change for hour, change in hours.items() if f"{day}T{hour}" >= hi)
            _merge(out.stored, day, _within(day, hours, lo, hi))
        out.stored_at_end = await _stored_now(store, tenant_id) - later
    return out


async def _peaks(store: ReadStore, tenant_id: str, span: dict[str, str], lo: str, hi: str) -> Cells:
    """Each hour's peak: a shard's own where only one shard had sockets in the hour, else the
    samples of every shard of the day summed instant by instant."""
    found: dict[str, list[dict[str, int]]] = {}
    for doc in await store.find("usage_peaks", tenant_id, {"day": span}):
        found.setdefault(doc["day"], []).append(_within(doc["day"], doc.get("peak") or {}, lo, hi))
    out: Cells = {}
    shared = []  # days on which two shards had sockets in the same hour
    for day, shards in found.items():
        if len(shards) > 1 and len({hour for hours in shards for hour in hours}) < sum(map(len, shards)):
            shared.append(day)
        else:
            out[day] = {hour: value for hours in shards for hour, value in hours.items()}
    if not shared:
        return out
    at: dict[str, dict[str, int]] = {}
    for doc in await store.find("usage_samples", tenant_id, {"day": {"$in": shared}}):
        sockets = at.setdefault(doc["day"], {})
        for name, count in doc.items():
            if name.startswith("s") and name[1:].isdigit():
                sockets[name] = sockets.get(name, 0) + count
    for day, sockets in at.items():
        hours: dict[str, int] = {}
        for name, count in sockets.items():
            hour = f"{int(name[1:]) // 3600:02d}"
            if count > hours.get(hour, 0):
                hours[hour] = count
        out[day] = _within(day, hours, lo, hi)
    return out


async def _stored_now(store: ReadStore, tenant_id: str) -> int:
    """The running total: one document per shard."""
    return sum(int(doc.get("bytes") or 0) for doc in await store.find("usage_bytes", tenant_id, {}))


def _day_key(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"


def _hour_of(day: str, hour: str) -> datetime:
    return datetime(int(day[0:4]), int(day[5:7]), int(day[8:10]), int(hour), tzinfo=UTC)


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
    days = await _days(store, tenant_id, start, end, names)
    cells = days.hours()
    out: dict[str, dict[datetime, int]] = {}
    starts = [_hour_of(*cell) for cell in cells]
    for meter in names:
        column = days.levels(cells) if meter == "stored_bytes" else days.column(meter, cells)
        out[meter] = {at: value for at, value in zip(starts, column, strict=True) if value}
    return out


async def stored_bytes_at(store: ReadStore, tenant_id: str, at: datetime) -> int:
    """The bytes stored at the end of the last hour that starts before ``at``: the running
    total less the changes of the hours after (reads no message)."""
    return (await _days(store, tenant_id, at, at, ["stored_bytes"], force=True)).stored_at_end


async def current_totals(
    store: ReadStore, tenant_id: str, start: datetime, end: datetime, meters: Sequence[str]
) -> dict[str, int]:
    """:func:`period_totals` of only ``meters`` (in that order): reads only the documents those
    meters need, so a quota check of, say, ``messages`` and ``api_writes`` reads the period's
    day documents (without their samples) and nothing else (no user or message documents)."""
    names = _known(meters)
    days = await _days(store, tenant_id, start, end, names, force=True)
    whole = days.days()
    return {meter: days.stored_at_end if meter == "stored_bytes" else days.value(meter, whole) for meter in names}


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
    labels: list[str] = field(default_factory=list)
    """Each bucket's start as ``format_time`` writes it (the hours of a year, formatted from
    their day and hour without a datetime each)."""


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
    days = await _days(store, tenant_id, start, end, names)
    starts: list[datetime] = []
    labels: list[str] = []
    last = ceil_hour(end) - timedelta(hours=1)  # the range's last hour
    cursor = bucket_start(ceil_hour(start), granularity)
    if granularity == "hour":  # a year of hours asks 87,600 values: a column per meter, one lookup each
        cells: list[tuple[str, str]] = []
        while cursor < end:
            day, midnight = _day_key(cursor), cursor - _HOURS[cursor.hour]
            for hour in range(cursor.hour, 24):
                if midnight + _HOURS[hour] >= end:
                    break
                starts.append(midnight + _HOURS[hour])
                cells.append((day, _HH[hour]))
                labels.append(f"{day}T{_HH[hour]}:00:00.000Z")  # format_time's, for years 1000-9999
            cursor = midnight + timedelta(days=1)
        columns = [days.levels(cells) if meter == "stored_bytes" else days.column(meter, cells) for meter in names]
    else:
        groups: list[list[str]] = []  # each bucket's days, whole
        ends: list[tuple[str, str]] = []  # each bucket's last hour within the range
        while cursor < end:
            after = next_bucket(cursor, granularity)
            starts.append(cursor)
            labels.append(format_time(cursor))
            # whole days: the hours outside the range are not in ``days`` at all
            groups.append([_day_key(cursor + timedelta(days=n)) for n in range((after - cursor).days)])
            final = min(after - timedelta(hours=1), last)
            ends.append((_day_key(final), f"{final.hour:02d}"))
            cursor = after
        columns = [
            days.levels(ends) if meter == "stored_bytes" else [days.value(meter, group) for group in groups]
            for meter in names
        ]
    buckets = [(begin, dict(zip(names, row, strict=True))) for begin, *row in zip(starts, *columns, strict=True)]
    whole = days.days()
    totals = {meter: days.stored_at_end if meter == "stored_bytes" else days.value(meter, whole) for meter in names}
    return Report(buckets, totals, labels)


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


def posted_bytes(text: str, attachments: Sequence[object], e2e: object = None) -> int:
    """What a posted message adds to the stored bytes (the projection's own measure)."""
    return text_size(text, e2e) + attachments_size(attachments)


async def edit_growth(
    store: ReadStore, tenant_id: str, channel_id: str, message_id: str, text: str, e2e: object = None
) -> int:
    """What an edit to ``text`` would add to the stored bytes: one read of the message's usage
    document (0 if the read model does not know the message, or it is deleted)."""
    doc = await store.get("usage_messages", tenant_id, f"{channel_id}/{message_id}")
    if doc is None or doc.get("deleted_at"):
        return 0
    return text_size(text, e2e) - int(doc.get("text_bytes") or 0)
