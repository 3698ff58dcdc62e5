"""The analytics read model's queries: ``GET /v1/analytics`` (documents:
:mod:`projections.analytics.projection`; definitions: docs/analytics.md).

A report covers whole UTC days (or calendar months): the range asked for is widened to the
days (months) it overlaps. Time to first reply is worked out here from the channel-day
documents of the range and of the days before and after it (the hour before the range, the
:data:`REPLY_WINDOW` after it), so its cost is the channel-days with a post (a document each,
holding each author's first post time in each hour). A report reads at most ``max_docs``
documents (user-days or user-months, and channel-days), else it is refused as
``range_too_large`` before anything is counted: a big tenant's long range cannot fill the
node's memory (:class:`TooManyDocuments`).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from domain.base import format_time, next_month
from projections.ports import Doc, Filter, ReadStore
from projections.usage.ranges import RangeError, parse_time

Granularity = Literal["day", "month"]
GRANULARITIES: tuple[Granularity, ...] = ("day", "month")
MAX_DAYS = 92  # a quarter of daily buckets
MAX_MONTHS = 13  # a year of monthly buckets, whichever day it starts on
QUIET = timedelta(hours=1)  # silence in a channel before a post that starts a conversation
REPLY_WINDOW = timedelta(hours=24)  # a first reply later than this leaves the conversation unanswered
TOP_CHANNELS = 100  # the busiest channels listed by name


@dataclass(frozen=True, slots=True)
class AnalyticsRange:
    start: datetime  # a day's (or month's) start, UTC
    end: datetime  # the start of the first day (month) after the range
    granularity: Granularity


def _floor_day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def parse_range(start: str | None, end: str | None, granularity: str) -> AnalyticsRange:
    """The whole days (months) ``[from, to)`` overlaps, or a :class:`RangeError` saying why it
    cannot be served (``GET /v1/analytics``)."""
    begin, until = parse_time(start, "from"), parse_time(end, "to")
    if until <= begin:
        raise RangeError("to must be later than from", rule="empty_range")
    if granularity not in GRANULARITIES:
        raise RangeError("granularity must be day or month", rule="unknown_granularity")
    grain: Granularity = granularity
    first = _floor_day(begin)
    last = _floor_day(until) if _floor_day(until) == until else _floor_day(until) + timedelta(days=1)
    if grain == "month":
        first = first.replace(day=1)
        last = last if last.day == 1 else next_month(last)
        months = (last.year - first.year) * 12 + last.month - first.month
        too_long = months > MAX_MONTHS
    else:
        too_long = (last - first).days > MAX_DAYS
    if too_long:
        raise RangeError(
            f"the range is too long: at most {MAX_DAYS} days by day and {MAX_MONTHS} months by month; "
            "ask for a coarser granularity or a shorter range",
            rule="range_too_large",
            max_days=MAX_DAYS,
            max_months=MAX_MONTHS,
        )
    return AnalyticsRange(first, last, grain)


MAX_DOCS = 50_000  # documents one report reads, by default (CAAS_ANALYTICS_MAX_DOCS)


class TooManyDocuments(RangeError):
    """The range holds more read-model documents than one report reads: a narrower range (or,
    for the active channels and conversations, fewer days) is asked for."""

    def __init__(self, max_docs: int) -> None:
        super().__init__(
            f"the range holds more than the {max_docs} read-model documents (user-days or user-months, and "
            "channel-days) one report reads; ask for a shorter range, or split it and ask for each part",
            rule="range_too_large",
            max_documents=max_docs,
        )


async def _find_bounded(
    store: ReadStore, collection: str, tenant_id: str, filter: Filter, budget: int, max_docs: int
) -> list[Doc]:
    """The documents matching ``filter``, or :class:`TooManyDocuments` (of a report's
    ``max_docs``) when more than ``budget`` match: read with a limit of one more, so no more than
    that is ever held."""
    docs = await store.find(collection, tenant_id, filter, limit=budget + 1)
    if len(docs) > budget:
        raise TooManyDocuments(max_docs)
    return docs


@dataclass(slots=True)
class Figures:
    """One bucket's (or the whole range's) figures."""

    active_users: int = 0
    messages: int = 0
    replies: int = 0
    active_channels: int = 0
    conversations: int = 0
    answered: int = 0
    median_first_reply_seconds: float | None = None

    def as_dict(self) -> dict[str, int | float | None]:
        return {
            "active_users": self.active_users,
            "messages": self.messages,
            "replies": self.replies,
            "active_channels": self.active_channels,
            "conversations": self.conversations,
            "answered": self.answered,
            "median_first_reply_seconds": self.median_first_reply_seconds,
        }


@dataclass(frozen=True, slots=True)
class Report:
    """A range's analytics: every bucket (zeros included), the range as a whole, and its
    busiest channels (at most :data:`TOP_CHANNELS`, by posts, then id)."""

    buckets: list[tuple[datetime, Figures]]
    totals: Figures
    channels: list[dict[str, int | str]] = field(default_factory=list)


def _day(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"


def _parse(at: str) -> datetime:
    return datetime.fromisoformat(at)


@dataclass(frozen=True, slots=True)
class Conversation:
    """A post that started a conversation, and the seconds until another user's first post in
    the channel (``None``: none within :data:`REPLY_WINDOW`)."""

    channel_id: str
    started_at: str
    waited: float | None


@dataclass(frozen=True, slots=True)
class Hour:
    """A channel's hour with a post, as its channel-day document holds it."""

    key: str  # YYYY-MM-DDTHH
    start_at: str  # its first post: time and author key (:func:`author_key`)
    start_by: str
    last: str  # its last post's time
    day: Doc  # the document, whose ``first`` holds each author's first post of each hour

    def first_other(self, author: str) -> str | None:
        """The time of the hour's first post by someone other than ``author`` (escaped)."""
        if self.start_by != author:
            return self.start_at
        prefix, found = self.key[11:13] + ":", None
        for name, at in (self.day.get("first") or {}).items():
            if name.startswith(prefix) and name[3:] != author and (found is None or at < found):
                found = at
        return found


