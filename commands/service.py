"""The command service: load an aggregate, decide, append, answer.

Aggregates come from an :class:`~commands.repository.AggregateRepository`, which keeps them
live after their first load. A decision is applied to the cached state at once and its
append is queued before the next command is decided, which lets many commands to the same
stream share one group commit. If an append fails the cached state is dropped and reloaded
from the store; a version conflict is retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from commands.ports import ConcurrencyError, Idempotency, IdempotencyKeyReused, NewEvent, StreamStore
from commands.repository import AggregateRepository, aggregate_of
from domain.base import Command, Unchanged, format_time
from domain.channel import ChannelState
from domain.errors import DomainError
from domain.events import Event, stream_name
from domain.tenant import TenantState
from domain.user import UserState

ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command recorded, or (``replayed``) what an earlier identical one recorded."""

    events: list[Event]
    replayed: bool

    @property
    def last(self) -> Event:
        return self.events[-1]


class NotReplayed(DomainError):
    """A ``replay_only`` command with nothing recorded to replay."""

    category = "conflict"
    rule = "not_replayed"


@dataclass(frozen=True, slots=True)
class CommandEnvelope:
    """A command addressed to a stream, with who sent it and how to recognise a retry of it.

    ``command_id`` names this request in the events it causes (one is generated if not
    given); ``idempotency`` is the caller's retry key, already scoped to its principal
    (``api.plumbing.idempotency``); ``correlation_id`` ties the events to the request that
    caused them (``X-Request-Id``). ``replay_only``: answer only with what an earlier run
    under the same idempotency key recorded, else raise :class:`NotReplayed` (a retry of a write
    the API would now refuse, e.g. at a quota, still gets its first answer). ``traceparent``: the
    W3C trace context the events record (``None`` while tracing is off).
    """

    tenant_id: str
    stream: str
    command: Command
    actor: str | None
    correlation_id: str | None = None
    idempotency: Idempotency | None = None
    command_id: str | None = None
    replay_only: bool = False
    traceparent: str | None = None  # the command's span (adapters/tracing.py): its events keep it


class Commands(Protocol):
    """What the API needs from the write side, whichever backend runs it.

    An implementation gives ``state`` and ``execute``; it inherits the typed reads of
    ``tenant``, ``user`` and ``channel`` (subclass this protocol explicitly).
    """

    async def state(self, tenant_id: str, stream: str) -> Any:
        """The current state of ``stream``'s aggregate (read-only; prefer the typed reads)."""
        ...

    async def execute(self, envelope: CommandEnvelope) -> Outcome: ...

    async def tenant(self, tenant_id: str) -> TenantState:
        """The tenant's state (``exists`` is false for an unknown tenant)."""
        state: TenantState = await self.state(tenant_id, stream_name("tenant", tenant_id))
        return state

    async def user(self, tenant_id: str, user_id: str) -> UserState:
        """A user's state within its tenant (``exists`` is false for an unknown user)."""
        state: UserState = await self.state(tenant_id, stream_name("user", user_id))
        return state

    async def channel(self, tenant_id: str, channel_id: str) -> ChannelState:
        """A channel's state within its tenant (``exists`` is false for an unknown channel)."""
        state: ChannelState = await self.state(tenant_id, stream_name("channel", channel_id))
        return state


class CommandsAround(Commands):
    """A decorator of another command side (metrics, tracing): reads pass through to ``inner``;
    a subclass wraps ``execute``."""

    def __init__(self, inner: Commands) -> None:
        self.inner = inner

    async def state(self, tenant_id: str, stream: str) -> Any:
        return await self.inner.state(tenant_id, stream)

    async def execute(self, envelope: CommandEnvelope) -> Outcome:
        return await self.inner.execute(envelope)


