"""The usage read model: what each tenant used, hour by hour, derived from the log alone.

Meters (:data:`METERS`) and where they come from:

- ``messages``, ``replies``, ``edits``: ``MessagePosted`` (top-level / with a ``parent_id``) and
  ``MessageEdited`` events of the tenant's channels.
- ``deliveries``, ``api_reads``, ``api_writes``, ``connection_minutes``, ``peak_connections``:
  counted by each API node in memory and recorded as one ``UsageRecorded`` event per tenant and
  interval on the stream ``usage:<node_id>`` (``streams/metering.py``).
- ``mau``: users who wrote (posted, edited, deleted, reacted, moved a read marker, or any
  channel command under their own token) or connected (``UsageRecorded.users``) in a calendar
  month (UTC). A bucket holds the users whose *first* activity of their month falls in it, so
  the buckets of a whole month sum to that month's MAU.
- ``stored_bytes``: UTF-8 bytes of the text plus the JSON of the attachments of live messages.
  A bucket holds the bytes, at their current size, of the messages created in it that are
  still stored at the end of the asked range; :func:`period_totals` gives the bytes stored at
  ``end`` (every message created before it and not deleted before it).

Documents (all scoped by ``tenant_id``):

- ``usage/<YYYY-MM-DDTHH>/<shard>``: the hour's counters (``inc``) and per-node peaks
  (``max`` of ``peaks.<MM>@<node>``: the node's highest socket count in that minute).
- ``usage_users/<YYYY-MM>/<user_id>/<shard>``: a user active in a month; ``first_hour`` (``min``).
- ``usage_messages/<channel_id>/<message_id>``: a message's created hour, sizes and deletion.

**Why shards.** Ops are guarded per document by the event's position, which is one order on
the embedded log but is ordered only within a partition on Kafka. A document fed by many
streams (an hour's counters, a user's month) is therefore keyed by the shard of its source —
the partition on Kafka, ``0`` on a log with one order — so each document only ever sees one
ordered source; readers sum (or take the minimum) over shards. A message's document is fed by
its channel stream alone and needs no shard. Each event yields at most one op per document.

The query functions below are the interface billing codes against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import orjson

from domain.events import Event
from projections.ports import Doc, Op, ReadStore

NAME = "usage"
COLLECTIONS = ("usage", "usage_users", "usage_messages")

METERS: tuple[str, ...] = (
    "messages",
    "replies",
    "edits",
    "deliveries",
    "api_reads",
    "api_writes",
    "connection_minutes",
    "peak_connections",
    "mau",
    "stored_bytes",
)
COUNTERS: tuple[str, ...] = ("messages", "replies", "edits", "deliveries", "api_reads", "api_writes")
Granularity = Literal["hour", "day", "month"]
Shard = Callable[[int], int]

# the user who wrote, for events a tenant key may issue on a user's behalf
_WRITER_FIELD = {
    "MessagePosted": "author_id",
    "ReactionAdded": "user_id",
    "ReactionRemoved": "user_id",
    "ReadMarkerMoved": "user_id",
}


def single_order(position: int) -> int:
    """The shard of every event on a log whose positions are one order (the embedded log)."""
    return 0


def projector(shard: Shard = single_order) -> Callable[[Event], list[Op]]:
    """The usage projection for a log whose events' sources are told apart by ``shard``
    (a function of the position: the partition on Kafka)."""

    def project(event: Event) -> list[Op]:
        return _project(event, shard(event.position))

    return project


project = projector()


# --- projection ------------------------------------------------------------------------------
def hour_key(moment: str) -> str:
    """``YYYY-MM-DDTHH`` of an RFC 3339 UTC time (``format_time``'s form)."""
    return moment[:13]


def _counter(event: Event, shard: int, hour: str, **fields: int) -> Op:
    return Op(
        "usage", event.tenant_id, f"{hour}/{shard}", event.position, inc=fields, insert={"hour": hour, "shard": shard}
    )


def _active(event: Event, shard: int, user_id: str, hour: str) -> Op:
    month = hour[:7]
    return Op(
        "usage_users",
        event.tenant_id,
        f"{month}/{user_id}/{shard}",
        event.position,
        insert={"month": month, "user_id": user_id, "shard": shard},
        min={"first_hour": hour},
    )


def _writer(event: Event) -> str | None:
    name = _WRITER_FIELD.get(event.type)
    if name is not None and isinstance(event.payload.get(name), str):
        return str(event.payload[name])
    if event.actor is not None and event.actor.startswith("user:"):
        return event.actor[5:]
    return None


def _size(attachments: Sequence[object]) -> int:
    return len(orjson.dumps(attachments)) if attachments else 0


def _message(event: Event, message_id: str, **fields: object) -> Op:
    return Op("usage_messages", event.tenant_id, f"{event.stream_id}/{message_id}", event.position, set=fields)


def _project(event: Event, shard: int) -> list[Op]:
    kind = event.stream_type
    if kind == "usage":
        return _recorded(event, shard)
    if kind != "channel":
        return []
    hour, p = hour_key(event.occurred_at), event.payload
    ops: list[Op] = []
    if event.type == "MessagePosted":
        meter = "replies" if p.get("parent_id") else "messages"
        ops.append(_counter(event, shard, hour, **{meter: 1}))
        ops.append(
            _message(
                event,
                p["message_id"],
                hour=hour,
                text_bytes=len(p["text"].encode()),
                attachment_bytes=_size(p.get("attachments") or []),
                deleted_at=None,
            )
        )
    elif event.type == "MessageEdited":
        ops.append(_counter(event, shard, hour, edits=1))
        ops.append(_message(event, p["message_id"], text_bytes=len(p["text"].encode())))
    elif event.type == "MessageDeleted":
        ops.append(_message(event, p["message_id"], deleted_at=event.occurred_at))
    writer = _writer(event)
    if writer is not None:
        ops.append(_active(event, shard, writer, hour))
    return ops


def _recorded(event: Event, shard: int) -> list[Op]:
    if event.type != "UsageRecorded":
        return []
    p = event.payload
    hour, minute = hour_key(p["start"]), p["start"][14:16]
    counts = {name: int(p.get(name, 0)) for name in ("deliveries", "api_reads", "api_writes", "connection_ms")}
    peak = int(p.get("peak_connections", 0))
    op = Op(
        "usage",
        event.tenant_id,
        f"{hour}/{shard}",
        event.position,
        inc={k: v for k, v in counts.items() if v},
        max={f"peaks.{minute}@{p['node']}": peak} if peak else {},
        insert={"hour": hour, "shard": shard},
    )
    return [op, *(_active(event, shard, user, hour) for user in dict.fromkeys(p.get("users") or []))]


# --- queries ---------------------------------------------------------------------------------
def parse_hour(key: str) -> datetime:
    return datetime(int(key[0:4]), int(key[5:7]), int(key[8:10]), int(key[11:13]), tzinfo=UTC)


def format_hour(moment: datetime) -> str:
    m = moment.astimezone(UTC)
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}"


