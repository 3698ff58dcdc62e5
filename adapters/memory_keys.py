"""An in-memory key store: the twin of the SQLite and MongoDB ones for unit and property tests
(the same contract suite, tests/contract/keystore_contract.py)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from commands.keys import KeyStore, StoredKey


class MemoryKeyStore(KeyStore):
    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], StoredKey] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def read(self, tenant_id: str, key_ids: Sequence[str]) -> dict[str, StoredKey]:
        return {k: self._keys[(tenant_id, k)] for k in key_ids if (tenant_id, k) in self._keys}

    async def create(self, key: StoredKey) -> StoredKey:
        return self._keys.setdefault((key.tenant_id, key.key_id), key)

    async def destroy(self, tenant_id: str, key_id: str) -> bool:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        stored = self._keys.get((tenant_id, key_id))
        if stored is not None and stored.destroyed:
            return False
        created_at = now if stored is None else stored.created_at
        self._keys[(tenant_id, key_id)] = StoredKey(tenant_id, key_id, None, None, created_at, now)
        return True

    async def list_keys(
        self, tenant_id: str | None = None, prefix: str = "", after: tuple[str, str] | None = None, limit: int = 1000
    ) -> list[StoredKey]:
        found = [
            key
            for (t, k), key in sorted(self._keys.items())
            if (tenant_id is None or t == tenant_id) and k.startswith(prefix) and (after is None or (t, k) > after)
        ]
        return found[:limit]

    async def rewrap(self, key: StoredKey, master_id: str, wrapped: bytes) -> bool:
        stored = self._keys.get((key.tenant_id, key.key_id))
        if stored is None or stored.wrapped is None or stored.wrapped != key.wrapped:
            return False
        self._keys[(key.tenant_id, key.key_id)] = dataclasses.replace(stored, master_id=master_id, wrapped=wrapped)
        return True