class CommandService(Commands):
    """Executes commands against aggregates recorded in a stream store."""

    def __init__(
        self,
        store: StreamStore,
        *,
        clock: Callable[[], datetime],
        new_id: Callable[[], str],
        repository: AggregateRepository | None = None,
    ) -> None:
        """``repository`` holds the aggregates (by default one that loads them from ``store``)."""
        self.store = store
        self.clock = clock
        self.new_id = new_id
        self.repository = AggregateRepository(store) if repository is None else repository
        self._inflight: dict[tuple[str, str], asyncio.Future[None]] = {}

    async def state(self, tenant_id: str, stream: str) -> Any:
        """The aggregate's current state (including appends still being committed).

        Callers must treat it as read-only.
        """
        return await self.repository.get(tenant_id, stream)

    async def execute(self, envelope: CommandEnvelope) -> Outcome:
        """Decide ``envelope.command`` against its stream and record what it causes.

        With an idempotency key the ``command_id`` is ``idem:<fingerprint>:<key>``, so the
        store itself records which keys were used; a retry is answered from the record only
        if the caller may still run the command.

        Raises a :class:`domain.errors.DomainError` if a rule forbids it,
        :class:`IdempotencyKeyReused` if the key came with a different request.
        """
        idempotency = envelope.idempotency
        if idempotency is None:
            if envelope.replay_only:
                raise NotReplayed("nothing was recorded for this request before")
            return await self._execute(envelope)
        key = (envelope.tenant_id, idempotency.key)
        while (running := self._inflight.get(key)) is not None:
            await asyncio.shield(running)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = done
        try:
            found = await self.store.find_idempotent(envelope.tenant_id, idempotency.key)
            if found is not None:
                await self._authorize(envelope)  # permission first, then the record
                fingerprint, events = found
                if fingerprint != idempotency.fingerprint:
                    raise IdempotencyKeyReused(idempotency.key)
                return Outcome(events, replayed=True)
            if envelope.replay_only:
                raise NotReplayed("nothing was recorded under this Idempotency-Key before")
            return await self._execute(envelope)
        finally:
            del self._inflight[key]
            done.set_result(None)

    async def _authorize(self, envelope: CommandEnvelope) -> None:
        """Raise the rule that forbids ``command`` to its actor now, if one does.

        A replay is answered only to a caller who could run the command today (a user who
        left the channel since gets 403, not the earlier result). Other refusals do not
        count: deciding a command again often fails because its first run succeeded (the
        channel or tenant now exists, the member is already removed).
        """
        state = await self.state(envelope.tenant_id, envelope.stream)
        try:
            aggregate_of(envelope.stream).decide(state, envelope.command)
        except DomainError as exc:
            if exc.category == "forbidden":
                raise

    async def _execute(self, envelope: CommandEnvelope) -> Outcome:
        tenant_id, stream, idempotency = envelope.tenant_id, envelope.stream, envelope.idempotency
        aggregate = aggregate_of(stream)
        key = (tenant_id, stream)
        for attempt in range(ATTEMPTS):
            state = await self.state(tenant_id, stream)
            decision = aggregate.decide(state, envelope.command)
            if isinstance(decision, Unchanged):
                recorded = await self._recorded(tenant_id, stream, decision.seq)
                if recorded is not None:
                    return Outcome(recorded, replayed=True)
                self.repository.forget(tenant_id, stream)  # decided on an append that failed: decide again
                if attempt == ATTEMPTS - 1:
                    raise ConcurrencyError(f"{stream} kept changing while the command was decided")
                continue
            if not decision:
                raise ValueError(f"{type(envelope.command).__name__} decided nothing")
            expected = state.version
            occurred_at = format_time(self.clock())
            if idempotency is not None:
                command_id = f"idem:{idempotency.fingerprint}:{idempotency.key}"
            else:
                command_id = envelope.command_id or self.new_id()
            new = [
                NewEvent(
                    event_id=self.new_id(),
                    seq=expected + offset + 1,
                    type=event.type,
                    schema_version=event.schema_version,
                    occurred_at=occurred_at,
                    actor=envelope.actor,
                    command_id=command_id,
                    causation_id=None,
                    correlation_id=envelope.correlation_id,
                    payload=event.model_dump(mode="json"),
                    traceparent=envelope.traceparent,
                )
                for offset, event in enumerate(decision)
            ]
            state = self.repository.hold(key, state)  # a stream's first events make its state live
            for event in decision:
                aggregate.evolve(state, event)
            future = asyncio.ensure_future(self.store.append(tenant_id, stream, expected, new, idempotency))
            self.repository.appending(key, future)
            try:
                return Outcome(await future, replayed=False)
            except ConcurrencyError:
                self.repository.forget(tenant_id, stream)
                if attempt == ATTEMPTS - 1:
                    raise
            except BaseException:
                self.repository.forget(tenant_id, stream)
                raise
            finally:
                self.repository.settled(key, future)
        raise AssertionError("unreachable")

    async def _recorded(self, tenant_id: str, stream: str, seq: int) -> list[Event] | None:
        """The event at ``seq``, once every append queued before it has been committed.

        ``None`` if the last queued append failed: the state that decided ``seq`` may have
        counted events that were never recorded, and ``seq`` may now hold another event.
        """
        pending = self.repository.pending((tenant_id, stream))
        if pending is not None:
            try:
                await asyncio.shield(pending)
            except Exception:
                return None
        return await self.store.read_stream(tenant_id, stream, after_seq=seq - 1, limit=1)