def ceil_hour(moment: datetime) -> datetime:
    """The first hour start at or after ``moment``."""
    m = moment.astimezone(UTC)
    floor = m.replace(minute=0, second=0, microsecond=0)
    return floor if floor == m else floor + timedelta(hours=1)


def _iso(moment: datetime) -> str:
    m = moment.astimezone(UTC)
    return m.strftime("%Y-%m-%dT%H:%M:%S.") + f"{m.microsecond // 1000:03d}Z"


@dataclass(slots=True)
class Hourly:
    """The raw hourly figures of a range, before rounding: ``connection_ms`` not minutes,
    ``peaks`` per hour as ``{minute: sockets summed over nodes}``."""

    counters: dict[str, dict[str, int]]  # meter (COUNTERS + connection_ms) -> hour -> value
    peaks: dict[str, dict[str, int]]  # hour -> minute -> sockets
    mau: dict[str, int]  # hour -> users first active in their month in that hour
    stored: dict[str, int]  # hour -> bytes of messages created then, stored at the range's end

    def peak(self, hour: str) -> int:
        return max(self.peaks.get(hour, {}).values(), default=0)


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
            for key, sockets in (doc.get("peaks") or {}).items():
                minutes = out.peaks.setdefault(hour, {})
                minute = key[:2]
                minutes[minute] = minutes.get(minute, 0) + sockets
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
    moment = _iso(at)
    docs = await store.find("usage_messages", tenant_id, filter)
    return [d for d in docs if d.get("deleted_at") is None or d["deleted_at"] >= moment]


