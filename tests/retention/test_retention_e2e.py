"""Retention and legal hold end to end, on both backends (docs/retention.md).

The ``aged`` server's retention runs three days ahead: a retention of 2 days hides what a test
posts, one of 5 days keeps it.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from adapters.mongo_keys import MongoKeyStore
from adapters.sqlite_keys import SqliteKeyStore
from commands.keys import KeyStore, StoredKey, channel_day_key_id
from tests.security.common import WAIT, subscribe, until_pong, ws_connect
from tests.support import Server, Tenant, bearer, new_tenant


def ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code in (200, 201), r.text
    data: dict[str, Any] = r.json()
    return data


def channel(client: httpx.Client, tenant: Tenant, cid: str, members: list[str]) -> None:
    ok(client.post(f"{tenant.url}/v1/channels", json={"channel_id": cid, "name": cid, "members": members},
                   headers=tenant.headers()))  # fmt: skip


def post(client: httpx.Client, tenant: Tenant, cid: str, token: str, text: str, **extra: Any) -> dict[str, Any]:
    return ok(client.post(f"{tenant.url}/v1/channels/{cid}/messages", json={"text": text, **extra},
                          headers=bearer(token)))  # fmt: skip


def texts(client: httpx.Client, tenant: Tenant, cid: str, position: int, **params: Any) -> list[str]:
    r = client.get(f"{tenant.url}/v1/channels/{cid}/messages", params={"min_position": position, **params},
                   headers=tenant.headers(), timeout=WAIT)  # fmt: skip
    return [m["text"] for m in ok(r)["messages"]]


async def replayed_texts(server: Server, token: str, cid: str, head: int) -> dict[int, dict[str, Any]]:
    """The payloads of the channel's history as a websocket replay (since_seq 0) shows them."""
    async with ws_connect(server.ws_url, token) as ws:
        await subscribe(ws, cid, since=0)
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["seq"] < head:
            frames.append(json.loads(await ws.recv()))
        frames += await until_pong(ws)  # the sweeper may shred the day meanwhile: its event is live
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1)), "every seq once: resume stays gapless"
    assert {f["event"]["type"] for f in frames[head:]} <= {"ChannelDayShredded"}
    return {f["seq"]: f["event"] for f in frames}


async def test_messages_past_retention_disappear_from_every_read(aged: Server, client: httpx.Client) -> None:
    tenant = new_tenant(client, aged.url)
    alice, bob = tenant.user(client, "alice"), tenant.user(client, "bob")
    channel(client, tenant, "old", ["alice", "bob"])
    channel(client, tenant, "kept", ["alice", "bob"])
    first = post(client, tenant, "old", alice, "old news")
    reply = post(client, tenant, "old", bob, "old reply", parent_id=first["message_id"])
    post(client, tenant, "kept", alice, "kept news")

    r = client.put(f"{tenant.url}/v1/retention", json={"days": 2}, headers=tenant.headers())
    assert ok(r)["days"] == 2
    last = ok(client.put(f"{tenant.url}/v1/channels/kept/retention", json={"days": 5}, headers=tenant.headers()))
    position = last["position"]

    assert texts(client, tenant, "old", position) == []
    assert texts(client, tenant, "kept", position) == ["kept news"], "the channel's override wins"
    thread = ok(client.get(f"{tenant.url}/v1/channels/old/messages/{first['message_id']}/thread",
                           headers=bearer(bob)))  # fmt: skip
    assert thread["messages"] == []
    shown = ok(client.get(f"{tenant.url}/v1/channels/old", headers=bearer(bob)))
    assert shown["last_message"] is None and shown["unread_count"] == 0
    listed = {c["channel_id"]: c for c in ok(client.get(f"{tenant.url}/v1/channels", headers=bearer(bob)))["channels"]}
    assert listed["old"]["last_message"] is None
    assert listed["kept"]["last_message"]["text"] == "kept news"
    # the channel's past (as_of) is judged by today's retention too
    assert texts(client, tenant, "old", position, as_of=f"pos:{position}") == []
    assert texts(client, tenant, "kept", position, as_of=f"pos:{position}") == ["kept news"]

    r = client.get(f"{tenant.url}/v1/events", params={"types": "MessagePosted", "min_position": position},
                   headers=tenant.headers())  # fmt: skip
    posted = {e["payload"]["message_id"]: e["payload"] for e in ok(r)["events"]}
    assert posted[first["message_id"]]["text"] == "" and posted[first["message_id"]]["redacted"] == "expired"
    assert posted[reply["message_id"]]["redacted"] == "expired"
    assert [p["text"] for p in posted.values() if "redacted" not in p] == ["kept news"]

    history = await replayed_texts(aged, bob, "old", reply["seq"])
    assert history[first["seq"]]["payload"]["text"] == "" and history[first["seq"]]["payload"]["redacted"] == "expired"
    assert "old news" not in json.dumps(history) and "old reply" not in json.dumps(history)

    policy = ok(client.get(f"{tenant.url}/v1/channels/old/retention", headers=tenant.headers()))
    assert policy["days"] is None and policy["effective_days"] == 2 and policy["hidden_before"] is not None
    assert ok(client.get(f"{tenant.url}/v1/retention", headers=tenant.headers())) == {"days": 2}


