"""Schema evolution on a real change: ``MessagePosted`` v2 records ``mentions``. A log whose
messages were stored in the v1 shape (no ``mentions``, ``schema_version`` 1), written raw into
the SQLite log or the Kafka events topic, still replays, and gives exactly the read models,
history, ``as_of`` answers, events and ``caas replay`` output of the same facts stored as v2
(docs/analyst.md, Schema evolution)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo import MongoClient

from adapters.kafka.topics import ensure_topics, topic_names
from tests.cluster import Cluster
from tests.support import Server, Tenant, new_tenant

QUIET = {"CAAS_METERING": "off"}  # no usage records of the nodes' own: both logs hold the same facts only


def ok(r: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert r.status_code == status, f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}"
    data: dict[str, Any] = r.json()
    return data


def fill(client: httpx.Client, url: str) -> tuple[Tenant, list[dict[str, Any]]]:
    """A tenant's chat with mentions, a reply, an edit, a deletion, a reaction and a read marker."""
    tenant = new_tenant(client, url, "evolving")
    h = tenant.headers()
    for uid in ("alice", "bob", "carol"):
        tenant.user(client, uid)
    acks = [ok(client.post(f"{url}/v1/channels", json={"channel_id": "c", "name": "C", "members": ["alice", "bob",
                                                                                                    "carol"]},
                           headers=h))]  # fmt: skip

    def say(text: str, author: str, **extra: Any) -> dict[str, Any]:
        body = {"text": text, "user_id": author, **extra}
        acks.append(ok(client.post(f"{url}/v1/channels/c/messages", json=body, headers=h)))
        return acks[-1]

    first = say("hi @bob and @carol.", "alice")
    say("@alice thanks", "bob", parent_id=first["message_id"])
    doomed = say("mail me at x@example.com @carol", "bob")
    say("no mentions here", "carol")
    acks.append(ok(client.patch(f"{url}/v1/channels/c/messages/{first['message_id']}", json={"text": "hi all"},
                                headers=h), 200))  # fmt: skip
    acks.append(ok(client.delete(f"{url}/v1/channels/c/messages/{doomed['message_id']}", headers=h), 200))
    acks.append(ok(client.post(f"{url}/v1/channels/c/messages/{first['message_id']}/reactions",
                               json={"emoji": "👍", "user_id": "carol"}, headers=h)))  # fmt: skip
    return tenant, acks


def views(client: httpx.Client, tenant: Tenant, acks: list[dict[str, Any]]) -> dict[str, Any]:
    """What the tenant reads once the read models hold every ack: the channel, its history both
    ways, the thread, the channel and history as of a middle position, and the events."""
    wait = {"min_position": max(a["position"] for a in acks)}
    base, h = f"{tenant.url}/v1/channels/c", tenant.headers()
    middle = f"pos:{acks[len(acks) // 2]['position']}"
    first = acks[1]["message_id"]
    found = {
        "channel": ok(client.get(base, params=wait, headers=h), 200),
        "newest": ok(client.get(f"{base}/messages", params=wait, headers=h), 200),
        "oldest": ok(client.get(f"{base}/messages", params={**wait, "after_seq": 0, "limit": 2}, headers=h), 200),
        "thread": ok(client.get(f"{base}/messages/{first}/thread", params=wait, headers=h), 200),
        "channel_then": ok(client.get(base, params={**wait, "as_of": middle}, headers=h), 200),
        "history_then": ok(client.get(f"{base}/messages", params={**wait, "as_of": middle}, headers=h), 200),
        "events": ok(client.get(f"{tenant.url}/v1/events", params={**wait, "limit": 1000}, headers=h), 200),
    }
    mentions = {m["text"]: m["mentions"] for m in found["history_then"]["messages"]}
    assert mentions["hi @bob and @carol."] == ["bob", "carol"], mentions
    return found


def v1_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """A ``MessagePosted`` payload as version 1 stored it: no ``mentions``."""
    return {k: v for k, v in payload.items() if k != "mentions"}


