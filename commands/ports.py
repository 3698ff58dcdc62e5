"""Ports the command layer depends on, and the persistence errors every backend raises.

The log is split by capability, so that every adapter implements all of what it declares:

- :class:`StreamStore` (a :class:`StreamReader` that appends): what the command service records
  with; the deciders' Kafka ``PartitionLog`` is one.
- :class:`EventFeed`: a tenant's events by position, the head, new events.
- :class:`EventHistory` (a stream reader and a feed): what an API node reads; the Kafka
  node's ``IndexedLog`` is one.
- :class:`EventLog` (a store and a feed of the whole log): the SQLite log.
- :class:`EphemeralBus`: short-lived facts between nodes.

Adapters translate their driver errors into this small tree at the edge, so the command
layer and the API handle one vocabulary whatever the backend.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

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
    traceparent: str | None = None  # the trace of the command that decided it (Event.traceparent)


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
        "traceparent": new.traceparent,
    }


# An event as a row, what an export reads (caas/export.py): the envelope's fields in this order,
# the payload (after upcasting) as JSON text. The embedded log stores events as these very rows.
ROW_FIELDS = (
    "position", "tenant_id", "stream", "seq", "event_id", "type", "schema_version", "occurred_at", "actor",
    "command_id", "causation_id", "correlation_id", "payload",
)  # fmt: skip
EventRow = tuple[Any, ...]


def event_row(event: Event) -> EventRow:
    """``event`` as a row of :data:`ROW_FIELDS`."""
    return (
        event.position, event.tenant_id, event.stream, event.seq, event.event_id, event.type, event.schema_version,
        event.occurred_at, event.actor, event.command_id, event.causation_id, event.correlation_id,
        orjson.dumps(event.payload).decode(),
    )  # fmt: skip


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
    async def start(self) -> None:
        """Connect; messages published from now on reach this node's listeners."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop receiving and release connections; messages not yet sent may be lost."""

    @abc.abstractmethod
    def publish(self, message: dict[str, Any]) -> None:
        """Send without waiting; every node's listeners (this one's too) receive it, one
        node's messages in the order it published them. ``message`` must be JSON."""

    @abc.abstractmethod
    def listen(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener`` on the event loop with every message received, once each."""


class Lifecycle(abc.ABC):
    """A port whose adapter holds connections: ``start`` before use, ``close`` after."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Open connections; after this, every method of the port works."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending writes and release resources."""


class StreamReader(Lifecycle):
    """Reads one stream of the log: every stream has a gapless ``seq`` starting at 1."""

    @abc.abstractmethod
    async def read_stream(
        self, tenant_id: str, stream: str, after_seq: int = 0, limit: int | None = None
    ) -> list[Event]:
        """Events of one stream with ``seq > after_seq`` in order (empty for an unknown stream)."""


class StreamStore(StreamReader):
    """Where a command's events are recorded: conditional appends to streams, the record of
    idempotency keys, and (if the store keeps them) snapshots of aggregates.

    What the command service needs of the system of record, and all that a decider owning
    some Kafka partitions can offer.
    """

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
        recorded, :class:`LogUnavailable` if the store cannot make it durable. The recorded
        events carry their ``position`` in the whole log.
        """

    @abc.abstractmethod
    async def find_idempotent(self, tenant_id: str, key: str) -> tuple[str, list[Event]] | None:
        """The fingerprint and events recorded under an idempotency key, if any."""

    keeps_snapshots: bool = False  # whether save_snapshot keeps anything (only then is encoding worth it)

    async def read_snapshot(self, tenant_id: str, stream: str, schema: str) -> Snapshot | None:
        """The newest snapshot of ``stream`` encoded in ``schema``, if the store keeps any.

        Stores that keep no snapshots (the Kafka ones, whose aggregates are restored up
        front) say so with ``keeps_snapshots = False`` and inherit this and the no-op
        :meth:`save_snapshot`.
        """
        return None

    def save_snapshot(self, tenant_id: str, stream: str, schema: str, version: int, state: bytes) -> None:
        """Keep ``state``, the encoded state of ``stream`` as of ``version`` (an event already
        recorded), as its snapshot unless a newer one is kept. Returns at once."""
        return None


class EventFeed(Lifecycle):
    """Recorded events in position order, as a tenant's reader sees them: what is new
    (``listen``), how far the log reaches (``head_position``) and a tenant's events since a
    position.

    Every event has a ``position`` that orders the whole log.
    """

    @abc.abstractmethod
    def listen(self, listener: Listener) -> None:
        """Call ``listener`` on the event loop with every batch of newly recorded events,
        in position order."""

    @abc.abstractmethod
    async def head_position(self) -> int:
        """The position of the newest recorded event known here (0 for an empty log)."""

    @abc.abstractmethod
    async def read_tenant(
        self, tenant_id: str, after_position: int = 0, limit: int = 1000, types: Sequence[str] | None = None
    ) -> list[Event]:
        """Events of one tenant (of some ``types``, if given) with ``position > after_position``,
        in position order."""


class EventHistory(StreamReader, EventFeed):
    """What an API node reads of the log: streams (a websocket's replay) and a tenant's feed
    (``GET /v1/events``, the hub's live events)."""


class EventLog(StreamStore, EventHistory):
    """The whole system of record in one place: streams are appended and read, and the log
    is read in position order across tenants (the embedded projections, ``caas replay``,
    ``caas rebuild``)."""

    @abc.abstractmethod
    async def read_all(
        self,
        after_position: int = 0,
        limit: int = 1000,
        tenant_id: str | None = None,
        types: Sequence[str] | None = None,
    ) -> list[Event]:
        """Events of the whole log (or one tenant, or some types) in position order."""

    async def read_tenant(
        self, tenant_id: str, after_position: int = 0, limit: int = 1000, types: Sequence[str] | None = None
    ) -> list[Event]:
        return await self.read_all(after_position, limit, tenant_id, types)