async def test_a_legal_hold_on_the_channel_or_a_member_suspends_retention(aged: Server, client: httpx.Client) -> None:
    tenant = new_tenant(client, aged.url)
    tokens = {u: tenant.user(client, u) for u in ("alice", "bob", "carol")}
    channel(client, tenant, "held", ["alice", "bob"])
    channel(client, tenant, "member-held", ["alice", "carol"])
    channel(client, tenant, "free", ["alice", "bob"])
    hold = {"reason": "litigation 42"}
    ok(client.post(f"{tenant.url}/v1/channels/held/legal-hold", json=hold, headers=tenant.headers()))
    ok(client.post(f"{tenant.url}/v1/users/carol/legal-hold", json=hold, headers=tenant.headers()))
    for cid in ("held", "member-held", "free"):
        post(client, tenant, cid, tokens["alice"], f"in {cid}")
    position = ok(client.put(f"{tenant.url}/v1/retention", json={"days": 2}, headers=tenant.headers()))["position"]

    assert texts(client, tenant, "held", position) == ["in held"]
    assert texts(client, tenant, "member-held", position) == ["in member-held"]
    assert texts(client, tenant, "free", position) == []
    policy = ok(client.get(f"{tenant.url}/v1/channels/member-held/retention", headers=tenant.headers()))
    assert policy["legal_hold"] is False and policy["held"] is True and policy["hidden_before"] is None

    # placing a hold again changes nothing; releasing it lets retention apply
    again = client.post(f"{tenant.url}/v1/channels/held/legal-hold", json=hold, headers=tenant.headers())
    assert again.status_code == 200, again.text
    released = client.request("DELETE", f"{tenant.url}/v1/channels/held/legal-hold",
                              json={"reason": "settled"}, headers=tenant.headers())  # fmt: skip
    assert ok(released)["legal_hold"] is False
    assert texts(client, tenant, "held", released.json()["position"]) == []
    r = client.request("DELETE", f"{tenant.url}/v1/channels/held/legal-hold", headers=tenant.headers())
    assert r.status_code == 404 and r.json()["error"]["details"]["rule"] == "legal_hold_not_found"
    # a held user cannot be erased; once released they can
    r = client.delete(f"{tenant.url}/v1/users/carol", params={"erase": "true"}, headers=tenant.headers())
    assert r.status_code == 409 and r.json()["error"]["code"] == "legal_hold", r.text
    released = client.request("DELETE", f"{tenant.url}/v1/users/carol/legal-hold", headers=tenant.headers())
    assert texts(client, tenant, "member-held", ok(released)["position"]) == []
    ok(client.delete(f"{tenant.url}/v1/users/carol", params={"erase": "true"}, headers=tenant.headers()))


def test_retention_and_holds_refuse_bad_input_and_other_credentials(aged: Server, client: httpx.Client) -> None:
    tenant = new_tenant(client, aged.url)
    alice = tenant.user(client, "alice")
    channel(client, tenant, "c1", ["alice"])
    for days in (0, -1, 36_501, "7", 1.5):
        r = client.put(f"{tenant.url}/v1/retention", json={"days": days}, headers=tenant.headers())
        assert r.status_code == 422, (days, r.text)
    assert client.put(f"{tenant.url}/v1/retention", json={}, headers=tenant.headers()).status_code == 422
    r = client.post(f"{tenant.url}/v1/channels/c1/legal-hold", json={"reason": "  "}, headers=tenant.headers())
    assert r.status_code == 422, r.text
    r = client.post(f"{tenant.url}/v1/channels/nope/legal-hold", json={"reason": "x"}, headers=tenant.headers())
    assert r.status_code == 404 and r.json()["error"]["details"]["rule"] == "channel_not_found"
    r = client.post(f"{tenant.url}/v1/users/nobody/legal-hold", json={"reason": "x"}, headers=tenant.headers())
    assert r.status_code == 404 and r.json()["error"]["details"]["rule"] == "user_not_found"
    for method, path in (("PUT", "/v1/retention"), ("PUT", "/v1/channels/c1/retention"),
                         ("POST", "/v1/channels/c1/legal-hold"), ("POST", "/v1/users/alice/legal-hold")):  # fmt: skip
        r = client.request(method, f"{tenant.url}{path}", json={"days": 3, "reason": "x"}, headers=bearer(alice))
        assert r.status_code == 403 and r.json()["error"]["details"]["rule"] == "wrong_credential", path
    # a channel's override of null follows the tenant's default again
    ok(client.put(f"{tenant.url}/v1/retention", json={"days": 30}, headers=tenant.headers()))
    ok(client.put(f"{tenant.url}/v1/channels/c1/retention", json={"days": 7}, headers=tenant.headers()))
    ok(client.put(f"{tenant.url}/v1/channels/c1/retention", json={"days": None}, headers=tenant.headers()))
    policy = ok(client.get(f"{tenant.url}/v1/channels/c1/retention", headers=tenant.headers()))
    assert policy["days"] is None and policy["effective_days"] == 30


