"""The usage aggregate: what one API node recorded for one tenant, interval by interval.

Each API node writes its counters (deliveries, requests, connection time, socket samples) to the
stream ``usage:<node_id>`` of each tenant it served, one :class:`UsageRecorded` per interval.
A node's intervals only move forward, so an interval at or before the last one recorded is a
retry (an append that timed out but was written, a command redelivered) and records nothing:
a node's usage is never counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from domain.base import Command, Decision, Unchanged
from domain.events import DomainEvent, UsageRecorded


class RecordUsage(Command):
    node: str
    start: str
    end: str
    deliveries: int = Field(default=0, ge=0)
    api_reads: int = Field(default=0, ge=0)
    api_writes: int = Field(default=0, ge=0)
    connection_ms: int = Field(default=0, ge=0)
    connections: int = Field(default=0, ge=0)
    sample_at: str | None = None
    users: list[str] = Field(default_factory=list)


@dataclass(slots=True)
class UsageState:
    version: int = 0
    last_start: str = ""  # RFC 3339 UTC: lexicographic order is time order
    last_seq: int = 0

    @property
    def exists(self) -> bool:
        return self.version > 0


def decide(state: UsageState, command: Command) -> Decision:
    match command:
        case RecordUsage():
            if state.exists and command.start <= state.last_start:
                return Unchanged(state.last_seq)
            return [UsageRecorded(**command.model_dump())]
    raise TypeError(f"not a usage command: {type(command).__name__}")


def evolve(state: UsageState, event: DomainEvent) -> UsageState:
    """Apply one recorded event. Updates ``state`` in place and returns it."""
    state.version += 1
    if isinstance(event, UsageRecorded):
        state.last_start, state.last_seq = event.start, state.version
    return state
