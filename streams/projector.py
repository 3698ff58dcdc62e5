"""What both backends' projection processors share, and the embedded backend's runner.

- :func:`project`: how a batch reaches the read store. While the store is away the batch is
  retried from the checkpoint; an event the store refuses is parked after
  :data:`REFUSALS_BEFORE_PARKING` refusals, so one bad document never stalls the rest.
- :class:`StallWatch`: when a projection that is behind counts as stalled.
- :class:`ProjectionRunner`: the embedded backend's in-process runner. It follows the log
  from each projection's checkpoint, applies batches by :func:`project` and wakes queries
  waiting for a ``min_position``. (The Kafka backend's projectors are in ``adapters/kafka``.)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from commands.ports import EventLog, Listener
from domain.events import Event
from projections.ports import Key, Op, ReadStore, ReadStoreRefused

log = structlog.get_logger("caas.projector")


@dataclass(frozen=True, slots=True)
class Projection:
    name: str
    collections: tuple[str, ...]
    project: Callable[[Event], list[Op]]
    by_stream: bool = False
    """Every document of the model is written by the events of one stream only (a chat channel's
    documents by its channel stream): disjoint sets of streams then write disjoint documents, so
    a rebuild may fold them apart (in parallel processes) and the union is the whole model."""
    sealed: bool = False
    """It keeps events as recorded, personal fields sealed (the event index: opened where it is
    read), rather than opened (commands/sealing.py)."""


def ops_for(projection: Projection, events: Sequence[Event], after: int) -> list[Op]:
    return [op for event in events if event.position > after for op in projection.project(event)]


REFUSALS_BEFORE_PARKING = 5
# Events parked since this process started, by projection ("*": a record no projection could
# decode); every projection this process runs has an entry from its start (exported as
# ``caas_projection_parked_events_total``: docs/operations.md)
PARKED: collections.Counter[str] = collections.Counter()


def count_parked(projections: Sequence[Projection]) -> None:
    """Give each of ``projections`` an entry in :data:`PARKED` (none parked yet)."""
    for projection in projections:
        PARKED[projection.name] += 0


def checkpoint_name(projection: str, partition: int | None = None) -> str:
    """Where the read store keeps ``projection``'s checkpoint: one per projection on a log with
    one position order (the embedded log), one per partition of a partitioned log (the event
    topic on Kafka, where each partition's checkpoint holds its next offset)."""
    return projection if partition is None else f"{projection}@p{partition}"


def position(event: Event) -> int:
    """What a checkpoint holds once ``event`` is applied, on a log with one position order."""
    return event.position


async def project(
    store: ReadStore,
    projection: Projection,
    checkpoint: str,
    events: Sequence[Event],
    *,
    mark: Callable[[Event], int] = position,
    timeout: float | None = None,
) -> None:
    """Apply ``events`` (consecutive, after ``checkpoint``) and move ``checkpoint`` to
    ``mark`` of the last one.

    While the store is unreachable the batch is retried with backoff: the log keeps the events
    and nothing is skipped. An attempt that takes longer than ``timeout`` (the store hangs in
    a way its own timeout missed, or the batch is too big for a slow store) is cut short and
    the batch applied in halves (the ops are position-guarded, so what the cut-short attempt
    did apply is applied again as a no-op).
    When the store answers but refuses the writes (:class:`ReadStoreRefused`), the batch is
    applied one event at a time so only the offending event is held back; an event refused
    :data:`REFUSALS_BEFORE_PARKING` times is parked (logged as ``projection_parked`` with its
    coordinates) and the projection moves on, instead of stalling every tenant behind one
    document. ``caas rebuild`` re-applies a parked event once the store can hold it.
    """
    end = mark(events[-1])
    delay, refusals = 0.1, 0
    while True:
        try:
            async with asyncio.timeout(timeout):
                await store.apply(checkpoint, ops_for(projection, events, 0), end)
            return
        except ReadStoreRefused as exc:
            if len(events) > 1:
                for event in events:
                    await project(store, projection, checkpoint, [event], mark=mark, timeout=timeout)
                return
            refused: str | None = str(exc)
        except TimeoutError:
            if len(events) > 1:  # too slow as a whole, or hung: halves, so retrying cannot livelock
                log.warning("projection_batch_timeout", projection=projection.name, events=len(events))
                half = len(events) // 2
                await project(store, projection, checkpoint, events[:half], mark=mark, timeout=timeout)
                await project(store, projection, checkpoint, events[half:], mark=mark, timeout=timeout)
                return
            log.warning("projection_failed", projection=projection.name, error="timed out", retry_in=delay)
            refused = None
        except Exception as exc:  # the database is down or hangs: retry this batch
            log.warning("projection_failed", projection=projection.name, error=str(exc), retry_in=delay)
            refused = None
        if refused is not None:
            with contextlib.suppress(Exception):
                await store.checkpoint(checkpoint)  # a refusal counts only while the store answers reads
                refusals += 1
            if refusals >= REFUSALS_BEFORE_PARKING and events:
                [event] = events
                log.error(
                    "projection_parked",
                    projection=projection.name,
                    tenant_id=event.tenant_id,
                    stream=event.stream,
                    seq=event.seq,
                    position=event.position,
                    type=event.type,
                    error=refused,
                )
                PARKED[projection.name] += 1
                events, refusals = [], 0  # only the checkpoint moves
                continue
            log.warning("projection_refused", projection=projection.name, error=refused, refusals=refusals)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


class StallWatch:
    """The stall rule both backends share.

    A projection (of one partition) is stalled when it is behind the log (lag > 0) and its
    applied position has not moved for ``window`` seconds: its store hangs or keeps failing.
    A lag that grows while the position still moves is a projector falling behind under
    load, not a stall. ``projection_stalled`` is logged once per stall, with the partition,
    the lag and when it last progressed; ``projection_resumed`` when it moves again.
    """

    def __init__(
        self, window: float, clock: Callable[[], float] = time.monotonic, *, subject: str = "projection"
    ) -> None:
        self.window = window
        self.clock = clock
        self.subject = subject  # what the log lines name: projection_stalled, decider_stalled…
        self._progress: dict[tuple[str, int], tuple[int, float, float]] = {}  # -> applied, monotonic, wall
        self._stalled: set[tuple[str, int]] = set()

    def observe(self, projection: str, partition: int, applied: int, lag: int) -> dict[str, Any]:
        """Record ``applied`` and ``lag`` as seen now; the projection's entry for status reports."""
        key, now = (projection, partition), self.clock()
        last = self._progress.get(key)
        if last is None or last[0] != applied or lag <= 0:
            last = self._progress[key] = (applied, now, time.time())
        idle = now - last[1]
        stalled = lag > 0 and idle >= self.window
        where = {"projection": projection, "partition": partition, "lag_events": lag}
        if stalled and key not in self._stalled:
            self._stalled.add(key)
            since = datetime.fromtimestamp(last[2], UTC).isoformat()
            log.error(f"{self.subject}_stalled", **where, no_progress_seconds=round(idle, 1), last_progress_at=since)
        elif not stalled and key in self._stalled:
            self._stalled.discard(key)
            log.warning(f"{self.subject}_resumed", **where)
        return {**where, "stalled_seconds": round(idle, 1) if stalled else None}

    def forget(self, projection: str, partition: int) -> None:
        """Stop watching (a partition that moved to another worker starts afresh if it comes back)."""
        self._progress.pop((projection, partition), None)
        self._stalled.discard((projection, partition))


def stall_reason(projections: Sequence[dict[str, Any]]) -> str | None:
    """Why a node is not ready, if a projection is stalled (the longest stall), else ``None``."""
    stalled = [p for p in projections if p["stalled_seconds"] is not None]
    if not stalled:
        return None
    worst = max(stalled, key=lambda p: p["stalled_seconds"])
    return (
        f"projection stalled: lag {worst['lag_events']} events, no progress for {worst['stalled_seconds']:.0f} s "
        f"({worst['projection']}, partition {worst['partition']})"
    )


async def watch(check: Callable[[], Any], every: float = 1.0) -> None:
    """Run ``check`` every ``every`` seconds, so a stall is logged even if no one asks for the
    status; a failing check is the store's retry loop's to report."""
    while True:
        with contextlib.suppress(Exception):
            await check()
        await asyncio.sleep(every)


# Spans around a batch's work, one per trace among its events (the composition root passes the
# tracing adapter's while tracing is on): ``spans(name, events)`` is a context manager.
Spans = Callable[[str, Sequence[Event]], contextlib.AbstractContextManager[object]]
_UNTRACED = contextlib.nullcontext()


def untraced(name: str, events: Sequence[Event]) -> contextlib.AbstractContextManager[object]:
    return _UNTRACED


class ProjectionRunner:
    def __init__(
        self,
        log: EventLog,
        store: ReadStore,
        projections: Sequence[Projection],
        *,
        batch: int = 2000,
        stall_seconds: float = 30.0,
        spans: Spans = untraced,
    ) -> None:
        self.log = log
        self.spans = spans
        self.store = store
        self.projections = list(projections)
        self.batch = batch
        self.applied = 0
        self.stalls = StallWatch(stall_seconds)
        self._checkpoints: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.applied_listeners: list[Listener] = []  # told of each batch once every read model applied it
        self.progressed_at = time.monotonic()  # when it last applied a batch or found nothing to apply
        count_parked(self.projections)
        # Committed events as the log handed them to its listeners, in position order: the next
        # batch is taken from here instead of being read back from the log, as long as it
        # continues the applied position without a gap (else, and after an overflow while the
        # store is away, the log is read until the runner caught up again).
        self._fresh: list[Event] = []

    async def start(self) -> None:
        for projection in self.projections:
            self._checkpoints[projection.name] = await self.store.checkpoint(checkpoint_name(projection.name))
        self.applied = min(self._checkpoints.values(), default=0)
        self.log.listen(self._committed)
        self._wake.set()
        self._tasks = [
            asyncio.create_task(self._run(), name="caas-projector"),
            asyncio.create_task(watch(self.status_now), name="caas-projector-watch"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def _committed(self, events: Sequence[Event]) -> None:
        if len(self._fresh) + len(events) > 2 * self.batch:  # behind: the log has them, read them there
            self._fresh.clear()
        self._fresh.extend(events)
        self._wake.set()

    def _take_fresh(self) -> list[Event]:
        """The next batch from the committed events handed over, if it continues ``applied``."""
        fresh, applied = self._fresh, self.applied
        skip = 0
        while skip < len(fresh) and fresh[skip].position <= applied:
            skip += 1
        if skip == len(fresh) or fresh[skip].position != applied + 1:
            self._fresh = []  # none, or a gap before them: the log fills it
            return []
        events = fresh[skip : skip + self.batch]
        if events[-1].position - events[0].position != len(events) - 1:  # not one run of positions
            self._fresh = []
            return []
        self._fresh = fresh[skip + len(events) :]
        return events

    async def _run(self) -> None:
        delay = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while await self.step():
                    self.progressed_at = time.monotonic()
                self.progressed_at = time.monotonic()
                delay = 0.05
            except Exception as exc:  # the store is down or failing: retry from the checkpoint
                log.warning("projection_failed", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                self._wake.set()

    async def step(self) -> bool:
        """Apply the next batch of the log; ``False`` when caught up."""
        events = self._take_fresh() or await self.log.read_all(after_position=self.applied, limit=self.batch)
        if not events:
            return False
        last = events[-1].position
        batches = []
        for projection in self.projections:
            after = self._checkpoints[projection.name]
            fresh = [event for event in events if event.position > after]
            if fresh:
                batches.append((projection, fresh))
        with self.spans("project", events), self.spans("store.apply", events):
            try:  # every read model at once: one hop to the store's thread and one commit
                await self.store.apply_many(
                    [(checkpoint_name(p.name), ops_for(p, fresh, 0), fresh[-1].position) for p, fresh in batches]
                )
            except Exception:  # one at a time, by the rule that retries, isolates and parks (project)
                for projection, fresh in batches:
                    await project(self.store, projection, checkpoint_name(projection.name), fresh)
        for projection, _ in batches:
            self._checkpoints[projection.name] = last
        self.applied = last
        self._release()
        for listener in self.applied_listeners:
            listener(events)
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
        projections = [
            self.stalls.observe(p.name, 0, self._checkpoints[p.name], max(head - self._checkpoints[p.name], 0))
            for p in self.projections
        ]
        lag = head - self.applied
        if lag <= 0:  # nothing to apply: as good as progress
            self.progressed_at = time.monotonic()
        return {"applied_position": self.applied, "projection_lag_events": lag, "projections": projections}

    def health(self) -> dict[str, Any]:
        """Whether the runner's task runs, and how long since it last moved (``/metrics``)."""
        running = bool(self._tasks) and not self._tasks[0].done()
        age = time.monotonic() - self.progressed_at
        return {"processor": "projections", "up": running, "progress_age_seconds": age}

    async def status_now(self) -> dict[str, Any]:
        return await self.status(await self.log.head_position())

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


@contextlib.contextmanager
def bulk_allocation() -> Iterator[None]:
    """Pause the cyclic garbage collector while a rebuild runs. A rebuild allocates millions of
    short-lived, acyclic objects (events, ops, documents: reference counting frees them) beside
    the many it holds, and each generation-2 collection walks all of them: about half the CPU
    time of projecting and folding (tests/perf: the rebuild profile in BENCHMARKS.md)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


async def load_log(
    read: Callable[[int], Awaitable[list[Event]]],
    store: ReadStore,
    projection: Projection,
    checkpoint: str,
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Fold the events ``read(after)`` returns, window after window until it returns none, into
    ``projection``'s dropped read model (:meth:`ReadStore.load`, which reads back only documents
    an earlier window wrote), moving ``checkpoint`` with each window; the number of events.

    Reading and loading take turns: reading the next window beside a load running in a store's
    thread was slower, not faster. Each row the reader fetches releases and takes back the GIL,
    which the folding thread holds for up to a switch interval, so the reader waited most of
    the time (tests/perf: the rebuild profile in BENCHMARKS.md).
    """
    after = count = 0
    loaded: set[Key] = set()  # the documents earlier windows wrote
    with bulk_allocation():
        while events := await read(after):
            after = events[-1].position
            await store.load(checkpoint, ops_for(projection, events, 0), after, loaded)
            count += len(events)
            if progress is not None:
                progress(after)
    return count


async def rebuild(
    log: EventLog,
    store: ReadStore,
    projection: Projection,
    *,
    window: int = 50_000,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, float]:
    """Drop ``projection``'s read model and rebuild it from the whole log.

    The log is read ``window`` events at a time and loaded by :func:`load_log`. Returns the
    number of events read and the seconds it took.
    """
    head = await log.head_position()
    await store.drop(projection.name, projection.collections)
    started = time.perf_counter()
    count = await load_log(
        lambda after: log.read_all(after_position=after, limit=window),
        store,
        projection,
        checkpoint_name(projection.name),
        progress=None if progress is None else lambda after: progress(after, head),
    )
    await store.settle()
    return count, time.perf_counter() - started
