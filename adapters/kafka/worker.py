"""``caas worker``: the deciders (aiokafka) and the read-model processors (a Faust app), side
by side in one event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from adapters.kafka.deciders import COMMIT_INTERVAL, DeciderWorker
from adapters.kafka.projectors import ProjectorAgent
from commands.ports import Listener
from commands.sealing import Sealer
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
    data_dir: Path,
    store_timeout: float = 10.0,
    stall_seconds: float = 30.0,
    listeners: Sequence[Listener] = (),
    commit_interval: float = COMMIT_INTERVAL,
    beside: Callable[[Callable[[], Awaitable[dict[str, Any]]]], Awaitable[None]] | None = None,
    sealer: Sealer,
) -> None:
    """Run until cancelled (or until a half stops); ``store_timeout``, ``stall_seconds`` and
    ``listeners`` (told of each batch the read models applied) as :class:`ProjectorAgent`
    takes them, ``commit_interval`` as :class:`DeciderWorker` does; Faust keeps its files
    under ``data_dir/faust``. ``beside`` runs alongside, given the worker's status (its
    ``/metrics`` port: :func:`api.observability.record_status` reads it)."""
    deciders = DeciderWorker(
        bootstrap, prefix, partitions, commit_interval=commit_interval, stall_seconds=stall_seconds, sealer=sealer
    )
    projectors = ProjectorAgent(
        bootstrap,
        prefix,
        partitions,
        store,
        projections,
        datadir=data_dir / "faust",
        store_timeout=store_timeout,
        stall_seconds=stall_seconds,
        listeners=listeners,
        sealer=sealer,
    )

    async def status() -> dict[str, Any]:
        mine, theirs = await deciders.status(), projectors.status()
        behind: dict[str, int] = {}
        for entry in theirs["projections"]:
            behind[entry["projection"]] = behind.get(entry["projection"], 0) + entry["lag_events"]
        return {
            "projection_lag_events": max(behind.values(), default=0),
            "projections": theirs["projections"],
            "deciders": mine["deciders"],
            "consumers": mine["consumers"] + theirs["consumers"],
            "processors": mine["processors"] + theirs["processors"],
        }

    await store.start()
    await sealer.keyring.store.start()
    await deciders.start()
    log.info("worker_started", partitions=partitions)
    try:
        await asyncio.gather(deciders.run(), projectors.run(), *([beside(status)] if beside else []))
    finally:
        await deciders.close()
        await projectors.close()
        await store.close()
        await sealer.keyring.store.close()
