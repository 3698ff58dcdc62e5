"""The retention sweeper over the in-memory key store twin and a real (SQLite) log: it destroys
exactly the channel-day keys past their channel's retention, never a held one, and records
each as ``ChannelDayShredded`` once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.ids import uuid7
from adapters.memory_keys import MemoryKeyStore
from adapters.sqlite_log import SqliteEventLog
from commands.keys import StoredKey, channel_day_key_id
from commands.retention import SWEEPER, DayKeys, RetentionPolicies, RetentionSweeper, Shredded
from commands.service import CommandEnvelope, CommandService
from domain import channel as ch
from domain import tenant, user
from domain.base import Actor, Command
from domain.events import stream_name
from domain.retention import PlaceLegalHold, ReleaseLegalHold, SetRetention

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
T = "t1"


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[CommandService]:
    log = SqliteEventLog(tmp_path / "events.db")
    await log.start()
    yield CommandService(log, clock=lambda: NOW, new_id=uuid7)
    await log.close()


async def run(service: CommandService, stream: str, command: Command) -> None:
    await service.execute(CommandEnvelope(T, stream, command, actor="tenant:k1"))


async def seeded(service: CommandService, keys: MemoryKeyStore, days: dict[str, list[str]]) -> None:
    """A tenant with users u1..u3, a channel per entry of ``days`` (u1 and the channel's own
    member), and a key for each of its days."""
    await run(service, stream_name("tenant", T), tenant.RegisterTenant(name="t", key_id="k1", key_hash="h"))
    for uid in ("u1", "u2", "u3"):
        await run(service, stream_name("user", uid), user.RegisterUser(name=uid))
    actor = Actor("tenant", "k1")
    for n, (cid, listed) in enumerate(sorted(days.items())):
        members = ["u1", f"u{n % 2 + 2}"]
        await run(
            service, stream_name("channel", cid), ch.CreateChannel(actor=actor, name=cid, kind="group", members=members)
        )
        for day in listed:
            await keys.create(StoredKey(T, channel_day_key_id(cid, day), "m", b"wrapped", "2026-01-01T00:00:00Z"))


def sweeper(service: CommandService, keys: MemoryKeyStore) -> RetentionSweeper:
    return RetentionSweeper(RetentionPolicies(service, lambda: NOW), DayKeys(keys))


async def live_days(keys: MemoryKeyStore) -> set[tuple[str, str]]:
    return set(await DayKeys(keys).channel_days(T))


async def test_the_sweeper_destroys_only_days_past_retention_and_records_them_once(service: CommandService) -> None:
    keys = MemoryKeyStore()
    days = {"a": ["2026-11-29", "2026-11-30", "2026-12-01"], "b": ["2026-11-29"], "held": ["2026-11-01"]}
    await seeded(service, keys, days)
    await run(service, stream_name("channel", "held"), PlaceLegalHold(reason="case"))
    await run(service, stream_name("channel", "b"), SetRetention(days=30))
    assert await sweeper(service, keys).sweep([T]) == [], "no retention: nothing is due"

    await run(service, stream_name("tenant", T), SetRetention(days=2))
    # now 2026-12-03 12:00, 2 days: the cutoff is 2026-12-01 12:00, so days up to 2026-11-30 are due
    done = await sweeper(service, keys).sweep([T])
    assert done == [Shredded(T, "a", "2026-11-29"), Shredded(T, "a", "2026-11-30")]
    assert await live_days(keys) == {("a", "2026-12-01"), ("b", "2026-11-29"), ("held", "2026-11-01")}
    state = await service.channel(T, "a")
    assert sorted(state.shredded_days) == ["2026-11-29", "2026-11-30"]
    recorded = await service.store.read_stream(T, stream_name("channel", "a"), 0, None)
    shredded = [e for e in recorded if e.type == "ChannelDayShredded"]
    assert [e.payload["day"] for e in shredded] == ["2026-11-29", "2026-11-30"]
    assert {e.actor for e in shredded} == {SWEEPER}
    assert all(e.correlation_id for e in shredded)
    assert await sweeper(service, keys).sweep([T]) == [], "a second pass finds nothing more"

    await run(service, stream_name("channel", "held"), ReleaseLegalHold(reason="closed"))
    assert await sweeper(service, keys).sweep([T]) == [Shredded(T, "held", "2026-11-01")]


async def test_a_hold_on_a_member_keeps_the_channels_days(service: CommandService) -> None:
    keys = MemoryKeyStore()
    await seeded(service, keys, {"a": ["2026-11-01"], "b": ["2026-11-01"]})  # a: u1, u2; b: u1, u3
    await run(service, stream_name("user", "u3"), PlaceLegalHold(reason="case"))
    await run(service, stream_name("tenant", T), SetRetention(days=1))
    assert await sweeper(service, keys).sweep([T]) == [Shredded(T, "a", "2026-11-01")]
    await run(service, stream_name("channel", "b"), ch.RemoveMember(actor=Actor("tenant", "k1"), user_id="u3"))
    assert await sweeper(service, keys).sweep([T]) == [], "a former member's hold still holds"
    await run(service, stream_name("user", "u3"), ReleaseLegalHold(reason="closed"))
    assert await sweeper(service, keys).sweep([T]) == [Shredded(T, "b", "2026-11-01")]
