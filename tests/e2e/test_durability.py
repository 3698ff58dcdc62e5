"""Acknowledged means durable: ``kill -9`` the server mid-stream, restart it on the same data dir."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ADMIN, Server, Tenant, bearer, new_tenant


@pytest.fixture(scope="module")
def durable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of our own: these tests kill it."""
    srv = Server(Path(tmp_path_factory.mktemp("caas-durable")) / "data").start()
    yield srv
    srv.stop()


def ok(r: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert r.status_code == status, f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}"
    data: dict[str, Any] = r.json()
    return data


def all_events(client: httpx.Client, tenant: Tenant, **params: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        r = client.get(
            f"{tenant.url}/v1/events",
            params={"after_position": after, "limit": 1000, **params},
            headers=tenant.headers(),
        )
        page = ok(r, 200)
        events += page["events"]
        if page["next_after_position"] is None:
            return events
        after = page["next_after_position"]


def timeline(client: httpx.Client, tenant: Tenant, cid: str, min_position: int) -> list[dict[str, Any]]:
    """The whole channel from the read model, oldest first, once it has applied ``min_position``."""
    messages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"after_seq": 0, "limit": 200, "min_position": min_position}
    while True:
        page = ok(client.get(f"{tenant.url}/v1/channels/{cid}/messages", params=params, headers=tenant.headers()), 200)
        messages += page["messages"]
        if page["next_after_seq"] is None:
            return messages
        params = {**params, "after_seq": page["next_after_seq"]}


def restart(srv: Server) -> None:
    srv.kill()
    srv.start()


async def test_every_acknowledged_message_survives_kill_9_exactly_once(durable: Server, client: httpx.Client) -> None:
    tenant = new_tenant(client, durable.url)
    tokens = {u: tenant.user(client, u) for u in ("alice", "bob", "carol")}
    ok(
        client.post(
            f"{tenant.url}/v1/channels",
            json={"channel_id": "c", "name": "c", "members": ["bob", "carol"]},
            headers=bearer(tokens["alice"]),
        )
    )
    acked: dict[str, dict[str, Any]] = {}  # text -> the 201 answer
    unknown: list[str] = []  # in flight when the server died: may or may not have been recorded
    killed = asyncio.Event()

    async def poster(ac: httpx.AsyncClient, who: str, tag: str) -> None:
        for i in range(10_000):
            text = f"{tag}-{i}"
            try:
                r = await ac.post(
                    f"{tenant.url}/v1/channels/c/messages", json={"text": text}, headers=bearer(tokens[who])
                )
            except httpx.TransportError:
                unknown.append(text)
                return
            if killed.is_set() and r.status_code != 201:
                unknown.append(text)
                return
            assert r.status_code == 201, r.text
            acked[text] = r.json()

    async def killer() -> None:
        while len(acked) < 200:
            await asyncio.sleep(0.005)
        killed.set()
        durable.kill()  # kill -9 while the posters are in full flow

    async with httpx.AsyncClient(timeout=30) as ac:
        await asyncio.wait_for(
            asyncio.gather(killer(), *(poster(ac, who, f"{who}{k}") for k in range(2) for who in tokens)), 120
        )
    assert len(acked) >= 200
    durable.start()

    events = all_events(client, tenant)
    channel = [e for e in events if e["stream"] == "channel:c"]
    assert [e["seq"] for e in channel] == list(range(1, len(channel) + 1)), "channel seqs must stay gapless"
    posted = Counter(e["payload"]["text"] for e in channel if e["type"] == "MessagePosted")
    missing = [text for text in acked if posted[text] != 1]
    assert not missing, f"{len(missing)} acknowledged messages lost or duplicated, e.g. {missing[:3]}"
    assert all(count == 1 for count in posted.values()), "a message was recorded twice"
    assert set(posted) <= set(acked) | set(unknown)
    by_text = {e["payload"]["text"]: e for e in channel if e["type"] == "MessagePosted"}
    for text, answer in acked.items():
        recorded = by_text[text]
        assert (recorded["event_id"], recorded["seq"], recorded["position"]) == (
            answer["event_id"],
            answer["seq"],
            answer["position"],
        )
    # the read model catches up with everything the log holds
    head = max(e["position"] for e in events)
    messages = timeline(client, tenant, "c", head)
    assert Counter(m["text"] for m in messages) == posted
    assert [m["seq"] for m in messages] == sorted(e["seq"] for e in channel if e["type"] == "MessagePosted")
    # and the channel carries on where it stopped
    after = ok(
        client.post(
            f"{tenant.url}/v1/channels/c/messages", json={"text": "after the crash"}, headers=bearer(tokens["bob"])
        )
    )
    assert after["seq"] == len(channel) + 1


