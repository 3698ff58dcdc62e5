"""The behaviour every :class:`commands.ports.StreamStore` and every
:class:`commands.ports.EventLog` must have, asserted through the port only.

Subclass :class:`StreamStoreContract` (a store) or :class:`EventLogContract` (a whole log: the
store's tests and the feed's) once per implementation and implement :meth:`open_log`; every
``test_*`` method then runs against it. The suite never reaches behind the port,
and it scopes what it writes by fresh tenant ids, so it also runs against a log that other
tests share (a Kafka topic), except where a test says it needs an empty log.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from commands.ports import ConcurrencyError, EventLog, Idempotency, IdempotencyKeyReused, NewEvent, StreamStore
from domain.events import EVENT_TYPES, UPCASTERS, Event, register_upcaster

_counter = itertools.count(1)


def new_event(seq: int, type: str = "MessagePosted", **payload: Any) -> NewEvent:
    """A decided event for ``seq`` of its stream, with a payload that names it."""
    n = next(_counter)
    body = payload or {"message_id": f"m{n}", "author_id": "u1", "text": f"message {n}"}
    return NewEvent(
        event_id=str(uuid.uuid4()),
        seq=seq,
        type=type,
        schema_version=EVENT_TYPES[type].schema_version if type in EVENT_TYPES else 1,  # as deciders record it
        occurred_at=f"2026-01-01T00:00:{n % 60:02d}.000Z",
        actor="user:u1",
        command_id=f"cmd-{n}",
        causation_id=None,
        correlation_id=f"corr-{n}",
        payload=body,
    )


def batch(first_seq: int, count: int, type: str = "MessagePosted") -> list[NewEvent]:
    return [new_event(first_seq + i, type) for i in range(count)]


def same_as_appended(recorded: Sequence[Event], appended: Sequence[NewEvent]) -> bool:
    """Whether recorded events carry exactly what was appended (the log adds only the position)."""
    keys = ("event_id", "seq", "type", "schema_version", "occurred_at", "actor", "command_id",
            "causation_id", "correlation_id", "payload")  # fmt: skip
    return [{k: getattr(e, k) for k in keys} for e in recorded] == [{k: getattr(n, k) for k in keys} for n in appended]


def dumps(events: Sequence[Event]) -> list[dict[str, Any]]:
    return [e.model_dump() for e in events]


async def eventually(condition: Callable[[], bool], limit: float = 10.0) -> None:
    """Wait until ``condition`` holds; a liveness bound for logs that notify asynchronously."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.01)


