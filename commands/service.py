"""The command service: load an aggregate, decide, append, answer.

Aggregates stay cached in memory after their first load, so posting to a busy channel
does not replay the channel. A decision is applied to the cached state at once and its
append is queued before the next command is decided, which lets many commands to the same
stream share one group commit. If an append fails the cached state is dropped and reloaded
from the log; a version conflict is retried.

Streams that have no events (a lookup of an unknown user, tenant or channel) are kept apart
from the live aggregates, in a small cache of their own, so that lookups of made-up ids can
neither evict a live aggregate nor grow memory. A load starts from the stream's snapshot, if
the log keeps one, and folds the events after it; a long fold runs off the event loop. A
snapshot is taken when a load folded many events and when an aggregate that changed much
since its last one leaves the cache: never on the write path.
"""

from __future__ import annotations

import asyncio
import copy
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog

from commands import snapshots
from commands.ports import ConcurrencyError, EventLog, Idempotency, IdempotencyKeyReused, NewEvent, Snapshot
from domain import channel, tenant, user
from domain.base import Command, Decision, Unchanged, format_time
from domain.errors import DomainError
from domain.events import EVENT_TYPES, DomainEvent, Event

ATTEMPTS = 3
FOLD_ON_LOOP = 64  # a load of at most this many events (and no snapshot) is folded on the event loop

logger = structlog.get_logger("caas.commands")


@dataclass(frozen=True, slots=True)
class Aggregate:
    new: type[Any]
    decide: Callable[[Any, Command], Decision]
    evolve: Callable[[Any, DomainEvent], Any]

    def fold(self, state: Any, events: list[Event]) -> Any:
        for event in events:
            self.evolve(state, EVENT_TYPES[event.type].model_validate(event.payload))
        return state


AGGREGATES: dict[str, Aggregate] = {
    "tenant": Aggregate(tenant.TenantState, tenant.decide, tenant.evolve),
    "user": Aggregate(user.UserState, user.decide, user.evolve),
    "channel": Aggregate(channel.ChannelState, channel.decide, channel.evolve),
}


