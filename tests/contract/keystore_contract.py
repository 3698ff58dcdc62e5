"""The behaviour every :class:`commands.keys.KeyStore` must have, asserted through the port and
the :class:`commands.keys.Keyring` over it. Subclass :class:`KeyStoreContract` once per backend."""

from __future__ import annotations

import abc
import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from commands.keys import DESTROYED, KEY_BYTES, Keyring, KeyStore, MasterKey, MasterKeyError, rewrap_all


class KeyStoreContract(abc.ABC):
    @abc.abstractmethod
    async def open_store(self, request: pytest.FixtureRequest) -> KeyStore:
        """Build and start a store (it may be shared between tests: they use fresh tenants)."""

    @pytest.fixture
    async def store(self, request: pytest.FixtureRequest) -> AsyncIterator[KeyStore]:
        store = await self.open_store(request)
        try:
            yield store
        finally:
            await store.close()

    @pytest.fixture
    def tenant(self) -> str:
        return f"t-{uuid.uuid4().hex[:12]}"

    async def test_a_key_is_created_on_first_use_and_the_same_afterwards(self, store: KeyStore, tenant: str) -> None:
        master = MasterKey.generate()
        key = await Keyring(store, master).key(tenant, "user:u1", create=True)
        assert key is not None and len(key) == KEY_BYTES
        assert await Keyring(store, master).key(tenant, "user:u1") == key  # another process reads it back
        assert await Keyring(store, master).key(tenant, "user:u2") is None  # not created without asking
        assert await Keyring(store, master).key(f"{tenant}-other", "user:u1", create=True) != key  # per tenant

    async def test_keys_are_stored_wrapped_under_the_master_key(self, store: KeyStore, tenant: str) -> None:
        master = MasterKey.generate()
        key = await Keyring(store, master).key(tenant, "user:u1", create=True)
        assert key
        stored = (await store.read(tenant, ["user:u1"]))["user:u1"]
        assert stored.master_id == master.id and stored.wrapped is not None and key not in stored.wrapped
        assert master.unwrap(tenant, "user:u1", stored.wrapped) == key
        with pytest.raises(MasterKeyError):
            await Keyring(store, MasterKey.generate()).key(tenant, "user:u1")

    async def test_racing_creators_get_the_same_key(self, store: KeyStore, tenant: str) -> None:
        master = MasterKey.generate()
        rings = [Keyring(store, master) for _ in range(8)]
        keys = await asyncio.gather(*(ring.key(tenant, "chday:c1:2026-12-03", create=True) for ring in rings))
        assert len(set(keys)) == 1

    async def test_a_destroyed_key_is_gone_for_good(self, store: KeyStore, tenant: str) -> None:
        master = MasterKey.generate()
        ring = Keyring(store, master)
        assert await ring.key(tenant, "user:u1", create=True)
        assert await store.destroy(tenant, "user:u1") is True
        assert await store.destroy(tenant, "user:u1") is False  # idempotent
        stored = (await store.read(tenant, ["user:u1"]))["user:u1"]
        assert stored.destroyed and stored.wrapped is None and stored.destroyed_at is not None
        fresh = Keyring(store, master)
        assert await fresh.key(tenant, "user:u1", create=True) == DESTROYED  # never created again

    async def test_destroying_a_key_never_created_leaves_a_tombstone(self, store: KeyStore, tenant: str) -> None:
        master = MasterKey.generate()
        assert await store.destroy(tenant, "chday:c1:2026-01-01") is True
        assert await Keyring(store, master).key(tenant, "chday:c1:2026-01-01", create=True) == DESTROYED

    async def test_the_keyring_forgets_a_key_it_destroys_at_once(self, store: KeyStore, tenant: str) -> None:
        ring = Keyring(store, MasterKey.generate())
        assert await ring.key(tenant, "user:u1", create=True)
        assert await ring.destroy(tenant, "user:u1") is True
        assert ring.cached(tenant, "user:u1") == DESTROYED

    async def test_list_keys_by_tenant_and_prefix_in_order_and_by_page(self, store: KeyStore, tenant: str) -> None:
        ring = Keyring(store, MasterKey.generate())
        ids = ["chday:c1:2026-12-01", "chday:c1:2026-12-02", "chday:c2:2026-12-01", "user:a", "user:b"]
        await ring.load(tenant, ids, create=True)
        await store.destroy(tenant, "user:a")
        listed = await store.list_keys(tenant)
        assert [k.key_id for k in listed] == ids
        assert [k.destroyed for k in listed] == [False, False, False, True, False]
        assert [k.key_id for k in await store.list_keys(tenant, prefix="chday:c1:")] == ids[:2]
        page = await store.list_keys(tenant, after=(tenant, ids[1]), limit=2)
        assert [k.key_id for k in page] == ids[2:4]

    async def test_rotation_rewraps_every_live_key_and_they_still_open(self, store: KeyStore, tenant: str) -> None:
        old, new = MasterKey.generate(), MasterKey.generate()
        ring = Keyring(store, old)
        ids = [f"user:u{n}" for n in range(5)]
        await ring.load(tenant, ids, create=True)
        before = {k: ring.cached(tenant, k) for k in ids}
        await store.destroy(tenant, "user:u0")
        assert await rewrap_all(store, old, new) >= 4
        listed = {k.key_id: k for k in await store.list_keys(tenant)}
        assert {listed[k].master_id for k in ids[1:]} == {new.id} and listed["user:u0"].destroyed
        after = Keyring(store, new)
        assert {k: await after.key(tenant, k) for k in ids[1:]} == {k: before[k] for k in ids[1:]}
        assert await after.key(tenant, "user:u0") == DESTROYED
        with pytest.raises(MasterKeyError):
            await Keyring(store, old).key(tenant, "user:u1")  # the old master no longer opens them
        assert await Keyring(store, new, previous=[old]).key(tenant, "user:u1") == before["user:u1"]
        assert await rewrap_all(store, old, new) == 0  # idempotent
