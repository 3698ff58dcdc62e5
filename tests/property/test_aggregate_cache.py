"""The command service's aggregate cache and cold loads, on the real SQLite log.

Issue 8, defect 9: lookups of ids that do not exist (presence queries of made-up users,
API keys of made-up tenants) filled the cache and evicted every live aggregate; the next
command to a long channel then reloaded its whole history on the event loop. Here the log
is the real :class:`SqliteEventLog`; a subclass counts the events each stream read returns,
which shows whether a stream was reloaded and how much of it.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import tracemalloc
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.sqlite_log import SqliteEventLog
from commands.ports import EventLog
from commands.repository import AggregateRepository
from commands.service import CommandEnvelope, CommandService
from domain import channel as ch
from domain import user
from domain.base import Actor, format_time
from domain.events import Event

TENANT = "t1"
CHANNEL = "channel:c"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class CountingLog(SqliteEventLog):
    """The real SQLite log, counting the events every stream read returns, per stream."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.read: Counter[str] = Counter()
        self.on_read = lambda: None

    async def read_stream(
        self, tenant_id: str, stream: str, after_seq: int = 0, limit: int | None = None
    ) -> list[Event]:
        events = await super().read_stream(tenant_id, stream, after_seq, limit)
        self.read[stream] += len(events)
        self.on_read()
        return events


def service_for(log: EventLog, cache_size: int = 20_000) -> CommandService:
    ids = itertools.count(1)
    repository = AggregateRepository(log, cache_size=cache_size)
    return CommandService(log, clock=lambda: NOW, new_id=lambda: f"id-{next(ids)}", repository=repository)


async def open_log(path: Path) -> CountingLog:
    log = CountingLog(path / "events.db")
    await log.start()
    return log


async def post(service: CommandService, count: int, start: int = 0) -> None:
    """``count`` messages to the channel, pipelined as concurrent clients would send them."""
    sends = [
        service.execute(
            CommandEnvelope(
                TENANT,
                CHANNEL,
                ch.PostMessage(
                    actor=Actor("user", "u1"),
                    message_id=f"m{n}",
                    author_id="u1",
                    text=f"message {n}",
                    client_msg_id=f"c{n}",
                    now=format_time(NOW),
                ),
                actor="user:u1",
            )
        )
        for n in range(start, start + count)
    ]
    await asyncio.gather(*sends)


async def channel_with(service: CommandService, messages: int) -> None:
    """A channel of 3 + ``messages`` events: created, two members added, the posts."""
    create = ch.CreateChannel(actor=Actor("tenant", TENANT), name="c", kind="group", members=["u1", "u2"])
    await service.execute(CommandEnvelope(TENANT, CHANNEL, create, actor=f"tenant:{TENANT}"))
    await post(service, messages)


async def test_lookups_of_unknown_ids_do_not_evict_live_aggregates(tmp_path: Path) -> None:
    log = await open_log(tmp_path)
    try:
        service = service_for(log, cache_size=50)
        await channel_with(service, 20)
        live = await service.state(TENANT, CHANNEL)
        reads = log.read[CHANNEL]
        for n in range(1000):  # presence queries of made-up users, API keys of made-up tenants
            assert not (await service.state(TENANT, f"user:ghost-{n}")).exists
            assert not (await service.state(f"ghost-{n}", f"tenant:ghost-{n}")).exists
        await post(service, 1, start=20)
        assert await service.state(TENANT, CHANNEL) is live, "the channel was evicted and reloaded"
        assert log.read[CHANNEL] == reads
        assert not [key for key, _ in service.repository.cached() if "ghost" in key[1]]
    finally:
        await log.close()


async def test_a_stream_first_written_after_a_lookup_of_it_is_cached_with_its_events(tmp_path: Path) -> None:
    log = await open_log(tmp_path)
    try:
        service = service_for(log, cache_size=50)
        assert not (await service.state(TENANT, "user:bob")).exists
        await service.execute(CommandEnvelope(TENANT, "user:bob", user.RegisterUser(name="Bob"), actor=None))
        bob = await service.state(TENANT, "user:bob")
        assert (bob.version, bob.name) == (1, "Bob")
        assert [key for key, _ in service.repository.cached()] == [(TENANT, "user:bob")]
    finally:
        await log.close()


def test_unknown_lookups_do_not_grow_an_api_nodes_replica() -> None:
    """The Kafka API node's replica keeps every aggregate (its cache is unbounded): lookups of
    streams that have no events must not add to it."""

    async def lookups(replica: AggregateRepository, names: range) -> None:
        for n in names:
            assert not (await replica.get(TENANT, f"user:ghost-{n}")).exists

    async def scenario() -> tuple[int, int]:
        replica = AggregateRepository(None, cache_size=None)
        await lookups(replica, range(2_000))
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            await lookups(replica, range(2_000, 22_000))
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        return len(replica.cached()), grown

    cached, grown = asyncio.run(scenario())
    assert cached == 0
    assert grown < 1 << 20, f"20,000 lookups of unknown users kept {grown} bytes"