def _bytes(doc: Doc) -> int:
    return int(doc.get("text_bytes", 0)) + int(doc.get("attachment_bytes", 0))


def _value(hourly: Hourly, meter: str, hours: Iterable[str]) -> int:
    """One meter over a group of hours: sums, except ``peak_connections`` (the highest minute)
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
    unknown = [m for m in meters if m not in METERS]
    if unknown:
        raise ValueError(f"unknown meters: {', '.join(unknown)}")
    hourly = await _hourly(store, tenant_id, start, end, meters)
    hours = sorted(_hours_of(hourly))
    out: dict[str, dict[datetime, int]] = {}
    for meter in meters:
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


async def period_totals(store: ReadStore, tenant_id: str, start: datetime, end: datetime) -> dict[str, int]:
    """What a billing period ``[start, end)`` sums to, per meter.

    Counters are sums; ``connection_minutes`` is the period's connection time in whole
    minutes, rounded down; ``peak_connections`` the highest minute of the period; ``mau`` the
    users whose first activity of their calendar month falls in the period (for a period of
    whole calendar months: each month's distinct active users, summed); ``stored_bytes`` the
    bytes stored at ``end``. Periods are taken in whole hours (an hour belongs to the period
    its start is in).
    """
    hourly = await _hourly(store, tenant_id, start, end, [m for m in METERS if m != "stored_bytes"])
    hours = _hours_of(hourly)
    totals = {meter: _value(hourly, meter, hours) for meter in METERS if meter != "stored_bytes"}
    totals["stored_bytes"] = await stored_bytes_at(store, tenant_id, end)
    return {meter: totals[meter] for meter in METERS}


def bucket_start(hour: datetime, granularity: Granularity) -> datetime:
    if granularity == "day":
        return hour.replace(hour=0)
    if granularity == "month":
        return hour.replace(day=1, hour=0)
    return hour


def next_bucket(moment: datetime, granularity: Granularity) -> datetime:
    if granularity == "hour":
        return moment + timedelta(hours=1)
    if granularity == "day":
        return moment + timedelta(days=1)
    return moment.replace(year=moment.year + moment.month // 12, month=moment.month % 12 + 1)


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
    hourly = await _hourly(store, tenant_id, start, end, meters)
    groups: dict[datetime, list[str]] = {}
    for hour in _hours_of(hourly):
        groups.setdefault(bucket_start(parse_hour(hour), granularity), []).append(hour)
    buckets = []
    cursor = bucket_start(ceil_hour(start), granularity)
    while cursor < end:
        hours = groups.get(cursor, [])
        buckets.append((cursor, {meter: _value(hourly, meter, hours) for meter in meters}))
        cursor = next_bucket(cursor, granularity)
    every = _hours_of(hourly)
    totals = {meter: _value(hourly, meter, every) for meter in meters if meter != "stored_bytes"}
    if "stored_bytes" in meters:
        totals["stored_bytes"] = await stored_bytes_at(store, tenant_id, end)
    return Report(buckets, {meter: totals[meter] for meter in meters})
