"""Hours, buckets and the ranges a usage query may ask for.

One parser (:func:`parse_range`) serves ``GET /v1/usage`` and ``caas usage``, so both refuse
the same inputs for the same reasons. Times are bounded to the years :data:`EARLIEST` to
:data:`LATEST` so that every step a query takes (an hour up, a month on) stays within what
``datetime`` can hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from domain.base import format_time, next_month

Granularity = Literal["hour", "day", "month"]
GRANULARITIES: tuple[Granularity, ...] = ("hour", "day", "month")
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
MAX_BUCKETS = 10_000  # hours in about 14 months; days and months reach further
MAX_RANGE = timedelta(days=5 * 366)
_STEP = {"hour": 3600, "day": 86400, "month": 28 * 86400}


def hour_key(moment: str) -> str:
    """``YYYY-MM-DDTHH`` of an RFC 3339 UTC time (``format_time``'s form)."""
    return moment[:13]


def parse_hour(key: str) -> datetime:
    return datetime(int(key[0:4]), int(key[5:7]), int(key[8:10]), int(key[11:13]), tzinfo=UTC)


def format_hour(moment: datetime) -> str:
    return hour_key(format_time(moment))


def ceil_hour(moment: datetime) -> datetime:
    """The first hour start at or after ``moment``."""
    m = moment.astimezone(UTC)
    floor = m.replace(minute=0, second=0, microsecond=0)
    return floor if floor == m else floor + timedelta(hours=1)


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
    return next_month(moment)


class RangeError(ValueError):
    """A usage range that cannot be served: ``rule`` names why (``None``: a malformed time)."""

    def __init__(self, message: str, rule: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message, self.rule, self.details = message, rule, details


@dataclass(frozen=True, slots=True)
class UsageRange:
    start: datetime
    end: datetime
    granularity: Granularity
    meters: list[str] = field(default_factory=list)


def parse_time(raw: str | None, name: str) -> datetime:
    """An RFC 3339 time with a zone, as UTC, within :data:`EARLIEST`..:data:`LATEST`."""
    example = "e.g. 2026-01-01T00:00:00Z"
    if raw is None:
        raise RangeError(f"{name} is required (an RFC 3339 time, {example})")
    try:
        moment: datetime | None = datetime.fromisoformat(raw)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise RangeError(f"{name} must be an RFC 3339 time with a zone, {example}")
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first representable instant
        moment = None
    if moment is None or not EARLIEST <= moment <= LATEST:
        raise RangeError(
            f"{name} must lie between {format_time(EARLIEST)} and {format_time(LATEST)}",
            rule="out_of_range",
            earliest=format_time(EARLIEST),
            latest=format_time(LATEST),
        )
    return moment


def parse_range(
    start: str | None,
    end: str | None,
    granularity: str,
    meters: str | None,
    known: Sequence[str],
) -> UsageRange:
    """The range a usage query asks for (``GET /v1/usage`` and ``caas usage`` alike), or a
    :class:`RangeError` saying why it cannot be served."""
    begin, until = parse_time(start, "from"), parse_time(end, "to")
    if until <= begin:
        raise RangeError("to must be later than from", rule="empty_range")
    if granularity not in GRANULARITIES:
        raise RangeError("granularity must be hour, day or month", rule="unknown_granularity")
    grain: Granularity = granularity
    if until - begin > MAX_RANGE or (until - begin).total_seconds() / _STEP[grain] > MAX_BUCKETS:
        raise RangeError(
            f"the range is too long: at most {MAX_BUCKETS} buckets and {MAX_RANGE.days} days; "
            "ask for a coarser granularity or a shorter range",
            rule="range_too_large",
        )
    names = list(dict.fromkeys(m for m in meters.split(",") if m)) if meters is not None else list(known)
    unknown = [m for m in names if m not in known]
    if unknown or not names:
        raise RangeError(
            f"unknown meter {unknown[0]!r}" if unknown else "meters names none",
            rule="unknown_meter",
            meters=list(known),
        )
    return UsageRange(begin, until, grain, names)


def this_month(now: datetime) -> tuple[str, str]:
    """The calendar month (UTC) holding ``now``, as ``from`` and ``to`` (``caas usage``'s default)."""
    month = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return format_time(month), format_time(next_month(month))
