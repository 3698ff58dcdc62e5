"""The in-process projection runner of the embedded backend.

It follows the log from each projection's checkpoint, applies batches through the read
store port and wakes queries waiting for a ``min_position``. A failing store is retried
from the checkpoint; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from commands.ports import EventLog
from domain.events import Event
from projections.ports import Op, ReadStore

log = structlog.get_logger("caas.projector")


@dataclass(frozen=True, slots=True)
class Projection:
    name: str
    collections: tuple[str, ...]
    project: Callable[[Event], list[Op]]


def ops_for(projection: Projection, events: Sequence[Event], after: int) -> list[Op]:
    return [op for event in events if event.position > after for op in projection.project(event)]


class ProjectionRunner:
    def __init__(
        self, log: EventLog, store: ReadStore, projections: Sequence[Projection], *, batch: int = 2000
    ) -> None:
        self.log = log
        self.store = store
        self.projections = list(projections)
        self.batch = batch
        self.applied = 0
        self._checkpoints: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for projection in self.projections:
            self._checkpoints[projection.name] = await self.store.checkpoint(projection.name)
        self.applied = min(self._checkpoints.values(), default=0)
        self.log.listen(lambda events: self._wake.set())
        self._wake.set()
        self._task = asyncio.create_task(self._run(), name="caas-projector")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while await self.step():
                    pass
                delay = 0.05
            except Exception as exc:  # the store is down or failing: retry from the checkpoint
                log.warning("projection_failed", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                self._wake.set()

    async def step(self) -> bool:
        """Apply the next batch of the log; ``False`` when caught up."""
        events = await self.log.read_all(after_position=self.applied, limit=self.batch)
        if not events:
            return False
        last = events[-1].position
        for projection in self.projections:
            after = self._checkpoints[projection.name]
            if after >= last:
                continue
            await self.store.apply(projection.name, ops_for(projection, events, after), last)
            self._checkpoints[projection.name] = last
        self.applied = last
        self._release()
        return len(events) == self.batch

    def _release(self) -> None:
        keep = []
        for position, future in self._waiters:
            if position <= self.applied:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((position, future))
        self._waiters = keep

    async def status(self, head: int) -> dict[str, Any]:
        return {"applied_position": self.applied, "projection_lag_events": head - self.applied}

    async def wait_for(self, position: int, timeout: float) -> bool:
        """Wait until every projection has applied ``position``; ``False`` on timeout."""
        if position <= self.applied:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((position, future))
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False


async def rebuild(
    log: EventLog,
    store: ReadStore,
    projection: Projection,
    *,
    batch: int = 5000,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, float]:
    """Drop ``projection``'s read model and rebuild it from the whole log.

    Returns the number of events read and the seconds it took.
    """
    head = await log.head_position()
    await store.drop(projection.name, projection.collections)
    started = time.perf_counter()
    after = count = applied = 0
    applying: asyncio.Future[None] | None = None
    while True:
        events = await log.read_all(after_position=after, limit=batch)  # beside the previous apply
        if applying is not None:
            await applying
            count += applied
            if progress is not None:
                progress(after, head)
        if not events:
            break
        after, applied = events[-1].position, len(events)
        applying = asyncio.ensure_future(store.apply(projection.name, ops_for(projection, events, 0), after))
        await asyncio.sleep(0)  # let the apply start (a store may run it in a thread) before reading on
    await store.settle()
    return count, time.perf_counter() - started