def key_store(server: Server) -> KeyStore:
    """The server's own key store (commands/keys.py), opened beside it."""
    if server.env.get("CAAS_BACKEND") == "kafka":
        return MongoKeyStore(server.env["CAAS_MONGO_URL"], server.env["CAAS_MONGO_DATABASE"])
    return SqliteKeyStore(server.data_dir / "keys.db")


async def test_the_sweeper_destroys_the_due_day_keys_only_and_records_them(aged: Server, client: httpx.Client) -> None:
    tenant = new_tenant(client, aged.url)
    alice = tenant.user(client, "alice")
    for cid in ("held", "long", "zz-due"):  # the sweeper goes through a tenant's channels in id order
        channel(client, tenant, cid, ["alice"])
        posted = post(client, tenant, cid, alice, f"in {cid}")
    past = {"as_of": f"pos:{posted['position']}"}  # zz-due's past, now kept by the node (time travel)
    assert texts(client, tenant, "zz-due", posted["position"], **past) == ["in zz-due"]
    ok(client.post(f"{tenant.url}/v1/channels/held/legal-hold", json={"reason": "case"}, headers=tenant.headers()))
    ok(client.put(f"{tenant.url}/v1/channels/long/retention", json={"days": 5}, headers=tenant.headers()))
    ok(client.put(f"{tenant.url}/v1/retention", json={"days": 2}, headers=tenant.headers()))
    today = datetime.now(UTC).date()
    later = (today + timedelta(days=2)).isoformat()
    store = key_store(aged)
    await store.start()
    try:
        # the keys posting makes (or would make, before sealing); zz-due's last, so any pass that
        # sees them has judged the other channels' keys first
        for cid, day in (("held", today.isoformat()), ("long", today.isoformat()), ("zz-due", later),
                         ("zz-due", today.isoformat())):  # fmt: skip
            await store.create(
                StoredKey(tenant.tenant_id, channel_day_key_id(cid, day), "m", b"w", "2026-12-03T00:00:00Z")
            )
        deadline = time.monotonic() + 60
        while True:
            due = ok(client.get(f"{tenant.url}/v1/channels/zz-due/retention", headers=tenant.headers()))
            if due["shredded_days"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert due["shredded_days"] == [today.isoformat()]
        for cid in ("held", "long"):
            kept = ok(client.get(f"{tenant.url}/v1/channels/{cid}/retention", headers=tenant.headers()))
            assert kept["shredded_days"] == [], cid
        stored = {k.key_id: k for k in await store.list_keys(tenant.tenant_id, prefix="chday:")}
        assert {key for key, k in stored.items() if k.destroyed} == {channel_day_key_id("zz-due", today.isoformat())}
        assert len(stored) == 4
    finally:
        await store.close()
    # with retention lifted the messages show again, but the shredded day's text is gone for good
    lifted = ok(client.put(f"{tenant.url}/v1/retention", json={"days": None}, headers=tenant.headers()))
    assert texts(client, tenant, "zz-due", lifted["position"], **past) == [""], "time travel kept the shredded text"
    # the sweeper overwrites the read model's copy once the projection has applied ChannelDayShredded
    deadline = time.monotonic() + 30
    while True:
        r = client.get(f"{tenant.url}/v1/channels/zz-due/messages", params={"min_position": lifted["position"]},
                       headers=tenant.headers())  # fmt: skip
        [shredded] = ok(r)["messages"]
        if shredded.get("expired") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert shredded["text"] == "" and shredded["expired"] is True, shredded
    assert texts(client, tenant, "held", lifted["position"]) == ["in held"]
    entries = audit_shredded(client, tenant)
    deadline = time.monotonic() + 30
    while not entries and time.monotonic() < deadline:  # the audit model follows the log
        await asyncio.sleep(0.1)
        entries = audit_shredded(client, tenant)
    assert [(e["actor"], e["target"], e["details"]) for e in entries] == [
        ("system:retention", "channel:zz-due", {"day": today.isoformat()})
    ]


def audit_shredded(client: httpx.Client, tenant: Tenant) -> list[dict[str, Any]]:
    r = client.get(f"{tenant.url}/v1/audit", params={"action": "ChannelDayShredded"}, headers=tenant.headers())
    entries: list[dict[str, Any]] = ok(r)["entries"]
    return entries
