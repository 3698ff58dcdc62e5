"""The embedded backend's bus keeps the bus contract (its only node is its own process)."""

from __future__ import annotations

import pytest

from adapters.memory_bus import MemoryBus
from commands.ports import EphemeralBus
from tests.contract.bus_contract import BusContract


class TestMemoryBus(BusContract):
    async def open_nodes(self, request: pytest.FixtureRequest) -> list[EphemeralBus]:
        return [MemoryBus()]