def test_tenants_keys_tokens_and_idempotency_keys_survive_a_restart(durable: Server, client: httpx.Client) -> None:
    tenant = new_tenant(client, durable.url, "keeper")
    token = tenant.user(client, "alice")
    spare = ok(client.post(f"{tenant.url}/v1/api-keys", json={"name": "spare"}, headers=tenant.headers()))
    revoked = ok(client.post(f"{tenant.url}/v1/api-keys", json={"name": "doomed"}, headers=tenant.headers()))
    ok(client.delete(f"{tenant.url}/v1/api-keys/{revoked['key_id']}", headers=tenant.headers()), 200)
    ok(client.post(f"{tenant.url}/v1/channels", json={"channel_id": "c", "name": "c"}, headers=bearer(token)))
    first = ok(
        client.post(
            f"{tenant.url}/v1/channels/c/messages",
            json={"text": "once"},
            headers={**bearer(token), "Idempotency-Key": "k1"},
        )
    )
    long_lived = ok(
        client.post(f"{tenant.url}/v1/users/alice/tokens", json={"ttl_seconds": 86400}, headers=tenant.headers())
    )["token"]

    restart(durable)

    for key in (tenant.api_key, spare["api_key"]):
        ok(client.get(f"{tenant.url}/v1/events", headers=bearer(key)), 200)
    r = client.get(f"{tenant.url}/v1/events", headers=bearer(revoked["api_key"]))
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    for user_token in (token, long_lived):
        channels = ok(client.get(f"{tenant.url}/v1/channels", headers=bearer(user_token)), 200)["channels"]
        assert [c["channel_id"] for c in channels] == ["c"]
    ok(client.post(f"{tenant.url}/v1/tenants", json={"name": "after restart"}, headers=bearer(ADMIN)))
    retry = ok(
        client.post(
            f"{tenant.url}/v1/channels/c/messages",
            json={"text": "once"},
            headers={**bearer(token), "Idempotency-Key": "k1"},
        ),
        200,
    )
    assert retry == first
    r = client.post(
        f"{tenant.url}/v1/channels/c/messages",
        json={"text": "other"},
        headers={**bearer(token), "Idempotency-Key": "k1"},
    )
    assert r.status_code == 409
    texts = [e["payload"]["text"] for e in all_events(client, tenant, types="MessagePosted")]
    assert texts == ["once"]


def test_read_models_are_rebuilt_from_the_log_when_lost(durable: Server, client: httpx.Client) -> None:
    tenant = new_tenant(client, durable.url, "rebuilt")
    alice, _ = tenant.user(client, "alice"), tenant.user(client, "bob")
    ok(
        client.post(
            f"{tenant.url}/v1/channels",
            json={"channel_id": "c", "name": "c", "members": ["bob"]},
            headers=bearer(alice),
        )
    )
    mids = [
        ok(client.post(f"{tenant.url}/v1/channels/c/messages", json={"text": f"m{i}"}, headers=bearer(alice)))[
            "message_id"
        ]
        for i in range(12)
    ]
    ok(
        client.patch(f"{tenant.url}/v1/channels/c/messages/{mids[1]}", json={"text": "edited"}, headers=bearer(alice)),
        200,
    )
    ok(client.delete(f"{tenant.url}/v1/channels/c/messages/{mids[2]}", headers=bearer(alice)), 200)
    react = {"emoji": "🔥", "user_id": "bob"}
    ok(client.post(f"{tenant.url}/v1/channels/c/messages/{mids[3]}/reactions", json=react, headers=tenant.headers()))
    reply = ok(
        client.post(
            f"{tenant.url}/v1/channels/c/messages", json={"text": "re", "parent_id": mids[0]}, headers=bearer(alice)
        )
    )
    head = reply["position"]
    before = timeline(client, tenant, "c", head)
    channel_before = ok(
        client.get(f"{tenant.url}/v1/channels/c", params={"min_position": head}, headers=bearer(alice)), 200
    )

    durable.kill()
    for path in durable.data_dir.glob("read.db*"):  # the read models are gone; the log is not
        path.unlink()
    durable.start()

    assert timeline(client, tenant, "c", head) == before
    channel_after = ok(
        client.get(f"{tenant.url}/v1/channels/c", params={"min_position": head}, headers=bearer(alice)), 200
    )
    assert channel_after == channel_before
    by_id = {m["message_id"]: m for m in before}
    assert by_id[mids[1]]["text"] == "edited" and by_id[mids[2]]["deleted"] is True
    assert by_id[mids[3]]["reactions"] == {"🔥": ["bob"]} and by_id[mids[0]]["reply_count"] == 1
    ready = ok(client.get(f"{durable.url}/readyz"), 200)
    assert ready["status"] == "ready"
