"""Ports the command layer depends on, and the persistence errors every backend raises.

Adapters translate their driver errors into this small tree at the edge, so the command
layer and the API handle one vocabulary whatever the backend.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from domain.events import Event


class PersistenceError(Exception):
    """Base of the errors an adapter raises."""


class ConcurrencyError(PersistenceError):
    """The stream's version was not the expected one: another writer appended first."""


class LogUnavailable(PersistenceError):
    """The event log cannot be reached or did not acknowledge in time. Nothing is promised."""


class IdempotencyKeyReused(PersistenceError):
    """An ``Idempotency-Key`` already answered a different request."""


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event decided but not yet recorded; the log assigns its ``position``."""

    event_id: str
    seq: int
    type: str
    schema_version: int
    occurred_at: str
    actor: str | None
    command_id: str | None
    causation_id: str | None
    correlation_id: str | None
    payload: dict[str, Any]


def recorded_fields(new: NewEvent, tenant_id: str, stream: str, position: int) -> dict[str, Any]:
    """Every field of the :class:`Event` a log records for ``new``, in the envelope's order."""
    return {
        "event_id": new.event_id,
        "tenant_id": tenant_id,
        "stream": stream,
        "seq": new.seq,
        "position": position,
        "type": new.type,
        "schema_version": new.schema_version,
        "occurred_at": new.occurred_at,
        "actor": new.actor,
        "command_id": new.command_id,
        "causation_id": new.causation_id,
        "correlation_id": new.correlation_id,
        "payload": new.payload,
    }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An aggregate's state encoded as of ``version``, whose last event is ``event_id``.

    It is a cache of the log, never the truth: a loader checks that the log's event at
    ``version`` is still ``event_id`` before it trusts ``state``.
    """

    version: int
    event_id: str
    state: bytes


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A client's retry key (within its principal's scope, as the API gives it) and a fingerprint
    of the request it first came with."""

    key: str
    fingerprint: str


Listener = Callable[[Sequence[Event]], None]


class EphemeralBus(abc.ABC):
    """Short-lived facts every API node must see (sockets opening and closing, node
    heartbeats, typing). Not durable; a message may be lost, so consumers converge from
    periodic heartbeats rather than trusting every message."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def publish(self, message: dict[str, Any]) -> None:
        """Send without waiting; every node's listeners (this one's too) receive it."""

    @abc.abstractmethod
    def listen(self, listener: Callable[[dict[str, Any]], None]) -> None: ...


class EventLog(abc.ABC):
    """The system of record: an append-only log of events in streams.

    Every stream has a gapless ``seq`` starting at 1; every event has a ``position``
    that orders the whole log. Appends are conditional on the stream's current version.
    """

    @abc.abstractmethod
    async def start(self) -> None:
        """Open connections; after this, appends and reads work."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending appends and release resources."""

    @abc.abstractmethod
    def append(
        self,
        tenant_id: str,
        stream: str,
        expected_version: int,
        events: Sequence[NewEvent],
        idempotency: Idempotency | None = None,
    ) -> Awaitable[list[Event]]:
        """Record ``events`` if ``stream`` is at ``expected_version``; resolve once durable.

        Appends are ordered as they are called (not as they are awaited), so a caller may
        pipeline several appends to one stream. Fails with :class:`ConcurrencyError` on a
        version mismatch, :class:`IdempotencyKeyReused` if ``idempotency.key`` was already
        recorded, :class:`LogUnavailable` if the log cannot make it durable.
        """

    @abc.abstractmethod
    async def read_stream(
        self, tenant_id: str, stream: str, after_seq: int = 0, limit: int | None = None
    ) -> list[Event]:
        """Events of one stream with ``seq > after_seq`` in order."""

    @abc.abstractmethod
    async def read_all(
        self,
        after_position: int = 0,
        limit: int = 1000,
        tenant_id: str | None = None,
        types: Sequence[str] | None = None,
    ) -> list[Event]:
        """Events of the whole log (or one tenant, or some types) in position order."""

    @abc.abstractmethod
    async def find_idempotent(self, tenant_id: str, key: str) -> tuple[str, list[Event]] | None:
        """The fingerprint and events recorded under an idempotency key, if any."""

    @abc.abstractmethod
    async def head_position(self) -> int:
        """The position of the newest recorded event (0 for an empty log)."""

    keeps_snapshots: bool = False  # whether save_snapshot keeps anything (only then is encoding worth it)

    async def read_snapshot(self, tenant_id: str, stream: str, schema: str) -> Snapshot | None:
        """The newest snapshot of ``stream`` encoded in ``schema``, if the log keeps any.

        Logs that keep no snapshots (the Kafka ones, whose aggregates are restored up front)
        inherit this and the no-op :meth:`save_snapshot`.
        """
        return None

    def save_snapshot(self, tenant_id: str, stream: str, schema: str, version: int, state: bytes) -> None:
        """Keep ``state``, the encoded state of ``stream`` as of ``version`` (an event already
        recorded), as its snapshot unless a newer one is kept. Returns at once."""
        return None

    @abc.abstractmethod
    def listen(self, listener: Listener) -> None:
        """Call ``listener`` on the event loop with every batch of newly recorded events,
        in position order."""