class _Unreadable(Exception):
    """A snapshot that does not decode; the stream is folded from its first event instead."""


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
        absent_size: int = 1024,
        snapshot_every: int = 500,
    ) -> None:
        """``cache_size`` live aggregates are kept (least recently used first out), and
        ``absent_size`` streams without events; a snapshot is taken once a stream has
        ``snapshot_every`` events after its last one."""
        self.log = log
        self.clock = clock
        self.new_id = new_id
        self.cache_size = cache_size
        self.absent_size = absent_size
        self.snapshot_every = max(snapshot_every, 1)
        self._cache: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._absent: OrderedDict[tuple[str, str], Any] = OrderedDict()  # version-0 states, not live
        self._snapshot_at: dict[tuple[str, str], int] = {}  # version of a cached aggregate's snapshot
        self._loading: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._retired: dict[tuple[str, str], Any] = {}  # evicted states being encoded as snapshots
        self._snapshotting: set[asyncio.Future[None]] = set()
        self._pending: dict[tuple[str, str], asyncio.Future[list[Event]]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[None]] = {}

    async def state(self, tenant_id: str, stream: str) -> Any:
        """The aggregate's current state (including appends still being committed).

        Callers must treat it as read-only.
        """
        key = (tenant_id, stream)
        while True:
            found = self._lookup(key)
            if found is not None:
                return found
            pending = self._pending.get(key)
            if pending is not None and not pending.done():
                # appends queued from a state that was dropped: load only once they are settled,
                # or the loaded state would miss them and every decision on it would conflict
                await asyncio.wait([pending])
                continue
            loading = self._loading.get(key)
            if loading is None:  # one load per stream, however many callers wait for it
                loading = self._loading[key] = asyncio.ensure_future(self._load(tenant_id, stream))
            # shielded: a caller that goes away (a client that hung up) does not cancel the others' load
            state = await asyncio.shield(loading)
            found = self._lookup(key)
            return state if found is None else found  # not cached if evicted again meanwhile

    def _lookup(self, key: tuple[str, str]) -> Any:
        for cache in (self._cache, self._absent):
            found = cache.get(key)
            if found is not None:
                cache.move_to_end(key)
                return found
        return None

    async def _load(self, tenant_id: str, stream: str) -> Any:
        """Load a stream's aggregate and cache it. No command can append to the stream while
        this runs: each would need its state first, and so waits for this load."""
        key = (tenant_id, stream)
        try:
            aggregate = AGGREGATES[stream.partition(":")[0]]
            snapshot, events = await self._read(aggregate, tenant_id, stream)
            try:
                state, taken = await self._fold(aggregate, stream, snapshot, events)
            except _Unreadable:
                snapshot, events = None, await self.log.read_stream(tenant_id, stream)
                state, taken = await self._fold(aggregate, stream, None, events)
            found = self._lookup(key)
            if found is not None:  # restored from elsewhere meanwhile (an API node's replica)
                return found
            if state.version == 0:
                self._absent[key] = state
                if len(self._absent) > self.absent_size:
                    self._absent.popitem(last=False)
                return state
            if taken is not None:
                self.log.save_snapshot(tenant_id, stream, snapshots.schema(aggregate.new), state.version, taken)
            base = state.version if taken is not None else snapshot.version if snapshot is not None else 0
            if base:
                self._snapshot_at[key] = base
            self._evict(room=1)
            self._cache[key] = state
            return state
        finally:
            del self._loading[key]

    async def _read(self, aggregate: Aggregate, tenant_id: str, stream: str) -> tuple[Snapshot | None, list[Event]]:
        """The stream's usable snapshot, if any, and the events after it."""
        snapshot = await self.log.read_snapshot(tenant_id, stream, snapshots.schema(aggregate.new))
        if snapshot is None:
            return None, await self.log.read_stream(tenant_id, stream)
        events = await self.log.read_stream(tenant_id, stream, after_seq=snapshot.version - 1)
        if events and (events[0].seq, events[0].event_id) == (snapshot.version, snapshot.event_id):
            return snapshot, events[1:]
        # the log's event at that version is not the snapshot's: it is not a snapshot of this log
        logger.warning("snapshot_ignored", tenant_id=tenant_id, stream=stream, version=snapshot.version)
        return None, await self.log.read_stream(tenant_id, stream)

    async def _fold(
        self, aggregate: Aggregate, stream: str, snapshot: Snapshot | None, events: list[Event]
    ) -> tuple[Any, bytes | None]:
        if snapshot is None and len(events) <= FOLD_ON_LOOP:
            return aggregate.fold(aggregate.new(), events), None
        # decoding a snapshot or validating many events would hold the event loop: a thread does it
        return await asyncio.to_thread(self._rebuild, aggregate, stream, snapshot, events)

    def _rebuild(
        self, aggregate: Aggregate, stream: str, snapshot: Snapshot | None, events: list[Event]
    ) -> tuple[Any, bytes | None]:
        """Off the event loop: the state from a snapshot and the events after it, and a new
        snapshot of it when many events had to be folded."""
        state = aggregate.new()
        if snapshot is not None:
            try:
                state = snapshots.decode(aggregate.new, snapshot.state)
                if state.version != snapshot.version:
                    raise ValueError(f"the snapshot of version {snapshot.version} holds version {state.version}")
            except Exception as exc:  # unreadable: fold the whole stream instead
                logger.error("snapshot_unreadable", stream=stream, version=snapshot.version, error=repr(exc))
                raise _Unreadable from exc
        aggregate.fold(state, events)
        many = len(events) >= self.snapshot_every and self.log.keeps_snapshots
        return state, snapshots.encode(state) if many else None

    def _evict(self, room: int) -> None:
        """Drop the least recently used aggregates to make ``room`` within ``cache_size``, taking
        a snapshot of those that changed much since their last one.

        Only a state with no unsettled append is snapshotted: it then holds recorded events
        only (a failed append drops its state from the cache before it can be evicted).
        """
        while self._cache and len(self._cache) + room > self.cache_size:
            key, state = self._cache.popitem(last=False)
            since = self._snapshot_at.pop(key, 0)
            if state.version - since >= self.snapshot_every and key not in self._pending and self.log.keeps_snapshots:
                self._retired[key] = state
                task = asyncio.ensure_future(self._snapshot_evicted(key, state))
                self._snapshotting.add(task)
                task.add_done_callback(self._snapshotting.discard)

    async def _snapshot_evicted(self, key: tuple[str, str], state: Any) -> None:
        """Encode an evicted state on a thread (it can be large), then have the log keep it."""
        try:
            data = await asyncio.to_thread(snapshots.encode, state)
        finally:
            if self._retired.get(key) is state:
                del self._retired[key]
        schema = snapshots.schema(AGGREGATES[key[1].partition(":")[0]].new)
        self.log.save_snapshot(key[0], key[1], schema, state.version, data)

    def _hold(self, key: tuple[str, str], state: Any) -> Any:
        """Keep ``state`` among the live aggregates, as a command is about to change it; the
        state to change. That is ``state`` itself unless it was evicted and is being encoded
        on another thread (a load whose caller resumed only after its state was evicted
        again): then a copy, which becomes the live one."""
        if self._cache.get(key) is state:
            return state
        if self._retired.get(key) is state:
            state = copy.deepcopy(state)
        self._absent.pop(key, None)
        self._cache.pop(key, None)
        self._evict(room=1)
        self._cache[key] = state
        return state

    def cached(self) -> list[tuple[tuple[str, str], Any]]:
        """Every cached aggregate, as ``((tenant_id, stream), state)``."""
        return list(self._cache.items())

    def forget(self, tenant_id: str, stream: str) -> None:
        """Drop a cached aggregate (another process appended to its stream)."""
        key = (tenant_id, stream)
        self._cache.pop(key, None)
        self._absent.pop(key, None)
        self._snapshot_at.pop(key, None)

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
            state = self._absent.pop(key, None)
            self._cache[key] = state = aggregate.new() if state is None else state
        if event.seq == state.version + 1:
            aggregate.evolve(state, EVENT_TYPES[event.type].model_validate(event.payload))
        return bool(state.version >= event.seq)

    def clear(self, keep: Callable[[str, str], bool] = lambda tenant_id, stream: False) -> None:
        """Drop every cached aggregate except those ``keep`` names."""
        for cache in (self._cache, self._absent):
            for key in [k for k in cache if not keep(*k)]:
                del cache[key]
                self._snapshot_at.pop(key, None)

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
            state = self._hold(key, state)  # a stream's first events make its state live
            for event in decision:
                aggregate.evolve(state, event)
            future = asyncio.ensure_future(self.log.append(tenant_id, stream, expected, new, idempotency))
            self._pending[key] = future
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
