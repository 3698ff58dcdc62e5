"""The read-store port and the write operations projections emit.

A projection never touches a database. It turns each event into :class:`Op` values;
each read store executes them. Every op carries the position of the event that caused
it and applies only to a document whose last applied position is older, so delivering
an event twice, or replaying the log, changes nothing.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

Doc = dict[str, Any]
Filter = Mapping[str, Any]
"""A MongoDB-style filter subset: ``{field: value}`` or ``{field: {"$gt"|"$gte"|"$lt"|
"$lte"|"$ne"|"$in": value}}``, fields joined by AND."""


Key = tuple[str, str, str]
"""A document's coordinates: collection, tenant id, id."""


class _Nothing(Mapping[str, Any]):
    """The empty mapping an op's unused fields share: immutable, so one instance serves all."""

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "{}"


NOTHING: Mapping[str, Any] = _Nothing()


class Tally(NamedTuple):
    """A counter that follows a measured document (:attr:`Op.tally`): the field ``counter`` of
    the document ``collection``/``id`` (same tenant) moves by the change the op made to the
    measured sum — or, with ``high``, is raised to the measured sum the op left, if that is
    larger (a running maximum: the most sockets at any sample instant of an hour, kept in a
    small document while the samples, incremented node by node, stay in another).
    ``insert`` as for an op, when the counter document is created."""

    collection: str
    id: str
    counter: str
    insert: Mapping[str, Any] = NOTHING
    high: bool = False


class Op(NamedTuple):
    """Upsert one document, guarded by ``position``.

    ``set`` may use one level of dotted paths (``reactions.👍``); ``add`` adds a value to
    the list at a path if absent; ``pull`` removes it; ``inc`` adds to a number; ``min`` and
    ``max`` keep the smaller or larger of the stored value and the given one (a missing
    value is replaced); ``insert`` sets fields only when the document is created.

    ``measure`` and ``tally`` keep a running sum over many documents without reading them:
    when the op applies, the sum of the document's ``measure`` fields (missing: 0; all of it 0
    while the field ``measure_unless`` is set, e.g. a deletion time) is taken before and
    after, and each :class:`Tally` counter moves by the difference, guarded by the op's
    position (:func:`tallies`). A store writes the counters *before* the measured
    document, so a crash between the two is repaired by redelivery: the measured document
    still shows the old sum, the same difference is derived again, and the counter's guard
    drops what it already has. A counter document must receive tally ops only, all from one
    ordered source (its position guard needs them in order).

    Ops (and tallies) are named tuples whose unused fields share one empty mapping: a rebuild
    makes several per event, and a frozen dataclass with a fresh dict per field cost 2 µs each
    against 0.3 µs for a tuple (tests/perf: the usage rebuild).
    """

    collection: str
    tenant_id: str
    id: str
    position: int
    set: Mapping[str, Any] = NOTHING
    inc: Mapping[str, int] = NOTHING
    add: Mapping[str, Any] = NOTHING
    pull: Mapping[str, Any] = NOTHING
    insert: Mapping[str, Any] = NOTHING
    min: Mapping[str, Any] = NOTHING
    max: Mapping[str, Any] = NOTHING
    measure: tuple[str, ...] = ()
    measure_unless: str | None = None
    tally: tuple[Tally, ...] = ()


class ReadStoreUnavailable(Exception):
    """The read store cannot be reached. Projections retry from their checkpoint."""


class ReadStoreRefused(Exception):
    """The read store answered, but will not hold these documents (a value or shape it cannot
    store). Retrying the same writes does not help; the projector isolates the event."""


class DocReader(abc.ABC):
    """Reads documents of the read models, scoped by tenant: what the queries need
    (``projections.queries``), whether the documents are stored or folded in memory
    (``projections.timetravel``)."""

    @abc.abstractmethod
    async def get(self, collection: str, tenant_id: str, id: str) -> Doc | None:
        """One document by id, without its guard field."""

    @abc.abstractmethod
    async def find(
        self,
        collection: str,
        tenant_id: str,
        filter: Filter,
        sort: Sequence[tuple[str, int]] = (),
        limit: int | None = None,
    ) -> list[Doc]:
        """Documents matching ``filter`` sorted by ``sort`` (field, 1 or -1)."""

    @abc.abstractmethod
    async def count(self, collection: str, tenant_id: str, filter: Filter) -> int:
        """How many documents match ``filter``."""


