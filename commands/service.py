"""The command service: load an aggregate, decide, append, answer.

Aggregates stay cached in memory after their first load, so posting to a busy channel
does not replay the channel. A decision is applied to the cached state at once and its
append is queued before the next command is decided, which lets many commands to the same
stream share one group commit. If an append fails the cached state is dropped and reloaded
from the log; a version conflict is retried.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from commands.ports import ConcurrencyError, EventLog, Idempotency, IdempotencyKeyReused, NewEvent
from domain import channel, tenant, user
from domain.base import Command, Decision, Unchanged, format_time
from domain.errors import DomainError
from domain.events import EVENT_TYPES, DomainEvent, Event

ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Aggregate:
    new: Callable[[], Any]
    decide: Callable[[Any, Command], Decision]
    evolve: Callable[[Any, DomainEvent], Any]


AGGREGATES: dict[str, Aggregate] = {
    "tenant": Aggregate(tenant.TenantState, tenant.decide, tenant.evolve),
    "user": Aggregate(user.UserState, user.decide, user.evolve),
    "channel": Aggregate(channel.ChannelState, channel.decide, channel.evolve),
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command recorded, or (``replayed``) what an earlier identical one recorded."""

    events: list[Event]
    replayed: bool

    @property
    def last(self) -> Event:
        return self.events[-1]


class Commands(Protocol):
    """What the API needs from the write side, whichever backend runs it."""

    async def state(self, tenant_id: str, stream: str) -> Any: ...

    async def execute(
        self,
        tenant_id: str,
        stream: str,
        command: Command,
        *,
        actor: str | None,
        correlation_id: str | None = None,
        idempotency: Idempotency | None = None,
        command_id: str | None = None,
    ) -> Outcome: ...


