"""Data keys for crypto-shredding: the :class:`KeyStore` port and the :class:`Keyring` over it.

Personal data is sealed with data keys (docs/erasure.md). A data key is 32 random bytes, named
per tenant by a key id:

- ``user:<user_id>``: a user's personal fields (name, metadata) and, combined with a
  channel-day key, the text of the messages they post;
- ``chday:<channel_id>:<YYYY-MM-DD>``: the messages of a channel's UTC day.

A key is created on first use and stored *wrapped*: sealed with XChaCha20-Poly1305 under the
master key (``CAAS_MASTER_KEY``), beside the id of the master key that wrapped it so a rotation
can tell old wrappings from new. Destroying a key deletes its wrapped bytes and leaves a
tombstone: a destroyed key is never created again, so everything sealed with it stays
unreadable for good.

The :class:`KeyStore` port keeps wrapped keys only (it never sees a master key or a data key in
clear); the :class:`Keyring` wraps, unwraps and caches them.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import binascii
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import structlog
from nacl.exceptions import CryptoError

from commands import aead
from commands.ports import Lifecycle

KEY_BYTES = 32
NONCE_BYTES = aead.NONCE_BYTES  # 24


def user_key_id(user_id: str) -> str:
    return f"user:{user_id}"


def channel_day_key_id(channel_id: str, day: str) -> str:
    """The key of a channel's UTC day ``day`` (``YYYY-MM-DD``)."""
    return f"chday:{channel_id}:{day}"


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A data key as the store holds it: wrapped by master key ``master_id``, or destroyed
    (``wrapped`` and ``master_id`` are ``None``, ``destroyed_at`` says when)."""

    tenant_id: str
    key_id: str
    master_id: str | None
    wrapped: bytes | None
    created_at: str
    destroyed_at: str | None = None

    @property
    def destroyed(self) -> bool:
        return self.wrapped is None


class KeyStore(Lifecycle):
    """Where wrapped data keys live, apart from the log (SQLite embedded, MongoDB on Kafka).

    Adapters: :class:`adapters.sqlite_keys.SqliteKeyStore`, :class:`adapters.mongo_keys.MongoKeyStore`,
    :class:`adapters.memory_keys.MemoryKeyStore` (tests/contract/keystore_contract.py).
    """

    @abc.abstractmethod
    async def read(self, tenant_id: str, key_ids: Sequence[str]) -> dict[str, StoredKey]:
        """The stored keys (tombstones included) among ``key_ids``; an id never stored is absent."""

    @abc.abstractmethod
    async def create(self, key: StoredKey) -> StoredKey:
        """Store ``key`` unless its id is already stored (live or destroyed); return what is
        stored now. Two creators racing get the same winner."""

    @abc.abstractmethod
    async def destroy(self, tenant_id: str, key_id: str) -> bool:
        """Delete the key's wrapped bytes and leave a tombstone (also for an id never stored,
        so it is never created later). ``True`` if this call destroyed it, ``False`` if it was
        already destroyed."""

    @abc.abstractmethod
    async def list_keys(
        self, tenant_id: str | None = None, prefix: str = "", after: tuple[str, str] | None = None, limit: int = 1000
    ) -> list[StoredKey]:
        """Stored keys (tombstones included) of a tenant (or all tenants) whose id starts with
        ``prefix``, ordered by ``(tenant_id, key_id)`` after ``after``."""

    @abc.abstractmethod
    async def rewrap(self, key: StoredKey, master_id: str, wrapped: bytes) -> bool:
        """Replace ``key``'s wrapping by ``wrapped`` (under ``master_id``) if it is still
        wrapped as ``key`` says (not destroyed, not rewrapped meanwhile). ``True`` if replaced."""


class MasterKeyError(ValueError):
    """A master key is malformed, or a wrapped key does not open under the master keys given."""


@dataclass(frozen=True, slots=True)
class MasterKey:
    """The key that wraps data keys. Its ``id`` (a hash of it) names it in the store."""

    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise MasterKeyError(f"a master key is {KEY_BYTES} bytes, not {len(self.secret)}")

    @classmethod
    def from_base64(cls, text: str) -> MasterKey:
        try:
            return cls(base64.b64decode(text.strip(), validate=True))
        except binascii.Error as exc:
            raise MasterKeyError("a master key is standard base64 of 32 bytes") from exc

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(KEY_BYTES))

    def to_base64(self) -> str:
        return base64.b64encode(self.secret).decode()

    @property
    def id(self) -> str:
        return hashlib.blake2b(self.secret, digest_size=8, person=b"caas-master-id").hexdigest()

    def __repr__(self) -> str:  # never the secret
        return f"MasterKey(id={self.id})"

    def wrap(self, tenant_id: str, key_id: str, data_key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        aad = f"{tenant_id}\x00{key_id}".encode()
        sealed: bytes = aead.encrypt(data_key, aad, nonce, self.secret)
        return nonce + sealed

    def unwrap(self, tenant_id: str, key_id: str, wrapped: bytes) -> bytes:
        aad = f"{tenant_id}\x00{key_id}".encode()
        try:
            key: bytes = aead.decrypt(wrapped[NONCE_BYTES:], aad, wrapped[:NONCE_BYTES], self.secret)
        except CryptoError as exc:
            raise MasterKeyError(f"key {key_id!r} of tenant {tenant_id!r} does not open under {self!r}") from exc
        return key


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


DESTROYED = b""  # the cache's mark of a destroyed key (never a valid key: keys are 32 bytes)


_log = structlog.get_logger("caas.keys")


class Keyring:
    """Data keys in clear for this process: created, unwrapped and cached on demand.

    The cache is bounded (least recently used out) and a live key is trusted for ``ttl``
    seconds at most, so a key another process destroyed stops opening here within ``ttl``;
    a destroyed key is remembered as destroyed (it never comes back). :meth:`destroy` here
    forgets the key at once.

    A key past its ``ttl`` is kept as a *stale* copy until evicted: when the store does not
    answer within ``stale_wait`` seconds (a database outage), every key asked for that has a
    stale copy is trusted for another ``ttl``, so commands and reads of known users and channels
    go on while the database is away (the log is Kafka; the key store is not on the write path of
    what it already gave out). Destruction still reaches this process during an outage: erasure
    and shredding are recorded in the log first (``UserErased``, ``ChannelDayShredded``), and
    every node forgets the key (:meth:`forget`) when it reads them. A key never held here needs the store.
    """

    def __init__(
        self,
        store: KeyStore,
        master: MasterKey | Callable[[], tuple[MasterKey, Sequence[MasterKey]]],
        previous: Iterable[MasterKey] = (),
        *,
        capacity: int = 100_000,
        ttl: float = 5.0,
        stale_wait: float = 1.0,
    ) -> None:
        """``master`` wraps new keys; keys wrapped by ``previous`` ones still open. Either may be
        given by a function, called on first use: ``(master, previous)``."""
        self.store = store
        if isinstance(master, MasterKey):
            given = (master, tuple(previous))
            self._source: Callable[[], tuple[MasterKey, Sequence[MasterKey]]] = lambda: given
        else:
            self._source = master
        self._masters: tuple[MasterKey, dict[str, MasterKey]] | None = None
        self.capacity = capacity
        self.ttl = ttl
        self.stale_wait = stale_wait
        self._cache: OrderedDict[tuple[str, str], tuple[bytes, float]] = OrderedDict()

    def _resolve(self) -> tuple[MasterKey, dict[str, MasterKey]]:
        if self._masters is None:
            master, previous = self._source()
            self._masters = (master, {m.id: m for m in (*previous, master)})
        return self._masters

    @property
    def master(self) -> MasterKey:
        return self._resolve()[0]

    @property
    def masters(self) -> dict[str, MasterKey]:
        return self._resolve()[1]

    def cached(self, tenant_id: str, key_id: str) -> bytes | None:
        """The key if this process holds it (:data:`DESTROYED` if destroyed), else ``None``."""
        entry = self._cache.get((tenant_id, key_id))
        if entry is None:
            return None
        key, until = entry
        if key and until < time.monotonic():  # a live key expires (kept as a stale copy); a destroyed one stays
            return None
        return key

    def _remember(self, tenant_id: str, key_id: str, key: bytes) -> None:
        self._cache[(tenant_id, key_id)] = (key, time.monotonic() + self.ttl)
        self._cache.move_to_end((tenant_id, key_id))
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)

    def _open(self, stored: StoredKey) -> bytes:
        if stored.wrapped is None:
            return DESTROYED
        master = self.masters.get(stored.master_id or "")
        if master is None:
            raise MasterKeyError(
                f"key {stored.key_id!r} is wrapped by master {stored.master_id}, which is not configured"
            )
        return master.unwrap(stored.tenant_id, stored.key_id, stored.wrapped)

    async def load(self, tenant_id: str, key_ids: Iterable[str], *, create: bool = False) -> None:
        """Make :meth:`cached` answer for every id in ``key_ids``: one store read for the
        missing ones, and (with ``create``) one create per id never stored."""
        missing = sorted({k for k in key_ids if self.cached(tenant_id, k) is None})
        if not missing:
            return
        stale = {k: self._cache[(tenant_id, k)][0] for k in missing if (tenant_id, k) in self._cache}
        if len(stale) < len(missing):
            stored = await self.store.read(tenant_id, missing)
        else:
            try:
                stored = await asyncio.wait_for(self.store.read(tenant_id, missing), self.stale_wait)
            except Exception as exc:  # the store is away: go on with the copies held (see the class)
                _log.warning("key_store_unavailable_using_held_keys", keys=len(stale), error=repr(exc))
                for key_id, key in stale.items():
                    self._remember(tenant_id, key_id, key)
                return
        for key_id in missing:
            found = stored.get(key_id)
            if found is None and key_id in stale:  # held here, yet not in the answer: keep it (never unheld
                self._remember(tenant_id, key_id, stale[key_id])  # but by a tombstone, which is in answers)
                continue
            if found is None:
                if not create:
                    continue
                found = await self.store.create(self._new(tenant_id, key_id))
            self._remember(tenant_id, key_id, self._open(found))

    def _new(self, tenant_id: str, key_id: str) -> StoredKey:
        key = os.urandom(KEY_BYTES)
        return StoredKey(tenant_id, key_id, self.master.id, self.master.wrap(tenant_id, key_id, key), _now())

    async def key(self, tenant_id: str, key_id: str, *, create: bool = False) -> bytes | None:
        """The key in clear; :data:`DESTROYED` if destroyed; ``None`` if never created (and not ``create``)."""
        await self.load(tenant_id, [key_id], create=create)
        entry = self._cache.get((tenant_id, key_id))  # just loaded, or valid when the load began
        return None if entry is None else entry[0]

    def forget(self, tenant_id: str, key_id: str) -> None:
        """Hold the key as destroyed here, at once (a process that learns from the log that it
        is, or is about to be, destroyed elsewhere: ``UserErased``, ``ChannelDayShredded``)."""
        self._remember(tenant_id, key_id, DESTROYED)

    async def destroy(self, tenant_id: str, key_id: str) -> bool:
        """Destroy the key for good (:meth:`KeyStore.destroy`) and forget it here at once."""
        destroyed = await self.store.destroy(tenant_id, key_id)
        self._remember(tenant_id, key_id, DESTROYED)
        return destroyed


async def rewrap_all(store: KeyStore, old: MasterKey, new: MasterKey) -> int:
    """Wrap every live key wrapped by ``old`` under ``new`` instead; the log is not touched.
    Returns how many keys were rewrapped. Safe to run again after an interruption."""
    if old.id == new.id:
        return 0
    count = 0
    after: tuple[str, str] | None = None
    while keys := await store.list_keys(after=after):
        for key in keys:
            if key.wrapped is not None and key.master_id == old.id:
                data_key = old.unwrap(key.tenant_id, key.key_id, key.wrapped)
                if await store.rewrap(key, new.id, new.wrap(key.tenant_id, key.key_id, data_key)):
                    count += 1
        after = (keys[-1].tenant_id, keys[-1].key_id)
    return count
