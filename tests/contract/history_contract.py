"""The behaviour every :class:`commands.ports.EventHistory` (what an API node reads of the log)
must have, asserted through the port only.

Events are recorded through the deployment's own write path (:meth:`open_history` gives the
history and the store commands append to), and read back through the history, which may see
them only a little later (the Kafka node's index is a read model): reads are polled with a
deadline.
"""

from __future__ import annotations

import abc
import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from commands.ports import EventHistory, StreamStore
from domain.events import Event
from tests.contract.eventlog_contract import batch, dumps, new_event

Opened = tuple[EventHistory, StreamStore]


async def settled(read: Callable[[], Awaitable[Any]], expected: Any, limit: float = 15.0) -> Any:
    """``read()`` once it returns ``expected`` (or its last answer when ``limit`` runs out)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while (found := await read()) != expected and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return found


class EventHistoryContract(abc.ABC):
    """Abstract contract suite for an API node's history of the log."""

    @abc.abstractmethod
    def open_history(self, request: pytest.FixtureRequest) -> AbstractAsyncContextManager[Opened]:
        """A started history and the started store whose appends it shows, closed on exit."""

    @pytest.fixture
    async def opened(self, request: pytest.FixtureRequest) -> AsyncIterator[Opened]:
        async with self.open_history(request) as opened:
            yield opened

    @pytest.fixture
    def tenant(self) -> str:
        return f"t-{uuid.uuid4().hex[:12]}"

    async def test_a_stream_reads_back_with_after_seq_and_limit(self, opened: Opened, tenant: str) -> None:
        history, store = opened
        recorded = await store.append(tenant, "channel:c1", 0, batch(1, 5))
        await store.append(tenant, "channel:c2", 0, batch(1, 1))

        async def stream(after_seq: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
            return dumps(await history.read_stream(tenant, "channel:c1", after_seq, limit))

        assert await settled(stream, dumps(recorded)) == dumps(recorded)
        assert await stream(after_seq=2) == dumps(recorded[2:])
        assert await stream(after_seq=1, limit=2) == dumps(recorded[1:3])
        assert await stream(after_seq=5) == []

    async def test_unknown_stream_reads_empty(self, opened: Opened, tenant: str) -> None:
        history, _ = opened
        assert await history.read_stream(tenant, "channel:nobody-wrote-here") == []

    async def test_a_tenants_feed_by_position_type_and_limit(self, opened: Opened, tenant: str) -> None:
        history, store = opened
        other = f"{tenant}-other"
        mine = await store.append(tenant, "channel:c1", 0, batch(1, 2))
        await store.append(other, "channel:c1", 0, batch(1, 1))
        mine += await store.append(tenant, "user:u1", 0, [new_event(1, "UserRegistered", name="Ada")])

        async def feed(after: int = 0, limit: int = 1000, types: list[str] | None = None) -> list[dict[str, Any]]:
            return dumps(await history.read_tenant(tenant, after_position=after, limit=limit, types=types))

        assert await settled(feed, dumps(mine)) == dumps(mine)
        assert await feed(after=mine[0].position) == dumps(mine[1:])
        assert await feed(limit=2) == dumps(mine[:2])
        assert await feed(types=["UserRegistered"]) == dumps(mine[2:])
        assert await feed(after=mine[-1].position) == []

    async def test_listeners_get_recorded_events_and_the_head_reaches_the_newest(
        self, opened: Opened, tenant: str
    ) -> None:
        history, store = opened
        received: list[Event] = []
        history.listen(lambda events: received.extend(e for e in events if e.tenant_id == tenant))
        recorded: list[Event] = []
        for n in range(3):
            recorded += await store.append(tenant, "channel:c1", 2 * n, batch(2 * n + 1, 2))

        async def heard() -> list[dict[str, Any]]:
            return dumps(received)

        assert await settled(heard, dumps(recorded)) == dumps(recorded)
        assert await settled(history.head_position, recorded[-1].position) >= recorded[-1].position