class CommandService:
    """Executes commands against aggregates held in an event log."""

    def __init__(
        self,
        log: EventLog,
        *,
        clock: Callable[[], datetime],
        new_id: Callable[[], str],
        cache_size: int = 20_000,
    ) -> None:
        self.log = log
        self.clock = clock
        self.new_id = new_id
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._pending: dict[tuple[str, str], asyncio.Future[list[Event]]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[None]] = {}

    async def state(self, tenant_id: str, stream: str) -> Any:
        """The aggregate's current state (including appends still being committed).

        Callers must treat it as read-only.
        """
        key = (tenant_id, stream)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        while (pending := self._pending.get(key)) is not None and not pending.done():
            # appends queued from a state that was dropped: load only once they are settled,
            # or the loaded state would miss them and every decision on it would conflict
            await asyncio.wait([pending])
            if (cached := self._cache.get(key)) is not None:
                return cached
        aggregate = AGGREGATES[stream.partition(":")[0]]
        state = aggregate.new()
        for event in await self.log.read_stream(tenant_id, stream):
            aggregate.evolve(state, EVENT_TYPES[event.type].model_validate(event.payload))
        cached = self._cache.get(key)
        if cached is not None:  # another command loaded it while we were reading
            return cached
        self._cache[key] = state
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return state

    def cached(self) -> list[tuple[tuple[str, str], Any]]:
        """Every cached aggregate, as ``((tenant_id, stream), state)``."""
        return list(self._cache.items())

    def forget(self, tenant_id: str, stream: str) -> None:
        """Drop a cached aggregate (another process appended to its stream)."""
        self._cache.pop((tenant_id, stream), None)

    def restore(self, event: Event) -> bool:
        """Evolve the cached aggregate of ``event``'s stream by a recorded event; whether
        the aggregate now includes it (an event seen twice is applied once, one arriving
        ahead of its predecessor is not applied).

        Used where the aggregates are restored from a log that is read in order (a Kafka
        partition); the cache must then be large enough to hold them all.
        """
        key = (event.tenant_id, event.stream)
        aggregate = AGGREGATES[event.stream.partition(":")[0]]
        state = self._cache.get(key)
        if state is None:
            state = self._cache[key] = aggregate.new()
        if event.seq == state.version + 1:
            aggregate.evolve(state, EVENT_TYPES[event.type].model_validate(event.payload))
        return bool(state.version >= event.seq)

    def clear(self, keep: Callable[[str, str], bool] = lambda tenant_id, stream: False) -> None:
        """Drop every cached aggregate except those ``keep`` names."""
        for key in [k for k in self._cache if not keep(*k)]:
            del self._cache[key]

    async def execute(
        self,
        tenant_id: str,
        stream: str,
        command: Command,
        *,
        actor: str | None,
        correlation_id: str | None = None,
        idempotency: Idempotency | None = None,
        command_id: str | None = None,
    ) -> Outcome:
        """Decide ``command`` against ``stream`` and record what it causes.

        ``command_id`` names this request in the events it causes (one is generated if not
        given); with an idempotency key it is ``idem:<fingerprint>:<key>``, so the log itself
        records which keys were used. The key is already scoped to the caller's principal
        (``api.plumbing.idempotency``); a retry is answered from the record only if the caller
        may still run the command.

        Raises a :class:`domain.errors.DomainError` if a rule forbids it,
        :class:`IdempotencyKeyReused` if the key came with a different request.
        """
        if idempotency is None:
            return await self._execute(tenant_id, stream, command, actor, correlation_id, None, command_id)
        key = (tenant_id, idempotency.key)
        while (running := self._inflight.get(key)) is not None:
            await asyncio.shield(running)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = done
        try:
            found = await self.log.find_idempotent(tenant_id, idempotency.key)
            if found is not None:
                await self._authorize(tenant_id, stream, command)  # permission first, then the record
                fingerprint, events = found
                if fingerprint != idempotency.fingerprint:
                    raise IdempotencyKeyReused(idempotency.key)
                return Outcome(events, replayed=True)
            return await self._execute(tenant_id, stream, command, actor, correlation_id, idempotency, command_id)
        finally:
            del self._inflight[key]
            done.set_result(None)

    async def _authorize(self, tenant_id: str, stream: str, command: Command) -> None:
        """Raise the rule that forbids ``command`` to its actor now, if one does.

        A replay is answered only to a caller who could run the command today (a user who
        left the channel since gets 403, not the earlier result). Other refusals do not
        count: deciding a command again often fails because its first run succeeded (the
        channel or tenant now exists, the member is already removed).
        """
        state = await self.state(tenant_id, stream)
        try:
            AGGREGATES[stream.partition(":")[0]].decide(state, command)
        except DomainError as exc:
            if exc.category == "forbidden":
                raise

    async def _execute(
        self,
        tenant_id: str,
        stream: str,
        command: Command,
        actor: str | None,
        correlation_id: str | None,
        idempotency: Idempotency | None,
        command_id: str | None,
    ) -> Outcome:
        aggregate = AGGREGATES[stream.partition(":")[0]]
        key = (tenant_id, stream)
        for attempt in range(ATTEMPTS):
            state = await self.state(tenant_id, stream)
            decision = aggregate.decide(state, command)
            if isinstance(decision, Unchanged):
                recorded = await self._recorded(tenant_id, stream, decision.seq)
                if recorded is not None:
                    return Outcome(recorded, replayed=True)
                self.forget(tenant_id, stream)  # decided on an append that failed: decide again
                if attempt == ATTEMPTS - 1:
                    raise ConcurrencyError(f"{stream} kept changing while the command was decided")
                continue
            if not decision:
                raise ValueError(f"{type(command).__name__} decided nothing")
            expected = state.version
            occurred_at = format_time(self.clock())
            if idempotency is not None:
                command_id = f"idem:{idempotency.fingerprint}:{idempotency.key}"
            elif command_id is None:
                command_id = self.new_id()
            new = [
                NewEvent(
                    event_id=self.new_id(),
                    seq=expected + offset + 1,
                    type=event.type,
                    schema_version=event.schema_version,
                    occurred_at=occurred_at,
                    actor=actor,
                    command_id=command_id,
                    causation_id=None,
                    correlation_id=correlation_id,
                    payload=event.model_dump(mode="json"),
                )
                for offset, event in enumerate(decision)
            ]
            for event in decision:
                aggregate.evolve(state, event)
            future = self.log.append(tenant_id, stream, expected, new, idempotency)
            self._pending[key] = future  # type: ignore[assignment]
            try:
                return Outcome(await future, replayed=False)
            except ConcurrencyError:
                self.forget(tenant_id, stream)
                if attempt == ATTEMPTS - 1:
                    raise
            except BaseException:
                self.forget(tenant_id, stream)
                raise
            finally:
                if self._pending.get(key) is future:
                    del self._pending[key]
        raise AssertionError("unreachable")

    async def _recorded(self, tenant_id: str, stream: str, seq: int) -> list[Event] | None:
        """The event at ``seq``, once every append queued before it has been committed.

        ``None`` if the last queued append failed: the state that decided ``seq`` may have
        counted events that were never recorded, and ``seq`` may now hold another event.
        """
        pending = self._pending.get((tenant_id, stream))
        if pending is not None:
            try:
                await asyncio.shield(pending)
            except Exception:
                return None
        return await self.log.read_stream(tenant_id, stream, after_seq=seq - 1, limit=1)