def _hours(days: Iterable[Doc]) -> dict[str, list[Hour]]:
    """The channel-day documents ``days`` as each channel's hours with a post, in order (only
    the hours' first and last posts are read here: the other authors' only when needed)."""
    found: dict[str, list[Hour]] = defaultdict(list)
    for doc in days:
        last, hours, day = doc.get("last") or {}, found[doc["channel_id"]], doc["day"]
        for hh, start in (doc.get("start") or {}).items():
            at, _, by = str(start).partition("|")
            hours.append(Hour(f"{day}T{hh}", at, by, str(last[hh]), doc))
    for hours in found.values():
        hours.sort(key=lambda hour: hour.key)
    return found


def conversations(days: Iterable[Doc]) -> list[Conversation]:
    """The conversations the channel-day documents ``days`` show (any order, any channels).

    A post starts a conversation when its channel had no post in the :data:`QUIET` before it
    (or never had one); its first reply is the first later post in the channel (a thread reply
    included) by another user. Only an hour's first post can start one (:data:`QUIET` is an
    hour), and each author's first post of each hour is all it takes to find the reply."""
    found: list[Conversation] = []
    for channel_id, hours in _hours(days).items():
        previous: str | None = None
        for i, hour in enumerate(hours):
            if previous is None or _parse(hour.start_at) - _parse(previous) >= QUIET:
                found.append(Conversation(channel_id, hour.start_at, _waited(hours, i)))
            previous = hour.last
    return found


def _waited(hours: list[Hour], i: int) -> float | None:
    """Seconds from the start of ``hours[i]`` to the first post by another author, if within
    :data:`REPLY_WINDOW`."""
    t0, a0 = hours[i].start_at, hours[i].start_by
    start = _parse(t0)
    deadline = format_time(start + REPLY_WINDOW)
    for hour in hours[i:]:
        if hour.start_at >= deadline:
            return None
        at = hour.first_other(a0)
        if at is not None:
            return (_parse(at) - start).total_seconds() if at < deadline else None
    return None


def _median(samples: list[float]) -> float | None:
    return round(statistics.median(samples), 3) if samples else None


@dataclass(slots=True)
class _Buckets:
    """A report being filled: each bucket's figures by label (a day, or a month ``YYYY-MM``)."""

    monthly: bool
    first_day: str
    last_day: str
    figures: dict[str, Figures]
    totals: Figures = field(default_factory=Figures)

    def label(self, day: str) -> str | None:
        """The label of ``day``'s bucket, if the range holds it."""
        if not self.first_day <= day <= self.last_day:
            return None
        return day[:7] if self.monthly else day


