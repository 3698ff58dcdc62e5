"""Time travel: a channel as it was at a point of its stream (``as_of`` on the channel routes).

A :class:`Timeline` folds one channel's stream through the chat reducer (:func:`chat.project`,
applied by :class:`Fold` exactly as every read store applies it) and keeps every version of
every document the fold produced, with the position of the event that made it. The document
as of position ``p`` is then the last version made at or before ``p``: what a fold of the
stream up to ``p`` leaves, found by a binary search instead of a second fold. :meth:`Timeline.at`
serves those documents through the :class:`DocReader` port, so the same
:class:`~projections.queries.ChatQueries` that render the live read model render the past.

:class:`TimeTravel` keeps the timelines of recently asked channels in memory (least recently
used first out, within a budget of bytes: :func:`version_bytes` estimates what each kept version
adds), reads only the events recorded since a timeline was last brought up to date, and is the
only part that does I/O: through a ``read_stream`` function (the log's
:meth:`~commands.ports.StreamReader.read_stream`). A channel whose versions alone would exceed
the budget is refused (:class:`ChannelTooLarge`) and remembered as such, instead of being folded
again on every ask; at most ``folds`` first folds run at once on a node.

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
from projections.ports import (
    Doc,
    DocReader,
    Filter,
    Fold,
    Key,
    ReadStoreUnavailable,
    matches,
    public,
    sort_docs,
    touched,
)

FOLD_SLICE = 500  # events folded between two yields to the event loop: about 20 ms of CPU
VERSION_BYTES = 850  # a version's dict, its small values and its event's position and time (tracemalloc)
SLOT_BYTES = 8  # one slot of a list or dict a version holds (a reaction's user, say)
TOO_LARGE_KEPT = 10_000  # channels remembered as too large for the budget (a channel only grows)
LARGE_FIELDS = ("text", "reactions", "mentions", "attachments", "metadata", "name", "e2e")  # user-sized ones
GAP_RETRIES = 5  # reads again of a stream whose next event is not indexed yet (Kafka's event index)

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
        self.size = 0  # the estimated bytes of the versions kept: what the cache's budget counts

    def extend(self, events: Sequence[Event]) -> bool:
        """Fold the stream's next events, each the one after :attr:`head_seq`; at the first that
        is not (a read that saw a later event before an earlier one was written, as the Kafka
        backend's event index can), stop there and answer ``False``: the timeline then holds
        the stream's events up to the gap, and the rest is to be read again."""
        for event in events:
            if event.seq != self.head_seq + 1:
                return False
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
        return True

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
        self.size += version_bytes(doc, versions.docs[-1] if versions.docs else None)
        versions.positions.append(position)
        versions.docs.append(doc)

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


def version_bytes(doc: Doc, previous: Doc | None) -> int:
    """About the memory one more version ``doc`` of a document holds, ``previous`` being the
    version before it: a constant for the version's dict and its small values, plus the fields
    that can be large (:data:`LARGE_FIELDS`) where it changed them. A version is a shallow copy,
    so a field it shares with ``previous`` (the same object) costs nothing more, and one it
    changed (an edit's text, a reaction's list) its whole size (:func:`value_bytes`). Within
    0.95–1.1 of what tracemalloc counts, for folds of posts, of reactions to one message and
    of edits of a long text."""
    size = VERSION_BYTES
    for name in LARGE_FIELDS:
        value = doc.get(name)
        if value and (previous is None or value is not previous.get(name)):
            size += value_bytes(value)
    return size


def value_bytes(value: Any) -> int:
    """About the memory ``value`` holds: a string its characters (4 bytes each when not ASCII),
    a list or a dict a slot per item plus what its non-string items hold (the strings in a
    document's lists are user ids, shared with the events and the versions before)."""
    if isinstance(value, str):
        return len(value) if value.isascii() else 4 * len(value)
    if isinstance(value, Mapping):
        return sum(2 * SLOT_BYTES + value_bytes(k) + value_bytes(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(SLOT_BYTES if isinstance(v, str) else SLOT_BYTES + value_bytes(v) for v in value)
    return 0


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


class ChannelTooLarge(Exception):
    """The channel's versions alone would take more than the whole budget of time travel."""


class TimeTravel:
    """The timelines of recently asked channels, kept up to date with the log on each ask.

    ``budget`` bounds, in bytes (:func:`version_bytes`' estimate), the versions of every
    timeline kept and of those being brought up to date: the least recently asked channels are
    dropped first. A channel whose own versions would exceed the budget is refused with
    :class:`ChannelTooLarge`, and remembered (the last :data:`TOO_LARGE_KEPT` of them) so the
    next ask is refused without folding it again. If what is over the budget is held by other
    channels being folded at the same time, the ask is refused as
    :class:`~projections.ports.ReadStoreUnavailable` (retry). At most ``folds`` first folds run
    at once. ``page`` is how many events one read of the log takes.
    """

    def __init__(
        self, read_stream: ReadStream, *, budget: int = 256 * 2**20, page: int = 10_000, folds: int = 2
    ) -> None:
        self.read_stream, self.budget, self.page = read_stream, budget, page
        self.kept = 0  # bytes of the timelines kept and being brought up to date (a running total)
        self._timelines: OrderedDict[tuple[str, str], Timeline] = OrderedDict()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._askers: dict[tuple[str, str], int] = {}  # asks of a channel under way: its lock lives as long
        self._too_large: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._folds = asyncio.Semaphore(folds)
        self._generations: dict[str, int] = {}  # per tenant: bumped by :meth:`forget`

    def forget(self, tenant_id: str) -> None:
        """Drop every timeline of the tenant: what they hold was opened with keys since destroyed
        (a user's erasure, a shredded channel-day: docs/erasure.md), and the next ask folds again
        from the log, which now reads erased. A fold under way when this is called is not kept."""
        self._generations[tenant_id] = self._generations.get(tenant_id, 0) + 1
        for key in [k for k in self._timelines if k[0] == tenant_id]:
            self.kept -= self._timelines.pop(key).size
            if key not in self._askers:
                del self._locks[key]

    async def timeline(self, tenant_id: str, channel_id: str) -> Timeline:
        """The channel's timeline, with every event the log has recorded so far."""
        key = (tenant_id, channel_id)
        generation = self._generations.get(tenant_id, 0)
        self._askers[key] = self._askers.get(key, 0) + 1
        try:
            async with self._locks.setdefault(key, asyncio.Lock()):
                self._refuse_if_too_large(key)
                timeline = self._timelines.pop(key, None)  # its bytes stay counted in :attr:`kept`
                if timeline is not None:
                    await self._catch_up(key, timeline)
                else:
                    async with self._folds:
                        timeline = Timeline(tenant_id, channel_id)
                        await self._catch_up(key, timeline)
                if self._generations.get(tenant_id, 0) != generation:  # forgotten meanwhile: not kept
                    self.kept -= timeline.size
                    return timeline
                self._timelines[key] = timeline  # the most recently asked go last
                return timeline
        finally:
            self._askers[key] -= 1
            if not self._askers[key]:
                del self._askers[key]
                if key not in self._timelines:
                    del self._locks[key]  # no lock is kept for a channel not kept

    def _refuse_if_too_large(self, key: tuple[str, str]) -> None:
        if key in self._too_large:
            self._too_large.move_to_end(key)
            raise ChannelTooLarge(f"channel {key[1]!r} is too large for time travel on this node")

    async def _catch_up(self, key: tuple[str, str], timeline: Timeline) -> None:
        """Fold what the log recorded since ``timeline`` was last brought up to date, counting
        its bytes as they grow; if that fails, the timeline is dropped (and uncounted)."""
        try:
            gaps = 0
            while True:
                events = await self.read_stream(timeline.tenant_id, timeline.stream, timeline.head_seq, self.page)
                whole = True
                for start in range(0, len(events), FOLD_SLICE):
                    before = timeline.size
                    whole = timeline.extend(events[start : start + FOLD_SLICE])
                    self._grown(key, timeline, timeline.size - before)
                    if not whole:
                        break
                    await asyncio.sleep(0)  # a long fold lets the node's other requests through
                if whole and len(events) < self.page:
                    return
                if not whole:  # an event read before the one ahead of it was written: read again
                    gaps += 1
                    if gaps > GAP_RETRIES:
                        raise ReadStoreUnavailable(
                            f"the events of channel {key[1]!r} are still being indexed; retry the request"
                        )
                    await asyncio.sleep(0.05 * gaps)  # bounded: about 0.75 s in all
        except BaseException:
            self.kept -= timeline.size
            raise

    def _grown(self, key: tuple[str, str], timeline: Timeline, grown: int) -> None:
        self.kept += grown
        if timeline.size > self.budget:
            self._too_large[key] = None
            while len(self._too_large) > TOO_LARGE_KEPT:
                self._too_large.popitem(last=False)
            self._refuse_if_too_large(key)
        while self.kept > self.budget and self._timelines:
            gone, dropped = self._timelines.popitem(last=False)  # the least recently asked
            self.kept -= dropped.size
            if gone not in self._askers:
                del self._locks[gone]
        if self.kept > self.budget:  # the rest is held by other channels being folded now
            raise ReadStoreUnavailable("time travel is at its memory budget with other channels being folded; retry")

    async def view(self, tenant_id: str, channel_id: str, as_of: AsOf) -> tuple[DocReader, Point] | None:
        """The channel's chat documents as of ``as_of``, and the point it fell on; ``None`` if
        the channel had no events by then."""
        timeline = await self.timeline(tenant_id, channel_id)
        point = timeline.locate(as_of)
        return None if point is None else (timeline.at(point), point)
