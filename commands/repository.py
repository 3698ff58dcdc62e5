"""The aggregate repository: live aggregates kept in memory, loaded from a stream store.

Aggregates stay cached after their first load, so posting to a busy channel does not replay
the channel. Streams that have no events (a lookup of an unknown user, tenant or channel)
are kept apart from the live aggregates, in a small cache of their own, so that lookups of
made-up ids can neither evict a live aggregate nor grow memory. A load starts from the
stream's snapshot, if the store keeps one, and folds the events after it; a long fold runs
off the event loop. A snapshot is taken when a load folded many events and when an aggregate
that changed much since its last one leaves the cache: never on the write path.

A repository without a store holds aggregates restored from a changelog read in order (a
Kafka partition, an API node's replica of the event topic): it never reads, and a stream it
was not given any event of has none.
"""

from __future__ import annotations

import asyncio
import copy
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from commands import snapshots
from commands.ports import Snapshot, StreamStore
from domain import billing, channel, tenant, usage, user, webhook
from domain.base import Command, Decision
from domain.events import EVENT_TYPES, DomainEvent, Event, StreamId

FOLD_ON_LOOP = 64  # a load of at most this many events (and no snapshot) is folded on the event loop

logger = structlog.get_logger("caas.commands")

Key = tuple[str, str]  # (tenant_id, stream)


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
    "usage": Aggregate(usage.UsageState, usage.decide, usage.evolve),
    "billing": Aggregate(billing.BillingState, billing.decide, billing.evolve),
    "webhook": Aggregate(webhook.WebhookState, webhook.decide, webhook.evolve),
}


def aggregate_of(stream: str) -> Aggregate:
    """The aggregate whose events ``stream`` holds (named by its kind, ``channel:c1``)."""
    return AGGREGATES[StreamId.parse(stream).kind]


class _Unreadable(Exception):
    """A snapshot that does not decode; the stream is folded from its first event instead."""


