"""The key store of the Kafka backend: wrapped data keys in a MongoDB collection of their own
(``<prefix>data_keys`` beside the read models, but never written by a projection nor dropped by a
rebuild), ``_id`` = ``<tenant>/<key id>``. A destroyed key's document keeps its id and times,
with ``wrapped`` null.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError

from adapters.mongo_store import connect
from commands.keys import KeyStore, StoredKey

COLLECTION = "data_keys"


def _key(doc: dict[str, Any]) -> StoredKey:
    wrapped = doc.get("wrapped")
    return StoredKey(
        doc["tenant_id"],
        doc["key_id"],
        doc.get("master_id"),
        None if wrapped is None else bytes(wrapped),
        doc["created_at"],
        doc.get("destroyed_at"),
    )


class MongoKeyStore(KeyStore):
    def __init__(self, url: str, database: str, *, prefix: str = "", timeout: float = 10.0) -> None:
        self.url = url
        self.database = database
        self.prefix = prefix
        self.timeout = timeout
        self._client: AsyncMongoClient[dict[str, Any]] | None = None

    async def start(self) -> None:
        if self._client is not None:  # started already (a worker's processors and its node share it)
            return
        self._client = connect(self.url, self.timeout)
        await self._coll().create_index([("tenant_id", ASCENDING), ("key_id", ASCENDING)])

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _coll(self) -> Any:
        assert self._client is not None, "start() the key store first"
        return self._client[self.database][self.prefix + COLLECTION]

    async def read(self, tenant_id: str, key_ids: Sequence[str]) -> dict[str, StoredKey]:
        ids = [f"{tenant_id}/{k}" for k in key_ids]
        return {doc["key_id"]: _key(doc) async for doc in self._coll().find({"_id": {"$in": ids}})}

    async def create(self, key: StoredKey) -> StoredKey:
        doc = {
            "_id": f"{key.tenant_id}/{key.key_id}",
            "tenant_id": key.tenant_id,
            "key_id": key.key_id,
            "master_id": key.master_id,
            "wrapped": key.wrapped,
            "created_at": key.created_at,
            "destroyed_at": key.destroyed_at,
        }
        with contextlib.suppress(DuplicateKeyError):  # another creator won: its key is the key
            await self._coll().insert_one(doc)
        return (await self.read(key.tenant_id, [key.key_id]))[key.key_id]

    async def destroy(self, tenant_id: str, key_id: str) -> bool:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        id = f"{tenant_id}/{key_id}"
        tombstone = {"master_id": None, "wrapped": None, "destroyed_at": now}
        updated = await self._coll().find_one_and_update(
            {"_id": id, "destroyed_at": None}, {"$set": tombstone}, return_document=ReturnDocument.AFTER
        )
        if updated is not None:
            return True
        doc = {"_id": id, "tenant_id": tenant_id, "key_id": key_id, "created_at": now, **tombstone}
        try:
            await self._coll().insert_one(doc)
        except DuplicateKeyError:
            return False  # already a tombstone (or destroyed by a racing call)
        return True

    async def list_keys(
        self, tenant_id: str | None = None, prefix: str = "", after: tuple[str, str] | None = None, limit: int = 1000
    ) -> list[StoredKey]:
        query: dict[str, Any] = {}
        if tenant_id is not None:
            query["tenant_id"] = tenant_id
        if after is not None:
            query["$or"] = [
                {"tenant_id": {"$gt": after[0]}},
                {"tenant_id": after[0], "key_id": {"$gt": after[1]}},
            ]
        if prefix:
            query["key_id"] = {"$regex": "^" + re.escape(prefix)}
        cursor = self._coll().find(query).sort([("tenant_id", ASCENDING), ("key_id", ASCENDING)]).limit(limit)
        return [_key(doc) async for doc in cursor]

    async def rewrap(self, key: StoredKey, master_id: str, wrapped: bytes) -> bool:
        result = await self._coll().update_one(
            {"_id": f"{key.tenant_id}/{key.key_id}", "wrapped": key.wrapped},
            {"$set": {"master_id": master_id, "wrapped": wrapped}},
        )
        return bool(result.modified_count)
