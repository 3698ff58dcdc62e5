"""The behaviour every :class:`projections.ports.ReadStore` must have, asserted through the port only.

Subclass :class:`ReadStoreContract` once per backend and implement :meth:`open_store`.
The suite writes under fresh tenant ids and projection names, so a store shared between
tests (a MongoDB database) passes too. The reference semantics are those of
:func:`projections.ports.apply_op` and :func:`projections.ports.matches`.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from projections.ports import Doc, Op, ReadStore, Tally

THINGS = "things"


def fields(doc: Doc | None) -> Doc | None:
    """A document as the projection wrote it: without the identity fields every store adds."""
    if doc is None:
        return None
    return {k: v for k, v in doc.items() if k not in ("_id", "tenant_id")}


def op(id: str, position: int, tenant: str, collection: str = THINGS, **changes: Any) -> Op:
    return Op(collection, tenant, id, position, **changes)


class ReadStoreContract(abc.ABC):
    """Abstract contract suite for a read-store backend."""

    @abc.abstractmethod
    async def open_store(self, request: pytest.FixtureRequest) -> ReadStore:
        """Build and start a fresh store. ``request`` gives access to other fixtures. The
        suite closes it after the test."""

    @pytest.fixture
    async def store(self, request: pytest.FixtureRequest) -> AsyncIterator[ReadStore]:
        store = await self.open_store(request)
        try:
            yield store
        finally:
            await store.close()

    @pytest.fixture
    def tenant(self) -> str:
        return f"t-{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def projection(self) -> str:
        return f"p_{uuid.uuid4().hex[:12]}"

    async def seed(self, store: ReadStore, projection: str, tenant: str, docs: list[Doc]) -> None:
        """Create ``docs`` (each with an ``id``) in :data:`THINGS`, one op each."""
        ops = [op(d["id"], n + 1, tenant, set={k: v for k, v in d.items() if k != "id"}) for n, d in enumerate(docs)]
        await store.apply(projection, ops, len(ops))

    async def ids(self, store: ReadStore, tenant: str, filter: dict[str, Any], **options: Any) -> list[str]:
        return [d["_id"] for d in await store.find(THINGS, tenant, filter, **options)]

    # --- ops ---------------------------------------------------------------------------------
    async def test_set_creates_a_document_readable_by_id(self, store: ReadStore, tenant: str, projection: str) -> None:
        await store.apply(projection, [op("a", 1, tenant, set={"name": "Ada", "n": 3, "ok": True, "none": None})], 1)
        doc = await store.get(THINGS, tenant, "a")
        assert doc is not None and doc["_id"] == "a"
        assert fields(doc) == {"name": "Ada", "n": 3, "ok": True, "none": None}
        assert await store.get(THINGS, tenant, "missing") is None

    async def test_set_overwrites_fields_and_keeps_the_others(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        await store.apply(projection, [op("a", 1, tenant, set={"name": "Ada", "n": 3})], 1)
        await store.apply(projection, [op("a", 2, tenant, set={"name": "Grace", "extra": [1, 2]})], 2)
        assert fields(await store.get(THINGS, tenant, "a")) == {"name": "Grace", "n": 3, "extra": [1, 2]}

    async def test_dotted_set_writes_one_field_of_a_nested_document(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        await store.apply(projection, [op("a", 1, tenant, set={"reactions": {"🎉": ["u1"]}})], 1)
        await store.apply(projection, [op("a", 2, tenant, set={"reactions.👍": ["u2", "u3"]})], 2)
        await store.apply(projection, [op("b", 3, tenant, set={"meta.colour": "red"})], 3)
        assert fields(await store.get(THINGS, tenant, "a")) == {"reactions": {"🎉": ["u1"], "👍": ["u2", "u3"]}}
        assert fields(await store.get(THINGS, tenant, "b")) == {"meta": {"colour": "red"}}

    async def test_inc_adds_to_a_number_starting_from_zero(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        await store.apply(projection, [op("a", 1, tenant, inc={"replies": 1})], 1)
        await store.apply(projection, [op("a", 2, tenant, inc={"replies": 2, "likes": -1})], 2)
        assert fields(await store.get(THINGS, tenant, "a")) == {"replies": 3, "likes": -1}

    async def test_a_high_tally_keeps_the_highest_sum_its_measured_field_reached(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        """Sockets summed node by node at each instant: the peak follows the sums, never one
        node's share, and a redelivered sample raises nothing."""
        peak = Tally("counters", "day", "peak.07", insert={"kind": "peaks"}, high=True)

        def sample(position: int, at: str, sockets: int) -> Op:
            return op("day", position, tenant, inc={at: sockets}, measure=(at,), tally=(peak,))

        ops = [sample(1, "s1", 3), sample(2, "s2", 4), sample(3, "s1", 2), sample(4, "s2", 0)]
        await store.apply(projection, ops[:3], 3)
        await store.apply(projection, ops, 4)  # a redelivery of the first three
        assert fields(await store.get(THINGS, tenant, "day")) == {"s1": 5, "s2": 4}
        assert fields(await store.get("counters", tenant, "day")) == {"kind": "peaks", "peak": {"07": 5}}

    async def test_add_appends_a_value_once_and_pull_removes_it(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        changes = [
            {"add": {"reactions.👍": "u1"}},
            {"add": {"reactions.👍": "u2"}},
            {"add": {"reactions.👍": "u1"}},  # already there
            {"add": {"tags": "x"}},
            {"pull": {"reactions.👍": "u1"}},
            {"pull": {"reactions.🎉": "u9"}},  # nothing to remove
        ]
        ops = [op("a", n + 1, tenant, **c) for n, c in enumerate(changes)]
        for o in ops:
            await store.apply(projection, [o], o.position)
        doc = fields(await store.get(THINGS, tenant, "a"))
        assert doc is not None
        assert doc["reactions"]["👍"] == ["u2"]
        assert doc["reactions"].get("🎉", []) == []
        assert doc["tags"] == ["x"]

    async def test_insert_sets_fields_only_when_the_document_is_created(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        await store.apply(projection, [op("a", 1, tenant, insert={"created_at": "first", "n": 0}, set={"v": 1})], 1)
        await store.apply(projection, [op("a", 2, tenant, insert={"created_at": "second"}, set={"v": 2})], 2)
        assert fields(await store.get(THINGS, tenant, "a")) == {"created_at": "first", "n": 0, "v": 2}

    async def test_ops_of_one_batch_apply_in_order(self, store: ReadStore, tenant: str, projection: str) -> None:
        ops = [
            op("a", 1, tenant, set={"text": "one"}, insert={"replies": 0}),
            op("a", 2, tenant, inc={"replies": 1}),
            op("b", 3, tenant, set={"text": "other"}),
            op("a", 4, tenant, set={"text": "two"}, inc={"replies": 1}),
            op("a", 4, tenant, "others", set={"text": "same id, other collection"}),
        ]
        await store.apply(projection, ops, 4)
        assert fields(await store.get(THINGS, tenant, "a")) == {"text": "two", "replies": 2}
        assert fields(await store.get(THINGS, tenant, "b")) == {"text": "other"}
        assert fields(await store.get("others", tenant, "a")) == {"text": "same id, other collection"}

    # --- the position guard ------------------------------------------------------------------
    async def test_op_with_an_older_or_equal_position_changes_nothing(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        await store.apply(projection, [op("a", 5, tenant, set={"v": "five"}, inc={"n": 1}, add={"l": "x"})], 5)
        stale = [
            op("a", 5, tenant, set={"v": "again"}, inc={"n": 1}, add={"l": "y"}),
            op("a", 3, tenant, set={"v": "older"}, pull={"l": "x"}, insert={"w": 1}),
        ]
        for o in stale:
            await store.apply(projection, [o], o.position)
        assert fields(await store.get(THINGS, tenant, "a")) == {"v": "five", "n": 1, "l": ["x"]}
        await store.apply(projection, [op("a", 6, tenant, set={"v": "six"})], 6)
        assert fields(await store.get(THINGS, tenant, "a")) == {"v": "six", "n": 1, "l": ["x"]}

    async def test_redelivering_a_whole_batch_is_a_no_op(self, store: ReadStore, tenant: str, projection: str) -> None:
        ops = [
            op("m1", 1, tenant, set={"text": "hi", "seq": 1}, insert={"reply_count": 0}),
            op("m2", 2, tenant, set={"text": "re", "seq": 2}),
            op("m1", 2, tenant, inc={"reply_count": 1}),
            op("m1", 3, tenant, add={"reactions.👍": "u1"}),
            op("m2", 4, tenant, set={"text": "edited"}),
        ]
        await store.apply(projection, ops, 4)
        before = await store.find(THINGS, tenant, {}, sort=[("seq", 1)])
        await store.apply(projection, ops, 4)
        await store.apply(projection, ops[1:3], 2)
        assert await store.find(THINGS, tenant, {}, sort=[("seq", 1)]) == before
        assert fields(await store.get(THINGS, tenant, "m1")) == {
            "text": "hi",
            "seq": 1,
            "reply_count": 1,
            "reactions": {"👍": ["u1"]},
        }

    async def test_tallies_keep_a_running_sum_of_measured_documents_exactly_once(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        """``measure``/``tally``: each applied op moves the counter by the change it made to its
        document's measured sum (0 while ``measure_unless`` is set); redelivery moves nothing."""
        total = Tally("counters", "total", "bytes", insert={"kind": "total"})

        def sized(id: str, position: int, **changes: Any) -> Op:
            return op(id, position, tenant, measure=("a", "b"), measure_unless="gone", tally=(total,), **changes)

        ops = [
            sized("m1", 1, set={"a": 5, "b": 2}),  # +7
            sized("m2", 2, set={"a": 10}),  # +10
            sized("m1", 3, set={"a": 1}),  # -4
            sized("m2", 4, set={"gone": "2026-01-01"}),  # -10
            sized("m2", 5, set={"a": 99}),  # gone: 0
        ]
        await store.apply(projection, ops[:2], 2)
        await store.apply(projection, ops[:4], 4)  # a redelivery of the first two, then two more
        await store.apply(projection, ops, 5)
        await store.apply(projection, ops, 5)
        assert fields(await store.get("counters", tenant, "total")) == {"kind": "total", "bytes": 3}

    async def test_a_counter_written_before_a_crash_is_not_moved_again_by_the_redelivery(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        """A store writes the counters first: a crash may leave a counter ahead of its measured
        document, never behind. Redelivering the op then writes the document and leaves the
        counter as it is."""
        total = Tally("counters", "total", "bytes")
        edit = op("m1", 2, tenant, set={"a": 3}, measure=("a",), tally=(total,))
        await store.apply(projection, [op("m1", 1, tenant, set={"a": 10}, measure=("a",), tally=(total,))], 1)
        await store.apply(projection, [Op("counters", tenant, "total", 2, inc={"bytes": -7})], 2)  # the crash
        await store.apply(projection, [edit], 2)
        assert (await store.get(THINGS, tenant, "m1") or {})["a"] == 3
        assert (await store.get("counters", tenant, "total") or {})["bytes"] == 3

    async def test_a_large_batch_creates_then_updates_every_document(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        n = 250  # more documents than a store may put in one write command
        await store.apply(projection, [op(f"d{i}", i + 1, tenant, set={"n": i, "seq": i}) for i in range(n)], n)
        await store.apply(projection, [op(f"d{i}", n + i + 1, tenant, inc={"n": 1}) for i in range(n)], 2 * n)
        found = await store.find(THINGS, tenant, {}, sort=[("seq", 1)], limit=n + 1)
        assert [fields(d) for d in found] == [{"n": i + 1, "seq": i} for i in range(n)]
        assert await store.checkpoint(projection) == 2 * n

    # --- checkpoints -------------------------------------------------------------------------
    async def test_checkpoint_starts_at_zero_and_moves_with_apply(self, store: ReadStore, projection: str) -> None:
        assert await store.checkpoint(projection) == 0
        await store.apply(projection, [], 7)
        assert await store.checkpoint(projection) == 7
        await store.apply(projection, [], 12)
        assert await store.checkpoint(projection) == 12

    async def test_checkpoint_never_moves_backwards(self, store: ReadStore, tenant: str, projection: str) -> None:
        await store.apply(projection, [op("a", 10, tenant, set={"v": 1})], 10)
        await store.apply(projection, [op("a", 4, tenant, set={"v": 0})], 4)
        assert await store.checkpoint(projection) == 10
        assert fields(await store.get(THINGS, tenant, "a")) == {"v": 1}

    async def test_checkpoints_of_projections_are_independent(self, store: ReadStore, projection: str) -> None:
        other = f"{projection}_other"
        await store.apply(projection, [], 3)
        await store.apply(other, [], 9)
        assert (await store.checkpoint(projection), await store.checkpoint(other)) == (3, 9)

    # --- drop --------------------------------------------------------------------------------
    async def test_drop_removes_collections_and_checkpoint(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        dropped, kept = f"gone_{uuid.uuid4().hex[:8]}", f"kept_{uuid.uuid4().hex[:8]}"
        other = f"{projection}_other"
        await store.apply(projection, [op("a", 1, tenant, dropped, set={"v": 1})], 5)
        await store.apply(other, [op("a", 2, tenant, kept, set={"v": 2})], 6)
        await store.drop(projection, [dropped])
        assert await store.get(dropped, tenant, "a") is None
        assert await store.find(dropped, tenant, {}) == []
        assert await store.count(dropped, tenant, {}) == 0
        assert await store.checkpoint(projection) == 0
        assert fields(await store.get(kept, tenant, "a")) == {"v": 2}
        assert await store.checkpoint(other) == 6

    async def test_rebuild_after_drop_applies_old_positions_again(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        await store.apply(projection, [op("a", 1, tenant, set={"v": 1}), op("a", 2, tenant, inc={"n": 1})], 2)
        await store.drop(projection, [THINGS])
        await store.apply(projection, [op("a", 1, tenant, set={"v": 1}), op("a", 2, tenant, inc={"n": 1})], 2)
        assert fields(await store.get(THINGS, tenant, "a")) == {"v": 1, "n": 1}
        assert await store.checkpoint(projection) == 2

    async def test_load_by_windows_equals_apply_and_a_repeated_window_changes_nothing(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        """A rebuild's bulk load: later windows rewrite documents earlier ones wrote (set, inc,
        add, a measured document and its tally counter), and a window loaded twice (a retry)
        leaves the same documents."""
        tally = (Tally("counters", "total", "sum"),)
        size = ("size",)
        windows = [
            [op("a", 1, tenant, set={"v": 1}), op("m", 2, tenant, set={"size": 3}, measure=size, tally=tally)],
            [op("a", 3, tenant, inc={"n": 2}), op("b", 4, tenant, add={"tags": "x"})],
            [op("m", 5, tenant, set={"size": 10}, measure=size, tally=tally), op("b", 6, tenant, add={"tags": "y"})],
        ]
        reference = await self.open_reference()
        for ops in windows:
            await reference.apply("ref", ops, ops[-1].position)
        await store.drop(projection, [THINGS, "counters"])
        loaded: set[tuple[str, str, str]] = set()
        for ops in [*windows, windows[-1]]:
            await store.load(projection, ops, ops[-1].position, loaded)
        for collection, id in [(THINGS, "a"), (THINGS, "b"), (THINGS, "m"), ("counters", "total")]:
            assert await store.get(collection, tenant, id) == await reference.get(collection, tenant, id)
        assert fields(await store.get("counters", tenant, "total")) == {"sum": 10}
        assert await store.checkpoint(projection) == 6

    async def open_reference(self) -> ReadStore:
        from adapters.memory_store import MemoryReadStore

        reference = MemoryReadStore()
        await reference.start()
        return reference

    # --- queries -----------------------------------------------------------------------------
    async def test_find_and_count_with_every_filter_operator(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        await self.seed(
            store,
            projection,
            tenant,
            [
                {"id": "a", "n": 1, "s": "apple", "flag": True, "parent": None},
                {"id": "b", "n": 2, "s": "banana", "flag": False, "parent": "a"},
                {"id": "c", "n": 3, "s": "cherry", "flag": True},
                {"id": "d", "n": 4, "s": "date", "flag": False, "parent": "a"},
                {"id": "e", "s": "elder"},
            ],
        )
        cases: list[tuple[dict[str, Any], list[str]]] = [
            ({}, ["a", "b", "c", "d", "e"]),
            ({"n": 2}, ["b"]),
            ({"s": "cherry"}, ["c"]),
            ({"flag": True}, ["a", "c"]),
            ({"flag": False}, ["b", "d"]),
            ({"n": {"$gt": 2}}, ["c", "d"]),
            ({"n": {"$gte": 2}}, ["b", "c", "d"]),
            ({"n": {"$lt": 2}}, ["a"]),
            ({"n": {"$lte": 2}}, ["a", "b"]),
            ({"n": {"$gt": 1, "$lt": 4}}, ["b", "c"]),
            ({"s": {"$gt": "banana"}}, ["c", "d", "e"]),
            ({"s": {"$lte": "banana"}}, ["a", "b"]),
            ({"n": {"$ne": 2}}, ["a", "c", "d", "e"]),
            ({"flag": {"$ne": True}}, ["b", "d", "e"]),
            ({"n": {"$in": [1, 4, 9]}}, ["a", "d"]),
            ({"s": {"$in": ["date", "fig"]}}, ["d"]),
            ({"n": {"$in": []}}, []),
            ({"parent": "a"}, ["b", "d"]),
            ({"parent": "a", "n": {"$gt": 2}}, ["d"]),
            ({"n": 2, "s": "apple"}, []),
        ]
        for filter, expected in cases:
            assert await self.ids(store, tenant, filter) == expected, filter
            assert await store.count(THINGS, tenant, filter) == len(expected), filter

    async def test_none_matches_missing_and_null_fields(self, store: ReadStore, tenant: str, projection: str) -> None:
        await self.seed(
            store,
            projection,
            tenant,
            [{"id": "a", "parent": None}, {"id": "b", "parent": "a"}, {"id": "c"}, {"id": "d", "n": 1}],
        )
        assert await self.ids(store, tenant, {"parent": None}) == ["a", "c", "d"]
        assert await store.count(THINGS, tenant, {"parent": None}) == 3
        assert await self.ids(store, tenant, {"parent": {"$ne": None}}) == ["b"]
        assert await self.ids(store, tenant, {"parent": {"$in": [None, "a"]}}) == ["a", "b", "c", "d"]
        assert await self.ids(store, tenant, {"n": {"$gt": 0}}) == ["d"]  # missing is not greater than anything
        assert await self.ids(store, tenant, {"n": {"$lt": 5}}) == ["d"]  # nor less

    async def test_sort_ascending_and_descending_breaks_ties_by_id(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        await self.seed(
            store,
            projection,
            tenant,
            [
                {"id": "d", "n": 2, "s": "x"},
                {"id": "a", "n": 2, "s": "y"},
                {"id": "c", "n": 1, "s": "y"},
                {"id": "b", "n": 3, "s": "x"},
                {"id": "e", "n": 1, "s": "x"},
            ],
        )
        assert await self.ids(store, tenant, {}) == ["a", "b", "c", "d", "e"]
        assert await self.ids(store, tenant, {}, sort=[("n", 1)]) == ["c", "e", "a", "d", "b"]
        assert await self.ids(store, tenant, {}, sort=[("n", -1)]) == ["b", "a", "d", "c", "e"]
        assert await self.ids(store, tenant, {}, sort=[("s", 1), ("n", -1)]) == ["b", "d", "e", "a", "c"]
        assert await self.ids(store, tenant, {}, sort=[("s", -1), ("n", 1)]) == ["c", "a", "e", "d", "b"]

    async def test_sort_puts_missing_fields_first_ascending_and_last_descending(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        await self.seed(store, projection, tenant, [{"id": "a", "n": 2}, {"id": "b"}, {"id": "c", "n": 1}])
        assert await self.ids(store, tenant, {}, sort=[("n", 1)]) == ["b", "c", "a"]
        assert await self.ids(store, tenant, {}, sort=[("n", -1)]) == ["a", "c", "b"]

    async def test_limit_keeps_the_first_documents_of_the_sort(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        await self.seed(store, projection, tenant, [{"id": f"m{n:02d}", "seq": n} for n in range(1, 21)])
        assert await self.ids(store, tenant, {}, sort=[("seq", -1)], limit=3) == ["m20", "m19", "m18"]
        assert await self.ids(store, tenant, {"seq": {"$lt": 5}}, sort=[("seq", 1)], limit=10) == [
            "m01",
            "m02",
            "m03",
            "m04",
        ]
        assert len(await store.find(THINGS, tenant, {}, limit=None)) == 20

    async def test_found_documents_are_copies(self, store: ReadStore, tenant: str, projection: str) -> None:
        await self.seed(store, projection, tenant, [{"id": "a", "tags": ["x"], "meta": {"k": 1}}])
        [doc] = await store.find(THINGS, tenant, {})
        doc["tags"].append("mutated")
        doc["meta"]["k"] = 2
        got = await store.get(THINGS, tenant, "a")
        assert got is not None
        got["tags"].append("again")
        assert fields(await store.get(THINGS, tenant, "a")) == {"tags": ["x"], "meta": {"k": 1}}

    # --- tenant isolation --------------------------------------------------------------------
    async def test_same_id_in_two_tenants_are_separate_documents(
        self, store: ReadStore, tenant: str, projection: str
    ) -> None:
        other = f"{tenant}-other"
        await store.apply(projection, [op("a", 1, tenant, set={"v": "mine"}, inc={"n": 1})], 1)
        await store.apply(projection, [op("a", 2, other, set={"v": "theirs"})], 2)
        await store.apply(projection, [op("a", 1, other, inc={"n": 5})], 2)  # guarded by their own position
        mine, theirs = await store.get(THINGS, tenant, "a"), await store.get(THINGS, other, "a")
        assert fields(mine) == {"v": "mine", "n": 1}
        assert fields(theirs) == {"v": "theirs"}
        assert mine is not None and mine["tenant_id"] == tenant

    async def test_find_and_count_never_cross_tenants(self, store: ReadStore, tenant: str, projection: str) -> None:
        other = f"{tenant}-other"
        await self.seed(store, projection, tenant, [{"id": "a", "n": 1}, {"id": "b", "n": 2}])
        await self.seed(store, f"{projection}_2", other, [{"id": "b", "n": 2}, {"id": "c", "n": 3}])
        assert await self.ids(store, tenant, {}) == ["a", "b"]
        assert await self.ids(store, other, {"n": {"$gte": 1}}, sort=[("n", -1)]) == ["c", "b"]
        assert await store.count(THINGS, tenant, {"n": {"$gte": 2}}) == 1
        assert await store.count(THINGS, other, {}) == 2
        assert all(d["tenant_id"] == other for d in await store.find(THINGS, other, {}))
        assert await store.get(THINGS, other, "a") is None
        assert await store.find(THINGS, f"{tenant}-nobody", {}) == []

    async def test_analytics_documents_answer_the_same_report_in_every_store(
        self, store: ReadStore, tenant: str
    ) -> None:
        """The analytics projection's ops (dotted ``min``/``max`` paths under keys users chose,
        inserts guarded by position) give the report docs/analytics.md defines; a whole replay
        on top changes nothing."""
        from domain.events import Event
        from projections import analytics

        def event(n: int, cid: str, at: str, kind: str, **payload: Any) -> Event:
            return Event(event_id=f"e{n}", tenant_id=tenant, stream=f"channel:{cid}", seq=n, position=n, type=kind,
                         schema_version=1, occurred_at=f"2026-03-0{at}Z", actor=None, payload=payload)  # fmt: skip

        events = [
            event(1, "c", "1T10:00:00.000", "MessagePosted", message_id="m1", author_id="ann", text="?"),
            event(2, "c", "1T10:05:00.000", "MessagePosted", message_id="m2", author_id="bo.b", parent_id="m1"),
            event(3, "c", "1T12:30:00.000", "MessagePosted", message_id="m3", author_id="ann", text="?"),
            event(4, "d", "1T23:30:00.000", "MessagePosted", message_id="m4", author_id="c%y", text="?"),
            event(5, "d", "2T00:10:00.000", "MessagePosted", message_id="m5", author_id="ann", text="!"),
            event(6, "d", "2T08:00:00.000", "ReactionAdded", message_id="m4", user_id="$dee", emoji="+1"),
        ]  # fmt: skip
        for _ in range(2):
            await store.apply(analytics.NAME, [op for e in events for op in analytics.project(e)], 6)
        asked = analytics.parse_range("2026-03-01T00:00:00Z", "2026-03-03T00:00:00Z", "day")
        report = await analytics.analytics_report(store, tenant, asked)
        day1, day2 = (figures.as_dict() for _, figures in report.buckets)
        # c: ann asked at 10:00, bo.b answered in 300 s; ann's 12:30 post went unanswered;
        # d: c%y asked at 23:30, ann answered 2,400 s later, the next day (not a new conversation)
        assert day1 == {"active_users": 3, "messages": 3, "replies": 1, "active_channels": 2, "conversations": 3,
                        "answered": 2, "median_first_reply_seconds": 1350.0}  # fmt: skip
        assert day2 == {"active_users": 2, "messages": 1, "replies": 0, "active_channels": 1, "conversations": 0,
                        "answered": 0, "median_first_reply_seconds": None}  # fmt: skip
        assert report.totals.as_dict() == {**day1, "active_users": 4, "messages": 4}
        assert report.channels == [{"channel_id": "c", "messages": 2, "replies": 1},
                                   {"channel_id": "d", "messages": 2, "replies": 0}]  # fmt: skip
        monthly = await analytics.analytics_report(store, tenant, analytics.parse_range(
            "2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z", "month"))  # fmt: skip
        assert monthly.totals.as_dict() == report.totals.as_dict()
