"""An in-memory read store: a complete implementation of the port, for unit and property
tests. It passes the same contract suite as the SQLite and MongoDB stores."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from projections.ports import Doc, Filter, Fold, Op, ReadStore, matches, public, sort_docs, touched


class MemoryReadStore(ReadStore):
    def __init__(self) -> None:
        self._docs: dict[str, dict[tuple[str, str], Doc]] = {}
        self._checkpoints: dict[str, int] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def apply(self, projection: str, ops: Sequence[Op], position: int) -> None:
        fold = Fold({key: self._docs.get(key[0], {}).get((key[1], key[2])) for key in touched(ops)})
        fold.apply(ops)
        for collection, written in fold.written().items():
            docs = self._docs.setdefault(collection, {})
            for tenant_id, id, doc in written:
                docs[(tenant_id, id)] = doc
        self._checkpoints[projection] = max(position, self._checkpoints.get(projection, 0))

    async def checkpoint(self, projection: str) -> int:
        return self._checkpoints.get(projection, 0)

    async def get(self, collection: str, tenant_id: str, id: str) -> Doc | None:
        doc = self._docs.get(collection, {}).get((tenant_id, id))
        return copy.deepcopy(public(doc)) if doc is not None else None

    async def find(
        self,
        collection: str,
        tenant_id: str,
        filter: Filter,
        sort: Sequence[tuple[str, int]] = (),
        limit: int | None = None,
    ) -> list[Doc]:
        found = [
            copy.deepcopy(public(doc))
            for (tid, _), doc in self._docs.get(collection, {}).items()
            if tid == tenant_id and matches(doc, filter)
        ]
        found = sort_docs(found, [*sort, ("_id", 1)] if sort else [("_id", 1)])
        return found if limit is None else found[:limit]

    async def count(self, collection: str, tenant_id: str, filter: Filter) -> int:
        return sum(
            1 for (tid, _), doc in self._docs.get(collection, {}).items() if tid == tenant_id and matches(doc, filter)
        )

    async def erase(self, collection: str, tenant_id: str, field: str, value: str, fields: Mapping[str, Any]) -> int:
        found = [
            doc
            for (tid, _), doc in self._docs.get(collection, {}).items()
            if tid == tenant_id and doc.get(field) == value
        ]
        for doc in found:
            doc.update(copy.deepcopy(dict(fields)))
        return len(found)

    async def drop(self, projection: str, collections: Sequence[str]) -> None:
        for name in collections:
            self._docs.pop(name, None)
        self._checkpoints.pop(projection, None)

    def dump(self) -> dict[str, Any]:
        """Every document, for comparing two stores in tests."""
        return {name: dict(docs) for name, docs in self._docs.items()}
