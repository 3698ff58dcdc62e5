"""The isolation matrix: tenant B's credentials against tenant A's resources, on every route of
the route table and every websocket frame type. The two tenants have colliding ids (the same
users, the same channel, the same message text), so a lookup that forgot the tenant would hit.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from api.routes import ROUTES, Api
from tests.e2e_keys import Device
from tests.security.common import (
    COLLIDING_CHANNEL,
    World,
    assert_no_leak,
    colliding_world,
    events_of,
    frames_until,
    recv,
    send,
    subscribe,
    until_pong,
    ws_connect,
)
from tests.support import Server, requested_events

# no tenant data behind them; Stripe's webhook takes no bearer credential (its signature is
# tested in tests/billing/test_stripe.py)
UNROUTED = {"/healthz", "/readyz", "/v1/billing/stripe/webhook"}
A_ONLY_CHANNEL = "A-only"
A_ONLY_USER = "carol"
WS_FRAME_TYPES = {"subscribe", "unsubscribe", "typing", "ping", "subscribe_presence"}


@pytest.fixture
def worlds(server: Server) -> tuple[World, World]:
    """Tenant A (with a channel and a user B lacks) and tenant B, with colliding ids."""
    with httpx.Client(timeout=30) as client:
        a = colliding_world(client, server.url, "A", only=(A_ONLY_USER,))
        b = colliding_world(client, server.url, "B")
    return a, b


def key_id(world: World) -> str:
    return world.tenant.api_key.removeprefix("caas_sk_").split("_", 2)[1]


DEVICE = Device()  # B's own device keys, for the device routes' bodies


def body_for(api: Api, as_tenant: bool) -> dict[str, Any] | None:
    """A valid body for ``api``, so that only the tenant boundary can refuse it."""
    if api.body is None:
        return None
    acting = {"user_id": "alice"} if as_tenant else {}
    bodies: dict[str, dict[str, Any]] = {
        "CreateTenant": {"name": "intruder"},
        "PutPlan": {"plan": "free"},
        "CreateApiKey": {"name": "intruder"},
        "AllowedOrigins": {"origins": ["https://b.example"]},
        "PutUser": {"name": "B's own carol"},
        "CreateToken": {},
        "CreateChannel": {"channel_id": A_ONLY_CHANNEL, "name": "B's own", "members": ["alice", "bob"]},
        "AddMember": {"user_id": "bob", "role": "admin"},
        "PostMessage": {"text": "B was here", **acting},
        "EditMessage": {"text": "B was here"},
        "AddReaction": {"emoji": "🔥", **acting},
        "MoveReadMarker": {"seq": 1, **acting},
        "Typing": {**acting},
        "Mute": {"user_id": "bob"},
        "Ban": {"user_id": "bob"},
        "CreateWebhook": {"url": "http://127.0.0.1:9/b-only", "event_types": ["MemberRoleChanged"]},
        "UpdateWebhook": {"enabled": False},
        "ReplayWebhook": {"from_position": 0},
        "PutPolicy": {"actions": ["typing"], "condition": False},
        "PutRetention": {"days": 30},
        "PlaceLegalHold": {"reason": "B's own case"},
        "ReleaseLegalHold": {"reason": "B's own case"},
        "PutDevice": DEVICE.bundle(prekeys=1),
        "AddPrekeys": {"one_time_prekeys": DEVICE.prekeys(1)},
        "SignedPrekey": DEVICE.signed_prekey(2),
    }
    return bodies[api.body.__name__]


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def creates_in_own_tenant(api: Api) -> bool:
    """Routes that name no existing resource: they act in the caller's own tenant."""
    return "{" not in api.path or api.method == "PUT"