class ReadStore(DocReader):
    """Documents of the read models, scoped by tenant, with per-projection checkpoints."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect and create indexes."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""

    @abc.abstractmethod
    async def apply(self, projection: str, ops: Sequence[Op], position: int) -> None:
        """Execute ``ops`` and move ``projection``'s checkpoint to ``position``."""

    async def load(self, projection: str, ops: Sequence[Op], position: int, loaded: set[Key]) -> None:
        """Bulk-load a rebuild's window: ``ops`` into collections no one else writes (dropped
        for the rebuild, or fresh ones swapped in after it), and ``projection``'s checkpoint
        to ``position``. ``loaded`` holds the keys (:data:`Key`) of the
        documents earlier windows wrote, and is updated: only those are read back, every other
        document is new. The outcome is :meth:`apply`'s (this default); a store overrides it
        to fold the window into whole documents (:class:`Fold`) and write them in bulk."""
        await self.apply(projection, ops, position)
        loaded.update(touched(ops))

    async def apply_many(self, batches: Sequence[tuple[str, Sequence[Op], int]]) -> None:
        """Apply several projections' batches, ``(projection, ops, position)`` each, as
        :meth:`apply` applies one; a store may do them at once (one transaction). If it raises,
        none or some may be applied: the ops are guarded by position, so the caller applies
        them again, one projection at a time."""
        for projection, ops, position in batches:
            await self.apply(projection, ops, position)

    @abc.abstractmethod
    async def checkpoint(self, projection: str) -> int:
        """The position up to which ``projection`` has been applied (0 if never)."""

    @abc.abstractmethod
    async def drop(self, projection: str, collections: Sequence[str]) -> None:
        """Remove ``collections`` and the checkpoint of ``projection`` (for a rebuild)."""

    @abc.abstractmethod
    async def erase(self, collection: str, tenant_id: str, field: str, value: str, fields: Mapping[str, Any]) -> int:
        """Overwrite ``fields`` in every document of ``collection`` whose ``field`` is ``value``,
        outside the position guard (an erasure, docs/erasure.md: erased fields never come back,
        whatever is applied later); how many documents matched."""

    async def settle(self) -> None:
        """Finish work a store postponed while a rebuild was applied (e.g. building indexes)."""


def apply_op(doc: Doc | None, op: Op) -> Doc | None:
    """Apply one op to a document in memory; ``None`` if the guard says it is already applied.

    The reference semantics of :class:`Op`, shared by every store (through :class:`Fold`) and
    by the rebuild. Unused fields are skipped by identity with :data:`NOTHING` (iterating the
    empty mapping through the ``Mapping`` machinery cost a rebuild several percent).
    """
    if doc is not None and doc.get("_pos", 0) >= op.position:
        return None
    if doc is not None:
        new = dict(doc)
    elif op.insert is NOTHING:
        new = {"_id": op.id, "tenant_id": op.tenant_id}
    else:
        new = {"_id": op.id, "tenant_id": op.tenant_id, **op.insert}
    if op.set is not NOTHING:
        if "." not in "".join(op.set):  # no dotted path (a whole document, say): one update in C
            new.update(op.set)
        else:
            for path, value in op.set.items():
                if "." in path:
                    _target(new, path)[path.rpartition(".")[2]] = value
                else:
                    new[path] = value
    if op.inc is not NOTHING:
        for path, amount in op.inc.items():
            parent, name = _target(new, path), path.rpartition(".")[2]
            parent[name] = parent.get(name, 0) + amount
    if op.add is not NOTHING:
        for path, value in op.add.items():
            parent, name = _target(new, path), path.rpartition(".")[2]
            items = list(parent.get(name) or [])
            if value not in items:
                items.append(value)
            parent[name] = items
    if op.pull is not NOTHING:
        for path, value in op.pull.items():
            parent, name = _target(new, path), path.rpartition(".")[2]
            parent[name] = [item for item in parent.get(name) or [] if item != value]
    if op.min is not NOTHING:
        for path, value in op.min.items():
            parent, name = _target(new, path), path.rpartition(".")[2]
            if parent.get(name) is None or value < parent[name]:
                parent[name] = value
    if op.max is not NOTHING:
        for path, value in op.max.items():
            parent, name = _target(new, path), path.rpartition(".")[2]
            if parent.get(name) is None or value > parent[name]:
                parent[name] = value
    new["_pos"] = op.position
    return new


