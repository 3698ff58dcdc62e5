"""The distributed read store: MongoDB (any MongoDB ≥ 6, Atlas, or FerretDB in tests).

Documents live in one collection per read-model collection, ``_id`` = ``<tenant>/<id>``,
with ``tenant_id`` as the first field of every index. A batch is applied the same way as
in SQLite: the touched documents are loaded once, the ops are applied in memory with the
position guard (:class:`projections.ports.Fold`), and each changed document is written
back once in one unordered ``bulk_write`` of upserts. The write is conditional on the
``_pos`` that was read, so two projectors racing on a document cannot lose an update.
The checkpoint is stored with the data and moved after the batch: a crash in between
replays the batch, which the guard turns into a no-op.

Keys inside documents may be chosen by users (a user's ``metadata``), and MongoDB cannot
store every key (``.``, a leading ``$``, NUL), so keys are stored percent-escaped: ``%``,
``.``, ``$`` and NUL become ``%25``, ``%2E``, ``%24``, ``%00``, and are unescaped on read.
Field names the projections filter and sort on never contain those characters.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bson.errors import BSONError
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReplaceOne
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)

from projections.ports import (
    Doc,
    Filter,
    Fold,
    Key,
    Op,
    ReadStore,
    ReadStoreRefused,
    ReadStoreUnavailable,
    touched,
)

INDEXES: dict[str, list[tuple[str, ...]]] = {
    "messages": [("channel_id", "parent_id", "seq"), ("channel_id", "seq"), ("chday",)],  # chday: retention
    "memberships": [("user_id", "active"), ("channel_id", "active")],
    "usage": [("day",)],
    "usage_peaks": [("day",)],
    "usage_samples": [("day",)],
    "usage_users": [("month",)],
    "usage_stored": [("day",)],  # usage_messages are read by id only (stored-bytes changes)
    "analytics_users": [("day",)],
    "analytics_monthly": [("month",)],
    "analytics_channels": [("day",)],
    "webhooks": [("tenant", "deleted", "created_at"), ("deleted",)],  # a tenant's list; the processor's load
    "webhook_deliveries": [("webhook_id", "delivery_id")],  # an endpoint's delivery log, paged
    "users": [("user_id",)],  # the tenant portal's user search: by id prefix, paged
    "channels": [("channel_id",)],
    # the event index (projections/eventindex.py): a stream read from a seq on (as_of folds,
    # websocket resume) and a tenant's log from a position on, without sorting the tenant's events
    "events": [("stream", "seq"), ("position",)],
    "audit": [("position",), ("occurred_at",)],  # the audit trail (projections/audit.py), paged by position
}
DUPLICATE_KEY = 11000
NOT_IMPLEMENTED = 238
_RESERVED = re.compile("[%.$\x00]")
_ESCAPED = re.compile("%(25|2E|24|00)")


def _key(tenant_id: str, id: str) -> str:
    return f"{tenant_id}/{id}"


def _escape_key(key: str) -> str:
    if not _RESERVED.search(key):
        return key
    return key.replace("%", "%25").replace(".", "%2E").replace("$", "%24").replace("\x00", "%00")


def _unescape_key(key: str) -> str:
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), key) if "%" in key else key


def _stored(value: Any) -> Any:
    """A document (or any value in it) with every key escaped for MongoDB."""
    if isinstance(value, dict):
        return {_escape_key(k): _stored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stored(v) for v in value]
    return value


def _loaded(value: Any) -> Any:
    """The inverse of :func:`_stored`."""
    if isinstance(value, dict):
        return {_unescape_key(k): _loaded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_loaded(v) for v in value]
    return value


def _public(doc: dict[str, Any]) -> Doc:
    doc = _loaded(doc)
    doc.pop("_pos", None)
    doc["_id"] = str(doc["_id"]).split("/", 1)[1]
    return doc


def connect(url: str, timeout: float) -> AsyncMongoClient[dict[str, Any]]:
    """A client whose every wait on the server is bounded by ``timeout`` (:class:`MongoReadStore`)."""
    timeout_ms = max(int(timeout * 1000), 1)
    return AsyncMongoClient(
        url,
        socketTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,  # also the monitor's socket timeout
        serverSelectionTimeoutMS=min(5000, timeout_ms),
        tz_aware=False,
    )


class MongoReadStore(ReadStore):
    """``timeout`` bounds every wait on the server: connecting, and each reply on a socket
    (server selection gives up after 5 s at most, as before). A server that stops answering
    raises :class:`ReadStoreUnavailable` after it and the caller's retry rule applies,
    instead of a projector or a query waiting forever on a socket. Not pymongo's
    ``timeoutMS``: under it the driver retries a refused connection until the whole timeout
    is spent, so during an outage every query would wait ``timeout`` instead of failing
    after server selection."""

    def __init__(self, url: str, database: str, *, prefix: str = "", timeout: float = 10.0) -> None:
        self.url = url
        self.database = database
        self.prefix = prefix
        self.timeout = timeout
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        # bulk loads (a rebuild): the documents written last, kept so a later window need not read
        # them back, and the window being loaded with what its documents were before it, kept
        # until it is done: a retry after a failed attempt deleted some of them finds them here
        self._written: dict[Key, dict[str, Any]] = {}
        self._retrying: tuple[tuple[str, int], dict[Key, Any]] | None = None

    async def start(self) -> None:
        self._client = connect(self.url, self.timeout)
        try:
            for collection, indexes in INDEXES.items():
                for fields in indexes:
                    keys = [("tenant_id", ASCENDING), *[(f, ASCENDING) for f in fields]]
                    await self._coll(collection).create_index(keys)
        except PyMongoError as exc:
            raise ReadStoreUnavailable(f"MongoDB is unreachable: {exc}") from exc

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _coll(self, name: str) -> Any:
        assert self._client is not None, "start() the read store first"
        return self._client[self.database][self.prefix + name]

    async def apply(self, projection: str, ops: Sequence[Op], position: int) -> None:
        await self._guarded(self._apply(projection, ops, position))

    async def load(self, projection: str, ops: Sequence[Op], position: int, loaded: set[Key]) -> None:
        """Bulk-load ``ops`` into collections no one else writes (a rebuild's fresh ones).

        The ops are folded into whole documents in memory; documents this load has not
        written before (``loaded`` keeps their keys, and is updated) are inserted with one
        ``insert_many``, the others deleted with one ``delete_many`` and inserted again with
        one ``insert_many`` (a replace per document went 50 to a command, see
        :func:`_chunks`). Those earlier documents are read back only if they are not among
        the :data:`WRITTEN_KEPT` written last. Safe to retry (the same window again): what the
        window's documents were before its first attempt is kept until it is done, and a
        document a failed attempt did insert is rewritten.
        """
        await self._guarded(self._load(projection, ops, position, loaded))

    async def _guarded(self, work: Any) -> None:
        try:
            await work
        except PyMongoError as exc:
            if _transient(exc):
                raise ReadStoreUnavailable(f"MongoDB write failed: {exc}") from exc
            raise ReadStoreRefused(f"MongoDB refused the write: {exc!r}") from exc
        except (BSONError, OverflowError) as exc:  # a value BSON cannot encode
            raise ReadStoreRefused(f"MongoDB refused the write: {exc!r}") from exc
        except KeyError as exc:  # pymongo's bulk result parser, on a reply without counts (FerretDB)
            raise ReadStoreRefused(f"MongoDB answered a write without its result: {exc!r}") from exc

    async def _stored(self, keys: Iterable[Key]) -> dict[Key, Any]:
        """The stored documents among ``keys`` (as MongoDB holds them), one query per collection."""
        wanted: dict[str, list[str]] = {}
        for collection, tenant_id, id in keys:
            wanted.setdefault(collection, []).append(_key(tenant_id, id))
        found: dict[Key, Any] = {}
        for collection, ids in wanted.items():
            async for doc in self._coll(collection).find({"_id": {"$in": ids}}):
                tenant_id, _, id = doc["_id"].partition("/")
                found[(collection, tenant_id, id)] = doc
        return found

    @staticmethod
    def _folded(ops: Sequence[Op], found: dict[Key, Any]) -> list[tuple[str, list[tuple[str, str, Doc]]]]:
        """``ops`` folded onto the stored documents in ``found`` (:class:`Fold`): the documents
        they changed by collection, the counters their tallies move first (see :class:`Op`)."""
        fold = Fold({key: _local(doc, key[2]) for key, doc in found.items()})
        fold.apply(ops)
        counters = {t.collection for op in ops for t in op.tally}
        return sorted(fold.written().items(), key=lambda item: item[0] not in counters)

    async def _advance(self, projection: str, position: int) -> None:
        await self._coll("checkpoints").update_one({"_id": projection}, {"$max": {"position": position}}, upsert=True)

    async def _apply(self, projection: str, ops: Sequence[Op], position: int) -> None:
        found = await self._stored(touched(ops))
        for collection, written in self._folded(ops, found):
            writes = []
            for tenant_id, id, local in written:
                key = _key(tenant_id, id)
                doc = _stored(local)
                doc["_id"] = key
                flt: dict[str, Any] = {"_id": key}
                if (stored := found.get((collection, tenant_id, id))) is not None:
                    flt["_pos"] = stored.get("_pos")  # conditional on what was read: racing writers lose nothing
                writes.append(ReplaceOne(flt, doc, upsert=True))
            for chunk in _chunks(writes):
                try:
                    await self._coll(collection).bulk_write(chunk, ordered=False)
                except BulkWriteError as exc:
                    errors = exc.details.get("writeErrors", [])
                    if any(e.get("code") != DUPLICATE_KEY for e in errors):
                        raise
        await self._advance(projection, position)

    async def _load(self, projection: str, ops: Sequence[Op], position: int, loaded: set[Key]) -> None:
        window = (projection, position)
        if self._retrying is None or self._retrying[0] != window:  # a new window, not a retry of the last one
            self._retrying = (window, {})
        before = self._retrying[1]  # what the window's documents were before its first attempt
        earlier = [k for k in touched(ops) if k in loaded]
        missing = [k for k in earlier if k not in before and k not in self._written]
        before.update({k: self._written[k] for k in earlier if k not in before and k in self._written})
        before.update(await self._stored(missing))
        written: dict[Key, dict[str, Any]] = {}
        # the counters first, as in apply: a retried window derives what a failed one did not write
        for collection, docs in self._folded(ops, before):
            inserts, rewrites, fresh = [], [], []
            for tenant_id, id, local in docs:
                key = (collection, tenant_id, id)
                doc = written[key] = {**_stored(local), "_id": _key(tenant_id, id)}
                if key in loaded:
                    rewrites.append(doc)
                else:
                    inserts.append(doc)
                    fresh.append(key)
            for chunk in _chunks(inserts, INSERTS_PER_COMMAND):
                try:
                    await self._coll(collection).insert_many(chunk, ordered=False)
                except BulkWriteError as exc:
                    if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                        raise
                    rewrites += chunk  # a retry after a partly applied attempt: rewrite what is already there
            loaded.update(fresh)
            for chunk in _chunks(rewrites, INSERTS_PER_COMMAND):  # deleted and inserted again: two commands
                await self._coll(collection).delete_many({"_id": {"$in": [doc["_id"] for doc in chunk]}})
                await self._coll(collection).insert_many(chunk, ordered=False)
        await self._advance(projection, position)
        self._retrying = None
        self._written.update(written)
        for key in list(itertools.islice(self._written, max(len(self._written) - WRITTEN_KEPT, 0))):
            del self._written[key]

    async def checkpoint(self, projection: str) -> int:
        try:
            doc = await self._coll("checkpoints").find_one({"_id": projection})
        except PyMongoError as exc:
            raise ReadStoreUnavailable(f"MongoDB is unreachable: {exc}") from exc
        return int(doc["position"]) if doc else 0

    async def get(self, collection: str, tenant_id: str, id: str) -> Doc | None:
        try:
            doc = await self._coll(collection).find_one({"_id": _key(tenant_id, id)})
        except PyMongoError as exc:
            raise ReadStoreUnavailable(f"MongoDB is unreachable: {exc}") from exc
        return _public(doc) if doc is not None else None

    async def find(
        self,
        collection: str,
        tenant_id: str,
        filter: Filter,
        sort: Sequence[tuple[str, int]] = (),
        limit: int | None = None,
    ) -> list[Doc]:
        order = [(name, DESCENDING if d < 0 else ASCENDING) for name, d in sort] + [("_id", ASCENDING)]
        try:
            cursor = self._coll(collection).find({"tenant_id": tenant_id, **filter}).sort(order)
            if limit is not None:
                cursor = cursor.limit(limit)
            return [_public(doc) async for doc in cursor]
        except PyMongoError as exc:
            raise ReadStoreUnavailable(f"MongoDB is unreachable: {exc}") from exc

    async def count(self, collection: str, tenant_id: str, filter: Filter) -> int:
        try:
            return int(await self._coll(collection).count_documents({"tenant_id": tenant_id, **filter}))
        except PyMongoError as exc:
            raise ReadStoreUnavailable(f"MongoDB is unreachable: {exc}") from exc

    async def erase(self, collection: str, tenant_id: str, field: str, value: str, fields: Mapping[str, Any]) -> int:
        self._written = {}  # a rebuild's cache of what it wrote may hold what is erased now
        try:
            result = await self._coll(collection).update_many(
                {"tenant_id": tenant_id, field: value}, {"$set": _stored(dict(fields))}
            )
        except PyMongoError as exc:
            raise ReadStoreUnavailable(f"MongoDB is unreachable: {exc}") from exc
        return int(result.matched_count)

    async def drop(self, projection: str, collections: Sequence[str]) -> None:
        self._written = {k: doc for k, doc in self._written.items() if k[0] not in collections}
        self._retrying = None
        try:
            for name in collections:
                await self._coll(name).drop()
            await self._coll("checkpoints").delete_one({"_id": projection})
        except PyMongoError as exc:
            raise ReadStoreUnavailable(f"MongoDB is unreachable: {exc}") from exc


async def swap_in(fresh: MongoReadStore, live: MongoReadStore, projection: str, collections: Sequence[str]) -> None:
    """Make ``fresh``'s rebuilt collections the live ones: each is renamed over its live
    counterpart (``renameCollection`` with ``dropTarget``, atomic per collection), then the
    rebuilt checkpoints replace the live ones. A collection the rebuild wrote nothing to (no
    event made a document of it) does not exist: its live counterpart is dropped instead."""
    built = set(await fresh._client[fresh.database].list_collection_names()) if fresh._client is not None else set()
    for name in collections:
        if fresh.prefix + name not in built:
            await live._coll(name).drop()
            continue
        try:
            await fresh._coll(name).rename(live.prefix + name, dropTarget=True)
        except OperationFailure as exc:
            if exc.code != NOT_IMPLEMENTED:
                raise
            # FerretDB v1 lacks dropTarget: drop, then rename (readers may briefly see
            # the collection empty; on MongoDB the swap is atomic).
            await live._coll(name).drop()
            await fresh._coll(name).rename(live.prefix + name)
    marks = [doc async for doc in fresh._coll("checkpoints").find({"_id": {"$regex": f"^{projection}(@|$)"}})]
    for doc in marks:
        await live._coll("checkpoints").replace_one({"_id": doc["_id"]}, doc, upsert=True)
    await fresh._coll("checkpoints").drop()


UPDATES_PER_COMMAND = 50
WRITTEN_KEPT = 50_000  # documents a bulk load keeps in memory after writing them (the newest)
INSERTS_PER_COMMAND = 2000  # a bulk load's documents per insert_many: each command well within the socket timeout


def _chunks(writes: list[Any], size: int = UPDATES_PER_COMMAND) -> list[list[Any]]:
    """Writes in commands of at most ``size``. Upserts go :data:`UPDATES_PER_COMMAND` to a
    command: FerretDB v1 (the tests' MongoDB-wire server) never answers an ``update`` command of
    100 statements or more, which stalled projections until the driver's socket timeout;
    MongoDB itself only pays a few more round trips."""
    return [writes[i : i + size] for i in range(0, len(writes), size)]


def _transient(exc: PyMongoError) -> bool:
    """Whether a failed write may succeed if tried again: the server was unreachable, did not
    answer within the operation timeout, stepped down or shut down (MongoDB labels those
    retryable)."""
    return (
        exc.timeout  # no answer within the timeout (the server hangs or is overloaded)
        or isinstance(exc, (ConnectionFailure, ExecutionTimeout, WriteConcernError))
        or any(exc.has_error_label(label) for label in ("RetryableWriteError", "TransientTransactionError"))
    )


def _local(doc: dict[str, Any] | None, id: str) -> Doc | None:
    """A stored document as :func:`apply_op` sees it (``_id`` without the tenant)."""
    if doc is None:
        return None
    local: Doc = _loaded(doc)
    local["_id"] = id
    return local