def call(
    client: httpx.Client, api: Api, url: str, headers: dict[str, str], as_tenant: bool, position: int = 0
) -> httpx.Response:
    params: dict[str, Any] = {"user_id": "alice"} if as_tenant and "user_id" in api.query else {}
    if "min_position" in api.query:
        params["min_position"] = position  # the caller's own writes are in the read models
    if "erase" in api.query:  # DELETE /v1/users/{user_id}?erase=true
        params["erase"] = "true"
    if "user_ids" in api.query:
        params["user_ids"] = f"{A_ONLY_USER},alice"
    if "from" in api.query:  # usage, analytics: a range around now that every such route serves (a year at most)
        now = datetime.now(UTC)
        around = {"from": now - timedelta(days=150), "to": now + timedelta(days=150)}
        params.update({k: v.strftime("%Y-%m-%dT%H:%M:%SZ") for k, v in around.items()} | {"granularity": "month"})
    return client.request(api.method, url, json=body_for(api, as_tenant), params=params, headers=headers)


def test_every_route_refuses_another_tenants_resources_and_leaks_nothing(
    server: Server, worlds: tuple[World, World]
) -> None:
    a, b = worlds
    routes = [api for api in ROUTES if api.path not in UNROUTED]
    assert len(routes) >= 25, "the route table shrank; is it still the one the router uses?"
    foreign = {
        "cid": A_ONLY_CHANNEL,
        "mid": a.messages[A_ONLY_CHANNEL][0],
        "uid": A_ONLY_USER,
        "user_id": A_ONLY_USER,
        "key_id": key_id(a),
        "emoji": "👍",
        "tenant_id": a.tenant.tenant_id,
    }
    credentials = {"B api key": (b.key(), True), "B user alice": (b.user("alice"), False)}
    with httpx.Client(timeout=30) as client:
        hook = client.post(  # an endpoint of A's (no event it names happens: nothing is sent)
            f"{server.url}/v1/webhooks",
            json={"url": "http://127.0.0.1:9/a-only", "event_types": ["MemberBanned"]},
            headers=a.key(),
        )
        assert hook.status_code == 201, hook.text
        foreign["webhook_id"] = hook.json()["webhook_id"]
        policy = client.put(  # a policy of A's that refuses nothing; its description carries A's marker
            f"{server.url}/v1/policies/a-only-policy",
            json={"actions": ["typing"], "condition": False, "description": f"policy of {a.marker}"},
            headers=a.key(),
        )
        assert policy.status_code == 200, policy.text
        foreign["policy_id"] = "a-only-policy"
        device = client.put(  # a device of A's user, with one-time prekeys B must not be able to claim
            f"{server.url}/v1/users/{A_ONLY_USER}/devices/a-phone", json=Device().bundle(prekeys=3), headers=a.key()
        )
        assert device.status_code == 201, device.text
        foreign["device_id"] = "a-phone"
        a.position = max(a.position, device.json()["position"])
        a.position = max(a.position, policy.json()["position"])
        a.position = max(a.position, hook.json()["position"])  # A's reads wait for it
        before = [e["event_id"] for e in requested_events(events_of(client, a))]
        # Routes that could only create something in B's own tenant go last, so that B's own
        # "A-only" channel and "carol" do not exist yet while the others probe A's.
        for api in sorted(routes, key=creates_in_own_tenant):
            for who, (headers, as_tenant) in credentials.items():
                where = f"{api.method} {api.path} with {who}"
                r = call(client, api, server.url + fill(api.path, foreign), headers, as_tenant, b.position)
                assert r.status_code < 500, f"{where}: {r.status_code} {r.text}"
                assert_no_leak(r.text, a, where=where)
                allowed = ("tenant" if as_tenant else "user") in api.who
                if not allowed:
                    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", f"{where}: {r.text}"
                elif not creates_in_own_tenant(api):
                    assert r.status_code in (403, 404), f"{where}: {r.status_code} {r.text}"
                    assert r.json()["error"]["code"] in ("forbidden", "not_found"), where
                elif api.method == "GET":
                    assert r.status_code == 200, f"{where}: {r.text}"
                    assert_only_own(api, r.json(), b, where)
                elif not as_tenant and api.path.startswith("/v1/users/{user_id}/"):  # another user's devices
                    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", f"{where}: {r.text}"
                else:  # acted in B's own tenant (409: B already made that channel with its other credential)
                    assert r.status_code in (200, 201, 409), f"{where}: {r.status_code} {r.text}"
        after = [e["event_id"] for e in requested_events(events_of(client, a))]
    assert after == before, "tenant B's requests changed tenant A's event log"


