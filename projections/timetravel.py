"""Time travel: a channel as it was at a point of its stream (``as_of`` on the channel routes).

A :class:`Timeline` folds one channel's stream through the chat reducer (:func:`chat.project`,
applied by :class:`Fold` exactly as every read store applies it) and keeps every version of
every document the fold produced, with the position of the event that made it. The document
as of position ``p`` is then the last version made at or before ``p``: what a fold of the
stream up to ``p`` leaves, found by a binary search instead of a second fold. :meth:`Timeline.at`
serves those documents through the :class:`DocReader` port, so the same
:class:`~projections.queries.ChatQueries` that render the live read model render the past.

:class:`TimeTravel` keeps the timelines of recently asked channels in memory (least recently
used first out, within a budget of versions), reads only the events recorded since a timeline
was last brought up to date, and is the only part that does I/O: through a ``read_stream``
function (the log's :meth:`~commands.ports.StreamReader.read_stream`).

Where a point falls (:class:`AsOf`): a ``position`` takes the events at log positions ``≤ p``;
a ``time`` the events with ``occurred_at ≤ t``. Within a stream positions grow with ``seq``,
and times do too as long as the stream's single writer's clock does not step back; if it
does, the point is the end of the longest prefix of the stream recorded at or before ``t``
(an event is never counted before the events recorded ahead of it).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from domain.events import Event, stream_name
from projections import chat
from projections.ports import Doc, DocReader, Filter, Fold, Key, matches, public, sort_docs, touched

FOLD_SLICE = 500  # events folded between two yields to the event loop: about 20 ms of CPU

ReadStream = Callable[[str, str, int, int | None], Awaitable[list[Event]]]
"""``(tenant_id, stream, after_seq, limit) -> events``: the log's stream reader."""


@dataclass(frozen=True, slots=True)
class AsOf:
    """A point in a channel's past: a log ``position`` or a ``time`` (RFC 3339 UTC as
    ``domain.base.format_time`` writes it, so that text order is time order)."""

    position: int | None = None
    time: str | None = None


@dataclass(frozen=True, slots=True)
class Point:
    """Where an :class:`AsOf` fell: the last event of the channel it includes."""

    seq: int
    position: int
    occurred_at: str


class _Versions:
    """One document's versions: ``positions[i]`` made ``docs[i]``; positions increase."""

    __slots__ = ("docs", "positions")

    def __init__(self) -> None:
        self.positions: list[int] = []
        self.docs: list[Doc] = []

    def at(self, position: int) -> Doc | None:
        i = bisect_right(self.positions, position)
        return self.docs[i - 1] if i else None


class Timeline:
    """Every version of the chat documents one channel's stream made (see the module)."""

    def __init__(self, tenant_id: str, channel_id: str) -> None:
        self.tenant_id, self.channel_id = tenant_id, channel_id
        self.stream = stream_name("channel", channel_id)
        self.head_seq = 0
        self.positions: list[int] = []  # of seq 1, 2, …
        self.times: list[str] = []  # the latest occurred_at up to seq 1, 2, … (never decreasing)
        self.versions: dict[Key, _Versions] = {}
        self.keys: dict[str, list[Key]] = {}  # collection -> its documents in the order they appeared
        self.seqs: list[int] = []  # the ``seq`` field of documents that have one (messages), increasing
        self.by_seq: list[Key] = []
        self.size = 0  # versions kept: what the cache's budget counts

    def extend(self, events: Sequence[Event]) -> None:
        """Fold the stream's next events (each must be the one after :attr:`head_seq`)."""
        for event in events:
            if event.seq != self.head_seq + 1:
                raise ValueError(f"{self.stream} read out of order: seq {event.seq} after {self.head_seq}")
            ops = chat.project(event)
            fold = Fold({key: self._latest(key) for key in touched(ops)})
            fold.apply(ops)
            for key in fold.changed:
                doc = fold.docs[key]
                assert doc is not None
                self._keep(key, event.position, doc)
            self.head_seq = event.seq
            self.positions.append(event.position)
            latest = self.times[-1] if self.times else event.occurred_at
            self.times.append(max(latest, event.occurred_at))

    def _latest(self, key: Key) -> Doc | None:
        versions = self.versions.get(key)
        return versions.docs[-1] if versions is not None else None

    def _keep(self, key: Key, position: int, doc: Doc) -> None:
        versions = self.versions.get(key)
        if versions is None:
            versions = self.versions[key] = _Versions()
            self.keys.setdefault(key[0], []).append(key)
            seq = doc.get("seq")
            if isinstance(seq, int) and (not self.seqs or seq > self.seqs[-1]):
                self.seqs.append(seq)
                self.by_seq.append(key)
        versions.positions.append(position)
        versions.docs.append(doc)
        self.size += 1

    def locate(self, as_of: AsOf) -> Point | None:
        """The last event ``as_of`` includes; ``None`` if it falls before the stream began."""
        if as_of.position is not None:
            n = bisect_right(self.positions, as_of.position)
        else:
            assert as_of.time is not None
            n = bisect_right(self.times, as_of.time)
        if n == 0:
            return None
        return Point(n, self.positions[n - 1], self.times[n - 1])

    def at(self, point: Point) -> DocReader:
        """The channel's chat documents as of ``point``."""
        return _Past(self, point)


