"""Every command and query of docs/api.md through the real server, as a tenant and its users see them."""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.routes import ROUTES
from tests.support import ADMIN, Server, Tenant, bearer, new_tenant, requested_events


# --- helpers -------------------------------------------------------------------------------
def ok(r: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert r.status_code == status, f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}"
    data: dict[str, Any] = r.json()
    return data


def err(r: httpx.Response, status: int, code: str, rule: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}"
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["details"], dict)
    if rule is not None:
        assert error["details"].get("rule") == rule, error
    return error


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Chat:
    """A tenant with users alice, bob, carol and dave, and channel ``c``: alice owns it, bob and carol are members."""

    client: httpx.Client
    tenant: Tenant
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.tenant.url

    def headers(self, who: str) -> dict[str, str]:
        return self.tenant.headers() if who == "tenant" else bearer(self.tokens[who])

    def call(self, method: str, path: str, who: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers(who), **kwargs.pop("headers", {})}
        return self.client.request(method, f"{self.url}{path}", headers=headers, **kwargs)

    def post(self, path: str, who: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        return self.call("POST", path, who, json={} if body is None else body, **kwargs)

    def get(self, path: str, who: str, **params: Any) -> dict[str, Any]:
        return ok(self.call("GET", path, who, params=params), 200)

    def say(self, who: str, text: str, cid: str = "c", **extra: Any) -> dict[str, Any]:
        return ok(self.post(f"/v1/channels/{cid}/messages", who, {"text": text, **extra}))

    def messages(self, who: str = "tenant", cid: str = "c", **params: Any) -> list[dict[str, Any]]:
        page = self.get(f"/v1/channels/{cid}/messages", who, **params)
        messages: list[dict[str, Any]] = page["messages"]
        return messages

    def channel(self, who: str = "tenant", cid: str = "c", **params: Any) -> dict[str, Any]:
        return self.get(f"/v1/channels/{cid}", who, **params)

    def events(self, **params: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.get("/v1/events", "tenant", after_position=after, limit=1000, **params)
            out += page["events"]
            if page["next_after_position"] is None:
                return out
            after = page["next_after_position"]


@pytest.fixture
def chat(client: httpx.Client, tenant: Tenant) -> Chat:
    tokens = {u: tenant.user(client, u) for u in ("alice", "bob", "carol", "dave")}
    world = Chat(client, tenant, tokens)
    ok(world.post("/v1/channels", "alice", {"channel_id": "c", "name": "General", "members": ["bob", "carol"]}))
    return world


# --- tenants and API keys ------------------------------------------------------------------
def test_registering_a_tenant_returns_a_working_api_key(server: Server, client: httpx.Client) -> None:
    data = ok(client.post(f"{server.url}/v1/tenants", json={"name": "Initech"}, headers=bearer(ADMIN)))
    assert data["api_key"].startswith(f"caas_sk_{data['tenant_id']}_")
    assert {"event_id", "position", "seq", "tenant_id", "key_id"} <= set(data)
    r = client.get(f"{server.url}/v1/events", headers=bearer(data["api_key"]))
    events = ok(r, 200)["events"]
    assert [e["type"] for e in events][:2] == ["TenantRegistered", "ApiKeyIssued"]
    assert all(e["tenant_id"] == data["tenant_id"] for e in events)
    secret = data["api_key"].removeprefix("caas_sk_").split("_", 2)[2]  # the secret itself may contain "_"
    assert secret not in r.text, "the API key's secret must never be recorded"


def test_api_keys_can_be_issued_and_revoked_but_not_the_last(client: httpx.Client, tenant: Tenant) -> None:
    first = tenant.headers()
    issued = ok(client.post(f"{tenant.url}/v1/api-keys", json={"name": "ci"}, headers=first))
    second = bearer(issued["api_key"])
    ok(client.get(f"{tenant.url}/v1/events", headers=second), 200)
    first_id = tenant.api_key.split("_")[3]
    revoked = ok(client.delete(f"{tenant.url}/v1/api-keys/{first_id}", headers=second), 200)
    err(client.get(f"{tenant.url}/v1/events", headers=first), 401, "unauthenticated")
    again = ok(client.delete(f"{tenant.url}/v1/api-keys/{first_id}", headers=second), 200)
    assert again["event_id"] == revoked["event_id"]
    err(client.delete(f"{tenant.url}/v1/api-keys/{issued['key_id']}", headers=second), 409, "conflict")
    err(client.delete(f"{tenant.url}/v1/api-keys/k-nope", headers=second), 404, "not_found")
    ok(client.get(f"{tenant.url}/v1/events", headers=second), 200)  # the last key still works
    types = [e["type"] for e in ok(client.get(f"{tenant.url}/v1/events", headers=second), 200)["events"]]
    assert types.count("ApiKeyRevoked") == 1


# --- users and tokens ----------------------------------------------------------------------
def test_put_user_creates_updates_and_is_idempotent(client: httpx.Client, tenant: Tenant) -> None:
    url, h = f"{tenant.url}/v1/users/erin", tenant.headers()
    created = ok(client.put(url, json={"name": "Erin"}, headers=h))
    assert created["user_id"] == "erin"
    updated = ok(client.put(url, json={"name": "Erin B.", "metadata": {"plan": "pro"}}, headers=h), 200)
    assert updated["seq"] == created["seq"] + 1
    same = ok(client.put(url, json={"name": "Erin B.", "metadata": {"plan": "pro"}}, headers=h), 200)
    assert same["event_id"] == updated["event_id"]
    events = ok(client.get(f"{tenant.url}/v1/events", params={"types": "UserRegistered,UserUpdated"}, headers=h), 200)
    assert [(e["type"], e["payload"]["name"]) for e in events["events"]] == [
        ("UserRegistered", "Erin"),
        ("UserUpdated", "Erin B."),
    ]


def test_tokens_honour_ttl_bounds(client: httpx.Client, tenant: Tenant) -> None:
    tenant.user(client, "erin")
    url, h = f"{tenant.url}/v1/users/erin/tokens", tenant.headers()
    default = ok(client.post(url, json={}, headers=h))
    lifetime = parse_time(default["expires_at"]) - datetime.now(UTC)
    assert timedelta(minutes=50) < lifetime <= timedelta(hours=1, minutes=1)
    short = ok(client.post(url, json={"ttl_seconds": 60}, headers=h))
    assert parse_time(short["expires_at"]) < parse_time(default["expires_at"])
    longest = ok(client.post(url, json={"ttl_seconds": 30 * 24 * 3600}, headers=h))
    assert parse_time(longest["expires_at"]) - datetime.now(UTC) > timedelta(days=29)
    err(client.post(url, json={"ttl_seconds": 59}, headers=h), 422, "invalid_request")
    err(client.post(url, json={"ttl_seconds": 30 * 24 * 3600 + 1}, headers=h), 422, "invalid_request")
    err(client.post(url, json={"ttl_seconds": "600"}, headers=h), 422, "invalid_request")
    err(client.post(f"{tenant.url}/v1/users/ghost/tokens", json={}, headers=h), 404, "not_found")
    for token in (default["token"], short["token"], longest["token"]):
        assert ok(client.get(f"{tenant.url}/v1/channels", headers=bearer(token)), 200) == {"channels": []}


# --- channels ------------------------------------------------------------------------------
def test_group_channel_creator_owns_it(chat: Chat) -> None:
    channel = chat.channel("alice")
    assert channel["channel_id"] == "c" and channel["name"] == "General"
    assert channel["kind"] == "group" and channel["e2e"] is False
    assert {(m["user_id"], m["role"]) for m in channel["members"]} == {
        ("alice", "owner"),
        ("bob", "member"),
        ("carol", "member"),
    }
    assert channel["head_seq"] == 4 and channel["last_message"] is None and channel["unread_count"] == 0
    # a tenant-created channel has no owner, and gets an id when none is given
    made = ok(chat.post("/v1/channels", "tenant", {"name": "Ops", "members": ["bob", "dave"], "e2e": True}))
    other = chat.channel("tenant", made["channel_id"])
    assert {(m["user_id"], m["role"]) for m in other["members"]} == {("bob", "member"), ("dave", "member")}
    assert other["e2e"] is True and other["unread_count"] is None
    err(chat.post("/v1/channels", "bob", {"channel_id": "c", "name": "dup"}), 409, "conflict")
    err(chat.post("/v1/channels", "alice", {"name": "x", "members": ["ghost"]}), 404, "not_found")
    listed = chat.get("/v1/channels", "bob")["channels"]
    assert sorted(c["channel_id"] for c in listed) == sorted(["c", made["channel_id"]])
    assert [c["channel_id"] for c in chat.get("/v1/channels", "carol")["channels"]] == ["c"]


def test_tenant_lists_all_channels_page_by_page(chat: Chat) -> None:
    for cid in ("d1", "d2", "d3"):
        ok(chat.post("/v1/channels", "tenant", {"channel_id": cid, "name": cid, "members": ["dave"]}))
    seen, after = [], None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = chat.get("/v1/channels", "tenant", **params)
        seen += [c["channel_id"] for c in page["channels"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == ["c", "d1", "d2", "d3"]


def test_direct_channels_have_exactly_two_members_and_are_unique(chat: Chat) -> None:
    err(chat.post("/v1/channels", "tenant", {"kind": "direct", "members": ["alice"]}), 422, "invalid_request")
    err(chat.post("/v1/channels", "alice", {"kind": "direct", "members": []}), 422, "invalid_request")
    three = {"kind": "direct", "members": ["bob", "carol"]}
    err(chat.post("/v1/channels", "alice", three), 422, "invalid_request")
    first = ok(chat.post("/v1/channels", "alice", {"kind": "direct", "members": ["bob"]}))
    again = ok(chat.post("/v1/channels", "alice", {"kind": "direct", "members": ["bob"]}), 200)
    from_bob = ok(chat.post("/v1/channels", "bob", {"kind": "direct", "members": ["alice"]}), 200)
    from_tenant = ok(chat.post("/v1/channels", "tenant", {"kind": "direct", "members": ["bob", "alice"]}), 200)
    assert first["channel_id"] == again["channel_id"] == from_bob["channel_id"] == from_tenant["channel_id"]
    assert again["seq"] == 1  # the replay answers with the channel's creation
    dm = first["channel_id"]
    channel = chat.channel("bob", dm)
    assert channel["kind"] == "direct"
    assert sorted(m["user_id"] for m in channel["members"]) == ["alice", "bob"]
    err(chat.post(f"/v1/channels/{dm}/members", "tenant", {"user_id": "carol"}), 422, "invalid_request")
    err(chat.call("DELETE", f"/v1/channels/{dm}/members/bob", "bob"), 422, "invalid_request")
    assert len([e for e in chat.events(types="ChannelCreated") if e["stream"] == f"channel:{dm}"]) == 1


def test_membership_and_roles_follow_the_permissions(chat: Chat) -> None:
    members = "/v1/channels/c/members"
    err(chat.post(members, "bob", {"user_id": "dave"}), 403, "forbidden", "not_channel_admin")
    err(chat.post(members, "dave", {"user_id": "dave"}), 403, "forbidden", "not_a_member")
    ok(chat.post(members, "alice", {"user_id": "dave", "role": "admin"}))
    promoted = ok(chat.post(members, "dave", {"user_id": "bob", "role": "admin"}), 200)  # a role change
    again = ok(chat.post(members, "dave", {"user_id": "bob", "role": "admin"}), 200)
    assert again["event_id"] == promoted["event_id"]
    err(chat.post(members, "dave", {"user_id": "carol", "role": "owner"}), 403, "forbidden", "not_channel_owner")
    err(chat.call("DELETE", "/v1/channels/c/members/alice", "dave"), 403, "forbidden", "not_channel_owner")
    err(chat.call("DELETE", "/v1/channels/c/members/dave", "carol"), 403, "forbidden", "not_channel_admin")
    ok(chat.call("DELETE", "/v1/channels/c/members/carol", "dave"), 200)  # an admin removes a member
    err(chat.call("GET", "/v1/channels/c", "carol"), 403, "forbidden", "not_a_member")
    err(chat.call("DELETE", "/v1/channels/c/members/carol", "alice"), 404, "not_found")
    ok(chat.call("DELETE", "/v1/channels/c/members/bob", "bob"), 200)  # anyone may leave
    ok(chat.post(members, "tenant", {"user_id": "carol", "role": "owner"}))  # the tenant may do anything
    ok(chat.call("DELETE", "/v1/channels/c/members/dave", "tenant"), 200)
    channel = chat.channel("alice")
    assert {(m["user_id"], m["role"]) for m in channel["members"]} == {("alice", "owner"), ("carol", "owner")}
    types = [e["type"] for e in chat.events() if e["stream"] == "channel:c"]
    assert types.count("MemberRoleChanged") == 1 and types.count("MemberRemoved") == 3


# --- messages ------------------------------------------------------------------------------
def test_message_edit_and_delete_rules(chat: Chat) -> None:
    posted = chat.say("alice", "hello")
    mid = posted["message_id"]
    (message,) = chat.messages("bob")
    assert message["message_id"] == mid and message["text"] == "hello" and message["author_id"] == "alice"
    assert message["seq"] == posted["seq"] and message["channel_id"] == "c"
    assert message["edited_at"] is None and message["deleted"] is False
    assert message["reactions"] == {} and message["reply_count"] == 0 and message["parent_id"] is None
    assert parse_time(message["created_at"]) <= datetime.now(UTC) + timedelta(seconds=5)
    path = f"/v1/channels/c/messages/{mid}"
    err(chat.call("PATCH", path, "bob", json={"text": "hacked"}), 403, "forbidden", "not_author")
    err(chat.call("PATCH", path, "tenant", json={"text": "   "}), 422, "invalid_request")
    ok(chat.call("PATCH", path, "alice", json={"text": "hello, edited"}), 200)
    (message,) = chat.messages("bob")
    assert message["text"] == "hello, edited" and message["edited_at"] is not None
    err(chat.call("DELETE", path, "bob"), 403, "forbidden", "not_author")
    ok(chat.post("/v1/channels/c/members", "alice", {"user_id": "carol", "role": "admin"}), 200)
    deleted = ok(chat.call("DELETE", path, "carol"), 200)  # a channel admin may delete
    again = ok(chat.call("DELETE", path, "alice"), 200)
    assert again["event_id"] == deleted["event_id"]
    (tombstone,) = chat.messages("bob")
    assert tombstone["message_id"] == mid and tombstone["deleted"] is True and tombstone["text"] is None
    err(chat.call("PATCH", path, "alice", json={"text": "back"}), 409, "conflict", "message_deleted")
    err(chat.post(f"{path}/reactions", "bob", {"emoji": "👍"}), 409, "conflict", "message_deleted")
    own = chat.say("bob", "mine")
    ok(chat.call("DELETE", f"/v1/channels/c/messages/{own['message_id']}", "bob"), 200)  # the author may delete
    err(chat.call("PATCH", "/v1/channels/c/messages/nope", "alice", json={"text": "x"}), 404, "not_found")
    assert [m["deleted"] for m in chat.messages("alice")] == [True, True]


def test_tenant_posts_for_a_user_and_boundaries_of_text(chat: Chat) -> None:
    written = chat.say("tenant", "from the backend", user_id="bob")
    err(chat.post("/v1/channels/c/messages", "tenant", {"text": "who?"}), 422, "invalid_request")
    err(chat.post("/v1/channels/c/messages", "alice", {"text": "x", "user_id": "bob"}), 403, "forbidden")
    err(chat.post("/v1/channels/c/messages", "dave", {"text": "let me in"}), 403, "forbidden", "not_a_member")
    longest = chat.say("alice", "x" * 5000)
    err(chat.post("/v1/channels/c/messages", "alice", {"text": "x" * 5001}), 422, "invalid_request")
    err(chat.post("/v1/channels/c/messages", "alice", {"text": "  "}), 422, "invalid_request")
    with_file = chat.say("carol", "", attachments=[{"type": "image", "url": "https://cdn.example/a.png"}])
    messages = {m["message_id"]: m for m in chat.messages("bob")}
    assert messages[written["message_id"]]["author_id"] == "bob"
    assert len(messages[longest["message_id"]]["text"]) == 5000
    assert messages[with_file["message_id"]]["attachments"] == [{"type": "image", "url": "https://cdn.example/a.png"}]
    assert len(messages) == 3


def test_threads_count_replies_and_stay_out_of_the_timeline(chat: Chat) -> None:
    parent = chat.say("alice", "question")
    pid = parent["message_id"]
    r1 = chat.say("bob", "answer 1", parent_id=pid)
    r2 = chat.say("carol", "answer 2", parent_id=pid)
    after = chat.say("alice", "next topic")
    timeline = chat.messages("bob")
    assert [m["message_id"] for m in timeline] == [after["message_id"], pid]
    assert timeline[1]["reply_count"] == 2 and timeline[0]["reply_count"] == 0
    thread = chat.get(f"/v1/channels/c/messages/{pid}/thread", "carol")["messages"]
    assert [(m["message_id"], m["text"], m["parent_id"]) for m in thread] == [
        (r1["message_id"], "answer 1", pid),
        (r2["message_id"], "answer 2", pid),
    ]
    assert chat.channel("bob")["last_message"]["message_id"] == after["message_id"]
    reply_to_reply = {"text": "x", "parent_id": r1["message_id"]}
    err(chat.post("/v1/channels/c/messages", "alice", reply_to_reply), 422, "invalid_request", "invalid_parent")
    err(chat.post("/v1/channels/c/messages", "alice", {"text": "x", "parent_id": "nope"}), 422, "invalid_request")
    err(chat.call("GET", "/v1/channels/c/messages/nope/thread", "alice"), 404, "not_found")
    err(chat.call("GET", f"/v1/channels/c/messages/{pid}/thread", "dave"), 403, "forbidden")
    ok(chat.call("DELETE", f"/v1/channels/c/messages/{pid}", "alice"), 200)
    err(chat.post("/v1/channels/c/messages", "bob", {"text": "late", "parent_id": pid}), 422, "invalid_request")


def test_reactions_add_idempotently_and_remove(chat: Chat) -> None:
    mid = chat.say("alice", "react to me")["message_id"]
    reactions = f"/v1/channels/c/messages/{mid}/reactions"
    first = ok(chat.post(reactions, "bob", {"emoji": "👍"}))
    again = ok(chat.post(reactions, "bob", {"emoji": "👍"}), 200)
    assert again["event_id"] == first["event_id"]
    ok(chat.post(reactions, "alice", {"emoji": "👍"}))
    ok(chat.post(reactions, "tenant", {"emoji": "🎉", "user_id": "carol"}))
    err(chat.post(reactions, "dave", {"emoji": "👍"}), 403, "forbidden")
    err(chat.post(reactions, "tenant", {"emoji": "👍"}), 422, "invalid_request")
    (message,) = chat.messages("carol")
    assert sorted(message["reactions"]["👍"]) == ["alice", "bob"] and message["reactions"]["🎉"] == ["carol"]
    ok(chat.call("DELETE", f"{reactions}/👍", "bob"), 200)
    err(chat.call("DELETE", f"{reactions}/👍", "bob"), 404, "not_found")
    ok(chat.call("DELETE", f"{reactions}/🎉", "tenant", params={"user_id": "carol"}), 200)
    (message,) = chat.messages("carol")
    assert message["reactions"] == {"👍": ["alice"]}
    ok(chat.call("DELETE", f"{reactions}/👍", "alice"), 200)
    assert chat.messages("carol")[0]["reactions"] == {}
    types = [e["type"] for e in chat.events(types="ReactionAdded,ReactionRemoved")]
    assert types == ["ReactionAdded"] * 3 + ["ReactionRemoved"] * 3


def test_read_markers_drive_unread_counts_and_never_move_back(chat: Chat) -> None:
    seqs = [chat.say("alice", f"m{i}")["seq"] for i in range(3)]
    chat.say("bob", "my own message does not count")
    assert chat.channel("bob")["unread_count"] == 3
    assert chat.channel("alice")["unread_count"] == 1
    (listed,) = chat.get("/v1/channels", "bob")["channels"]
    assert listed["unread_count"] == 3 and listed["last_message"]["text"] == "my own message does not count"
    ok(chat.post("/v1/channels/c/read", "bob", {"seq": seqs[1]}), 200)
    assert chat.channel("bob")["unread_count"] == 1
    back = ok(chat.post("/v1/channels/c/read", "bob", {"seq": seqs[0]}), 200)
    assert chat.channel("bob")["unread_count"] == 1
    same = ok(chat.post("/v1/channels/c/read", "bob", {"seq": seqs[1]}), 200)
    assert back["event_id"] == same["event_id"]
    head = chat.channel("bob")["head_seq"]
    err(chat.post("/v1/channels/c/read", "bob", {"seq": head + 1}), 422, "invalid_request", "read_marker_ahead")
    ok(chat.post("/v1/channels/c/read", "tenant", {"seq": head, "user_id": "bob"}), 200)
    assert chat.channel("bob")["unread_count"] == 0
    assert chat.channel("carol")["unread_count"] == 4
    assert [e["payload"]["seq"] for e in chat.events(types="ReadMarkerMoved")] == [seqs[1], head]


def test_muted_members_read_but_cannot_post_until_unmuted(chat: Chat) -> None:
    chat.say("alice", "before the mute")
    ok(chat.post("/v1/channels/c/mutes", "alice", {"user_id": "bob"}))
    err(chat.post("/v1/channels/c/messages", "bob", {"text": "hey"}), 403, "forbidden", "member_muted")
    assert [m["text"] for m in chat.messages("bob")] == ["before the mute"]
    err(chat.post("/v1/channels/c/mutes", "carol", {"user_id": "bob"}), 403, "forbidden", "not_channel_admin")
    err(chat.post("/v1/channels/c/mutes", "alice", {"user_id": "dave"}), 404, "not_found")
    ok(chat.call("DELETE", "/v1/channels/c/mutes/bob", "tenant"), 200)
    err(chat.call("DELETE", "/v1/channels/c/mutes/bob", "tenant"), 404, "not_found")
    chat.say("bob", "free again")
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    ok(chat.post("/v1/channels/c/mutes", "alice", {"user_id": "bob", "until": past}))
    chat.say("bob", "an expired mute does not block")
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    ok(chat.post("/v1/channels/c/mutes", "alice", {"user_id": "bob", "until": future}))
    muted = err(chat.post("/v1/channels/c/messages", "bob", {"text": "no"}), 403, "forbidden", "member_muted")
    assert muted["details"]["until"]
    texts = [m["text"] for m in chat.messages("tenant")]
    assert texts == ["an expired mute does not block", "free again", "before the mute"]


def test_banned_users_are_removed_and_cannot_rejoin_until_unbanned(chat: Chat) -> None:
    banned = ok(chat.post("/v1/channels/c/bans", "alice", {"user_id": "bob", "reason": "spam"}))
    again = ok(chat.post("/v1/channels/c/bans", "alice", {"user_id": "bob"}), 200)
    assert again["event_id"] == banned["event_id"]
    assert [m["user_id"] for m in chat.channel("alice")["members"]] == ["alice", "carol"]
    err(chat.call("GET", "/v1/channels/c/messages", "bob"), 403, "forbidden")
    err(chat.post("/v1/channels/c/messages", "bob", {"text": "I'm back"}), 403, "forbidden")
    err(chat.post("/v1/channels/c/members", "alice", {"user_id": "bob"}), 403, "forbidden", "member_banned")
    err(chat.post("/v1/channels/c/members", "tenant", {"user_id": "bob"}), 403, "forbidden", "member_banned")
    assert chat.get("/v1/channels", "bob")["channels"] == []
    err(chat.post("/v1/channels/c/bans", "carol", {"user_id": "alice"}), 403, "forbidden")
    ok(chat.call("DELETE", "/v1/channels/c/bans/bob", "alice"), 200)
    err(chat.call("DELETE", "/v1/channels/c/bans/bob", "alice"), 404, "not_found")
    ok(chat.post("/v1/channels/c/members", "alice", {"user_id": "bob"}))
    chat.say("bob", "I'm back")
    assert [e["payload"]["user_id"] for e in chat.events(types="MemberBanned")] == ["bob"]


# --- history -------------------------------------------------------------------------------
def test_history_pages_with_cursors(chat: Chat) -> None:
    seqs = [chat.say("alice" if i % 2 else "bob", f"m{i}")["seq"] for i in range(23)]
    newest_first: list[int] = []
    params: dict[str, Any] = {"limit": 10}
    while True:
        page = chat.get("/v1/channels/c/messages", "carol", **params)
        newest_first += [m["seq"] for m in page["messages"]]
        if page["next_before_seq"] is None:
            break
        params = {"limit": 10, "before_seq": page["next_before_seq"]}
    assert newest_first == seqs[::-1]
    oldest_first: list[int] = []
    params = {"limit": 10, "after_seq": 0}
    while True:
        page = chat.get("/v1/channels/c/messages", "carol", **params)
        oldest_first += [m["seq"] for m in page["messages"]]
        if page["next_after_seq"] is None:
            break
        params = {"limit": 10, "after_seq": page["next_after_seq"]}
    assert oldest_first == seqs
    window = chat.messages("carol", after_seq=seqs[4], before_seq=seqs[8])
    assert [m["seq"] for m in window] == seqs[5:8]
    assert [m["seq"] for m in chat.messages("carol")] == seqs[::-1]  # default page holds them all
    assert chat.messages("carol", before_seq=seqs[0]) == []


# --- idempotency ---------------------------------------------------------------------------
def test_idempotency_key_replays_the_first_result(chat: Chat) -> None:
    key = {"Idempotency-Key": "order-42"}
    first = ok(chat.post("/v1/channels/c/messages", "alice", {"text": "once"}, headers=key))
    retry = ok(chat.post("/v1/channels/c/messages", "alice", {"text": "once"}, headers=key), 200)
    assert retry == first
    err(chat.post("/v1/channels/c/messages", "alice", {"text": "twice"}, headers=key), 409, "conflict")
    err(chat.post("/v1/channels/c/members", "alice", {"user_id": "dave"}, headers=key), 409, "conflict")
    assert [m["text"] for m in chat.messages("bob")] == ["once"]
    # concurrent retries of one request: one append, one answer
    body, key = {"text": "in parallel"}, {"Idempotency-Key": "burst-1"}

    def send(_: int) -> httpx.Response:
        return httpx.post(f"{chat.url}/v1/channels/c/messages", json=body, headers={**chat.headers("alice"), **key})

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(send, range(6)))
    assert sorted(a.status_code for a in answers) == [200] * 5 + [201]
    assert len({a.json()["event_id"] for a in answers}) == 1
    assert [m["text"] for m in chat.messages("bob")] == ["in parallel", "once"]
    # other commands honour it too
    again = {"Idempotency-Key": "k"}
    created = ok(chat.post("/v1/channels", "alice", {"name": "x", "members": ["bob"]}, headers=again))
    replay = ok(chat.post("/v1/channels", "alice", {"name": "x", "members": ["bob"]}, headers=again), 200)
    assert replay["channel_id"] == created["channel_id"] and replay["event_id"] == created["event_id"]
    issued = ok(chat.post("/v1/api-keys", "tenant", {"name": "ci"}, headers={"Idempotency-Key": "key-1"}))
    reissued = ok(chat.post("/v1/api-keys", "tenant", {"name": "ci"}, headers={"Idempotency-Key": "key-1"}), 200)
    assert reissued["key_id"] == issued["key_id"] and reissued["api_key"] is None
    assert [e["type"] for e in chat.events(types="ApiKeyIssued")].count("ApiKeyIssued") == 2  # first key + ci
    err(
        chat.post("/v1/channels/c/messages", "alice", {"text": "x"}, headers={"Idempotency-Key": ""}),
        422,
        "invalid_request",
    )


REQUEST_IDS: list[tuple[str | bytes, str | None]] = [
    ("req-42:a/b=c", "req-42:a/b=c"),  # kept: 1 to 128 visible ASCII characters
    ("r" * 128, "r" * 128),
    ("", None),  # the rest are replaced by a generated id (a blank one arrives empty: HTTP parsers cut it)
    ("r" * 129, None),
    ("two words", None),
    (b"caf\xe9", None),
]


def test_a_request_id_names_the_request_only_if_usable_and_its_commands_record_the_one_echoed(chat: Chat) -> None:
    for given, kept in REQUEST_IDS:
        answer = chat.post("/v1/channels/c/messages", "alice", {"text": repr(given)}, headers={"X-Request-Id": given})
        echoed = answer.headers["x-request-id"]
        if kept is not None:
            assert echoed == kept
        else:
            assert re.fullmatch("[0-9a-f]{32}", echoed), (given, echoed)
        [posted] = [
            e for e in chat.events(min_position=ok(answer)["position"]) if e["event_id"] == answer.json()["event_id"]
        ]
        assert posted["correlation_id"] == echoed, given


def test_client_msg_id_retries_return_the_first_message(chat: Chat) -> None:
    first = chat.say("bob", "hi", client_msg_id="local-1")
    retry = ok(chat.post("/v1/channels/c/messages", "bob", {"text": "hi", "client_msg_id": "local-1"}), 200)
    assert retry["event_id"] == first["event_id"] and retry["message_id"] == first["message_id"]
    changed = ok(chat.post("/v1/channels/c/messages", "bob", {"text": "hi!", "client_msg_id": "local-1"}), 200)
    assert changed["message_id"] == first["message_id"]
    other_author = chat.say("carol", "hi", client_msg_id="local-1")
    assert other_author["message_id"] != first["message_id"]
    assert [(m["author_id"], m["text"]) for m in chat.messages("alice")] == [("carol", "hi"), ("bob", "hi")]


# --- read-your-writes ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(Path(tmp_path_factory.mktemp("caas-wait")) / "data", env={"CAAS_QUERY_WAIT_SECONDS": "0.5"})
    yield srv.start()
    srv.stop()


def test_min_position_waits_for_the_read_model_then_gives_up(impatient_server: Server, client: httpx.Client) -> None:
    tenant = new_tenant(client, impatient_server.url)
    world = Chat(client, tenant, {"alice": tenant.user(client, "alice")})
    made = ok(world.post("/v1/channels", "alice", {"channel_id": "c", "name": "c"}))
    posted = world.say("alice", "visible")
    assert [m["text"] for m in world.messages("alice", min_position=posted["position"])] == ["visible"]
    assert world.channel("alice", min_position=made["position"])["channel_id"] == "c"
    far = 10**12
    for path in (
        "/v1/channels",
        "/v1/channels/c",
        "/v1/channels/c/messages",
        f"/v1/channels/c/messages/{posted['message_id']}/thread",
    ):
        r = world.call("GET", path, "alice", params={"min_position": far})
        err(r, 503, "unavailable")
        assert r.headers["retry-after"]


# --- the analyst's feed and operations ------------------------------------------------------
def test_events_feed_pages_in_log_order_and_filters_by_type(chat: Chat, client: httpx.Client, server: Server) -> None:
    other = new_tenant(client, server.url, "other")
    other.user(client, "alice")
    chat.say("alice", "one")
    chat.say("bob", "two")
    everything = requested_events(chat.events())  # a node's usage record may land meanwhile
    positions = [e["position"] for e in everything]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert {e["tenant_id"] for e in everything} == {chat.tenant.tenant_id}
    for e in everything:
        assert {
            "event_id",
            "tenant_id",
            "stream",
            "seq",
            "position",
            "type",
            "schema_version",
            "occurred_at",
            "actor",
            "command_id",
            "causation_id",
            "correlation_id",
            "payload",
        } <= set(e)
    paged, after = [], 0
    while True:
        page = chat.get("/v1/events", "tenant", after_position=after, limit=3)
        assert len(page["events"]) <= 3
        paged += page["events"]
        if page["next_after_position"] is None:
            break
        after = page["next_after_position"]
    assert [e["event_id"] for e in requested_events(paged)] == [e["event_id"] for e in everything]
    filtered = chat.events(types="MessagePosted,ChannelCreated")
    assert [e["type"] for e in filtered] == ["ChannelCreated", "MessagePosted", "MessagePosted"]
    assert [e["payload"].get("text") for e in filtered][1:] == ["one", "two"]
    tail = requested_events(chat.get("/v1/events", "tenant", after_position=filtered[1]["position"])["events"])
    assert [e["position"] for e in tail] == [p for p in positions if p > filtered[1]["position"]]
    channel_seqs = [e["seq"] for e in everything if e["stream"] == "channel:c"]
    assert channel_seqs == list(range(1, len(channel_seqs) + 1))


def test_health_readiness_and_openapi(server: Server, client: httpx.Client) -> None:
    assert ok(client.get(f"{server.url}/healthz"), 200)["status"] == "ok"
    ready = ok(client.get(f"{server.url}/readyz"), 200)
    assert ready["status"] == "ready"
    lag = [v for k, v in ready.items() if k.startswith("projection_lag")]
    assert lag and lag[0] >= 0, ready
    document = ok(client.get(f"{server.url}/openapi.json"), 200)
    assert document["openapi"].startswith("3.")
    listed = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert listed == {(api.method, api.path) for api in ROUTES}
    for api in ROUTES:
        op = document["paths"][api.path][api.method.lower()]
        assert str(api.status) in op["responses"] and "4XX" in op["responses"]
        assert ("security" in op) == bool(api.who)
    assert "ErrorBody" in document["components"]["schemas"]


# --- status codes --------------------------------------------------------------------------
def test_writes_answer_201_only_when_they_create_and_200_when_they_update_or_delete(chat: Chat) -> None:
    """201 Created means a new resource; an edit, an update or a removal is 200 OK."""
    users = f"{chat.url}/v1/users/erin"
    ok(chat.client.put(users, json={"name": "Erin"}, headers=chat.headers("tenant")), 201)
    ok(chat.client.put(users, json={"name": "Erin B."}, headers=chat.headers("tenant")), 200)
    ok(chat.call("PUT", "/v1/cors", "tenant", json={"origins": ["https://app.example"]}), 200)
    ok(chat.post("/v1/channels", "alice", {"channel_id": "d", "name": "D", "members": ["bob"]}), 201)
    ok(chat.post("/v1/channels/c/members", "alice", {"user_id": "dave"}), 201)
    ok(chat.post("/v1/channels/c/members", "alice", {"user_id": "dave", "role": "admin"}), 200)  # a role change
    mid = ok(chat.post("/v1/channels/c/messages", "alice", {"text": "hello"}), 201)["message_id"]
    message = f"/v1/channels/c/messages/{mid}"
    ok(chat.call("PATCH", message, "alice", json={"text": "hello, edited"}), 200)
    ok(chat.post(f"{message}/reactions", "bob", {"emoji": "👍"}), 201)
    ok(chat.call("DELETE", f"{message}/reactions/👍", "bob"), 200)
    ok(chat.post("/v1/channels/c/read", "bob", {"seq": 1}), 200)
    ok(chat.post("/v1/channels/c/mutes", "alice", {"user_id": "bob"}), 201)
    ok(chat.call("DELETE", "/v1/channels/c/mutes/bob", "alice"), 200)
    ok(chat.post("/v1/channels/c/bans", "alice", {"user_id": "carol"}), 201)
    ok(chat.call("DELETE", "/v1/channels/c/bans/carol", "alice"), 200)
    ok(chat.call("DELETE", "/v1/channels/c/members/dave", "alice"), 200)
    ok(chat.call("DELETE", message, "alice"), 200)
    key = ok(chat.post("/v1/api-keys", "tenant", {"name": "ci"}), 201)
    ok(chat.call("DELETE", f"/v1/api-keys/{key['key_id']}", "tenant"), 200)
    ok(chat.post("/v1/signing-keys", "tenant"), 201)


def test_openapi_documents_the_statuses_each_write_answers(server: Server, client: httpx.Client) -> None:
    document = ok(client.get(f"{server.url}/openapi.json"), 200)
    statuses = {
        (method.upper(), path): sorted(code for code in op["responses"] if code.startswith("2"))
        for path, ops in document["paths"].items()
        for method, op in ops.items()
    }
    creates = ["200", "201"]  # 200: the replay of an idempotent retry (or, for an upsert, an update)
    assert statuses["PATCH", "/v1/channels/{cid}/messages/{mid}"] == ["200"]
    assert statuses["PUT", "/v1/users/{user_id}"] == creates
    assert statuses["PUT", "/v1/cors"] == ["200"]
    assert statuses["POST", "/v1/channels/{cid}/messages"] == creates
    assert statuses["POST", "/v1/channels/{cid}/read"] == ["200"]
    assert statuses["POST", "/v1/channels/{cid}/typing"] == ["202"]
    deletes = [(m, p) for (m, p) in statuses if m == "DELETE"]
    every_delete = sum(1 for api in ROUTES if api.method == "DELETE")  # each part adds its own
    assert len(deletes) == every_delete >= 10 and all(statuses[d] == ["200"] for d in deletes), statuses