class AggregateRepository:
    """Aggregates by ``(tenant_id, stream)``: loaded from ``store`` once, then kept live.

    The command service changes the states it gets in place (after deciding) and tells the
    repository which appends are still unsettled (:meth:`appending`); everybody else must
    treat a state as read-only.
    """

    def __init__(
        self,
        store: StreamStore | None,
        *,
        cache_size: int | None = 20_000,
        absent_size: int = 1024,
        snapshot_every: int = 500,
    ) -> None:
        """``cache_size`` live aggregates are kept (least recently used first out; ``None``:
        all of them, as a restored repository must), and ``absent_size`` streams without
        events; a snapshot is taken once a stream has ``snapshot_every`` events after its last
        one. ``store`` ``None``: aggregates are only ever restored (:meth:`restore`)."""
        self.store = store
        self.cache_size = cache_size
        self.absent_size = absent_size
        self.snapshot_every = max(snapshot_every, 1)
        self._cache: OrderedDict[Key, Any] = OrderedDict()
        self._absent: OrderedDict[Key, Any] = OrderedDict()  # version-0 states, not live
        self._snapshot_at: dict[Key, int] = {}  # version of a cached aggregate's snapshot
        self._loading: dict[Key, asyncio.Future[Any]] = {}
        self._retired: dict[Key, Any] = {}  # evicted states being encoded as snapshots
        self._snapshotting: set[asyncio.Future[None]] = set()
        self._pending: dict[Key, asyncio.Future[list[Event]]] = {}

    @property
    def _keeps_snapshots(self) -> bool:
        return self.store is not None and self.store.keeps_snapshots

    async def get(self, tenant_id: str, stream: str) -> Any:
        """The aggregate's current state (including appends still being committed)."""
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

    def _lookup(self, key: Key) -> Any:
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
            aggregate = aggregate_of(stream)
            snapshot, events = await self._read(aggregate, tenant_id, stream)
            try:
                state, taken = await self._fold(aggregate, stream, snapshot, events)
            except _Unreadable:
                snapshot, events = None, await self._read_stream(tenant_id, stream)
                state, taken = await self._fold(aggregate, stream, None, events)
            found = self._lookup(key)
            if found is not None:  # restored from elsewhere meanwhile (an API node's replica)
                return found
            if state.version == 0:
                self._absent[key] = state
                if len(self._absent) > self.absent_size:
                    self._absent.popitem(last=False)
                return state
            if taken is not None and self.store is not None:
                self.store.save_snapshot(tenant_id, stream, snapshots.schema(aggregate.new), state.version, taken)
            base = state.version if taken is not None else snapshot.version if snapshot is not None else 0
            if base:
                self._snapshot_at[key] = base
            self._evict(room=1)
            self._cache[key] = state
            return state
        finally:
            del self._loading[key]

    async def _read_stream(self, tenant_id: str, stream: str, after_seq: int = 0) -> list[Event]:
        return [] if self.store is None else await self.store.read_stream(tenant_id, stream, after_seq=after_seq)

    async def _read(self, aggregate: Aggregate, tenant_id: str, stream: str) -> tuple[Snapshot | None, list[Event]]:
        """The stream's usable snapshot, if any, and the events after it."""
        if self.store is None:
            return None, []
        snapshot = await self.store.read_snapshot(tenant_id, stream, snapshots.schema(aggregate.new))
        if snapshot is None:
            return None, await self._read_stream(tenant_id, stream)
        events = await self._read_stream(tenant_id, stream, after_seq=snapshot.version - 1)
        if events and (events[0].seq, events[0].event_id) == (snapshot.version, snapshot.event_id):
            return snapshot, events[1:]
        # the store's event at that version is not the snapshot's: it is not a snapshot of this log
        logger.warning("snapshot_ignored", tenant_id=tenant_id, stream=stream, version=snapshot.version)
        return None, await self._read_stream(tenant_id, stream)

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
        many = len(events) >= self.snapshot_every and self._keeps_snapshots
        return state, snapshots.encode(state) if many else None

    def _evict(self, room: int) -> None:
        """Drop the least recently used aggregates to make ``room`` within ``cache_size``, taking
        a snapshot of those that changed much since their last one.

        Only a state with no unsettled append is snapshotted: it then holds recorded events
        only (a failed append drops its state from the cache before it can be evicted).
        """
        if self.cache_size is None:
            return
        while self._cache and len(self._cache) + room > self.cache_size:
            key, state = self._cache.popitem(last=False)
            since = self._snapshot_at.pop(key, 0)
            if state.version - since >= self.snapshot_every and key not in self._pending and self._keeps_snapshots:
                self._retired[key] = state
                task = asyncio.ensure_future(self._snapshot_evicted(key, state))
                self._snapshotting.add(task)
                task.add_done_callback(self._snapshotting.discard)

    async def _snapshot_evicted(self, key: Key, state: Any) -> None:
        """Encode an evicted state on a thread (it can be large), then have the store keep it."""
        try:
            data = await asyncio.to_thread(snapshots.encode, state)
        finally:
            if self._retired.get(key) is state:
                del self._retired[key]
        if self.store is not None:
            self.store.save_snapshot(key[0], key[1], snapshots.schema(aggregate_of(key[1]).new), state.version, data)

    def hold(self, key: Key, state: Any) -> Any:
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

    def appending(self, key: Key, append: asyncio.Future[list[Event]]) -> None:
        """``append`` records what was just applied to the cached state of ``key``: until it
        settles, a reload of ``key`` waits for it and no snapshot of ``key`` is taken."""
        self._pending[key] = append

    def settled(self, key: Key, append: asyncio.Future[list[Event]]) -> None:
        """``append`` (see :meth:`appending`) is done, whatever its result."""
        if self._pending.get(key) is append:
            del self._pending[key]

    def pending(self, key: Key) -> asyncio.Future[list[Event]] | None:
        """The last unsettled append to ``key``, if any."""
        return self._pending.get(key)

    def cached(self) -> list[tuple[Key, Any]]:
        """Every cached aggregate, as ``((tenant_id, stream), state)``."""
        return list(self._cache.items())

    def forget(self, tenant_id: str, stream: str) -> None:
        """Drop a cached aggregate (its state counted an append that failed, or another
        process appended to its stream)."""
        key = (tenant_id, stream)
        self._cache.pop(key, None)
        self._absent.pop(key, None)
        self._snapshot_at.pop(key, None)

    def restore(self, event: Event) -> bool:
        """Evolve the cached aggregate of ``event``'s stream by a recorded event; whether
        the aggregate now includes it (an event seen twice is applied once, one arriving
        ahead of its predecessor is not applied).

        Used where the aggregates are restored from a log that is read in order (a Kafka
        partition); the cache must then hold them all (``cache_size=None``).
        """
        key = (event.tenant_id, event.stream)
        aggregate = aggregate_of(event.stream)
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