class StreamStoreContract(abc.ABC):
    """Abstract contract suite for a stream store: conditional appends, stream reads, idempotency."""

    @abc.abstractmethod
    async def open_log(self, request: pytest.FixtureRequest) -> StreamStore:
        """Build and start a fresh, empty store. ``request`` gives access to other fixtures
        (``request.getfixturevalue("tmp_path")``). The suite closes it after the test."""

    @pytest.fixture
    async def log(self, request: pytest.FixtureRequest) -> AsyncIterator[StreamStore]:
        log = await self.open_log(request)
        try:
            yield log
        finally:
            await log.close()

    @pytest.fixture
    def tenant(self) -> str:
        return f"t-{uuid.uuid4().hex[:12]}"

    # --- append and read back ----------------------------------------------------------------
    async def test_appended_events_read_back_by_stream_with_their_envelope(self, log: StreamStore, tenant: str) -> None:
        new = batch(1, 3)
        recorded = await log.append(tenant, "channel:c1", 0, new)
        assert same_as_appended(recorded, new)
        assert all(e.tenant_id == tenant and e.stream == "channel:c1" for e in recorded)
        assert dumps(await log.read_stream(tenant, "channel:c1")) == dumps(recorded)

    async def test_payload_round_trips_unchanged(self, log: StreamStore, tenant: str) -> None:
        payload = {
            "message_id": "m1",
            "author_id": "ünïcødé",
            "text": 'emoji 👍🏽 and "quotes" and \n newlines',
            "parent_id": None,
            "attachments": [{"url": "https://x/y.png", "size": 12, "ratio": 0.5, "inline": True}],
            "nested": {"a": [1, 2, {"b": None}]},
        }
        new = [new_event(1, "MessagePosted", **payload)]
        await log.append(tenant, "channel:c1", 0, new)
        [read] = await log.read_stream(tenant, "channel:c1")
        assert read.payload == payload
        assert same_as_appended([read], new)

    async def test_read_stream_honours_after_seq_and_limit(self, log: StreamStore, tenant: str) -> None:
        await log.append(tenant, "channel:c1", 0, batch(1, 5))
        assert [e.seq for e in await log.read_stream(tenant, "channel:c1", after_seq=2)] == [3, 4, 5]
        assert [e.seq for e in await log.read_stream(tenant, "channel:c1", after_seq=1, limit=2)] == [2, 3]
        assert await log.read_stream(tenant, "channel:c1", after_seq=5) == []

    async def test_unknown_stream_reads_empty(self, log: StreamStore, tenant: str) -> None:
        assert await log.read_stream(tenant, "channel:nobody-wrote-here") == []

    async def test_old_schema_versions_are_upcast_on_read(self, log: StreamStore, tenant: str) -> None:
        probe = f"ContractProbe{uuid.uuid4().hex[:8]}"
        register_upcaster(probe, 1, lambda p: {**p, "colour": p.get("color", "none")})
        try:
            await log.append(tenant, "channel:c1", 0, [new_event(1, probe, color="red")])
            [read] = await log.read_stream(tenant, "channel:c1")
            assert (read.schema_version, read.payload) == (2, {"color": "red", "colour": "red"})
        finally:
            UPCASTERS.pop((probe, 1), None)

    # --- order -------------------------------------------------------------------------------
    async def test_stream_seq_is_gapless_from_one_across_appends(self, log: StreamStore, tenant: str) -> None:
        version = 0
        for size in (1, 3, 2, 1, 4):
            recorded = await log.append(tenant, "channel:c1", version, batch(version + 1, size))
            assert [e.seq for e in recorded] == list(range(version + 1, version + size + 1))
            version += size
        assert [e.seq for e in await log.read_stream(tenant, "channel:c1")] == list(range(1, version + 1))

    async def test_positions_strictly_increase_across_streams_and_tenants(self, log: StreamStore, tenant: str) -> None:
        other = f"{tenant}-other"
        versions: dict[tuple[str, str], int] = {}
        recorded: list[Event] = []
        for step in range(12):
            key = ((tenant, other)[step % 2], f"channel:c{step % 3}")
            version = versions.get(key, 0)
            recorded += await log.append(key[0], key[1], version, batch(version + 1, 1 + step % 2))
            versions[key] = version + 1 + step % 2
        positions = [e.position for e in recorded]
        assert positions == sorted(set(positions))

    async def test_pipelined_appends_to_one_stream_apply_in_call_order(self, log: StreamStore, tenant: str) -> None:
        new = [new_event(i + 1, text=f"#{i}", message_id=f"m{i}", author_id="u1") for i in range(200)]
        pending = [log.append(tenant, "channel:busy", i, [event]) for i, event in enumerate(new)]
        results = await asyncio.gather(*pending)
        recorded = [event for result in results for event in result]
        assert [e.seq for e in recorded] == list(range(1, 201))
        assert [e.position for e in recorded] == sorted({e.position for e in recorded})
        read = await log.read_stream(tenant, "channel:busy")
        assert [e.payload["text"] for e in read] == [f"#{i}" for i in range(200)]
        assert dumps(read) == dumps(recorded)

    async def test_pipelined_appends_to_many_streams_each_stay_gapless(self, log: StreamStore, tenant: str) -> None:
        pending = [log.append(tenant, f"channel:c{i % 7}", i // 7, batch(i // 7 + 1, 1)) for i in range(140)]
        await asyncio.gather(*pending)
        for c in range(7):
            assert [e.seq for e in await log.read_stream(tenant, f"channel:c{c}")] == list(range(1, 21))

    # --- optimistic concurrency --------------------------------------------------------------
    async def test_expected_version_mismatch_raises_concurrency_error_and_appends_nothing(
        self, log: StreamStore, tenant: str
    ) -> None:
        recorded = await log.append(tenant, "channel:c1", 0, batch(1, 2))
        for stale in (0, 1, 3):
            with pytest.raises(ConcurrencyError):
                await log.append(tenant, "channel:c1", stale, batch(stale + 1, 2))
        assert dumps(await log.read_stream(tenant, "channel:c1")) == dumps(recorded)

    async def test_racing_appends_at_the_same_version_first_called_wins(self, log: StreamStore, tenant: str) -> None:
        first, second = batch(1, 1), batch(1, 1)
        results = await asyncio.gather(
            log.append(tenant, "channel:c1", 0, first),
            log.append(tenant, "channel:c1", 0, second),
            return_exceptions=True,
        )
        assert isinstance(results[0], list) and same_as_appended(results[0], first)
        assert isinstance(results[1], ConcurrencyError)
        assert same_as_appended(await log.read_stream(tenant, "channel:c1"), first)

    async def test_conflicting_append_does_not_fail_its_neighbours(self, log: StreamStore, tenant: str) -> None:
        a, c = batch(1, 1), batch(2, 2)
        results = await asyncio.gather(
            log.append(tenant, "channel:c1", 0, a),
            log.append(tenant, "channel:c2", 7, batch(8, 1)),
            log.append(tenant, "channel:c1", 1, c),
            return_exceptions=True,
        )
        assert isinstance(results[1], ConcurrencyError)
        assert same_as_appended(await log.read_stream(tenant, "channel:c1"), a + c)
        assert await log.read_stream(tenant, "channel:c2") == []

    async def test_failed_append_makes_later_pipelined_appends_to_that_stream_conflict(
        self, log: StreamStore, tenant: str
    ) -> None:
        results = await asyncio.gather(
            log.append(tenant, "channel:c1", 4, batch(5, 1)),
            log.append(tenant, "channel:c1", 5, batch(6, 1)),
            log.append(tenant, "channel:c1", 0, batch(1, 1)),
            return_exceptions=True,
        )
        assert [type(r) for r in results] == [ConcurrencyError, ConcurrencyError, list]
        assert [e.seq for e in await log.read_stream(tenant, "channel:c1")] == [1]

    # --- idempotency -------------------------------------------------------------------------
    async def test_idempotency_key_finds_its_fingerprint_and_events(self, log: StreamStore, tenant: str) -> None:
        await log.append(tenant, "channel:c1", 0, batch(1, 1))
        recorded = await log.append(tenant, "channel:c1", 1, batch(2, 3), Idempotency("key-1", "fp-1"))
        await log.append(tenant, "channel:c1", 4, batch(5, 1))
        found = await log.find_idempotent(tenant, "key-1")
        assert found is not None
        assert found[0] == "fp-1"
        assert dumps(found[1]) == dumps(recorded)

    async def test_unknown_idempotency_key_is_not_found(self, log: StreamStore, tenant: str) -> None:
        await log.append(tenant, "channel:c1", 0, batch(1, 1), Idempotency("known", "fp"))
        assert await log.find_idempotent(tenant, "unknown") is None

    async def test_reused_idempotency_key_raises_and_appends_nothing(self, log: StreamStore, tenant: str) -> None:
        recorded = await log.append(tenant, "channel:c1", 0, batch(1, 1), Idempotency("key-1", "fp-1"))
        with pytest.raises(IdempotencyKeyReused):
            await log.append(tenant, "channel:c1", 1, batch(2, 1), Idempotency("key-1", "fp-1"))
        with pytest.raises(IdempotencyKeyReused):
            await log.append(tenant, "channel:c2", 0, batch(1, 1), Idempotency("key-1", "fp-other"))
        assert dumps(await log.read_stream(tenant, "channel:c1")) == dumps(recorded)
        assert await log.read_stream(tenant, "channel:c2") == []
        found = await log.find_idempotent(tenant, "key-1")
        assert found is not None and found[0] == "fp-1" and dumps(found[1]) == dumps(recorded)

    async def test_pipelined_appends_with_one_key_record_only_the_first(self, log: StreamStore, tenant: str) -> None:
        first = batch(1, 1)
        results = await asyncio.gather(
            log.append(tenant, "channel:c1", 0, first, Idempotency("key-1", "fp-1")),
            log.append(tenant, "channel:c2", 0, batch(1, 1), Idempotency("key-1", "fp-1")),
            return_exceptions=True,
        )
        assert isinstance(results[0], list)
        assert isinstance(results[1], IdempotencyKeyReused)
        assert await log.read_stream(tenant, "channel:c2") == []
        found = await log.find_idempotent(tenant, "key-1")
        assert found is not None and same_as_appended(found[1], first)

    async def test_rejected_append_does_not_record_its_idempotency_key(self, log: StreamStore, tenant: str) -> None:
        with pytest.raises(ConcurrencyError):
            await log.append(tenant, "channel:c1", 3, batch(4, 1), Idempotency("key-1", "fp-1"))
        assert await log.find_idempotent(tenant, "key-1") is None
        recorded = await log.append(tenant, "channel:c1", 0, batch(1, 1), Idempotency("key-1", "fp-1"))
        found = await log.find_idempotent(tenant, "key-1")
        assert found is not None and dumps(found[1]) == dumps(recorded)

    async def test_idempotency_keys_are_scoped_by_tenant(self, log: StreamStore, tenant: str) -> None:
        other = f"{tenant}-other"
        mine = await log.append(tenant, "channel:c1", 0, batch(1, 1), Idempotency("shared-key", "fp-mine"))
        theirs = await log.append(other, "channel:c1", 0, batch(1, 1), Idempotency("shared-key", "fp-theirs"))
        found_mine = await log.find_idempotent(tenant, "shared-key")
        found_theirs = await log.find_idempotent(other, "shared-key")
        assert found_mine is not None and (found_mine[0], dumps(found_mine[1])) == ("fp-mine", dumps(mine))
        assert found_theirs is not None and (found_theirs[0], dumps(found_theirs[1])) == ("fp-theirs", dumps(theirs))

    # --- isolation ---------------------------------------------------------------------------
    async def test_same_stream_name_in_two_tenants_are_independent_streams(self, log: StreamStore, tenant: str) -> None:
        other = f"{tenant}-other"
        mine = await log.append(tenant, "channel:general", 0, batch(1, 2))
        theirs = await log.append(other, "channel:general", 0, batch(1, 1))
        assert [e.seq for e in theirs] == [1]
        assert dumps(await log.read_stream(tenant, "channel:general")) == dumps(mine)
        assert dumps(await log.read_stream(other, "channel:general")) == dumps(theirs)
        with pytest.raises(ConcurrencyError):
            await log.append(other, "channel:general", 2, batch(3, 1))


class EventLogContract(StreamStoreContract):
    """Abstract contract suite for a whole event log: a stream store and a feed of the log in
    position order (``read_all``, ``read_tenant``, ``head_position``, ``listen``)."""

    @abc.abstractmethod
    async def open_log(self, request: pytest.FixtureRequest) -> EventLog: ...

    async def test_appended_events_read_back_by_position(self, log: EventLog, tenant: str) -> None:
        first = await log.append(tenant, "channel:c1", 0, batch(1, 2))
        second = await log.append(tenant, "user:u1", 0, batch(1, 2, "UserRegistered"))
        recorded = first + second
        after = recorded[0].position - 1
        assert dumps(await log.read_all(after_position=after, tenant_id=tenant)) == dumps(recorded)
        assert dumps(await log.read_all(after_position=recorded[1].position, tenant_id=tenant)) == dumps(recorded[2:])
        assert dumps(await log.read_all(after_position=after, limit=3, tenant_id=tenant)) == dumps(recorded[:3])
        assert await log.read_all(after_position=recorded[-1].position, tenant_id=tenant) == []

    async def test_read_all_filters_by_tenant(self, log: EventLog, tenant: str) -> None:
        other = f"{tenant}-other"
        mine: list[Event] = []
        for step in range(6):
            who = (tenant, other)[step % 2]
            recorded = await log.append(who, f"channel:c{step}", 0, batch(1, 1))
            if who == tenant:
                mine += recorded
        read = await log.read_all(after_position=mine[0].position - 1, tenant_id=tenant)
        assert dumps(read) == dumps(mine)
        assert all(e.tenant_id == other for e in await log.read_all(after_position=0, limit=10_000, tenant_id=other))

    async def test_read_all_filters_by_types(self, log: EventLog, tenant: str) -> None:
        registered = await log.append(tenant, "user:u1", 0, [new_event(1, "UserRegistered", name="Ada")])
        created = await log.append(tenant, "channel:c1", 0, [new_event(1, "ChannelCreated", name="c", kind="group")])
        added = await log.append(tenant, "channel:c1", 1, [new_event(2, "MemberAdded", user_id="u1", role="owner")])
        posted = await log.append(tenant, "channel:c1", 2, batch(3, 2))
        start = registered[0].position - 1
        read = await log.read_all(after_position=start, tenant_id=tenant, types=["MessagePosted", "ChannelCreated"])
        assert dumps(read) == dumps(created + posted)
        read = await log.read_all(after_position=start, tenant_id=tenant, types=["MemberAdded"])
        assert dumps(read) == dumps(added)
        assert await log.read_all(after_position=start, tenant_id=tenant, types=["NoSuchType"]) == []

    async def test_listeners_get_committed_events_in_position_order(self, log: EventLog, tenant: str) -> None:
        received: list[Event] = []
        log.listen(lambda events: received.extend(e for e in events if e.tenant_id == tenant))
        pending = [log.append(tenant, f"channel:c{i % 3}", i // 3, batch(i // 3 + 1, 1 + i % 2)) for i in range(30)]
        pending.append(log.append(tenant, "channel:c0", 99, batch(100, 1)))  # conflicts: never committed
        results = await asyncio.gather(*pending, return_exceptions=True)
        committed = [e for r in results if isinstance(r, list) for e in r]
        await eventually(lambda: len(received) >= len(committed))
        assert dumps(received) == dumps(sorted(committed, key=lambda e: e.position))

    async def test_empty_log_has_head_position_zero(self, log: EventLog) -> None:
        assert await log.head_position() == 0
        assert await log.read_all() == []

    async def test_head_position_is_the_newest_events_position(self, log: EventLog, tenant: str) -> None:
        await log.append(tenant, "channel:c1", 0, batch(1, 2))
        recorded = await log.append(tenant, "channel:c2", 0, batch(1, 3))
        assert await log.head_position() == recorded[-1].position
        assert await log.read_all(after_position=await log.head_position()) == []

    async def test_upcast_events_read_back_by_position_too(self, log: EventLog, tenant: str) -> None:
        probe = f"ContractProbe{uuid.uuid4().hex[:8]}"
        register_upcaster(probe, 1, lambda p: {**p, "colour": p.get("color", "none")})
        try:
            [recorded] = await log.append(tenant, "channel:c1", 0, [new_event(1, probe, color="red")])
            [read] = await log.read_all(after_position=recorded.position - 1, tenant_id=tenant)
            assert (read.schema_version, read.payload["colour"]) == (2, "red")
        finally:
            UPCASTERS.pop((probe, 1), None)

    async def test_positions_order_the_feed_across_streams_and_tenants(self, log: EventLog, tenant: str) -> None:
        other = f"{tenant}-other"
        recorded: list[Event] = []
        for step in range(6):
            recorded += await log.append((tenant, other)[step % 2], f"channel:c{step}", 0, batch(1, 1 + step % 2))
        everything = await log.read_all(after_position=recorded[0].position - 1, limit=10_000)
        assert dumps([e for e in everything if e.tenant_id in (tenant, other)]) == dumps(recorded)

    async def test_conflicting_append_moves_neither_the_head_nor_the_feed(self, log: EventLog, tenant: str) -> None:
        recorded = await log.append(tenant, "channel:c1", 0, batch(1, 2))
        head = await log.head_position()
        with pytest.raises(ConcurrencyError):
            await log.append(tenant, "channel:c1", 1, batch(2, 2))
        assert await log.read_all(after_position=recorded[-1].position, tenant_id=tenant) == []
        assert await log.head_position() == head

    async def test_read_tenant_is_the_feed_of_one_tenant(self, log: EventLog, tenant: str) -> None:
        other = f"{tenant}-other"
        mine = await log.append(tenant, "channel:c1", 0, batch(1, 2))
        await log.append(other, "channel:c1", 0, batch(1, 1))
        mine += await log.append(tenant, "user:u1", 0, [new_event(1, "UserRegistered", name="Ada")])
        start = mine[0].position - 1
        assert dumps(await log.read_tenant(tenant, after_position=start)) == dumps(mine)
        assert dumps(await log.read_tenant(tenant, after_position=start, limit=2)) == dumps(mine[:2])
        assert dumps(await log.read_tenant(tenant, after_position=start, types=["UserRegistered"])) == dumps(mine[2:])
