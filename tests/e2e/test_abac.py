"""ABAC through the real server, on both backends (docs/abac.md): tenant policies refuse
commands, reads and websocket subscriptions with 403 ``policy_denied`` naming the policy."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from tests.support import Server, Tenant, bearer

WAIT = 20.0


def put_policy(client: httpx.Client, tenant: Tenant, policy_id: str, **policy: Any) -> httpx.Response:
    return client.put(f"{tenant.url}/v1/policies/{policy_id}", json=policy, headers=tenant.headers())


def set_policy(client: httpx.Client, tenant: Tenant, policy_id: str, **policy: Any) -> dict[str, Any]:
    r = put_policy(client, tenant, policy_id, **policy)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def user(client: httpx.Client, tenant: Tenant, user_id: str, metadata: dict[str, Any] | None = None) -> str:
    r = client.put(
        f"{tenant.url}/v1/users/{user_id}", json={"name": user_id, "metadata": metadata or {}}, headers=tenant.headers()
    )
    assert r.status_code in (200, 201), r.text
    r = client.post(f"{tenant.url}/v1/users/{user_id}/tokens", json={}, headers=tenant.headers())
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def channel(client: httpx.Client, tenant: Tenant, cid: str, members: list[str], **extra: Any) -> None:
    r = client.post(
        f"{tenant.url}/v1/channels",
        json={"channel_id": cid, "name": cid, "kind": "group", "members": members, **extra},
        headers=tenant.headers(),
    )
    assert r.status_code == 201, r.text


def post(client: httpx.Client, tenant: Tenant, token: str, cid: str, text: str = "hi") -> httpx.Response:
    return client.post(f"{tenant.url}/v1/channels/{cid}/messages", json={"text": text}, headers=bearer(token))


def assert_denied(r: httpx.Response, policy_id: str) -> None:
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["code"] == "policy_denied"
    assert error["policy_id"] == policy_id
    assert error["details"]["policy_id"] == policy_id


def test_deny_policy_refuses_the_action_it_names_and_only_that(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    ann = user(client, tenant, "ann")
    channel(client, tenant, "c1", ["ann"])
    assert post(client, tenant, ann, "c1").status_code == 201
    set_policy(client, tenant, "no-posts", actions=["post_message"], condition=True, description="read-only tenant")
    assert_denied(post(client, tenant, ann, "c1"), "no-posts")
    # other actions still work: reading, reacting
    r = client.get(f"{tenant.url}/v1/channels/c1/messages", headers=bearer(ann))
    assert r.status_code == 200 and len(r.json()["messages"]) == 1
    mid = r.json()["messages"][0]["message_id"]
    r = client.post(f"{tenant.url}/v1/channels/c1/messages/{mid}/reactions", json={"emoji": "ok"}, headers=bearer(ann))
    assert r.status_code == 201, r.text
    # deleting the policy lifts it
    r = client.delete(f"{tenant.url}/v1/policies/no-posts", headers=tenant.headers())
    assert r.status_code == 200, r.text
    assert post(client, tenant, ann, "c1").status_code == 201


def test_policy_on_user_metadata_denies_some_users(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    guest = user(client, tenant, "guest", {"tier": "guest"})
    staff = user(client, tenant, "staff", {"tier": "staff", "org": {"dept": "ops"}})
    channel(client, tenant, "c1", ["guest", "staff"])
    set_policy(
        client, tenant, "guests-read-only", actions=["post_message", "add_reaction"],
        condition={"eq": ["user.metadata.tier", "guest"]},
    )  # fmt: skip
    assert_denied(post(client, tenant, guest, "c1"), "guests-read-only")
    assert post(client, tenant, staff, "c1").status_code == 201
    # a tenant key posting as the guest is judged by the guest's attributes
    r = client.post(
        f"{tenant.url}/v1/channels/c1/messages", json={"text": "x", "user_id": "guest"}, headers=tenant.headers()
    )
    assert_denied(r, "guests-read-only")
    # nested metadata and "not"
    set_policy(
        client, tenant, "ops-only", actions=["post_message"],
        condition={"not": {"eq": ["user.metadata.org.dept", "ops"]}},
    )  # fmt: skip
    assert post(client, tenant, staff, "c1").status_code == 201


def test_policy_on_channel_attributes_and_role(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    ann = user(client, tenant, "ann")
    user(client, tenant, "bob")
    channel(client, tenant, "plain", ["ann", "bob"])
    set_policy(
        client, tenant, "no-secret-channels", actions=["create_channel"], condition={"eq": ["channel.e2e", True]}
    )
    r = client.post(
        f"{tenant.url}/v1/channels",
        json={"channel_id": "secret", "name": "s", "kind": "group", "members": ["ann"], "e2e": True},
        headers=bearer(ann),
    )
    assert_denied(r, "no-secret-channels")
    # members (not owners) may not add members in channels named "announcements"
    channel(client, tenant, "announcements", ["ann", "bob"])
    set_policy(
        client, tenant, "owners-post-announcements", actions=["post_message"],
        condition={"all": [{"eq": ["channel.name", "announcements"]}, {"ne": ["user.role", "owner"]}]},
    )  # fmt: skip
    bob = user(client, tenant, "bob")
    assert_denied(post(client, tenant, bob, "announcements"), "owners-post-announcements")
    assert post(client, tenant, bob, "plain").status_code == 201


def test_policy_on_time_of_day(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    ann = user(client, tenant, "ann")
    channel(client, tenant, "c1", ["ann"])
    now = datetime.now(UTC)
    hours = sorted({now.hour, (now + timedelta(minutes=5)).hour})  # the hour now, whatever the test's pace
    set_policy(client, tenant, "quiet-hours", actions=["post_message"], condition={"in": ["time.hour", hours]})
    assert_denied(post(client, tenant, ann, "c1"), "quiet-hours")
    set_policy(client, tenant, "quiet-hours", actions=["post_message"], condition={"lt": ["time.iso", "2000-01-01"]})
    assert post(client, tenant, ann, "c1").status_code == 201
    weekday = now.isoweekday()
    days = sorted({weekday, (now + timedelta(minutes=5)).isoweekday()})
    set_policy(client, tenant, "weekday", actions=["*"], condition={"in": ["time.weekday", days]})
    assert_denied(post(client, tenant, ann, "c1"), "weekday")


def test_allow_policies_make_an_allow_list(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    vip = user(client, tenant, "vip", {"plan": "pro"})
    free = user(client, tenant, "free", {"plan": "free"})
    channel(client, tenant, "c1", ["vip", "free"])
    set_policy(
        client, tenant, "pro-posts", effect="allow", actions=["post_message"],
        condition={"in": ["user.metadata.plan", ["pro", "enterprise"]]},
    )  # fmt: skip
    assert post(client, tenant, vip, "c1").status_code == 201
    r = post(client, tenant, free, "c1")
    assert_denied(r, "pro-posts")
    assert r.json()["error"]["details"]["effect"] == "allow"
    # deny overrides allow
    set_policy(client, tenant, "a-deny", actions=["post_message"], condition={"eq": ["user.id", "vip"]})
    assert_denied(post(client, tenant, vip, "c1"), "a-deny")


def test_queries_are_denied(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    ann = user(client, tenant, "ann", {"suspended": True})
    channel(client, tenant, "c1", ["ann"])
    r = post(client, tenant, ann, "c1")
    assert r.status_code == 201
    mid = r.json()["message_id"]
    set_policy(
        client, tenant, "suspended", actions=["*"], condition={"eq": ["user.metadata.suspended", True]},
    )  # fmt: skip
    for path in (
        "/v1/channels/c1", "/v1/channels/c1/messages", f"/v1/channels/c1/messages/{mid}/thread",
        "/v1/channels", "/v1/channels/c1/presence", "/v1/presence?user_ids=ann",
    ):  # fmt: skip
        assert_denied(client.get(f"{tenant.url}{path}", headers=bearer(ann)), "suspended")
    r = client.post(f"{tenant.url}/v1/channels/c1/typing", json={}, headers=bearer(ann))
    assert_denied(r, "suspended")
    # tenant-key reads: a policy on the principal kind
    set_policy(client, tenant, "no-key-reads", actions=["read_events", "list_users", "list_members"],
               condition={"eq": ["principal.kind", "tenant"]})  # fmt: skip
    for path in ("/v1/events", "/v1/users", "/v1/channels/c1/members"):
        assert_denied(client.get(f"{tenant.url}{path}", headers=tenant.headers()), "no-key-reads")
    # and minting a suspended user's token (its target)
    suspended = {"eq": ["target.metadata.suspended", True]}
    set_policy(client, tenant, "no-tokens", actions=["mint_token"], condition=suspended)
    r = client.post(f"{tenant.url}/v1/users/ann/tokens", json={}, headers=tenant.headers())
    assert_denied(r, "no-tokens")


def test_bad_policies_are_refused_with_422(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"actions": ["post_message"], "condition": {"equals": ["user.id", "a"]}}, "unknown operator 'equals'"),
        ({"actions": ["post_message"], "condition": {"eq": ["user.email", "a"]}}, "unknown attribute 'user.email'"),
        ({"actions": ["post_message"], "condition": {"eq": ["user.metadata", "a"]}}, "name a key"),
        ({"actions": ["fly"], "condition": True}, "unknown action 'fly'"),
        ({"actions": ["set_policy"], "condition": True}, "policies never apply to it"),
        ({"actions": [], "condition": True}, "actions"),
        ({"actions": ["*"], "condition": {"lt": ["time.hour", True]}}, "compares numbers or strings"),
        ({"actions": ["*"], "condition": {"all": []}}, "non-empty list"),
        ({"actions": ["*"], "condition": {"in": ["user.id", "abc"]}}, "list of 1 to 100"),
        ({"actions": ["*"], "effect": "maybe"}, "effect"),
        ({"actions": ["*"], "condition": {"any": [{"exists": "user.id"}] * 300}}, "at most 200"),
        ({"actions": ["*"], "description": "x" * 9000}, "description"),
    ]
    for policy, needle in cases:
        r = put_policy(client, tenant, "bad", **policy)
        assert r.status_code == 422, (policy, r.text)
        error = r.json()["error"]
        assert error["code"] == "invalid_request"
        assert needle in error["message"], (needle, error["message"])
    r = client.get(f"{tenant.url}/v1/policies", headers=tenant.headers())
    assert r.json()["policies"] == []
    r = client.get(f"{tenant.url}/v1/policies/nope", headers=tenant.headers())
    assert r.status_code == 404
    r = client.delete(f"{tenant.url}/v1/policies/nope", headers=tenant.headers())
    assert r.status_code == 404
    r = client.put(f"{tenant.url}/v1/policies/bad%20id", json={"actions": ["*"]}, headers=tenant.headers())
    assert r.status_code == 422


def test_policy_routes_need_the_tenant_key_and_policies_never_lock_the_tenant_out(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    ann = user(client, tenant, "ann")
    r = client.put(f"{tenant.url}/v1/policies/p", json={"actions": ["*"]}, headers=bearer(ann))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    set_policy(client, tenant, "everything", actions=["*"], condition=True)
    # the policy routes still work under a deny-everything policy
    set_policy(client, tenant, "another", actions=["post_message"], condition=False)
    r = client.get(f"{tenant.url}/v1/policies", headers=tenant.headers())
    assert [p["policy_id"] for p in r.json()["policies"]] == ["another", "everything"]
    assert "post_message" in r.json()["actions"]
    r = client.get(f"{tenant.url}/v1/policies/everything", headers=tenant.headers())
    assert r.json() == {
        "policy_id": "everything", "effect": "deny", "actions": ["*"], "condition": True, "description": "",
    }  # fmt: skip
    assert client.delete(f"{tenant.url}/v1/policies/everything", headers=tenant.headers()).status_code == 200


def test_policy_events_record_actor_and_request_id(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    r = client.put(
        f"{tenant.url}/v1/policies/audit-me",
        json={"actions": ["post_message"], "condition": False, "description": "kept for audit"},
        headers={**tenant.headers(), "x-request-id": "req-abac-1"},
    )
    assert r.status_code == 200, r.text
    again = client.put(
        f"{tenant.url}/v1/policies/audit-me",
        json={"actions": ["post_message"], "condition": False, "description": "kept for audit"},
        headers=tenant.headers(),
    )
    assert again.json()["seq"] == r.json()["seq"]  # the same policy again records nothing
    r = client.delete(f"{tenant.url}/v1/policies/audit-me", headers={**tenant.headers(), "x-request-id": "req-abac-2"})
    assert r.status_code == 200
    position = r.json()["position"]
    r = client.get(
        f"{tenant.url}/v1/events",
        params={"types": "PolicySet,PolicyDeleted", "min_position": position},
        headers=tenant.headers(),
    )
    events = r.json()["events"]
    assert [e["type"] for e in events] == ["PolicySet", "PolicyDeleted"]
    key_id = tenant.api_key.split("_")[3]
    for event, request_id in zip(events, ("req-abac-1", "req-abac-2"), strict=True):
        assert event["actor"] == f"tenant:{key_id}"
        assert event["correlation_id"] == request_id
    assert events[0]["payload"]["description"] == "kept for audit"


# --- websockets ----------------------------------------------------------------------------
def ws_connect(server: Server, token: str) -> Any:
    return connect(f"{server.ws_url}?token={token}", proxy=None, open_timeout=WAIT, close_timeout=5)


async def recv(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    return frame


async def frame_of(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while (frame := await recv(ws))["type"] != kind:
        pass
    return frame


def test_subscriptions_are_refused_and_ended_by_policy(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    ann = user(client, tenant, "ann")
    channel(client, tenant, "c1", ["ann"])
    channel(client, tenant, "c2", ["ann"])

    async def scenario() -> None:
        async with ws_connect(server, ann) as ws:
            await ws.send(json.dumps({"type": "subscribe", "channel_id": "c1"}))
            assert (await recv(ws))["type"] == "subscribed"
            # a new policy ends the open subscription of c1: the socket is told, and stays open
            await asyncio.to_thread(
                set_policy, client, tenant, "no-c1", actions=["subscribe"], condition={"eq": ["channel.id", "c1"]}
            )
            error = await frame_of(ws, "error")
            assert error["code"] == "policy_denied"
            assert error["channel_id"] == "c1" and error["policy_id"] == "no-c1"
            # new subscriptions of c1 are refused; c2 still works, and its events come
            await ws.send(json.dumps({"type": "subscribe", "channel_id": "c1"}))
            error = await recv(ws)
            assert (error["type"], error["code"], error["policy_id"]) == ("error", "policy_denied", "no-c1")
            await ws.send(json.dumps({"type": "subscribe", "channel_id": "c2"}))
            assert (await recv(ws))["type"] == "subscribed"
            assert (await asyncio.to_thread(post, client, tenant, ann, "c2")).status_code == 201
            event = await frame_of(ws, "event")
            assert event["channel_id"] == "c2"

    asyncio.run(scenario())


def test_policy_count_is_bounded(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    from domain.policy import MAX_POLICIES

    for i in range(MAX_POLICIES):
        set_policy(client, tenant, f"p{i:03d}", actions=["post_message"], condition=False)
    r = put_policy(client, tenant, "one-too-many", actions=["post_message"], condition=False)
    assert r.status_code == 422
    assert r.json()["error"]["details"]["rule"] == "too_many_policies"
    # replacing an existing one is still fine
    set_policy(client, tenant, "p000", actions=["post_message"], condition=True)


def test_role_checks_answer_before_policies(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    ann = user(client, tenant, "ann")
    user(client, tenant, "bob")
    channel(client, tenant, "c1", ["bob"])
    set_policy(client, tenant, "no-posts", actions=["post_message", "read_messages"], condition=True)
    r = post(client, tenant, ann, "c1")  # ann is not a member: RBAC refuses first
    assert r.status_code == 403 and r.json()["error"]["details"]["rule"] == "not_a_member", r.text
    r = client.get(f"{tenant.url}/v1/channels/c1/messages", headers=bearer(ann))
    assert r.status_code == 403 and r.json()["error"]["details"]["rule"] == "not_a_member", r.text
    assert post(client, tenant, ann, "nowhere").status_code == 404


def test_presence_watches_and_history_replays_are_judged_by_policy(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    bob = user(client, tenant, "bob")
    user(client, tenant, "ann")
    channel(client, tenant, "c1", ["bob"])
    assert post(client, tenant, bob, "c1", "before").status_code == 201

    async def scenario() -> None:
        async with ws_connect(server, bob) as ws:
            # a presence watch allowed now is ended by a new read_presence policy
            await ws.send(json.dumps({"type": "subscribe_presence", "user_ids": ["ann"]}))
            assert (await frame_of(ws, "presence"))["user_id"] == "ann"
            await asyncio.to_thread(set_policy, client, tenant, "no-presence", actions=["read_presence"])
            error = await frame_of(ws, "error")
            assert (error["code"], error["policy_id"]) == ("policy_denied", "no-presence")
            assert "channel_id" not in error
            # a new watch is refused, as GET /v1/presence is; the socket stays open
            await ws.send(json.dumps({"type": "subscribe_presence", "user_ids": ["bob", "ann"]}))
            error = await recv(ws)
            assert (error["type"], error["code"], error["policy_id"]) == ("error", "policy_denied", "no-presence")
            # a history replay is a read of the messages: refused by a read_messages policy
            await asyncio.to_thread(set_policy, client, tenant, "no-history", actions=["read_messages"])
            await ws.send(json.dumps({"type": "subscribe", "channel_id": "c1", "since_seq": 0}))
            error = await recv(ws)
            assert (error["code"], error["channel_id"], error["policy_id"]) == ("policy_denied", "c1", "no-history")
            await ws.send(json.dumps({"type": "ping"}))
            assert (await recv(ws))["type"] == "pong"  # no presence or event frame came meanwhile

    asyncio.run(scenario())
    r = client.get(f"{tenant.url}/v1/presence?user_ids=ann", headers=bearer(bob))
    assert_denied(r, "no-presence")


def test_device_lists_and_bundles_are_judged_by_policy(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    from tests.e2e_keys import Device

    ann = user(client, tenant, "ann", {"suspended": True})
    bob = user(client, tenant, "bob", {"private": True})
    r = client.put(f"{tenant.url}/v1/users/bob/devices/phone", json=Device().bundle(prekeys=3), headers=bearer(bob))
    assert r.status_code == 201, r.text
    devices, bundle, bundles = "/v1/users/bob/devices", "/v1/users/bob/devices/phone/bundle", "/v1/users/bob/bundles"
    assert client.get(f"{tenant.url}{devices}", headers=bearer(ann)).status_code == 200
    # the actions are named: a policy on the user whose devices they are (target)
    private = {"eq": ["target.metadata.private", True]}
    set_policy(client, tenant, "private-devices", actions=["list_devices", "claim_prekeys"], condition=private)
    assert_denied(client.get(f"{tenant.url}{devices}", headers=bearer(ann)), "private-devices")
    assert_denied(client.post(f"{tenant.url}{bundle}", headers=bearer(ann)), "private-devices")
    assert_denied(client.post(f"{tenant.url}{bundles}", headers=bearer(ann)), "private-devices")
    assert_denied(client.get(f"{tenant.url}{devices}", headers=tenant.headers()), "private-devices")
    client.delete(f"{tenant.url}/v1/policies/private-devices", headers=tenant.headers())
    # a suspended user can do nothing: not even list devices or fetch bundles (of a user with none too)
    set_policy(client, tenant, "suspended", actions=["*"], condition={"eq": ["user.metadata.suspended", True]})
    assert_denied(client.get(f"{tenant.url}{devices}", headers=bearer(ann)), "suspended")
    assert_denied(client.post(f"{tenant.url}{bundles}", headers=bearer(ann)), "suspended")
    assert_denied(client.post(f"{tenant.url}/v1/users/ann/bundles", headers=bearer(ann)), "suspended")
    r = client.get(f"{tenant.url}{devices}", headers=bearer(bob))
    assert r.status_code == 200 and r.json()["devices"][0]["one_time_prekeys_left"] == 3  # none was handed out
    # the audit trail is a read of the tenant's events, refused like GET /v1/events
    set_policy(client, tenant, "no-exports", actions=["read_events", "read_audit"],
               condition={"eq": ["principal.kind", "tenant"]})  # fmt: skip
    assert_denied(client.get(f"{tenant.url}/v1/audit", headers=tenant.headers()), "no-exports")


def test_open_subscriptions_are_judged_again_when_the_attributes_change(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    alice = user(client, tenant, "alice")
    bob = user(client, tenant, "bob", {"suspended": False})
    channel(client, tenant, "g", ["alice", "bob"])
    channel(client, tenant, "staff", ["alice", "bob"])
    r = client.post(f"{tenant.url}/v1/channels/staff/members", json={"user_id": "bob", "role": "admin"},
                    headers=tenant.headers())  # fmt: skip
    assert r.status_code in (200, 201), r.text
    # docs/abac.md's example, and a policy on the role in the channel
    set_policy(client, tenant, "suspended", actions=["*"], condition={"eq": ["user.metadata.suspended", True]})
    set_policy(client, tenant, "staff-admins", actions=["subscribe"],
               condition={"all": [{"eq": ["channel.id", "staff"]}, {"eq": ["user.role", "member"]}]})  # fmt: skip

    async def scenario() -> None:
        async with ws_connect(server, bob) as ws, ws_connect(server, alice) as watcher:
            for cid in ("g", "staff"):
                await ws.send(json.dumps({"type": "subscribe", "channel_id": cid}))
                assert (await frame_of(ws, "subscribed"))["channel_id"] == cid
            await ws.send(json.dumps({"type": "subscribe_presence", "user_ids": ["alice"]}))
            await frame_of(ws, "presence")
            await watcher.send(json.dumps({"type": "subscribe", "channel_id": "g"}))
            await frame_of(watcher, "subscribed")
            # bob is made a member of staff, no longer an admin: that subscription ends, g's stays
            r = await asyncio.to_thread(
                client.post, f"{tenant.url}/v1/channels/staff/members", json={"user_id": "bob", "role": "member"},
                headers=tenant.headers(),
            )  # fmt: skip
            assert r.status_code in (200, 201), r.text
            error = await frame_of(ws, "error")
            assert (error["code"], error["channel_id"]) == ("policy_denied", "staff")
            assert error["policy_id"] == "staff-admins"
            # bob is suspended (his metadata changes): his open subscription of g and his presence watch end
            r = await asyncio.to_thread(
                client.put, f"{tenant.url}/v1/users/bob", json={"name": "bob", "metadata": {"suspended": True}},
                headers=tenant.headers(),
            )  # fmt: skip
            assert r.status_code == 200, r.text
            ended = [await frame_of(ws, "error"), await frame_of(ws, "error")]
            assert {(e["code"], e.get("channel_id"), e["policy_id"]) for e in ended} == {
                ("policy_denied", "g", "suspended"), ("policy_denied", None, "suspended"),
            }  # fmt: skip
            # alice's next post reaches her own socket, not bob's
            assert (await asyncio.to_thread(post, client, tenant, alice, "g", "after")).status_code == 201
            assert (await frame_of(watcher, "event"))["event"]["payload"]["text"] == "after"
            await ws.send(json.dumps({"type": "ping"}))
            assert (await recv(ws))["type"] == "pong"  # no event frame came before it

    asyncio.run(scenario())


def test_a_time_condition_ends_an_open_subscription_when_its_time_comes(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    ann = user(client, tenant, "ann")
    channel(client, tenant, "c1", ["ann"])
    # refused from a few seconds from now (test servers judge time conditions again every second)
    later = (datetime.now(UTC) + timedelta(seconds=4)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    set_policy(client, tenant, "until-soon", actions=["subscribe"], condition={"ge": ["time.iso", later]})

    async def scenario() -> None:
        async with ws_connect(server, ann) as ws:
            await ws.send(json.dumps({"type": "subscribe", "channel_id": "c1"}))
            first = await recv(ws)
            if first["type"] == "subscribed":  # else the machine was too slow to subscribe in time
                first = await frame_of(ws, "error")
            assert (first["code"], first["channel_id"], first["policy_id"]) == ("policy_denied", "c1", "until-soon")
            assert datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z") >= later

    asyncio.run(scenario())
