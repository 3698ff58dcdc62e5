"""Which events an export or a scan takes: a tenant, event types, and a window of the log.

A window's ends are each a log position or a time. ``since`` is inclusive and ``until``
exclusive, for positions and times alike, so ``[a, b)`` and ``[b, c)`` cut a log into parts
that neither overlap nor leave a gap. A time is compared with the event's ``occurred_at``; a
position with its ``position`` (on the Kafka backend positions are ordered within a partition
of the event topic, so a position window is taken partition by partition).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter, itemgetter
from typing import TypeVar

from commands.ports import ROW_FIELDS, EventRow
from domain.base import format_time
from domain.events import EVENT_TYPES, Event

T = TypeVar("T")

# One end of a window: a log position (an int) or a time as the log writes times (a str,
# RFC 3339 UTC with milliseconds, whose text order is time order)
Bound = int | str


def log_time(value: str | datetime) -> str:
    """An RFC 3339 time or date (``2026-12-03``, ``2026-12-03T10:00:00+01:00``; no zone means
    UTC) as the log writes times. Raises ``ValueError`` for anything else."""
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        # A time at the edge of the calendar can name an instant UTC cannot hold (year 0 or 10000).
        return format_time(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))
    except (ValueError, OverflowError):
        raise ValueError(f"not an RFC 3339 time: {value!r}") from None


def bound(value: int | str | datetime, option: str = "a bound") -> Bound:
    """A window's end from what a user wrote: digits are a log position, else an RFC 3339 time
    or date. Raises ``ValueError`` naming ``option`` and the forms it takes."""
    if isinstance(value, bool):
        raise ValueError(f"{option} takes a log position or an RFC 3339 time, not {value!r}")
    if isinstance(value, int):
        position = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        position = int(value)
    else:
        try:
            return log_time(value)
        except ValueError:
            raise ValueError(
                f"{option} takes a log position (an integer such as 1200) or an RFC 3339 time "
                f"(such as 2026-12-03T10:00:00Z, or a date such as 2026-12-03), not {value!r}"
            ) from None
    if position < 0:
        raise ValueError(f"{option} takes a log position of 0 or more, not {position}")
    return position


def tenant_id(value: str | None, option: str = "tenant") -> str | None:
    """A tenant id as given (``None``: every tenant). Raises ``ValueError`` for a blank one: an
    empty ``$TENANT`` in a script must not read as "every tenant" (nor as "no tenant")."""
    if value is not None and not value.strip():
        raise ValueError(f"{option} takes a tenant id, not {value!r}; leave it out to take every tenant")
    return value


def event_types(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """Event types (comma-separated text, or names) checked against the known ones: a misspelt
    type would silently match nothing. Raises ``ValueError`` naming the unknown and the known."""
    names = [t for t in text.split(",") if t] if isinstance(text, str) else list(text or ())
    unknown = [t for t in names if t not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type(s) {', '.join(unknown)}; the event types are: {', '.join(EVENT_TYPES)}")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Selection:
    """A tenant (``None``: every tenant), event types (empty: all) and a window ``[since, until)``."""

    tenant_id: str | None = None
    types: tuple[str, ...] = ()
    since: Bound | None = None
    until: Bound | None = None

    def __post_init__(self) -> None:
        since, until = self.since, self.until
        positions = isinstance(since, int) and isinstance(until, int) and until <= since
        times = isinstance(since, str) and isinstance(until, str) and until <= since
        if positions or times:
            raise ValueError(f"the window is empty: until ({self.until}) is not after since ({self.since})")

    @property
    def after_position(self) -> int:
        """Where a scan of the log starts: just before ``since`` when it is a position."""
        return self.since - 1 if isinstance(self.since, int) and self.since > 0 else 0

    @property
    def since_time(self) -> str | None:
        """``since`` when it is a time (a backend may seek to it)."""
        return self.since if isinstance(self.since, str) else None

    def window(self, events: list[Event]) -> list[Event]:
        """The events of a batch (of this tenant and types) inside the window."""
        return self._window(events, attrgetter("position"), attrgetter("occurred_at"))

    def window_rows(self, rows: list[EventRow]) -> list[EventRow]:
        """:meth:`window` of rows (``commands.ports.ROW_FIELDS``)."""
        return self._window(rows, itemgetter(ROW_FIELDS.index("position")), itemgetter(ROW_FIELDS.index("occurred_at")))

    def _window(self, items: list[T], position: Callable[[T], int], time: Callable[[T], str]) -> list[T]:
        since, until = self.since, self.until
        kept = items
        if isinstance(since, int):
            kept = [e for e in kept if position(e) >= since]
        elif since is not None:
            kept = [e for e in kept if time(e) >= since]
        if isinstance(until, int):
            kept = [e for e in kept if position(e) < until]
        elif until is not None:
            kept = [e for e in kept if time(e) < until]
        return kept