async def test_a_replica_restores_a_stream_it_had_looked_up_before_it_existed() -> None:
    replica = AggregateRepository(None, cache_size=None)
    assert not (await replica.get(TENANT, "user:bob")).exists
    registered = Event(
        event_id="e1", tenant_id=TENANT, stream="user:bob", seq=1, position=1, type="UserRegistered",
        schema_version=1, occurred_at=format_time(NOW), actor=None, payload={"name": "Bob", "metadata": {}},
    )  # fmt: skip
    assert replica.restore(registered)
    after = await replica.get(TENANT, "user:bob")
    assert (after.exists, after.name) == (True, "Bob")
    assert [key for key, _ in replica.cached()] == [(TENANT, "user:bob")]


async def test_a_cold_load_lets_the_event_loop_run_while_it_reads_and_folds(tmp_path: Path) -> None:
    log = await open_log(tmp_path)
    await channel_with(service_for(log), 3000)
    await log.close()

    log = await open_log(tmp_path)
    try:
        ticks = 0
        loading = True
        after_reads: list[int] = []
        log.on_read = lambda: after_reads.append(ticks)

        async def other_tenant() -> None:
            nonlocal ticks
            while loading:
                ticks += 1
                await asyncio.sleep(0)

        other = asyncio.create_task(other_tenant())
        state = await service_for(log).state(TENANT, CHANNEL)
        loading = False
        await other
        assert state.version == 3003 and len(state.messages) == 3000
        assert after_reads and ticks > after_reads[-1] > 0, "the loop stalled while the stream was read or folded"
    finally:
        await log.close()


async def test_loading_after_a_snapshot_reads_only_the_later_events(tmp_path: Path) -> None:
    log = await open_log(tmp_path)
    await channel_with(service_for(log), 1200)
    await log.close()

    log = await open_log(tmp_path)  # a restart: the first load folds the whole stream once
    service = service_for(log)
    await service.state(TENANT, CHANNEL)
    assert log.read[CHANNEL] == 1203
    await post(service, 10, start=1200)
    expected = await service.state(TENANT, CHANNEL)
    await log.close()

    log = await open_log(tmp_path)
    try:
        loaded = await service_for(log).state(TENANT, CHANNEL)
        assert log.read[CHANNEL] <= 11 + 1, f"read {log.read[CHANNEL]} events of 1213"
        assert loaded == expected
        assert list(loaded.messages) == list(expected.messages)  # the same order, not only the same keys
    finally:
        await log.close()


async def test_an_evicted_aggregate_is_snapshotted(tmp_path: Path) -> None:
    log = await open_log(tmp_path)
    service = service_for(log, cache_size=2)
    await channel_with(service, 600)
    expected = await service.state(TENANT, CHANNEL)
    for name in ("u1", "u2"):  # two live users push the channel out of a cache of two
        await service.execute(CommandEnvelope(TENANT, f"user:{name}", user.RegisterUser(name=name), actor=None))
        await service.state(TENANT, f"user:{name}")
    assert (TENANT, CHANNEL) not in dict(service.repository.cached())
    await log.close()

    log = await open_log(tmp_path)
    try:
        loaded = await service_for(log).state(TENANT, CHANNEL)
        assert log.read[CHANNEL] <= 1, f"read {log.read[CHANNEL]} events of 603"
        assert loaded == expected
    finally:
        await log.close()


@pytest.mark.parametrize(
    "spoil",
    [
        "UPDATE snapshots SET schema = '0-from-an-older-build'",  # the state's shape changed since
        "UPDATE snapshots SET event_id = 'not-in-this-log'",  # not a snapshot of this log's stream
        "UPDATE snapshots SET state = x'5b5d'",  # does not decode to the state
    ],
)
async def test_a_snapshot_that_does_not_fit_is_ignored_and_replaced(tmp_path: Path, spoil: str) -> None:
    log = await open_log(tmp_path)
    await channel_with(service_for(log), 600)
    await log.close()
    log = await open_log(tmp_path)
    expected = await service_for(log).state(TENANT, CHANNEL)  # folds 603 events, takes a snapshot
    await log.close()
    with sqlite3.connect(tmp_path / "events.db") as db:
        assert db.execute(spoil).rowcount == 1

    log = await open_log(tmp_path)
    loaded = await service_for(log).state(TENANT, CHANNEL)
    assert loaded == expected and log.read[CHANNEL] >= 603, "folded from the log, not from the spoilt snapshot"
    await log.close()

    log = await open_log(tmp_path)
    try:
        assert await service_for(log).state(TENANT, CHANNEL) == expected
        assert log.read[CHANNEL] <= 1, "the load that ignored the snapshot did not replace it"
    finally:
        await log.close()
