"""The embedded ephemeral bus: one process, so publishing is calling the listeners."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from commands.ports import EphemeralBus


class MemoryBus(EphemeralBus):
    def __init__(self) -> None:
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def publish(self, message: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            loop.call_soon(listener, message)

    def listen(self, listener: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.append(listener)
