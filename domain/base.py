"""Shared building blocks of the aggregates: who acts, how a decision is expressed, time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from domain.events import DomainEvent

ActorKind = Literal["admin", "tenant", "user"]
# Every user, channel and message id: also what a token's subject must be (no paths, no spaces).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@=+\-]{0,127}$"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who issues a command: the platform admin, a tenant backend (API key) or an end user."""

    kind: ActorKind
    id: str

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True, slots=True)
class Unchanged:
    """The command's effect is already recorded, at ``seq`` of the aggregate's stream.

    Deciders return this for retries and repeats (same ``client_msg_id``, a reaction that is
    already there, a read marker that would move backwards) so that the caller can answer
    with the first result and append nothing.
    """

    seq: int


Decision = list[DomainEvent] | Unchanged


class Command(BaseModel):
    """Base of every command: an imperative request to change one aggregate."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def next_month(moment: datetime) -> datetime:
    """The start (UTC) of the calendar month after the one that holds ``moment``: the one
    place CAAS steps a month (billing periods, monthly usage buckets)."""
    m = moment.astimezone(UTC)
    return datetime(m.year + m.month // 12, m.month % 12 + 1, 1, tzinfo=UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with millisecond precision; lexicographic order equals time order."""
    moment = moment.astimezone(UTC)
    if moment.year < 1000:  # strftime's %Y does not pad these; keep its output
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return (
        f"{moment.year}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:"
        f"{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )
