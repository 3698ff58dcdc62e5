"""Sealing personal fields before they are recorded, and opening them where events are read.

The events that carry personal data (:data:`PERSONAL`) are recorded with those fields taken out
of the payload and sealed in one XChaCha20-Poly1305 box, ``"sealed": {"keys": [...], "box":
b64(nonce ‖ ciphertext)}``, whose additional data is the tenant and the event id:

- a user's name and metadata (``UserRegistered``, ``UserUpdated``) under ``user:<uid>``;
- a message's text, attachments and mentions (``MessagePosted``, ``MessageEdited``) under a key derived
  from the author's key *and* the key of the channel's UTC day (:func:`content_key`), so that
  destroying either one shreds it.

Messages of ``e2e`` channels carry no text nor attachments: nothing is sealed. Reading opens the
box again; once one of its keys is destroyed (or the box does not open) the fields read as
erased: their empty value (:data:`PERSONAL`) and ``"erased": true``. Opening never raises.

:class:`SealingStore` and :class:`SealedLog` put this at the one place events are written (the
command layer's :class:`~commands.ports.StreamStore`) and read (the log ports); the adapters that
read the log below them (Kafka records, the event index, export rows) call
:meth:`Sealer.open` themselves.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import os
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
from nacl.exceptions import CryptoError

from commands import aead
from commands.keys import DESTROYED, NONCE_BYTES, Keyring, channel_day_key_id, user_key_id
from commands.ports import (
    EventLog,
    EventRow,
    Idempotency,
    Listener,
    LogUnavailable,
    NewEvent,
    Snapshot,
    StreamStore,
)
from domain.events import Event, upcast, with_payload

# event type -> its personal fields, each with the value it reads as once erased
PERSONAL: dict[str, dict[str, Any]] = {
    "UserRegistered": {"name": "", "metadata": {}},
    "UserUpdated": {"name": "", "metadata": {}},
    # mentions are whatever followed an "@" in the text (any word, an e-mail address): sealed with it
    "MessagePosted": {"text": "", "attachments": [], "mentions": []},
    "MessageEdited": {"text": ""},
}
SEALED = "sealed"
ERASED = "erased"
# commands that carry them on their way to a decider (the Kafka backend's command topic)
COMMANDS: dict[str, dict[str, Any]] = {
    "RegisterUser": PERSONAL["UserRegistered"],
    "PostMessage": {"text": "", "attachments": []},
    "EditMessage": PERSONAL["MessageEdited"],
}


def key_ids(stream: str, event_type: str, payload: Mapping[str, Any], occurred_at: str) -> tuple[str, ...]:
    """The data keys that seal an event's personal fields (none if it has nothing to seal)."""
    fields = PERSONAL.get(event_type)
    if fields is None or not any(payload.get(f) for f in fields):
        return ()
    kind, _, ident = stream.partition(":")
    if kind == "user":
        return (user_key_id(ident),)
    if kind == "channel":
        day = channel_day_key_id(ident, occurred_at[:10])
        author = payload.get("author_id")
        return (user_key_id(author), day) if author else (day,)
    return ()


def content_key(keys: Sequence[bytes]) -> bytes:
    """The key that seals a box under ``keys``: the first, each next one mixed in with keyed
    BLAKE2b (keyed by what came before), so every key is needed."""
    key = keys[0]
    for other in keys[1:]:
        key = hashlib.blake2b(other, key=key, digest_size=32, person=b"caas-content").digest()
    return key


def erased(event_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` with its personal fields erased."""
    shown = {k: v for k, v in payload.items() if k != SEALED}
    for name, empty in {**PERSONAL, **COMMANDS}.get(event_type, {}).items():
        shown[name] = type(empty)() if isinstance(empty, dict | list) else empty
    shown[ERASED] = True
    return shown


def seal(
    event_type: str, payload: Mapping[str, Any], ids: Sequence[str], keys: Sequence[bytes], aad: bytes
) -> dict[str, Any]:
    """``payload`` with its personal fields sealed under ``keys`` (erased if one is destroyed)."""
    if any(k == DESTROYED for k in keys):
        return erased(event_type, payload)
    personal = PERSONAL.get(event_type) or COMMANDS[event_type]
    plain = {k: v for k, v in payload.items() if k in personal}
    kept: dict[str, Any] = {k: v for k, v in payload.items() if k not in personal}
    nonce = _nonce()
    box = aead.encrypt(orjson.dumps(plain), aad, nonce, content_key(keys))
    kept[SEALED] = {"keys": list(ids), "box": base64.b64encode(nonce + box).decode()}
    return kept


def open_payload(
    event_type: str, payload: Mapping[str, Any], keys: Callable[[str], bytes | None], aad: bytes
) -> dict[str, Any]:
    """``payload`` with its sealed fields back in clear, or erased if any key is missing or
    destroyed or the box does not open. Never raises."""
    sealed = payload.get(SEALED)
    if not isinstance(sealed, dict):
        return dict(payload)
    try:
        found = [keys(k) for k in sealed["keys"]]
        box = base64.b64decode(sealed["box"])
        if not found or any(not k for k in found):
            return erased(event_type, payload)
        plain = aead.decrypt(box[NONCE_BYTES:], aad, box[:NONCE_BYTES], content_key([k for k in found if k]))
        fields = orjson.loads(plain)
    except (CryptoError, ValueError, TypeError, KeyError):
        return erased(event_type, payload)
    if not isinstance(fields, dict):
        return erased(event_type, payload)
    opened = {k: v for k, v in payload.items() if k != SEALED}
    opened.update(fields)
    return opened


_NONCES: list[bytes] = []
os.register_at_fork(after_in_child=_NONCES.clear)  # a child must never reuse its parent's nonces


def _nonce() -> bytes:
    """A random nonce, from a pool filled 512 at a time: one system call (which lets other threads
    take the GIL, and the event loop wait for it back) per 512 sealed events, not one per event."""
    try:
        return _NONCES.pop()
    except IndexError:
        block = os.urandom(NONCE_BYTES * 512)
        _NONCES.extend(block[i : i + NONCE_BYTES] for i in range(0, len(block), NONCE_BYTES))
        return _NONCES.pop()


def event_aad(tenant_id: str, event_id: str) -> bytes:
    return f"{tenant_id}\x00{event_id}".encode()


def _sealed_keys(payload: Mapping[str, Any]) -> list[str]:
    sealed = payload.get(SEALED)
    if isinstance(sealed, dict) and isinstance(sealed.get("keys"), list):
        return [k for k in sealed["keys"] if isinstance(k, str)]
    return []


class Sealer:
    """Seals new events and opens recorded ones with the keys of a :class:`Keyring`."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    # --- writing ----------------------------------------------------------------------------
    def _wanted(self, stream: str, events: Iterable[NewEvent]) -> set[str]:
        return {k for e in events for k in key_ids(stream, e.type, e.payload, e.occurred_at)}

    def ready(self, tenant_id: str, stream: str, events: Sequence[NewEvent]) -> bool:
        """Whether :meth:`seal` can run now: every key it needs is in memory."""
        return all(self.keyring.cached(tenant_id, k) is not None for k in self._wanted(stream, events))

    async def prepare(self, tenant_id: str, stream: str, events: Sequence[NewEvent]) -> None:
        """Load (creating on first use) the keys :meth:`seal` needs."""
        await self.keyring.load(tenant_id, self._wanted(stream, events), create=True)

    def try_seal(self, tenant_id: str, stream: str, events: Sequence[NewEvent]) -> list[NewEvent] | None:
        """:meth:`seal` if every key it needs is in memory (the hot path), else ``None``."""
        return self._sealed(tenant_id, stream, events, strict=True)

    def seal(self, tenant_id: str, stream: str, events: Sequence[NewEvent]) -> list[NewEvent]:
        """``events`` with their personal fields sealed (after :meth:`prepare`; a key not in
        memory counts as destroyed)."""
        sealed = self._sealed(tenant_id, stream, events, strict=False)
        assert sealed is not None
        return sealed

    def _sealed(
        self, tenant_id: str, stream: str, events: Sequence[NewEvent], *, strict: bool
    ) -> list[NewEvent] | None:
        cached = self.keyring.cached
        sealed: list[NewEvent] = []
        for event in events:
            ids = key_ids(stream, event.type, event.payload, event.occurred_at)
            if not ids:
                sealed.append(event)
                continue
            keys: list[bytes] = []
            for key_id in ids:
                key = cached(tenant_id, key_id)
                if key is None:
                    if strict:
                        return None
                    key = DESTROYED
                keys.append(key)
            payload = seal(event.type, event.payload, ids, keys, event_aad(tenant_id, event.event_id))
            sealed.append(dataclasses.replace(event, payload=payload))
        return sealed

    async def reseal(self, events: Sequence[Event]) -> list[Event]:
        """Opened ``events`` sealed again (for a record that must not hold them in clear: a
        decider's reply on the Kafka backend); what reads as erased stays as it is."""
        out: list[Event] = []
        for event in events:
            ids = key_ids(event.stream, event.type, event.payload, event.occurred_at)
            if not ids or event.payload.get(ERASED):
                out.append(event)
                continue
            await self.keyring.load(event.tenant_id, ids, create=True)
            keys = [self.keyring.cached(event.tenant_id, k) or DESTROYED for k in ids]
            aad = event_aad(event.tenant_id, event.event_id)
            out.append(with_payload(event, seal(event.type, event.payload, ids, keys, aad)))
        return out

    async def seal_command(
        self, tenant_id: str, stream: str, command_type: str, fields: dict[str, Any], command_id: str
    ) -> dict[str, Any]:
        """A command's fields as they travel to a decider: personal ones sealed like the events
        they become (under the author's and today's channel-day key, or the user's key)."""
        personal = COMMANDS.get(command_type)
        if personal is None or not any(fields.get(f) for f in personal):
            return fields
        kind, _, ident = stream.partition(":")
        if kind == "user":
            ids: tuple[str, ...] = (user_key_id(ident),)
        else:
            day = channel_day_key_id(ident, str(fields.get("now") or _today())[:10])
            author = fields.get("author_id")
            ids = (user_key_id(author), day) if author else (day,)
        held = await self._command_keys(tenant_id, ids, create=True)
        return seal(command_type, fields, ids, [held[k] for k in ids], event_aad(tenant_id, command_id))

    async def _command_keys(self, tenant_id: str, ids: Sequence[str], *, create: bool = False) -> dict[str, bytes]:
        """The keys of ``ids`` (:data:`DESTROYED` for a destroyed one), loaded together: a key
        held when a load began may expire while it waits, so up to three rounds. Raises
        :class:`LogUnavailable` (the node answers 503: retry) if one is neither held nor in the key
        store: a command is never sealed or decided on fields it could not seal or open (that
        would record an empty message), only on fields a destroyed key erased."""
        held: dict[str, bytes] = {}
        for _ in range(3):
            await self.keyring.load(tenant_id, [k for k in ids if k not in held], create=create)
            for key_id in ids:
                key = self.keyring.cached(tenant_id, key_id)
                if key is not None:
                    held[key_id] = key
            if len(held) == len(set(ids)):
                return held
        raise LogUnavailable("the keys of a sealed command could not be read from the key store; retry")

    async def open_command(
        self, tenant_id: str, command_type: str, fields: dict[str, Any], command_id: str
    ) -> dict[str, Any]:
        """The inverse of :meth:`seal_command` (erased fields if a key is destroyed meanwhile;
        :class:`LogUnavailable` if a key cannot be read: :meth:`_command_keys`)."""
        ids = _sealed_keys(fields)
        if not ids:
            return {k: v for k, v in fields.items() if k != ERASED}
        held = await self._command_keys(tenant_id, ids)
        opened = open_payload(command_type, fields, held.get, event_aad(tenant_id, command_id))
        opened.pop(ERASED, None)
        return opened

    # --- reading ----------------------------------------------------------------------------
    def loaded(self, events: Iterable[Event]) -> bool:
        """Whether :meth:`open_loaded` can open ``events`` now (their keys are in memory)."""
        cached = self.keyring.cached
        return all(cached(e.tenant_id, k) is not None for e in events for k in _sealed_keys(e.payload))

    async def load(self, events: Iterable[Event]) -> None:
        wanted: dict[str, set[str]] = {}
        for event in events:
            for key_id in _sealed_keys(event.payload):
                if self.keyring.cached(event.tenant_id, key_id) is None:
                    wanted.setdefault(event.tenant_id, set()).add(key_id)
        for tenant_id, ids in wanted.items():
            await self.keyring.load(tenant_id, ids)

    async def pin(self, events: Iterable[Event]) -> dict[tuple[str, str], bytes]:
        """The keys of the sealed ``events`` by ``(tenant_id, key_id)``, loaded and held apart
        from the cache (where one may expire before it is used): what :meth:`open_event`
        opens with (``pinned``). A key the store never held is left out (it reads as erased);
        a destroyed one is :data:`DESTROYED`. Raises if the key store cannot be read: a key
        store that is away must not read as erased."""
        wanted = {(e.tenant_id, k) for e in events for k in _sealed_keys(e.payload)}
        pinned: dict[tuple[str, str], bytes] = {}
        for _ in range(3):  # a key cached when a load began may expire before it ends: once more
            for tenant_id, key_id in wanted - pinned.keys():
                key = self.keyring.cached(tenant_id, key_id)
                if key is not None:
                    pinned[(tenant_id, key_id)] = key
            missing: dict[str, list[str]] = {}
            for tenant_id, key_id in wanted - pinned.keys():
                missing.setdefault(tenant_id, []).append(key_id)
            if not missing:
                break
            for tenant_id, ids in missing.items():
                await self.keyring.load(tenant_id, ids)
        return pinned

    def open_loaded(self, events: Sequence[Event], *, in_place: bool = False) -> list[Event]:
        """``events`` opened with the keys in memory (a key not in memory reads as erased)."""
        return [self.open_event(e, in_place=in_place) if SEALED in e.payload else e for e in events]

    def open_event(
        self, event: Event, *, in_place: bool = False, pinned: Mapping[tuple[str, str], bytes] | None = None
    ) -> Event:
        """``event`` opened: a new event, or (``in_place``, for an event just read from storage
        that no one else holds) the same one, its payload replaced; with the keys of
        :meth:`pin` if given, else those in memory."""
        tenant_id = event.tenant_id
        cached: Callable[[str], bytes | None] = (
            functools.partial(self.keyring.cached, tenant_id)
            if pinned is None
            else (lambda key_id: pinned.get((tenant_id, key_id)))
        )
        payload = open_payload(event.type, event.payload, cached, event_aad(tenant_id, event.event_id))
        version, payload = upcast(event.type, event.schema_version, payload)  # deferred until opened
        if in_place:
            event.__dict__.update(payload=payload, schema_version=version)
            return event
        return with_payload(event, payload, version)

    async def open(self, events: Sequence[Event], *, in_place: bool = False) -> list[Event]:
        """``events`` with their personal fields opened (or erased); ``in_place``: see :meth:`open_event`."""
        if not any(SEALED in e.payload for e in events):
            return list(events)
        pinned = await self.pin(events)  # held together: a key cannot expire between loading and opening
        return [self.open_event(e, in_place=in_place, pinned=pinned) if SEALED in e.payload else e for e in events]

    async def open_rows(self, rows: Sequence[EventRow]) -> list[EventRow]:
        """Rows of :data:`~commands.ports.ROW_FIELDS` (payload as JSON text) opened."""
        if not any('"sealed"' in row[12] for row in rows):
            return list(rows)
        opened: list[EventRow] = []
        for row in rows:
            if '"sealed"' not in row[12]:
                opened.append(row)
                continue
            payload = orjson.loads(row[12])
            tenant_id, event_id, event_type = row[1], row[4], row[5]
            await self.keyring.load(tenant_id, _sealed_keys(payload))
            payload = open_payload(
                event_type, payload, functools.partial(self.keyring.cached, tenant_id), event_aad(tenant_id, event_id)
            )
            version, payload = upcast(event_type, row[6], payload)
            opened.append((*row[:6], version, *row[7:12], orjson.dumps(payload).decode(), *row[13:]))
        return opened


def _today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


FRESH_KEPT = 10_000  # payloads of events just sealed, kept in clear until the log hands them on


class _Fresh:
    """The payloads of the events a :class:`SealingStore` just sealed, by event id, so that what
    it hands back and what its log's listeners get need no decryption (bounded: the oldest go)."""

    def __init__(self) -> None:
        self._payloads: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def keep(self, sealed: Sequence[NewEvent], plain: Sequence[NewEvent]) -> None:
        for s, p in zip(sealed, plain, strict=True):
            if s is not p:
                self._payloads[p.event_id] = p.payload
        while len(self._payloads) > FRESH_KEPT:
            self._payloads.popitem(last=False)

    def take(self, events: Sequence[Event]) -> list[Event] | None:
        """``events`` with the payloads kept for them (and forgotten), if every sealed one has one."""
        if not all(e.event_id in self._payloads for e in events if SEALED in e.payload):
            return None
        pop = self._payloads.pop
        return [with_payload(e, pop(e.event_id)) if SEALED in e.payload else e for e in events]


class _Ordered:
    """Delivers batches to ``deliver`` in the order they came, opening each first: at once when
    its keys are in memory, else after loading them (later batches wait their turn)."""

    def __init__(self, sealer: Sealer, deliver: Listener, fresh: _Fresh) -> None:
        self.sealer = sealer
        self.deliver = deliver
        self.fresh = fresh
        self._waiting: deque[Sequence[Event]] = deque()
        self._task: asyncio.Task[None] | None = None

    def __call__(self, events: Sequence[Event]) -> None:
        if not self._waiting:
            known = self.fresh.take(events)
            if known is not None:
                self.deliver(known)
                return
        if not self._waiting and self.sealer.loaded(events):
            self.deliver(self.sealer.open_loaded(events))
            return
        self._waiting.append(events)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._waiting:
            opened = await self.sealer.open(self._waiting[0])
            self._waiting.popleft()
            self.deliver(opened)


class SealingStore(StreamStore):
    """A :class:`StreamStore` that seals personal fields before ``inner`` records them and opens
    them in what it reads back. Appends to a stream stay in the order they were called, also
    when one of them waits for its keys first, and resolve with the events as recorded (sealed:
    callers read ids and positions from them, the listeners of a :class:`SealedLog` get them opened)."""

    def __init__(self, inner: StreamStore, sealer: Sealer) -> None:
        self.inner = inner
        self.sealer = sealer
        self.keeps_snapshots = inner.keeps_snapshots
        self._waiting: dict[tuple[str, str], asyncio.Future[None]] = {}  # a stream's last append waiting for keys
        self._fresh = _Fresh()

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def append(
        self,
        tenant_id: str,
        stream: str,
        expected_version: int,
        events: Sequence[NewEvent],
        idempotency: Idempotency | None = None,
    ) -> Awaitable[list[Event]]:
        key = (tenant_id, stream)
        if key not in self._waiting:
            sealed = self.sealer.try_seal(tenant_id, stream, events)
            if sealed is not None:
                self._fresh.keep(sealed, events)
                return self.inner.append(tenant_id, stream, expected_version, sealed, idempotency)
        before = self._waiting.get(key)
        issued: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[key] = issued

        async def later() -> list[Event]:
            try:
                if before is not None:
                    await asyncio.shield(before)
                await self.sealer.prepare(tenant_id, stream, events)
                sealed = self.sealer.seal(tenant_id, stream, events)
                self._fresh.keep(sealed, events)
                recorded = self.inner.append(tenant_id, stream, expected_version, sealed, idempotency)
            finally:
                issued.set_result(None)
                if self._waiting.get(key) is issued:
                    del self._waiting[key]
            return await recorded

        return asyncio.ensure_future(later())

    async def read_stream(
        self, tenant_id: str, stream: str, after_seq: int = 0, limit: int | None = None
    ) -> list[Event]:
        return await self.sealer.open(await self.inner.read_stream(tenant_id, stream, after_seq, limit))

    async def find_idempotent(self, tenant_id: str, key: str) -> tuple[str, list[Event]] | None:
        found = await self.inner.find_idempotent(tenant_id, key)
        if found is None:
            return None
        return found[0], await self.sealer.open(found[1])

    # A user's aggregate holds the user's name and metadata: its snapshots are sealed under the
    # user's key too (and dropped once it is destroyed: the aggregate is folded from the log).
    async def read_snapshot(self, tenant_id: str, stream: str, schema: str) -> Snapshot | None:
        snapshot = await self.inner.read_snapshot(tenant_id, stream, schema)
        if snapshot is None or not stream.startswith("user:"):
            return snapshot
        key = await self.sealer.keyring.key(tenant_id, user_key_id(stream.partition(":")[2]))
        if not key:
            return None
        aad = f"{tenant_id}\x00{stream}\x00{snapshot.version}".encode()
        try:
            state = aead.decrypt(snapshot.state[NONCE_BYTES:], aad, snapshot.state[:NONCE_BYTES], key)
        except CryptoError:
            return None
        return Snapshot(snapshot.version, snapshot.event_id, state)

    def save_snapshot(self, tenant_id: str, stream: str, schema: str, version: int, state: bytes) -> None:
        if stream.startswith("user:"):
            key = self.sealer.keyring.cached(tenant_id, user_key_id(stream.partition(":")[2]))
            if not key:
                return  # not in memory (or destroyed): no snapshot this time, it is only a cache
            nonce = os.urandom(NONCE_BYTES)
            aad = f"{tenant_id}\x00{stream}\x00{version}".encode()
            state = nonce + aead.encrypt(state, aad, nonce, key)
        self.inner.save_snapshot(tenant_id, stream, schema, version, state)


class SealedLog(SealingStore, EventLog):
    """An :class:`EventLog` (the embedded one) behind :class:`SealingStore`: every read opens."""

    inner: EventLog

    def __init__(self, inner: EventLog, sealer: Sealer) -> None:
        super().__init__(inner, sealer)
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        """Every listener gets the same opened batches (each event opened once, for all)."""
        if not self._listeners:
            self.inner.listen(_Ordered(self.sealer, self._deliver, self._fresh))
        self._listeners.append(listener)

    def _deliver(self, events: Sequence[Event]) -> None:
        for listener in self._listeners:
            listener(events)

    async def head_position(self) -> int:
        return await self.inner.head_position()

    async def read_stream(
        self, tenant_id: str, stream: str, after_seq: int = 0, limit: int | None = None
    ) -> list[Event]:
        # the embedded log builds new events for every read: opened in place
        return await self.sealer.open(await self.inner.read_stream(tenant_id, stream, after_seq, limit), in_place=True)

    async def read_all(
        self,
        after_position: int = 0,
        limit: int = 1000,
        tenant_id: str | None = None,
        types: Sequence[str] | None = None,
    ) -> list[Event]:
        return await self.sealer.open(await self.inner.read_all(after_position, limit, tenant_id, types), in_place=True)

    async def read_tenant(
        self, tenant_id: str, after_position: int = 0, limit: int = 1000, types: Sequence[str] | None = None
    ) -> list[Event]:
        return await self.sealer.open(
            await self.inner.read_tenant(tenant_id, after_position, limit, types), in_place=True
        )
