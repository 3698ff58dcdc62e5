"""``caas worker``: the deciders and the projectors of the distributed backend, side by side."""

from __future__ import annotations

import asyncio

import structlog

from adapters.kafka.deciders import DeciderWorker
from adapters.kafka.projectors import ProjectorWorker
from projections.ports import ReadStore
from streams.projector import Projection

log = structlog.get_logger("caas.worker")


async def run_worker(
    bootstrap: str,
    prefix: str,
    partitions: int,
    store: ReadStore,
    projections: list[Projection],
    *,
    store_timeout: float = 10.0,
    stall_seconds: float = 30.0,
) -> None:
    """Run until cancelled; ``store_timeout`` and ``stall_seconds`` as :class:`ProjectorWorker` takes them."""
    deciders = DeciderWorker(bootstrap, prefix, partitions)
    projectors = ProjectorWorker(
        bootstrap, prefix, partitions, store, projections, store_timeout=store_timeout, stall_seconds=stall_seconds
    )
    await store.start()
    await deciders.start()
    await projectors.start()
    log.info("worker_started", partitions=partitions)
    try:
        await asyncio.gather(deciders.run(), projectors.run())
    finally:
        await deciders.close()
        await projectors.close()
        await store.close()