def assert_only_own(api: Api, data: dict[str, Any], own: World, where: str) -> None:
    if api.path == "/v1/events":
        assert data["events"], where
        assert {e["tenant_id"] for e in data["events"]} == {own.tenant.tenant_id}, where
    elif api.path == "/v1/channels":
        names = [c["name"] for c in data["channels"]]
        assert any(own.marker in n for n in names), f"{where}: B does not see its own channel: {names}"
    elif api.path == "/v1/presence":
        assert data[A_ONLY_USER]["status"] == "offline" and data[A_ONLY_USER]["last_seen_at"] is None, where
    elif api.path == "/v1/usage":
        assert data["tenant_id"] == own.tenant.tenant_id, where
    elif api.path == "/v1/webhooks":
        assert all("a-only" not in h["url"] for h in data["webhooks"]), where


def test_colliding_ids_resolve_to_the_callers_own_tenant(server: Server, worlds: tuple[World, World]) -> None:
    """The same channel id in B means B's channel: B's messages, never A's, and A's message ids
    in it are unknown."""
    a, b = worlds
    with httpx.Client(timeout=30) as client:
        for headers in (b.key(), b.user("alice")):
            for api in ROUTES:
                if "{mid}" not in api.path:
                    continue
                url = server.url + fill(api.path, {"cid": COLLIDING_CHANNEL, "mid": a.messages[COLLIDING_CHANNEL][1],
                                                   "uid": "bob", "emoji": "👍"})  # fmt: skip
                as_tenant = headers == b.key()
                r = call(client, api, url, headers, as_tenant, b.position)
                where = f"{api.method} {api.path} on the colliding channel"
                assert r.status_code == 404, f"{where}: {r.status_code} {r.text}"
                assert_no_leak(r.text, a, where=where)
            wait = {"min_position": b.position}
            r = client.get(f"{server.url}/v1/channels/{COLLIDING_CHANNEL}/messages", params=wait, headers=headers)
            assert r.status_code == 200, r.text
            texts = [m["text"] for m in r.json()["messages"]]
            assert f"secret of {b.marker} in {COLLIDING_CHANNEL}" in texts and "hello" in texts
            assert_no_leak(r.text, a, where="history of the colliding channel")
            mid = b.messages[COLLIDING_CHANNEL][1]
            r = client.get(f"{server.url}/v1/channels/{COLLIDING_CHANNEL}/messages/{mid}/thread", params=wait,
                           headers=headers)  # fmt: skip
            assert r.status_code == 200 and [m["text"] for m in r.json()["messages"]] == [f"reply of {b.marker}"]
            r = client.get(f"{server.url}/v1/channels/{COLLIDING_CHANNEL}", params=wait, headers=headers)
            assert r.status_code == 200 and b.marker in r.json()["name"], r.text
            assert_no_leak(r.text, a, where="the colliding channel")