def tallies(before: Doc | None, after: Doc, op: Op) -> list[Op]:
    """The counter ops ``op`` causes, having turned ``before`` into ``after`` (see :class:`Op`)."""
    if not op.tally:
        return []
    now = _measured(after, op)
    delta = now - _measured(before, op)
    if not delta:
        return []
    return [
        Op(t.collection, op.tenant_id, t.id, op.position, max={t.counter: now}, insert=t.insert)
        if t.high
        else Op(t.collection, op.tenant_id, t.id, op.position, inc={t.counter: delta}, insert=t.insert)
        for t in op.tally
    ]


def touched(ops: Sequence[Op]) -> dict[Key, None]:
    """Every document ``ops`` may write, in order: their own and the counters their tallies move
    (what a store loads before it folds them)."""
    keys: dict[Key, None] = {}
    for op in ops:
        keys[(op.collection, op.tenant_id, op.id)] = None
        for t in op.tally:
            keys[(t.collection, op.tenant_id, t.id)] = None
    return keys


class Fold:
    """Ops applied to documents in memory, exactly as a store applies them: each op by
    :func:`apply_op` under its position guard, then the counter ops the tallies cause (so
    counters fold after the measured documents of the same ops, as every store writes them).

    ``docs`` starts with the stored documents the caller loaded (``None`` or absent: none
    stored); afterwards it holds what the ops left, and ``changed`` the keys they changed. A
    store writes ``changed``; a rebuild folds a whole window of events into one ``Fold`` and
    bulk-writes it. Folding a window at once equals applying its ops one by one (the property
    tests of ``tests/property/test_fold.py``).
    """

    __slots__ = ("changed", "docs")

    def __init__(self, docs: dict[Key, Doc | None] | None = None) -> None:
        self.docs: dict[Key, Doc | None] = docs if docs is not None else {}
        self.changed: dict[Key, None] = {}

    def apply(self, ops: Sequence[Op]) -> None:
        """Fold ``ops``, then the counter ops their tallies cause."""
        self._fold(self._fold(ops))

    def _fold(self, ops: Sequence[Op]) -> list[Op]:
        docs, changed, derived = self.docs, self.changed, list[Op]()
        for op in ops:
            key = (op.collection, op.tenant_id, op.id)
            old = docs.get(key)
            new = apply_op(old, op)
            if new is not None:
                if op.tally:
                    derived += tallies(old, new, op)
                docs[key] = new
                changed[key] = None
        return derived

    def written(self) -> dict[str, list[tuple[str, str, Doc]]]:
        """The changed documents by collection, as ``(tenant_id, id, document)``."""
        out: dict[str, list[tuple[str, str, Doc]]] = {}
        for key in self.changed:
            doc = self.docs[key]
            assert doc is not None
            out.setdefault(key[0], []).append((key[1], key[2], doc))
        return out


def _measured(doc: Doc | None, op: Op) -> int:
    if doc is None or (op.measure_unless is not None and doc.get(op.measure_unless) is not None):
        return 0
    total = 0
    for name in op.measure:
        total += int(doc.get(name) or 0)
    return total


def _target(doc: Doc, path: str) -> Doc:
    head, dot, _ = path.rpartition(".")
    if not dot:
        return doc
    child = dict(doc.get(head) or {})
    doc[head] = child
    return child


def sort_docs(docs: list[Doc], sort: Sequence[tuple[str, int]]) -> list[Doc]:
    """Sort like MongoDB: ``None`` before any value, later keys break ties."""
    for name, direction in reversed(sort):
        docs.sort(key=lambda d: (d.get(name) is not None, d.get(name)), reverse=direction < 0)
    return docs


def public(doc: Doc) -> Doc:
    """The document without its guard field, as :meth:`DocReader.get` returns it."""
    return {k: v for k, v in doc.items() if k != "_pos"}


def matches(doc: Doc, filter: Filter) -> bool:
    """Whether ``doc`` satisfies a filter (the reference semantics of :data:`Filter`)."""
    for name, cond in filter.items():
        value = doc.get(name)
        if isinstance(cond, Mapping):
            for op, operand in cond.items():
                if not _compare(op, value, operand):
                    return False
        elif value != cond:
            return False
    return True


def _compare(op: str, value: Any, operand: Any) -> bool:
    if op == "$ne":
        return bool(value != operand)
    if op == "$in":
        return value in operand
    if value is None:
        return False
    if op == "$gt":
        return bool(value > operand)
    if op == "$gte":
        return bool(value >= operand)
    if op == "$lt":
        return bool(value < operand)
    if op == "$lte":
        return bool(value <= operand)
    raise ValueError(f"unsupported filter operator {op}")
