"""The erasure scenario both backends run (tests/e2e/test_erasure.py, tests/distributed/test_erasure.py):
a user with a name, metadata and messages, erased; and the server-blind scan of raw bytes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import bson
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo import MongoClient
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support import Server, Tenant, bearer, new_tenant


def ok(r: httpx.Response, status: tuple[int, ...] = (200, 201)) -> dict[str, Any]:
    assert r.status_code in status, f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}"
    data: dict[str, Any] = r.json()
    return data


@dataclass
class Chat:
    """A tenant where ``alice`` (to be erased) and ``bob`` talk in ``general``; every personal value
    is unique to the run, so a scan of raw bytes finds exactly these."""

    url: str
    tenant: Tenant
    tokens: dict[str, str]
    alice: list[str] = field(default_factory=list)  # alice's name, metadata values and texts
    bob: list[str] = field(default_factory=list)  # what must stay readable
    acks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def secrets(self) -> list[bytes]:
        return [s.encode() for s in self.alice]


def fill(client: httpx.Client, url: str) -> Chat:
    run = uuid.uuid4().hex[:10]
    tenant = new_tenant(client, url, f"erasure-{run}")
    chat = Chat(url, tenant, {})
    name, email, city = f"Alice Liddell {run}", f"alice-{run}@example.com", f"Wonderland-{run}"
    chat.alice += [name, email, city]
    ok(client.put(f"{url}/v1/users/alice", json={"name": f"Alice {run}-old", "metadata": {"email": email}},
                  headers=tenant.headers()))  # fmt: skip
    chat.alice.append(f"Alice {run}-old")
    ok(client.put(f"{url}/v1/users/alice", json={"name": name, "metadata": {"email": email, "city": city}},
                  headers=tenant.headers()))  # fmt: skip
    chat.bob.append(f"Bob Builder {run}")
    ok(client.put(f"{url}/v1/users/bob", json={"name": chat.bob[0]}, headers=tenant.headers()))
    for uid in ("alice", "bob"):
        chat.tokens[uid] = ok(client.post(f"{url}/v1/users/{uid}/tokens", json={}, headers=tenant.headers()))["token"]
    a, b = bearer(chat.tokens["alice"]), bearer(chat.tokens["bob"])
    ok(client.post(f"{url}/v1/channels", json={"channel_id": "general", "name": "General", "members": ["bob"]},
                   headers=a))  # fmt: skip
    messages = "/v1/channels/general/messages"
    mentioned = f"diagnosis{run}"  # any word after an "@" is a mention, and says as much as the text
    chat.alice.append(mentioned)
    for i in range(3):
        text = f"alice says secret {i} {run}" + (f" to @bob: @{mentioned}" if i == 1 else "")
        chat.alice.append(text)
        body: dict[str, Any] = {"text": text}
        if i == 0:
            chat.alice.append(f"passport-{run}.pdf")
            body["attachments"] = [
                {"type": "file", "name": f"passport-{run}.pdf", "url": f"https://files.example/{run}"}
            ]
        chat.acks.append(ok(client.post(f"{url}{messages}", json=body, headers=a)))
    edited = f"alice edited secret {run}"
    chat.alice.append(edited)
    first = chat.acks[0]["message_id"]
    chat.acks.append(ok(client.patch(f"{url}{messages}/{first}", json={"text": edited}, headers=a)))
    bob_text = f"bob says hello {run}"
    chat.bob.append(bob_text)
    chat.acks.append(ok(client.post(f"{url}{messages}", json={"text": bob_text}, headers=b)))
    chat.acks.append(ok(client.post(f"{url}{messages}", json={"text": "reply", "parent_id": first}, headers=b)))
    return chat


def head(chat: Chat) -> dict[str, int]:
    return {"min_position": max(a["position"] for a in chat.acks)}


def erase(client: httpx.Client, chat: Chat) -> dict[str, Any]:
    url, headers = chat.url, chat.tenant.headers()
    assert client.delete(f"{url}/v1/users/alice", headers=headers).status_code == 422  # not without ?erase=true
    first = ok(client.delete(f"{url}/v1/users/alice", params={"erase": "true"}, headers=headers), (200,))
    again = ok(client.delete(f"{url}/v1/users/alice", params={"erase": "true"}, headers=headers), (200,))
    assert again["event_id"] == first["event_id"]  # idempotent: the first erasure, nothing new
    refused = client.put(f"{url}/v1/users/alice", json={"name": "back again"}, headers=headers)
    assert refused.status_code == 410 and refused.json()["error"]["code"] == "user_erased", refused.text
    chat.acks.append(first)
    return first


def check_reads(client: httpx.Client, chat: Chat) -> None:
    """Every read of the API shows alice erased and bob as he was."""
    url, headers, wait = chat.url, chat.tenant.headers(), head(chat)
    users = {u["user_id"]: u for u in ok(client.get(f"{url}/v1/users", params=wait, headers=headers))["users"]}
    assert users["alice"]["name"] == "" and users["alice"]["metadata"] == {} and users["alice"]["erased"] is True
    assert users["bob"]["name"] == chat.bob[0] and not users["bob"].get("erased")
    page = ok(client.get(f"{url}/v1/channels/general/messages", params={**wait, "limit": 100}, headers=headers))
    by_author: dict[str, list[dict[str, Any]]] = {}
    for message in page["messages"]:
        by_author.setdefault(message["author_id"], []).append(message)
    assert len(by_author["alice"]) == 3
    assert all(m["text"] == "" and m["attachments"] == [] and m["erased"] is True for m in by_author["alice"])
    assert all(m["mentions"] == [] for m in by_author["alice"])
    assert chat.bob[1] in {m["text"] for m in by_author["bob"]}
    assert not any(m.get("erased") for m in by_author["bob"])
    events = ok(client.get(f"{url}/v1/events", params={**wait, "limit": 1000}, headers=headers))["events"]
    check_events(events, chat)


def check_events(events: list[dict[str, Any]], chat: Chat) -> None:
    """The log as the API, replay or export shows it: alice's personal fields erased, bob's kept."""
    alice = [e for e in events if e["stream"] == "user:alice" and e["type"] in ("UserRegistered", "UserUpdated")]
    assert len(alice) == 2 and all(e["payload"]["name"] == "" and e["payload"]["erased"] for e in alice), alice
    # (her socket, closed by the erasure, may record her going offline after it)
    assert [e["type"] for e in events if e["stream"] == "user:alice" and e["type"] != "PresenceChanged"][-1] == (
        "UserErased"
    )
    posted = [e for e in events if e["type"] in ("MessagePosted", "MessageEdited")]
    mine = [e for e in posted if e["payload"].get("author_id") == "alice"]
    assert len(mine) == 4 and all(e["payload"]["text"] == "" and e["payload"]["erased"] for e in mine), mine
    assert chat.bob[1] in {e["payload"]["text"] for e in posted}
    text = json.dumps(events)
    assert not any(s in text for s in chat.alice), "an erased value is shown"
    assert "sealed" not in text  # boxes are opened (or erased), never shown


async def watch_erasure(ws_url: str, chat: Chat, erase_now: Any) -> dict[str, Any]:
    """Subscribe bob and alice to general, erase alice, and return the frame that tells bob;
    alice's socket is closed (and a new one refused): an erased user can do nothing."""
    async with (
        connect(f"{ws_url}?token={chat.tokens['bob']}", proxy=None, open_timeout=20) as ws,
        connect(f"{ws_url}?token={chat.tokens['alice']}", proxy=None, open_timeout=20) as mine,
    ):
        for socket in (ws, mine):
            await socket.send(json.dumps({"type": "subscribe", "channel_id": "general"}))
            while json.loads(await asyncio.wait_for(socket.recv(), 20))["type"] != "subscribed":
                pass
        await asyncio.to_thread(erase_now)
        await closed_as_erased(mine)
        async with connect(f"{ws_url}?token={chat.tokens['alice']}", proxy=None, open_timeout=20) as again:
            await closed_as_erased(again)
        while True:
            frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if frame["type"] == "user_erased":
                return frame