class _Past(DocReader):
    """A timeline's documents as of one position: read-only, one tenant's, one channel's."""

    def __init__(self, timeline: Timeline, point: Point) -> None:
        self.timeline, self.position, self.seq = timeline, point.position, point.seq

    async def get(self, collection: str, tenant_id: str, id: str) -> Doc | None:
        doc = self._doc((collection, tenant_id, id))
        return public(doc) if doc is not None else None

    async def find(
        self,
        collection: str,
        tenant_id: str,
        filter: Filter,
        sort: Sequence[tuple[str, int]] = (),
        limit: int | None = None,
    ) -> list[Doc]:
        if tenant_id != self.timeline.tenant_id:
            return []
        if len(sort) == 1 and sort[0][0] == "seq" and collection == "messages":
            found = []  # walk the seq index in the asked order and stop at the limit
            for doc in self._matching(collection, filter, descending=sort[0][1] < 0):
                found.append(public(doc))
                if limit is not None and len(found) >= limit:
                    break
            return found
        docs = sort_docs([public(d) for d in self._matching(collection, filter)], [*sort, ("_id", 1)])
        return docs if limit is None else docs[:limit]

    async def count(self, collection: str, tenant_id: str, filter: Filter) -> int:
        if tenant_id != self.timeline.tenant_id:
            return 0
        return sum(1 for _ in self._matching(collection, filter))

    def _doc(self, key: Key) -> Doc | None:
        versions = self.timeline.versions.get(key)
        return versions.at(self.position) if versions is not None else None

    def _matching(self, collection: str, filter: Filter, *, descending: bool = False) -> Iterator[Doc]:
        for key in self._candidates(collection, filter, descending):
            doc = self._doc(key)
            if doc is not None and matches(doc, filter):
                yield doc

    def _candidates(self, collection: str, filter: Filter, descending: bool) -> Iterator[Key]:
        """The keys that may match, in index order: for messages, only the range of the ``seq``
        index the filter and the point leave (walked in place: a page stops after a few)."""
        timeline = self.timeline
        if collection == "messages":
            keys = timeline.by_seq
            lo, hi = _seq_range(timeline.seqs, filter.get("seq"))
            hi = min(hi, bisect_right(timeline.seqs, self.seq))  # a message's seq is the event that posted it
        else:
            keys = timeline.keys.get(collection, [])
            lo, hi = 0, len(keys)
        for i in range(hi - 1, lo - 1, -1) if descending else range(lo, hi):
            yield keys[i]


def _seq_range(seqs: list[int], cond: Any) -> tuple[int, int]:
    """The slice of the sorted ``seqs`` a filter's condition on ``seq`` leaves."""
    lo, hi = 0, len(seqs)
    if cond is None:
        return lo, hi
    if not isinstance(cond, Mapping):
        return bisect_left(seqs, cond), bisect_right(seqs, cond)
    for op, value in cond.items():
        if op == "$gt":
            lo = max(lo, bisect_right(seqs, value))
        elif op == "$gte":
            lo = max(lo, bisect_left(seqs, value))
        elif op == "$lt":
            hi = min(hi, bisect_left(seqs, value))
        elif op == "$lte":
            hi = min(hi, bisect_right(seqs, value))
    return lo, max(lo, hi)


class TimeTravel:
    """The timelines of recently asked channels, kept up to date with the log on each ask.

    ``budget`` bounds the document versions kept in all (about two per event): the least
    recently asked channels are dropped first, and a channel larger than the budget is folded
    for its answer and not kept. ``page`` is how many events one read of the log takes.
    """

    def __init__(self, read_stream: ReadStream, *, budget: int = 300_000, page: int = 10_000) -> None:
        self.read_stream, self.budget, self.page = read_stream, budget, page
        self._timelines: OrderedDict[tuple[str, str], Timeline] = OrderedDict()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def timeline(self, tenant_id: str, channel_id: str) -> Timeline:
        """The channel's timeline, with every event the log has recorded so far."""
        key = (tenant_id, channel_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            timeline = self._timelines.pop(key, None) or Timeline(tenant_id, channel_id)
            while True:
                events = await self.read_stream(tenant_id, timeline.stream, timeline.head_seq, self.page)
                for start in range(0, len(events), FOLD_SLICE):
                    timeline.extend(events[start : start + FOLD_SLICE])
                    await asyncio.sleep(0)  # a long fold lets the node's other requests through
                if len(events) < self.page:
                    break
            self._keep(key, timeline)
        return timeline

    def _keep(self, key: tuple[str, str], timeline: Timeline) -> None:
        if timeline.size > self.budget:
            return
        self._timelines[key] = timeline  # the most recently asked go last
        kept = sum(t.size for t in self._timelines.values())
        while kept > self.budget:
            gone, dropped = self._timelines.popitem(last=False)
            kept -= dropped.size
            lock = self._locks.get(gone)
            if lock is not None and not lock.locked():
                del self._locks[gone]

    async def view(self, tenant_id: str, channel_id: str, as_of: AsOf) -> tuple[DocReader, Point] | None:
        """The channel's chat documents as of ``as_of``, and the point it fell on; ``None`` if
        the channel had no events by then."""
        timeline = await self.timeline(tenant_id, channel_id)
        point = timeline.locate(as_of)
        return None if point is None else (timeline.at(point), point)
