"""Which MongoDB operations the test FerretDB (v1, SQLite backend) supports, as pymongo sees them.

Usage:  python infra/ferretdb/compat_check.py [mongodb://127.0.0.1:PORT/]
(defaults to $CAAS_MONGO_URL). Prints one line per operation: OK, or FAIL with the error.
Exit code 0 even when some fail: this is a survey, not a test. Results are recorded in infra/README.md.
Uses database `caas_compat_check` and drops it at the end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import traceback
import uuid

import pymongo
from bson import Binary, Decimal128, Int64, ObjectId
from pymongo import (
    ASCENDING,
    DESCENDING,
    DeleteOne,
    InsertOne,
    ReplaceOne,
    ReturnDocument,
    UpdateMany,
    UpdateOne,
)
from pymongo.errors import BulkWriteError, DuplicateKeyError

DB = "caas_compat_check"
results: list[tuple[str, bool, str]] = []


def check(name):
    def deco(fn):
        fn._check_name = name
        CHECKS.append(fn)
        return fn

    return deco


CHECKS: list = []
ACHECKS: list = []


def acheck(name):
    def deco(fn):
        fn._check_name = name
        ACHECKS.append(fn)
        return fn

    return deco


def fresh(db, name):
    db.drop_collection(name)
    return db[name]


@check("insert_one / insert_many / find_one by _id")
def _(db):
    c = fresh(db, "ins")
    r = c.insert_one({"_id": "a", "n": 1})
    assert r.inserted_id == "a"
    r = c.insert_many([{"n": i} for i in range(2, 6)])
    assert len(r.inserted_ids) == 4
    assert c.find_one({"_id": "a"})["n"] == 1


@check("duplicate _id -> DuplicateKeyError (code 11000)")
def _(db):
    c = fresh(db, "dup")
    c.insert_one({"_id": 1})
    try:
        c.insert_one({"_id": 1})
    except DuplicateKeyError as e:
        assert e.code == 11000, e.code
    else:
        raise AssertionError("no error")


@check("insert_many ordered=False with a duplicate -> BulkWriteError, others inserted")
def _(db):
    c = fresh(db, "dup2")
    c.insert_one({"_id": 2})
    try:
        c.insert_many([{"_id": 1}, {"_id": 2}, {"_id": 3}], ordered=False)
    except BulkWriteError as e:
        assert e.details["writeErrors"][0]["code"] == 11000
    else:
        raise AssertionError("no error")
    assert c.count_documents({}) == 3, c.count_documents({})


@check("find: filter + projection + sort (2 keys) + skip + limit")
def _(db):
    c = fresh(db, "find")
    c.insert_many([{"g": i % 2, "n": i, "x": "y"} for i in range(10)])
    docs = list(
        c.find({"g": 1}, {"_id": 0, "n": 1}).sort([("g", ASCENDING), ("n", DESCENDING)]).skip(1).limit(2)
    )
    assert docs == [{"n": 7}, {"n": 5}], docs


@check("find: cursor over 1000 docs with batch_size (getMore)")
def _(db):
    c = fresh(db, "many")
    c.insert_many([{"n": i} for i in range(1000)])
    assert sum(1 for _ in c.find().batch_size(101)) == 1000


@check("query operators $gt $gte $lt $ne $in $nin $exists $and $or")
def _(db):
    c = fresh(db, "ops")
    c.insert_many([{"n": i, "s": "a" if i < 3 else "b"} for i in range(6)] + [{"other": 1}])
    assert c.count_documents({"n": {"$gt": 2}}) == 3
    assert c.count_documents({"n": {"$gte": 2, "$lt": 4}}) == 2
    assert c.count_documents({"s": {"$ne": "a"}}) == 4  # includes the doc without s
    assert c.count_documents({"n": {"$in": [1, 2, 9]}}) == 2
    assert c.count_documents({"n": {"$nin": [1, 2]}}) == 5
    assert c.count_documents({"n": {"$exists": False}}) == 1
    assert c.count_documents({"$or": [{"n": 0}, {"s": "b"}]}) == 4
    assert c.count_documents({"$and": [{"n": {"$gt": 0}}, {"s": "a"}]}) == 2


@check("count_documents with $gt and $ne together; estimated_document_count")
def _(db):
    c = fresh(db, "cnt")
    c.insert_many([{"seq": i, "kind": "k%d" % (i % 3)} for i in range(30)])
    assert c.count_documents({"seq": {"$gt": 10}, "kind": {"$ne": "k0"}}) == 13
    assert c.estimated_document_count() == 30


@check("query on array element, $size, $all, dotted path into array of subdocs")
def _(db):
    c = fresh(db, "arr")
    c.insert_many([{"t": ["a", "b"], "o": [{"k": 1}, {"k": 2}]}, {"t": ["c"], "o": [{"k": 3}]}])
    assert c.count_documents({"t": "a"}) == 1
    assert c.count_documents({"t": {"$size": 2}}) == 1
    assert c.count_documents({"t": {"$all": ["a", "b"]}}) == 1
    assert c.count_documents({"o.k": 2}) == 1
    assert c.count_documents({"o.k": {"$gt": 1}}) == 2


@check("$elemMatch on an array of subdocuments")
def _(db):
    c = fresh(db, "elem")
    c.insert_many([{"o": [{"k": 1}, {"k": 2}]}, {"o": [{"k": 3, "j": 1}]}])
    n = len(list(c.find({"o": {"$elemMatch": {"k": {"$gt": 1}}}})))
    assert n == 2, f"find returned {n} docs, want 2"


@check("query on nested field with dot notation")
def _(db):
    c = fresh(db, "dot")
    c.insert_one({"a": {"b": {"c": 5}}})
    assert c.count_documents({"a.b.c": 5}) == 1


@check("$regex query")
def _(db):
    c = fresh(db, "re")
    c.insert_many([{"s": "hello"}, {"s": "Help"}, {"s": "x"}])
    assert c.count_documents({"s": {"$regex": "^hel", "$options": "i"}}) == 2


@check("$expr query")
def _(db):
    c = fresh(db, "expr")
    c.insert_many([{"a": 1, "b": 2}, {"a": 3, "b": 2}])
    assert c.count_documents({"$expr": {"$gt": ["$a", "$b"]}}) == 1


@check("update_one $set (incl. dotted path) / $inc / $unset")
def _(db):
    c = fresh(db, "upd")
    c.insert_one({"_id": 1, "n": 1, "gone": True})
    r = c.update_one({"_id": 1}, {"$set": {"s": "x", "a.b": 2}, "$inc": {"n": 5}, "$unset": {"gone": ""}})
    assert r.matched_count == 1 and r.modified_count == 1
    assert c.find_one({"_id": 1}) == {"_id": 1, "n": 6, "s": "x", "a": {"b": 2}}


@check("$addToSet (single and $each) / $pull / $push")
def _(db):
    c = fresh(db, "set")
    c.insert_one({"_id": 1, "tags": ["a"]})
    c.update_one({"_id": 1}, {"$addToSet": {"tags": "b"}})
    c.update_one({"_id": 1}, {"$addToSet": {"tags": "b"}})
    c.update_one({"_id": 1}, {"$addToSet": {"tags": {"$each": ["c", "a", "d"]}}})
    assert c.find_one({"_id": 1})["tags"] == ["a", "b", "c", "d"]
    c.update_one({"_id": 1}, {"$pull": {"tags": "b"}})
    c.update_one({"_id": 1}, {"$push": {"tags": "e"}})
    assert c.find_one({"_id": 1})["tags"] == ["a", "c", "d", "e"]


@check("$pull with a condition on subdocuments")
def _(db):
    c = fresh(db, "pullc")
    c.insert_one({"_id": 1, "r": [{"u": "a", "e": "x"}, {"u": "b", "e": "x"}]})
    c.update_one({"_id": 1}, {"$pull": {"r": {"u": "a", "e": "x"}}})
    assert c.find_one({"_id": 1})["r"] == [{"u": "b", "e": "x"}]


@check("$push with $each + $slice")
def _(db):
    c = fresh(db, "slice")
    c.insert_one({"_id": 1, "l": [1, 2]})
    c.update_one({"_id": 1}, {"$push": {"l": {"$each": [3, 4], "$slice": -3}}})
    assert c.find_one({"_id": 1})["l"] == [2, 3, 4]


@check("$max / $min / $mul / $rename / $currentDate")
def _(db):
    c = fresh(db, "mm")
    c.insert_one({"_id": 1, "hi": 5, "lo": 5, "m": 2, "old": 1})
    c.update_one(
        {"_id": 1},
        {"$max": {"hi": 9}, "$min": {"lo": 1}, "$mul": {"m": 3}, "$rename": {"old": "new"}, "$currentDate": {"ts": True}},
    )
    d = c.find_one({"_id": 1})
    assert (d["hi"], d["lo"], d["m"], d["new"]) == (9, 1, 6, 1) and "old" not in d and isinstance(d["ts"], dt.datetime)


@check("update_one upsert=True with $setOnInsert + $inc")
def _(db):
    c = fresh(db, "ups")
    for _ in range(2):
        c.update_one({"_id": "k"}, {"$setOnInsert": {"created": 1}, "$inc": {"n": 1}}, upsert=True)
    assert c.find_one({"_id": "k"}) == {"_id": "k", "created": 1, "n": 2}


@check("update_one upsert=True with a non-_id filter (filter fields copied into new doc)")
def _(db):
    c = fresh(db, "ups2")
    r = c.update_one({"tenant": "t1", "user": "u1"}, {"$set": {"seen": 3}}, upsert=True)
    assert r.upserted_id is not None
    d = c.find_one({"tenant": "t1"}, {"_id": 0})
    assert d == {"tenant": "t1", "user": "u1", "seen": 3}, d


@check("conditional update (guard: {_id, pos: {$lt: N}}) matches 0 when stale")
def _(db):
    c = fresh(db, "guard")
    c.insert_one({"_id": 1, "pos": 10})
    assert c.update_one({"_id": 1, "pos": {"$lt": 5}}, {"$set": {"pos": 5}}).matched_count == 0
    assert c.update_one({"_id": 1, "pos": {"$lt": 11}}, {"$set": {"pos": 11}}).modified_count == 1


@check("update_many / replace_one(upsert) / delete_one / delete_many")
def _(db):
    c = fresh(db, "um")
    c.insert_many([{"g": 1}, {"g": 1}, {"g": 2}])
    assert c.update_many({"g": 1}, {"$set": {"h": True}}).modified_count == 2
    c.replace_one({"_id": "r"}, {"v": 1}, upsert=True)
    c.replace_one({"_id": "r"}, {"v": 2}, upsert=True)
    assert c.find_one({"_id": "r"}) == {"_id": "r", "v": 2}
    assert c.delete_one({"g": 1}).deleted_count == 1
    assert c.delete_many({}).deleted_count == 3


@check("find_one_and_update(upsert, ReturnDocument.AFTER) — counters")
def _(db):
    c = fresh(db, "fau")
    for i in range(1, 4):
        d = c.find_one_and_update(
            {"_id": "seq"}, {"$inc": {"v": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        assert d["v"] == i, d


@check("find_one_and_delete / find_one_and_replace")
def _(db):
    c = fresh(db, "fad")
    c.insert_many([{"_id": 1, "v": 1}, {"_id": 2, "v": 2}])
    assert c.find_one_and_delete({"_id": 1})["v"] == 1
    assert c.find_one_and_replace({"_id": 2}, {"v": 3}, return_document=ReturnDocument.AFTER)["v"] == 3


@check("bulk_write: UpdateOne(upsert=True) x3 + InsertOne + ReplaceOne + DeleteOne + UpdateMany (ordered)")
def _(db):
    c = fresh(db, "bulk")
    c.insert_one({"_id": "del"})
    r = c.bulk_write(
        [
            UpdateOne({"_id": "a"}, {"$inc": {"n": 1}}, upsert=True),
            UpdateOne({"_id": "a"}, {"$inc": {"n": 1}}, upsert=True),
            UpdateOne({"_id": "b"}, {"$set": {"n": 7}, "$addToSet": {"t": "x"}}, upsert=True),
            InsertOne({"_id": "c"}),
            ReplaceOne({"_id": "d"}, {"v": 1}, upsert=True),
            DeleteOne({"_id": "del"}),
            UpdateMany({}, {"$set": {"all": 1}}),
        ]
    )
    assert r.upserted_count == 3, r.bulk_api_result
    assert r.inserted_count == 1 and r.deleted_count == 1
    assert c.find_one({"_id": "a"})["n"] == 2
    assert c.count_documents({"all": 1}) == 4


@check("bulk_write ordered=False with a duplicate-key InsertOne -> BulkWriteError, rest applied")
def _(db):
    c = fresh(db, "bulk2")
    c.insert_one({"_id": "x"})
    try:
        c.bulk_write([InsertOne({"_id": "x"}), UpdateOne({"_id": "y"}, {"$set": {"v": 1}}, upsert=True)], ordered=False)
    except BulkWriteError as e:
        assert e.details["nUpserted"] == 1, e.details
    else:
        raise AssertionError("no error")


@check("create_index: single, compound, unique (+ DuplicateKeyError on violation)")
def _(db):
    c = fresh(db, "idx")
    assert c.create_index("a") == "a_1"
    c.create_index([("t", ASCENDING), ("ts", DESCENDING)], name="t_ts")
    c.create_index([("u", ASCENDING)], unique=True)
    c.insert_one({"u": 1})
    try:
        c.insert_one({"u": 1})
    except DuplicateKeyError:
        pass
    else:
        raise AssertionError("unique index not enforced")
    names = sorted(ix["name"] for ix in c.list_indexes())
    assert names == ["_id_", "a_1", "t_ts", "u_1"], names
    c.drop_index("a_1")
    assert "a_1" not in c.index_information()


@check("create_index twice with the same spec is a no-op (idempotent startup)")
def _(db):
    c = fresh(db, "idx2")
    c.create_index([("k", ASCENDING)], unique=True)
    c.create_index([("k", ASCENDING)], unique=True)


@check("create_indexes([IndexModel...])")
def _(db):
    c = fresh(db, "idx3")
    c.create_indexes([pymongo.IndexModel([("a", 1)]), pymongo.IndexModel([("b", -1)], name="bdesc")])
    assert {"a_1", "bdesc"} <= set(c.index_information())


@check("create_index unique compound on (tenant, key)")
def _(db):
    c = fresh(db, "idx4")
    c.create_index([("tenant", 1), ("key", 1)], unique=True)
    c.insert_many([{"tenant": "a", "key": 1}, {"tenant": "b", "key": 1}])
    try:
        c.insert_one({"tenant": "a", "key": 1})
    except DuplicateKeyError:
        pass
    else:
        raise AssertionError("compound unique index not enforced")


@check("create_index sparse=True")
def _(db):
    c = fresh(db, "sparse")
    c.create_index("s", sparse=True)


@check("create_index partialFilterExpression")
def _(db):
    c = fresh(db, "partial")
    c.create_index("p", partialFilterExpression={"p": {"$exists": True}})


@check("create_index TTL (expireAfterSeconds)")
def _(db):
    c = fresh(db, "ttl")
    c.create_index("at", expireAfterSeconds=3600)


@check("create_index text")
def _(db):
    c = fresh(db, "text")
    c.create_index([("body", pymongo.TEXT)])


@check("distinct")
def _(db):
    c = fresh(db, "dist")
    c.insert_many([{"k": 1}, {"k": 2}, {"k": 1}])
    assert sorted(c.distinct("k")) == [1, 2]


@check("aggregate: $match $group (one $sum) $sort $limit $project")
def _(db):
    c = fresh(db, "agg")
    c.insert_many([{"t": "a", "n": 1}, {"t": "a", "n": 2}, {"t": "b", "n": 5}])
    out = list(
        c.aggregate(
            [
                {"$match": {"n": {"$gt": 0}}},
                {"$group": {"_id": "$t", "total": {"$sum": "$n"}}},
                {"$sort": {"total": -1}},
                {"$limit": 5},
                {"$project": {"total": 1}},
            ]
        )
    )
    assert out == [{"_id": "b", "total": 5}, {"_id": "a", "total": 3}], out


@check("aggregate: two accumulators in one $group ($sum: '$n' and $sum: 1)")
def _(db):
    c = fresh(db, "agg2acc")
    c.insert_many([{"t": "a", "n": 1}, {"t": "a", "n": 2}])
    out = list(c.aggregate([{"$group": {"_id": "$t", "total": {"$sum": "$n"}, "cnt": {"$sum": 1}}}]))
    assert out == [{"_id": "a", "total": 3, "cnt": 2}], out


@check("aggregate: $group accumulators $max $min $avg $first $last $push $addToSet")
def _(db):
    c = fresh(db, "accs")
    c.insert_many([{"t": "a", "n": 1}, {"t": "a", "n": 3}])
    bad = []
    for acc in ("$max", "$min", "$avg", "$first", "$last", "$push", "$addToSet", "$count"):
        arg = {} if acc == "$count" else "$n"
        try:
            list(c.aggregate([{"$group": {"_id": "$t", "x": {acc: arg}}}]))
        except pymongo.errors.OperationFailure:
            bad.append(acc)
    assert not bad, "not implemented: " + " ".join(bad)


@check("aggregate: $unwind + $count")
def _(db):
    c = fresh(db, "agg2")
    c.insert_many([{"l": [1, 2]}, {"l": [3]}])
    assert list(c.aggregate([{"$unwind": "$l"}, {"$count": "n"}])) == [{"n": 3}]


@check("aggregate: $group by date parts ($dateToString)")
def _(db):
    c = fresh(db, "agg3")
    c.insert_many([{"at": dt.datetime(2025, 1, 1, 10)}, {"at": dt.datetime(2025, 1, 1, 11)}])
    out = list(c.aggregate([{"$group": {"_id": {"$dateToString": {"format": "%Y-%m-%d", "date": "$at"}}, "n": {"$sum": 1}}}]))
    assert out == [{"_id": "2025-01-01", "n": 2}], out


@check("aggregate: $lookup")
def _(db):
    a, b = fresh(db, "lk_a"), fresh(db, "lk_b")
    a.insert_one({"_id": 1})
    b.insert_one({"a": 1})
    out = list(a.aggregate([{"$lookup": {"from": "lk_b", "localField": "_id", "foreignField": "a", "as": "bs"}}]))
    assert len(out[0]["bs"]) == 1


@check("aggregate: $facet")
def _(db):
    c = fresh(db, "facet")
    c.insert_one({"a": 1})
    list(c.aggregate([{"$facet": {"x": [{"$count": "n"}]}}]))


@check("BSON types round-trip: ObjectId, int64, UUID binary, bytes, tz datetime (ms), nested")
def _(db):
    c = fresh(db, "types")
    now = dt.datetime(2025, 5, 6, 7, 8, 9, 123000, tzinfo=dt.timezone.utc)
    u = uuid.uuid4()
    doc = {
        "_id": ObjectId(),
        "i64": Int64(2**40),
        "uuid": Binary.from_uuid(u),
        "raw": b"\x00\x01",
        "at": now,
        "f": 1.5,
        "none": None,
        "nested": {"l": [1, "two", {"three": 3}]},
    }
    c.insert_one(doc)
    got = c.with_options(
        codec_options=c.codec_options.with_options(tz_aware=True, uuid_representation=4)
    ).find_one({"_id": doc["_id"]})
    assert got["i64"] == 2**40 and got["raw"] == b"\x00\x01"
    assert got["uuid"] == u, got["uuid"]
    assert got["at"] == now and got["nested"] == doc["nested"] and got["none"] is None


@check("Decimal128 values")
def _(db):
    c = fresh(db, "dec")
    c.insert_one({"_id": 1, "d": Decimal128("1.10")})
    assert c.find_one({"_id": 1})["d"] == Decimal128("1.10")


@check("sort/range on datetime field")
def _(db):
    c = fresh(db, "dates")
    base = dt.datetime(2025, 1, 1)
    c.insert_many([{"at": base + dt.timedelta(minutes=i)} for i in range(5)])
    assert c.count_documents({"at": {"$gte": base + dt.timedelta(minutes=3)}}) == 2
    assert c.find_one(sort=[("at", -1)])["at"] == base + dt.timedelta(minutes=4)


@check("write concern w='majority' + j=True accepted")
def _(db):
    from pymongo import WriteConcern

    c = fresh(db, "wc").with_options(write_concern=WriteConcern(w="majority", j=True))
    c.insert_one({"a": 1})


@check("list_collection_names / drop_collection / create_collection / rename")
def _(db):
    fresh(db, "lc1").insert_one({})
    db.drop_collection("lc2")
    db.create_collection("lc2")
    assert {"lc1", "lc2"} <= set(db.list_collection_names())
    db.drop_collection("lc3")
    db["lc1"].rename("lc3")
    assert "lc3" in db.list_collection_names()


@check("database name with '-' and upper case (e.g. per-tenant DBs)")
def _(db):
    client = db.client
    for name in ("caas-compat-Tenant1", "caas_compat_t2"):
        client[name]["c"].insert_one({"a": 1})
        assert client[name]["c"].count_documents({}) == 1
        client.drop_database(name)


@check("collection name with dots ('events.by_stream')")
def _(db):
    c = fresh(db, "events.by_stream")
    c.insert_one({"a": 1})
    assert c.count_documents({}) == 1


@check("field names with '$'-free dots-free unicode, 16KB string values")
def _(db):
    c = fresh(db, "big")
    c.insert_one({"ключ": "x" * 16384})
    assert len(c.find_one()["ключ"]) == 16384


@check("multi-document transaction (session.start_transaction)")
def _(db):
    c = fresh(db, "txn")
    with db.client.start_session() as s:
        with s.start_transaction():
            c.insert_one({"a": 1}, session=s)


@check("change stream (collection.watch)")
def _(db):
    c = fresh(db, "cs")
    with c.watch(max_await_time_ms=100) as stream:
        stream.try_next()


@check("admin commands: ping, hello, buildInfo, listDatabases, dbStats, collStats")
def _(db):
    cl = db.client
    assert cl.admin.command("ping")["ok"] == 1
    cl.admin.command("hello")
    bi = cl.admin.command("buildInfo")
    print("    buildInfo.version =", bi.get("version"), "ferretdbVersion =", bi.get("ferretdbVersion"))
    cl.list_database_names()
    db.command("dbStats")
    fresh(db, "stats").insert_one({})
    db.command("collStats", "stats")


# ---------------------------------------------------------------- async (pymongo.AsyncMongoClient)


@acheck("async: insert_one / find (async for) / update_one $set $inc $addToSet $pull")
async def _(db):
    c = db["a_basic"]
    await c.drop()
    await c.insert_one({"_id": 1, "n": 0, "t": ["a"]})
    await c.update_one({"_id": 1}, {"$set": {"s": 1}, "$inc": {"n": 2}, "$addToSet": {"t": "b"}})
    await c.update_one({"_id": 1}, {"$pull": {"t": "a"}})
    docs = [d async for d in c.find({})]
    assert docs == [{"_id": 1, "n": 2, "t": ["b"], "s": 1}], docs


@acheck("async: create_index + bulk_write UpdateOne(upsert) + count_documents $gt/$ne")
async def _(db):
    c = db["a_bulk"]
    await c.drop()
    await c.create_index([("k", 1)], unique=True)
    r = await c.bulk_write([UpdateOne({"k": i}, {"$set": {"v": i % 3}}, upsert=True) for i in range(20)])
    assert r.upserted_count == 20
    assert await c.count_documents({"k": {"$gt": 9}, "v": {"$ne": 0}}) == 7


@acheck("async: find_one_and_update upsert + aggregate + to_list")
async def _(db):
    c = db["a_more"]
    await c.drop()
    d = await c.find_one_and_update({"_id": "s"}, {"$inc": {"v": 1}}, upsert=True, return_document=ReturnDocument.AFTER)
    assert d["v"] == 1
    cur = await c.aggregate([{"$group": {"_id": None, "n": {"$sum": "$v"}}}])
    assert await cur.to_list() == [{"_id": None, "n": 1}]
    assert len(await c.find().to_list(length=10)) == 1


@acheck("async: 50 concurrent upserts on one counter (asyncio.gather) are all applied")
async def _(db):
    c = db["a_conc"]
    await c.drop()
    await asyncio.gather(*[c.update_one({"_id": "x"}, {"$inc": {"n": 1}}, upsert=True) for _ in range(50)])
    d = await c.find_one({"_id": "x"})
    assert d["n"] == 50, d


@acheck("async: 50 concurrent $inc / $addToSet on one existing document are all applied")
async def _(db):
    c = db["a_conc2"]
    await c.drop()
    await c.insert_one({"_id": "x", "n": 0, "s": []})
    await asyncio.gather(*[c.update_one({"_id": "x"}, {"$inc": {"n": 1}, "$addToSet": {"s": i}}) for i in range(50)])
    d = await c.find_one({"_id": "x"})
    assert d["n"] == 50 and len(d["s"]) == 50, (d["n"], len(d["s"]))


@acheck("async: 30 concurrent position-guarded updates ({pos: {$lt: i}}) keep pos = max and n = modified")
async def _(db):
    c = db["a_conc3"]
    await c.drop()
    await c.insert_one({"_id": "x", "pos": 0, "n": 0})
    rs = await asyncio.gather(
        *[c.update_one({"_id": "x", "pos": {"$lt": i}}, {"$set": {"pos": i}, "$inc": {"n": 1}}) for i in range(1, 31)]
    )
    d = await c.find_one({"_id": "x"})
    assert d["pos"] == 30 and d["n"] == sum(r.modified_count for r in rs), d


def run_sync(url):
    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
    client.drop_database(DB)
    db = client[DB]
    for fn in CHECKS:
        try:
            fn(db)
            results.append((fn._check_name, True, ""))
        except Exception as e:  # noqa: BLE001 — a survey: record and go on
            results.append((fn._check_name, False, f"{type(e).__name__}: {str(e)[:300]}"))
            if os.environ.get("VERBOSE"):
                traceback.print_exc()
    client.drop_database(DB)
    client.close()


async def run_async(url):
    client = pymongo.AsyncMongoClient(url, serverSelectionTimeoutMS=5000)
    db = client[DB]
    for fn in ACHECKS:
        try:
            await fn(db)
            results.append((fn._check_name, True, ""))
        except Exception as e:  # noqa: BLE001
            results.append((fn._check_name, False, f"{type(e).__name__}: {str(e)[:300]}"))
            if os.environ.get("VERBOSE"):
                traceback.print_exc()
    await client.drop_database(DB)
    await client.close()


def main():
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CAAS_MONGO_URL", "mongodb://127.0.0.1:27017/")
    print(f"pymongo {pymongo.version} against {url}")
    run_sync(url)
    asyncio.run(run_async(url))
    for name, ok, err in results:
        print(("OK   " if ok else "FAIL ") + name + ("" if ok else "\n       " + err))
    print(f"{sum(ok for _, ok, _ in results)} ok, {sum(not ok for _, ok, _ in results)} unsupported/failing")


if __name__ == "__main__":
    main()