async def closed_as_erased(ws: Any) -> None:
    """``ws`` ends with an error frame saying its user was erased, then a policy-violation close."""
    errors = []
    with contextlib.suppress(ConnectionClosed):
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if frame["type"] == "error":
                errors.append(frame)
    assert errors and errors[-1]["code"] == "unauthenticated" and "erased" in errors[-1]["message"], errors
    assert ws.close_code == 1008, ws.close_code


def refused_as_erased(r: httpx.Response) -> None:
    assert r.status_code == 410 and r.json()["error"]["code"] == "user_erased", r.text


def check_erased_user_acts_no_more(client: httpx.Client, chat: Chat) -> None:
    """alice gets no token, and neither her token nor the tenant key acting for her is obeyed."""
    url, headers = chat.url, chat.tenant.headers()
    refused_as_erased(client.post(f"{url}/v1/users/alice/tokens", json={}, headers=headers))
    messages = f"{url}/v1/channels/general/messages"
    refused_as_erased(client.post(messages, json={"text": "after erasure"}, headers=bearer(chat.tokens["alice"])))
    refused_as_erased(client.get(messages, headers=bearer(chat.tokens["alice"])))
    refused_as_erased(client.post(messages, json={"text": "as alice", "user_id": "alice"}, headers=headers))
    ok(client.post(messages, json={"text": "bob still talks"}, headers=bearer(chat.tokens["bob"])))