async def test_every_websocket_frame_type_stays_inside_the_tenant(server: Server, worlds: tuple[World, World]) -> None:
    a, b = worlds
    async with (
        ws_connect(server.ws_url, a.tokens["alice"]) as a_alice,
        ws_connect(server.ws_url, b.tokens["alice"]) as b_alice,
        ws_connect(server.ws_url, b.tokens["bob"]) as b_bob,
        ws_connect(server.ws_url, a.tokens[A_ONLY_USER]) as a_carol,
    ):
        await until_pong(a_carol)  # A's carol is online in A; B has no carol
        await subscribe(a_alice, COLLIDING_CHANNEL)
        await subscribe(a_alice, A_ONLY_CHANNEL)
        await subscribe(b_bob, COLLIDING_CHANNEL)
        probes: list[tuple[dict[str, Any], set[str]]] = [
            ({"type": "subscribe", "channel_id": A_ONLY_CHANNEL}, {"error"}),
            ({"type": "subscribe", "channel_id": A_ONLY_CHANNEL, "since_seq": 0}, {"error"}),
            ({"type": "subscribe", "channel_id": COLLIDING_CHANNEL, "since_seq": 0}, {"subscribed", "event"}),
            ({"type": "typing", "channel_id": A_ONLY_CHANNEL}, {"error"}),
            ({"type": "typing", "channel_id": COLLIDING_CHANNEL}, set()),
            ({"type": "unsubscribe", "channel_id": A_ONLY_CHANNEL}, {"unsubscribed"}),
            ({"type": "subscribe_presence", "user_ids": ["alice", "bob", A_ONLY_USER]}, {"error", "presence"}),
            ({"type": "ping"}, {"pong"}),
        ]
        assert {p["type"] for p, _ in probes} == WS_FRAME_TYPES
        for probe, kinds in probes:
            await send(b_alice, probe)
            frames = await until_pong(b_alice)
            assert {f["type"] for f in frames} <= kinds, f"{probe}: {frames}"
            for frame in frames:
                assert_no_leak(str(frame), a, where=f"reply to {probe}")
                if frame["type"] == "error" and probe.get("channel_id") == A_ONLY_CHANNEL:
                    assert frame["code"] == "not_found", frame
                if frame["type"] == "event":
                    assert frame["event"]["tenant_id"] == b.tenant.tenant_id, frame
                if frame["type"] == "presence" and frame["user_id"] == A_ONLY_USER:
                    assert frame["status"] == "offline" and frame["last_seen_at"] is None, frame
        # B's own typing reaches B's bob, never A's alice on the channel with the same id.
        await frames_until(b_bob, lambda f: f["type"] == "typing" and f["user_id"] == "alice")

        # A's activity on the same channel id and on A's own channel: A sees it, B never does.
        async with httpx.AsyncClient(timeout=30) as client:
            for cid in (COLLIDING_CHANNEL, A_ONLY_CHANNEL):
                r = await client.post(f"{server.url}/v1/channels/{cid}/messages",
                                      json={"text": f"live {a.marker}"}, headers=a.user("bob"))  # fmt: skip
                assert r.status_code == 201, r.text
                r = await client.post(f"{server.url}/v1/channels/{cid}/typing", json={}, headers=a.user("bob"))
                assert r.status_code == 202, r.text
        seen = await frames_until(a_alice, lambda f: f["type"] == "typing" and f["channel_id"] == A_ONLY_CHANNEL)
        assert not [f for f in seen if f["type"] == "typing" and f["user_id"] == "alice"], "B's typing reached A"
        assert {f["channel_id"] for f in seen if f["type"] == "event"} == {COLLIDING_CHANNEL, A_ONLY_CHANNEL}
        for socket in (b_alice, b_bob):
            leaked = await until_pong(socket)
            assert not [f for f in leaked if f["type"] in ("event", "typing")], leaked
            assert_no_leak(str(leaked), a, where="B's live sockets")
        # and the reverse: B posts on the colliding channel; A's subscriber gets nothing of it
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.post(f"{server.url}/v1/channels/{COLLIDING_CHANNEL}/messages",
                                  json={"text": f"live {b.marker}"}, headers=b.user("alice"))  # fmt: skip
            assert r.status_code == 201, r.text
        await frames_until(b_bob, lambda f: f["type"] == "event" and f["seq"] == r.json()["seq"])
        leaked = await until_pong(a_alice)
        assert not [f for f in leaked if f["type"] in ("event", "typing")], leaked
        assert_no_leak(str(leaked), b, where="A's live socket")


async def test_another_tenants_token_cannot_open_a_socket_onto_this_tenants_channels(
    server: Server, worlds: tuple[World, World]
) -> None:
    """B's alice has the same user id as A's alice; her socket still only reaches B's channels."""
    a, b = worlds
    async with ws_connect(server.ws_url, b.tokens["alice"]) as ws:
        await send(ws, {"type": "subscribe", "channel_id": A_ONLY_CHANNEL, "since_seq": 0})
        frame = await recv(ws)
        assert frame["type"] == "error" and frame["code"] == "not_found", frame
        reply = await subscribe(ws, COLLIDING_CHANNEL, since=0)
        history = await frames_until(ws, lambda f: f["type"] == "event" and f["seq"] >= reply["head_seq"])
        assert {f["event"]["tenant_id"] for f in history} == {b.tenant.tenant_id}
        assert_no_leak(str(history), a, where="B's replay of the colliding channel")
