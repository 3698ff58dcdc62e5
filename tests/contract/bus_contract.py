"""The behaviour every :class:`commands.ports.EphemeralBus` must have: the same pub/sub
scenario, asserted through the port only, against every bus a backend runs.

Subclass :class:`BusContract` once per bus and implement :meth:`open_nodes`: the buses of the
nodes of one deployment (one for the embedded backend, whose only node is its process; two
for Kafka, which share a topic). The suite starts and closes them.
"""

from __future__ import annotations

import abc
import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from commands.ports import EphemeralBus


async def eventually(condition: Callable[[], bool], limit: float = 10.0) -> None:
    """Wait until ``condition`` holds (a bus delivers asynchronously)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.01)


class Inbox:
    """What one listener received, of this test's messages only (a shared topic may carry others)."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.messages: list[dict[str, Any]] = []

    def __call__(self, message: dict[str, Any]) -> None:
        if message.get("run") == self.run:
            self.messages.append(message)


class BusContract(abc.ABC):
    """Abstract contract suite for an ephemeral bus."""

    @abc.abstractmethod
    async def open_nodes(self, request: pytest.FixtureRequest) -> list[EphemeralBus]:
        """The (unstarted) buses of every node of one fresh deployment."""

    @pytest.fixture
    async def nodes(self, request: pytest.FixtureRequest) -> AsyncIterator[list[EphemeralBus]]:
        buses = await self.open_nodes(request)
        for bus in buses:
            await bus.start()
        try:
            yield buses
        finally:
            for bus in buses:
                await bus.close()

    @pytest.fixture
    def run(self) -> str:
        return uuid.uuid4().hex

    async def test_a_message_reaches_every_nodes_listeners_the_publishers_too(
        self, nodes: list[EphemeralBus], run: str
    ) -> None:
        inboxes = [Inbox(run) for _ in nodes]
        for bus, inbox in zip(nodes, inboxes, strict=True):
            bus.listen(inbox)
        message = {"run": run, "kind": "typing", "node": "n1", "user": "ünï", "at": 1.5, "ids": [1, None]}
        nodes[0].publish(message)
        await eventually(lambda: all(inbox.messages for inbox in inboxes))
        assert [inbox.messages for inbox in inboxes] == [[message] for _ in nodes]

    async def test_one_nodes_messages_arrive_in_the_order_published(self, nodes: list[EphemeralBus], run: str) -> None:
        inboxes = [Inbox(run) for _ in nodes]
        for bus, inbox in zip(nodes, inboxes, strict=True):
            bus.listen(inbox)
        for n in range(50):
            nodes[-1].publish({"run": run, "node": "n-last", "n": n})
        await eventually(lambda: all(len(inbox.messages) >= 50 for inbox in inboxes))
        assert [[m["n"] for m in inbox.messages] for inbox in inboxes] == [list(range(50)) for _ in nodes]

    async def test_every_listener_of_a_node_gets_each_message_once(self, nodes: list[EphemeralBus], run: str) -> None:
        first, second = Inbox(run), Inbox(run)
        nodes[0].listen(first)
        nodes[0].listen(second)
        for n in range(3):
            nodes[0].publish({"run": run, "node": "n1", "n": n})
        await eventually(lambda: len(first.messages) >= 3 and len(second.messages) >= 3)
        marker = {"run": run, "node": "n1", "n": "last"}
        nodes[0].publish(marker)  # anything duplicated would arrive before this
        await eventually(lambda: marker in first.messages and marker in second.messages)
        assert [m["n"] for m in first.messages] == [m["n"] for m in second.messages] == [0, 1, 2, "last"]