async def history(ws_url: str, chat: Chat) -> list[dict[str, Any]]:
    """The events of general's history replayed over a websocket (since seq 0), up to its head."""
    async with connect(f"{ws_url}?token={chat.tokens['bob']}", proxy=None, open_timeout=20) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channel_id": "general", "since_seq": 0}))
        frames: list[dict[str, Any]] = []
        head_seq = None
        while head_seq is None or not frames or frames[-1]["seq"] < head_seq:
            frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if frame["type"] == "subscribed":
                head_seq = frame["head_seq"]
            elif frame["type"] == "event":
                frames.append(frame)
        return [f["event"] for f in frames]


def as_of(client: httpx.Client, chat: Chat, position: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """general's messages and the channel itself as of ``position`` (time travel, the tenant key)."""
    params = {**head(chat), "as_of": f"pos:{position}", "limit": 100}
    page = ok(client.get(f"{chat.url}/v1/channels/general/messages", params=params, headers=chat.tenant.headers()))
    params.pop("limit")
    channel = ok(client.get(f"{chat.url}/v1/channels/general", params=params, headers=chat.tenant.headers()))
    return page["messages"], channel


def alices_texts_as_of(client: httpx.Client, chat: Chat) -> list[str]:
    """alice's texts in general as of the position of her last post (before her erasure)."""
    position = chat.acks[2]["position"]
    messages, channel = as_of(client, chat, position)
    last = channel.get("last_message") or {}
    return [m["text"] for m in messages if m["author_id"] == "alice"] + (
        [last["text"]] if last.get("author_id") == "alice" else []
    )


def erase_and_check(client: httpx.Client, ws_url: str, chat: Chat) -> None:
    """Erase alice while bob watches general: bob is told, and every read, general's past
    (``as_of``, asked before the erasure too) and general's history replayed over a websocket,
    show alice erased."""
    assert any(alices_texts_as_of(client, chat))  # the node now holds general's past, alice's texts in it
    frame = asyncio.run(watch_erasure(ws_url, chat, lambda: erase(client, chat)))
    assert frame == {"type": "user_erased", "user_id": "alice"}
    check_erased_user_acts_no_more(client, chat)
    check_reads(client, chat)
    assert not any(alices_texts_as_of(client, chat)), "time travel still shows alice's texts"
    replayed = asyncio.run(history(ws_url, chat))
    mine = [e for e in replayed if e["payload"].get("author_id") == "alice"]
    assert len(mine) == 4 and all(e["payload"]["text"] == "" for e in mine), mine
    assert not found_in([("history", json.dumps(replayed).encode())], chat.secrets)


def found_in(blobs: Iterable[tuple[str, bytes]], secrets: list[bytes]) -> list[tuple[str, str]]:
    """``(where, secret)`` for each secret found in clear in any blob."""
    return [(where, s.decode()) for where, blob in blobs for s in secrets if s in blob]


async def topic_records(bootstrap: str, prefix: str) -> list[tuple[str, bytes]]:
    """Every record of every topic whose name starts with ``prefix``: key, value and headers, raw."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        metadata = await consumer._client.fetch_all_metadata()  # every topic's partitions (aiokafka's own client)
        topics = sorted(t for t in metadata.topics() if t.startswith(prefix))
        parts = [TopicPartition(t, p) for t in topics for p in sorted(metadata.partitions_for_topic(t) or ())]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        found: list[tuple[str, bytes]] = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=500, max_records=5000)).items():
                for r in records:
                    headers = b"".join(k.encode() + v for k, v in r.headers)
                    found.append((tp.topic, (r.key or b"") + (r.value or b"") + headers))
        assert {t for t in topics if t.endswith(("commands", "events"))}, topics  # the scan sees the log
        return found
    finally:
        await consumer.stop()


def collections(url: str, database: str) -> list[tuple[str, bytes]]:
    """Every document of every collection of ``database``, as BSON."""
    with MongoClient(url) as mongo:
        db = mongo[database]
        return [(name, bson.encode(doc)) for name in db.list_collection_names() for doc in db[name].find()]


def stored(server: Server) -> list[tuple[str, bytes]]:
    """Every byte a server keeps, raw: each file of an embedded server's data dir (the SQLite log,
    read models, key store and their write-ahead logs), or every record of a Kafka node's topics and
    every document of its MongoDB database."""
    env = server.env
    if env.get("CAAS_BACKEND") != "kafka":
        return [(p.name, p.read_bytes()) for p in sorted(server.data_dir.iterdir()) if p.is_file()]
    records = asyncio.run(topic_records(env["CAAS_KAFKA_BOOTSTRAP"], env["CAAS_KAFKA_TOPIC_PREFIX"]))
    return records + collections(env["CAAS_MONGO_URL"], env["CAAS_MONGO_DATABASE"])


def check_channel_hold_refuses_erasure(client: httpx.Client, url: str) -> None:
    """A legal hold on a channel refuses the erasure of whoever is or was a member of it (409
    legal_hold: its texts are sealed under its authors' keys too); released, erasure proceeds."""
    run = uuid.uuid4().hex[:10]
    tenant = new_tenant(client, url, f"erasure-hold-{run}")
    headers = tenant.headers()
    for uid in ("carol", "dave"):
        ok(client.put(f"{url}/v1/users/{uid}", json={"name": uid}, headers=headers))
    ok(client.post(f"{url}/v1/channels", json={"channel_id": "case", "name": "Case", "members": ["carol", "dave"]},
                   headers=headers))  # fmt: skip
    evidence = f"evidence under hold {run}"
    posted = ok(client.post(f"{url}/v1/channels/case/messages", json={"text": evidence, "user_id": "carol"},
                            headers=headers))  # fmt: skip
    ok(client.delete(f"{url}/v1/channels/case/members/dave", headers=headers), (200, 204))  # dave was a member
    ok(client.post(f"{url}/v1/channels/case/legal-hold", json={"reason": "case 7"}, headers=headers))
    for uid in ("carol", "dave"):
        refused = client.delete(f"{url}/v1/users/{uid}", params={"erase": "true"}, headers=headers)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "legal_hold", refused.text
    wait = {"min_position": posted["position"]}
    page = ok(client.get(f"{url}/v1/channels/case/messages", params=wait, headers=headers))
    assert evidence in {m["text"] for m in page["messages"]}, page
    ok(client.request("DELETE", f"{url}/v1/channels/case/legal-hold", json={"reason": "closed"}, headers=headers))
    ok(client.delete(f"{url}/v1/users/carol", params={"erase": "true"}, headers=headers), (200,))
    page = ok(client.get(f"{url}/v1/channels/case/messages", headers=headers))
    assert [m["text"] for m in page["messages"]] == [""], page