def caas(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "api.cli", *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def replayed(env: dict[str, str], tenant: Tenant) -> list[dict[str, Any]]:
    return [json.loads(line) for line in caas(env, "replay", "--tenant", tenant.tenant_id).splitlines()]


def check_replays(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
    """``caas replay`` shows the upcast shape: an old log replays exactly as a new one."""
    assert old == new
    posted = [e for e in old if e["type"] == "MessagePosted"]
    assert posted and all(e["schema_version"] == 2 and "mentions" in e["payload"] for e in posted)


def test_embedded_a_sqlite_log_of_v1_messages_replays_and_rebuilds_the_same_read_models(tmp_path: Path) -> None:
    new = Server(tmp_path / "v2", env=QUIET).start()
    try:
        with httpx.Client(timeout=30) as client:
            tenant, acks = fill(client, new.url)
            before = views(client, tenant, acks)
    finally:
        new.stop()
    old_dir = tmp_path / "v1"
    shutil.copytree(new.data_dir, old_dir)
    with sqlite3.connect(old_dir / "events.db") as db:  # the old JSON shape, as v1 wrote it
        rows = db.execute("SELECT position, payload FROM events WHERE type = 'MessagePosted'").fetchall()
        for position, payload in rows:
            db.execute("UPDATE events SET schema_version = 1, payload = ? WHERE position = ?",
                       (orjson.dumps(v1_payload(json.loads(payload))).decode(), position))  # fmt: skip
    assert len(rows) >= 4

    env = {"CAAS_BACKEND": "embedded", "CAAS_DATA_DIR": str(old_dir)}
    caas(env, "rebuild")
    old = Server(old_dir, env=QUIET).start()
    try:
        with httpx.Client(timeout=30) as client:
            assert views(client, Tenant(old.url, tenant.tenant_id, tenant.api_key), acks) == before
    finally:
        old.stop()
    check_replays(replayed(env, tenant), replayed({**env, "CAAS_DATA_DIR": str(new.data_dir)}, tenant))


async def copy_as_v1(bootstrap: str, source: str, target: str) -> int:
    """Copy the events topic ``source`` (one partition) record by record into ``target``, each
    ``MessagePosted`` rewritten in the v1 shape: the same offsets, so the same positions."""
    tp = TopicPartition(source, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    rewritten = 0
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, 0)
        while await consumer.position(tp) < end:
            for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                data = orjson.loads(record.value)
                if data["type"] == "MessagePosted":
                    data.update(schema_version=1, payload=v1_payload(data["payload"]))
                    rewritten += 1
                await producer.send_and_wait(target, orjson.dumps(data), key=record.key, partition=0)
    finally:
        await producer.stop()
        await consumer.stop()
    return rewritten


@pytest.mark.kafka
def test_kafka_a_topic_of_v1_messages_replays_and_rebuilds_the_same_read_models(tmp_path: Path) -> None:
    new = Cluster(tmp_path / "v2", env=QUIET).start()
    try:
        with httpx.Client(timeout=30) as client:
            tenant, acks = fill(client, new.nodes[0].url)
            before = views(client, tenant, acks)
    finally:
        new.stop()
    old = Cluster(tmp_path / "v1", env=QUIET)
    settings = old.settings()
    bootstrap = settings["CAAS_KAFKA_BOOTSTRAP"]

    async def prepare() -> int:
        await ensure_topics(bootstrap, settings["CAAS_KAFKA_TOPIC_PREFIX"], 1)
        names = topic_names(settings["CAAS_KAFKA_TOPIC_PREFIX"])
        return await copy_as_v1(bootstrap, topic_names(new.settings()["CAAS_KAFKA_TOPIC_PREFIX"])["events"],
                                names["events"])  # fmt: skip

    assert asyncio.run(prepare()) >= 4
    with MongoClient(settings["CAAS_MONGO_URL"]) as mongo:  # the log's data keys go with it (docs/erasure.md)
        keys = list(mongo[new.settings()["CAAS_MONGO_DATABASE"]]["data_keys"].find())
        mongo[settings["CAAS_MONGO_DATABASE"]]["data_keys"].insert_many(keys)
    old.start()  # its worker folds the old topic into a fresh database: a rebuild from the v1 log
    try:
        with httpx.Client(timeout=30) as client:
            assert views(client, Tenant(old.nodes[0].url, tenant.tenant_id, tenant.api_key), acks) == before
    finally:
        old.stop()
    work = {"CAAS_DATA_DIR": str(tmp_path / "replay")}
    check_replays(replayed({**settings, **work}, tenant), replayed({**new.settings(), **work}, tenant))
