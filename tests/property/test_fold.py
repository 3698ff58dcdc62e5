"""Property tests of the rebuild's fold (``projections.ports.Fold`` and ``ReadStore.load``).

A rebuild folds a window of events into whole documents in memory and bulk-writes them,
reading back only documents an earlier window wrote. For the chat read model, the event index
and the usage read model (edits, deletes, reactions, ``Op.measure`` with its tallies, and
``Tally(high=True)`` running maxima), a log rebuilt window by window, in any window sizes,
leaves exactly the documents — guard positions included — that applying it event by event
leaves, and that the live projection leaves when it is delivered in batches with redeliveries.
Both the SQLite store's bulk path and the port's default (the in-memory store) are checked.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.memory_store import MemoryReadStore
from adapters.sqlite_log import stream_part
from adapters.sqlite_store import SqliteReadStore
from domain.events import Event
from projections import chat, eventindex, usage
from projections.ports import Fold, Key, Op, ReadStore
from tests.property.test_projection import deliveries, scenarios
from tests.property.test_usage import embedded, facts

Project = Callable[[Event], list[Op]]
MODELS: dict[str, tuple[Project, tuple[str, ...]]] = {
    "chat": (chat.project, chat.COLLECTIONS),
    "events": (eventindex.project, eventindex.COLLECTIONS),
    "usage": (usage.project, usage.COLLECTIONS),
}


def ops_of(project: Project, events: Sequence[Event]) -> list[Op]:
    return [op for event in events for op in project(event)]


def sqlite_documents(path: Path, collections: Sequence[str]) -> dict[str, dict[tuple[str, str], Any]]:
    """Every stored document of ``collections``, guard position included, as the SQLite store holds it."""
    import orjson

    conn = sqlite3.connect(path)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    out = {
        name: {(t, i): orjson.loads(doc) for t, i, doc in conn.execute(f"SELECT tenant_id, id, doc FROM rm_{name}")}
        for name in collections
        if f"rm_{name}" in tables
    }
    conn.close()
    return {name: docs for name, docs in out.items() if docs}


async def one_by_one(project: Project, events: Sequence[Event]) -> MemoryReadStore:
    store = MemoryReadStore()
    for event in events:
        await store.apply("p", project(event), event.position)
    return store


async def by_windows(store: ReadStore, project: Project, events: Sequence[Event], sizes: list[int]) -> None:
    """What ``streams.projector.rebuild`` does with the log read ``sizes[k]`` events at a time."""
    loaded: set[Key] = set()
    done = 0
    for size in sizes:
        window = events[done : done + size]
        if window:
            await store.load("p", ops_of(project, window), window[-1].position, loaded)
        done += size


def windows(count: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(1, 7), min_size=max(count, 1), max_size=max(count, 1)).map(
        lambda sizes: sizes if sum(sizes) >= count else [*sizes, count]
    )


def check(name: str, events: list[Event], data: st.DataObject) -> None:
    project, collections = MODELS[name]
    sizes = data.draw(windows(len(events)), label="windows")
    batches = data.draw(deliveries(len(events)), label="live batches") if events else []

    async def run() -> None:
        reference = (await one_by_one(project, events)).dump()
        reference = {c: docs for c, docs in reference.items() if docs}

        folded = Fold()
        folded.apply(ops_of(project, events))  # the whole log as one window, in memory
        in_memory: dict[str, dict[tuple[str, str], Any]] = {}
        for collection, written in folded.written().items():
            in_memory[collection] = {(t, i): doc for t, i, doc in written}
        assert in_memory == reference

        default = MemoryReadStore()
        await by_windows(default, project, events, sizes)
        assert {c: d for c, d in default.dump().items() if d} == reference

        with tempfile.TemporaryDirectory() as tmp:
            rebuilt, live = SqliteReadStore(Path(tmp) / "rebuilt.db"), SqliteReadStore(Path(tmp) / "live.db")
            await rebuilt.start()
            await live.start()
            await rebuilt.drop("p", collections)
            await by_windows(rebuilt, project, events, sizes)
            await rebuilt.settle()
            for batch in batches:  # at-least-once: batches start before the checkpoint, repeat events
                chunk = [events[i] for i in batch]
                await live.apply("p", ops_of(project, chunk), max(e.position for e in chunk))
            if events:
                assert await rebuilt.checkpoint("p") == events[-1].position
            await rebuilt.close()
            await live.close()
            assert sqlite_documents(Path(tmp) / "rebuilt.db", collections) == reference
            assert sqlite_documents(Path(tmp) / "live.db", collections) == reference

    asyncio.run(run())


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_chat_rebuilt_by_windows_equals_applied_event_by_event_and_live(data: st.DataObject) -> None:
    check("chat", data.draw(scenarios(), label="log").events, data)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_event_index_rebuilt_by_windows_equals_applied_event_by_event_and_live(data: st.DataObject) -> None:
    check("events", data.draw(scenarios(max_steps=10), label="log").events, data)


@settings(max_examples=60, deadline=None)
@given(facts(), st.data())
def test_usage_rebuilt_by_windows_equals_applied_event_by_event_and_live(log: Any, data: st.DataObject) -> None:
    check("usage", embedded(log), data)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_chat_rebuilt_by_parts_of_streams_equals_applied_event_by_event(data: st.DataObject) -> None:
    """The embedded rebuild of a model written stream by stream (``Projection.by_stream``):
    the log split into parts of streams (``stream_part``), each part loaded window by window
    under its own checkpoint into the same SQLite tables, the parts' windows interleaved in any
    order (the worker processes take turns writing), then the projection's checkpoint set.
    """
    events = data.draw(scenarios(), label="log").events
    parts = data.draw(st.integers(1, 3), label="parts")
    split = [[e for e in events if stream_part(e.stream, parts) == k] for k in range(parts)]
    windows_of = [data.draw(windows(len(part)), label=f"windows of part {k}") for k, part in enumerate(split)]
    queue = [k for k, sizes in enumerate(windows_of) for _ in sizes]
    order = data.draw(st.permutations(queue), label="turns")

    async def run() -> None:
        reference = {c: docs for c, docs in (await one_by_one(chat.project, events)).dump().items() if docs}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "rebuilt.db"
            owner = SqliteReadStore(path)
            await owner.start()
            await owner.drop("p", chat.COLLECTIONS)
            workers = [SqliteReadStore(path) for _ in range(parts)]
            loaded: list[set[Key]] = [set() for _ in range(parts)]
            done = [0] * parts
            turn = [0] * parts
            for worker in workers:
                worker.postpone_indexes(chat.COLLECTIONS)
                await worker.start()
            for k in order:
                size = windows_of[k][turn[k]]
                window = split[k][done[k] : done[k] + size]
                if window:
                    await workers[k].load(f"p#part{k}", ops_of(chat.project, window), window[-1].position, loaded[k])
                done[k] += size
                turn[k] += 1
            for worker in workers:
                await worker.close()
            await owner.apply("p", [], events[-1].position if events else 0)
            await owner.settle()
            if events:
                assert await owner.checkpoint("p") == events[-1].position
            await owner.close()
            assert sqlite_documents(path, chat.COLLECTIONS) == reference

    asyncio.run(run())
