"""The in-memory read store (the twin used by unit and property tests) against the ReadStore contract."""

from __future__ import annotations

import pytest

from adapters.memory_store import MemoryReadStore
from projections.ports import ReadStore
from tests.contract.readstore_contract import ReadStoreContract


class TestMemoryReadStore(ReadStoreContract):
    async def open_store(self, request: pytest.FixtureRequest) -> ReadStore:
        store = MemoryReadStore()
        await store.start()
        return store
