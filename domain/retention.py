"""Retention and legal hold: what is past its retention, and which channel-days may be shredded.

A channel's messages are kept ``days`` days: its own override if it has one, else the tenant's
default (``None``: forever). A message recorded before ``now - days`` is hidden from every read;
the key of a channel's UTC day (``chday:<channel_id>:<YYYY-MM-DD>``) may be destroyed once the
whole day is before that cutoff, so shredding never takes a message that reads still show. A
legal hold (on the channel, or on a user who is or was one of its members) suspends both:
nothing is hidden and nothing is shredded while it lasts. Pure: the clock is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from domain import errors
from domain.base import Command, Decision, Unchanged
from domain.events import ChannelDayShredded, LegalHoldPlaced, LegalHoldReleased, RetentionSet

DAY = timedelta(days=1)
MAX_DAYS = 36_500  # a hundred years: anything longer is "keep forever" (null)


class SetRetention(Command):
    """Keep messages ``days`` days (tenant default; a channel's override, ``None`` to drop it)."""

    days: int | None


class PlaceLegalHold(Command):
    reason: str


class ReleaseLegalHold(Command):
    reason: str


class ShredChannelDay(Command):
    """Record that the key of the channel's UTC ``day`` was destroyed. The sweeper passes the
    policy it judged by (``days``, ``held``: a hold of one of the members) and its ``now``; the
    channel's own hold is checked again here."""

    day: str
    now: str
    days: int | None
    held: bool = False


@dataclass(frozen=True, slots=True)
class Retention:
    """A channel's effective retention: ``days`` (``None``: forever) and whether a hold suspends it."""

    days: int | None
    held: bool = False

    def cutoff(self, now: datetime) -> datetime | None:
        """Messages recorded before this moment are hidden; ``None``: none is."""
        if self.held or self.days is None:
            return None
        return now - self.days * DAY

    def hidden(self, recorded_at: datetime, now: datetime) -> bool:
        cutoff = self.cutoff(now)
        return cutoff is not None and recorded_at < cutoff

    def day_due(self, day: date, now: datetime) -> bool:
        """Whether the key of UTC ``day`` may be destroyed: every moment of it is hidden."""
        cutoff = self.cutoff(now)
        return cutoff is not None and datetime.combine(day + DAY, time(), UTC) <= cutoff


def effective(tenant_days: int | None, channel_days: int | None, held: bool) -> Retention:
    """The channel's override wins over the tenant's default."""
    return Retention(channel_days if channel_days is not None else tenant_days, held)


def parse_day(day: str) -> date:
    """A ``YYYY-MM-DD`` day; :class:`errors.Invalid` otherwise."""
    try:
        parsed = date.fromisoformat(day)
    except ValueError:
        parsed = None
    if parsed is None or parsed.isoformat() != day:
        raise errors.Invalid("day is a UTC date written YYYY-MM-DD", day=day)
    return parsed


def check_days(days: int | None) -> None:
    if days is not None and not 1 <= days <= MAX_DAYS:
        raise errors.Invalid(f"days is 1 to {MAX_DAYS}, or null", days=days)


def decide_retention(current: int | None, current_seq: int, command: SetRetention) -> Decision:
    check_days(command.days)
    if current_seq and current == command.days:
        return Unchanged(current_seq)
    return [RetentionSet(days=command.days)]


def decide_place(held_seq: int, command: PlaceLegalHold) -> Decision:
    """``held_seq``: the seq of the hold in force (0: none)."""
    if not command.reason.strip():
        raise errors.Invalid("a legal hold needs a reason")
    if held_seq:
        return Unchanged(held_seq)
    return [LegalHoldPlaced(reason=command.reason)]


def decide_release(held_seq: int, command: ReleaseLegalHold) -> Decision:
    if not held_seq:
        raise LegalHoldNotFound("there is no legal hold to release")
    return [LegalHoldReleased(reason=command.reason)]


def decide_shred(shredded: dict[str, int], channel_held: bool, command: ShredChannelDay) -> Decision:
    seen = shredded.get(command.day)
    if seen is not None:
        return Unchanged(seen)
    policy = Retention(command.days, command.held or channel_held)
    if not policy.day_due(parse_day(command.day), datetime.fromisoformat(command.now)):
        raise errors.Conflict("that day is not past the channel's retention, or a legal hold holds it", day=command.day)
    return [ChannelDayShredded(day=command.day)]


class LegalHoldNotFound(errors.NotFound):
    rule = "legal_hold_not_found"