async def _active_users(store: ReadStore, tenant_id: str, out: _Buckets, max_docs: int) -> int:
    """Distinct users per bucket and over the range: the month documents by month, the day
    documents by day. How many documents it read (at most ``max_docs``)."""
    users: dict[str, set[str]] = defaultdict(set)
    if out.monthly:
        span = {"$gte": out.first_day[:7], "$lte": out.last_day[:7]}
        docs = await _find_bounded(store, "analytics_monthly", tenant_id, {"month": span}, max_docs, max_docs)
        for doc in docs:
            users[doc["month"]].add(doc["user_id"])
    else:
        span = {"$gte": out.first_day, "$lte": out.last_day}
        docs = await _find_bounded(store, "analytics_users", tenant_id, {"day": span}, max_docs, max_docs)
        for doc in docs:
            users[doc["day"]].add(doc["user_id"])
    for label, who in users.items():
        out.figures[label].active_users = len(who)
    out.totals.active_users = len(set().union(*users.values())) if users else 0
    return len(docs)


def _posts(days: list[Doc], out: _Buckets) -> list[dict[str, int | str]]:
    """Posts and active channels per bucket and over the range; the busiest channels."""
    channels: dict[str, set[str]] = defaultdict(set)
    messages: Counter[str] = Counter()
    replies: Counter[str] = Counter()
    for doc in days:
        label = out.label(str(doc["day"]))
        if label is None:
            continue
        bucket = out.figures[label]
        cid, posted, replied = doc["channel_id"], int(doc.get("messages") or 0), int(doc.get("replies") or 0)
        bucket.messages += posted
        bucket.replies += replied
        channels[label].add(cid)
        messages[cid] += posted
        replies[cid] += replied
    for label, active in channels.items():
        out.figures[label].active_channels = len(active)
    out.totals.messages, out.totals.replies = sum(messages.values()), sum(replies.values())
    out.totals.active_channels = len(messages)
    busiest = sorted(messages, key=lambda c: (-(messages[c] + replies[c]), c))[:TOP_CHANNELS]
    return [{"channel_id": c, "messages": messages[c], "replies": replies[c]} for c in busiest]


def _replies(days: list[Doc], out: _Buckets) -> None:
    """Conversations, answered ones and the median time to first reply, per bucket (of the day
    each started) and over the range."""
    waits: dict[str, list[float]] = defaultdict(list)
    every: list[float] = []
    for conversation in conversations(days):
        label = out.label(conversation.started_at[:10])
        if label is None:
            continue
        bucket = out.figures[label]
        bucket.conversations += 1
        out.totals.conversations += 1
        if conversation.waited is not None:
            bucket.answered += 1
            out.totals.answered += 1
            waits[label].append(conversation.waited)
            every.append(conversation.waited)
    for label, samples in waits.items():
        out.figures[label].median_first_reply_seconds = _median(samples)
    out.totals.median_first_reply_seconds = _median(every)


async def analytics_report(store: ReadStore, tenant_id: str, asked: AnalyticsRange, max_docs: int = MAX_DOCS) -> Report:
    """``GET /v1/analytics``: the days (months) of ``asked`` and the range's totals, read from at
    most ``max_docs`` documents, else :class:`TooManyDocuments`."""
    monthly = asked.granularity == "month"
    starts: list[datetime] = []
    cursor = asked.start
    while cursor < asked.end:
        starts.append(cursor)
        cursor = next_month(cursor) if monthly else cursor + timedelta(days=1)
    labels = [_day(start)[:7] if monthly else _day(start) for start in starts]
    out = _Buckets(monthly, _day(asked.start), _day(asked.end - timedelta(days=1)), {lb: Figures() for lb in labels})
    read = await _active_users(store, tenant_id, out, max_docs)
    # the channel days of the range, and the day before and after it (the hour before the
    # range, the reply window after it)
    span = {"$gte": _day(asked.start - timedelta(days=1)), "$lte": _day(asked.end)}
    days = await _find_bounded(store, "analytics_channels", tenant_id, {"day": span}, max_docs - read, max_docs)
    channels = _posts(days, out)
    _replies(days, out)
    return Report(
        [(start, out.figures[label]) for start, label in zip(starts, labels, strict=True)], out.totals, channels
    )
