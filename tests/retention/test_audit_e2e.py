"""The audit trail end to end, on both backends (docs/audit.md): admin, key, moderation and
retention actions listed with actor, time and request id; filters, paging, export; one tenant
never sees another's."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

import httpx

from tests.retention.test_retention_e2e import channel, ok, post
from tests.security.common import WAIT
from tests.support import Server, Tenant, bearer, new_tenant


def audit(client: httpx.Client, tenant: Tenant, **params: Any) -> dict[str, Any]:
    return ok(client.get(f"{tenant.url}/v1/audit", params=params, headers=tenant.headers(), timeout=WAIT))


def acted(client: httpx.Client, tenant: Tenant) -> tuple[dict[str, str], int]:
    """Do one of each kind of audited action, each with its own X-Request-Id; also a user
    deleting their own message and leaving a channel (not audited). Returns the request id of
    each action, and the last position."""
    rid: dict[str, str] = {}

    def call(name: str, method: str, path: str, token: str | None = None, **kw: Any) -> dict[str, Any]:
        rid[name] = f"{name}-{uuid.uuid4().hex[:8]}"
        auth = bearer(token) if token is not None else tenant.headers()
        return ok(client.request(method, f"{tenant.url}{path}", headers={**auth, "x-request-id": rid[name]}, **kw))

    alice, bob = tenant.user(client, "alice"), tenant.user(client, "bob")
    tenant.user(client, "carol")
    issued = call("issue", "POST", "/v1/api-keys", json={"name": "ci"})
    call("revoke", "DELETE", f"/v1/api-keys/{issued['key_id']}")
    call("rotate", "POST", "/v1/signing-keys")
    call("cors", "PUT", "/v1/cors", json={"origins": ["https://app.example"]})
    channel(client, tenant, "room", ["alice", "bob", "carol"])
    call("mute", "POST", "/v1/channels/room/mutes", json={"user_id": "bob"})
    call("ban", "POST", "/v1/channels/room/bans", json={"user_id": "carol", "reason": "spam"})
    theirs = post(client, tenant, "room", alice, "moderate me")
    call("moderated", "DELETE", f"/v1/channels/room/messages/{theirs['message_id']}")
    own = post(client, tenant, "room", alice, "my own")
    call("own", "DELETE", f"/v1/channels/room/messages/{own['message_id']}", token=alice)
    call("leave", "DELETE", "/v1/channels/room/members/bob", token=bob)
    call("retention", "PUT", "/v1/retention", json={"days": 30})
    call("hold", "POST", "/v1/users/alice/legal-hold", json={"reason": "case 7"})
    last = call("release", "DELETE", "/v1/users/alice/legal-hold", json={"reason": "closed"})
    return rid, last["position"]


async def test_the_audit_lists_every_admin_key_moderation_and_retention_action(
    aged: Server, client: httpx.Client
) -> None:
    tenant = new_tenant(client, aged.url)
    first_key = ok(client.get(f"{tenant.url}/v1/api-keys", headers=tenant.headers()))["api_keys"][0]["key_id"]
    rid, position = acted(client, tenant)
    entries = audit(client, tenant, min_position=position, limit=1000)["entries"]
    by_request = {e["request_id"]: e for e in entries}
    expected = {
        "issue": "ApiKeyIssued", "revoke": "ApiKeyRevoked", "rotate": "SigningKeyRotated", "cors": "AllowedOriginsSet",
        "mute": "MemberMuted", "ban": "MemberBanned", "moderated": "MessageDeleted", "retention": "RetentionSet",
        "hold": "LegalHoldPlaced", "release": "LegalHoldReleased",
    }  # fmt: skip
    for name, action in expected.items():
        entry = by_request[rid[name]]
        assert entry["action"] == action, entry
        assert entry["actor"] == f"tenant:{first_key}" and entry["occurred_at"].endswith("Z")
    assert rid["own"] not in by_request and rid["leave"] not in by_request, "own deletes and leaving are not audited"
    assert by_request[rid["ban"]]["details"] == {"user_id": "carol", "reason": "spam"}
    assert by_request[rid["ban"]]["target"] == "channel:room" and by_request[rid["ban"]]["category"] == "moderation"
    assert by_request[rid["hold"]]["target"] == "user:alice"
    assert "key_hash" not in by_request[rid["issue"]]["details"]
    assert entries[0]["action"] == "TenantRegistered" and entries[0]["actor"] == "admin:admin"
    assert [e["position"] for e in entries] == sorted(e["position"] for e in entries)

    # filters: category or type, actor, time
    moderation = audit(client, tenant, action="moderation")["entries"]
    assert [e["action"] for e in moderation] == ["MemberMuted", "MemberBanned", "MessageDeleted"]
    keys = audit(client, tenant, action="ApiKeyRevoked,SigningKeyRotated")["entries"]
    assert [e["request_id"] for e in keys] == [rid["revoke"], rid["rotate"]]
    assert {e["actor"] for e in audit(client, tenant, actor="admin:admin")["entries"]} == {"admin:admin"}
    since = by_request[rid["mute"]]["occurred_at"]
    later = audit(client, tenant, **{"from": since})["entries"]
    assert later and all(e["occurred_at"] >= since for e in later) and rid["mute"] in {e["request_id"] for e in later}
    assert all(e["occurred_at"] < since for e in audit(client, tenant, to=since)["entries"])

    # pages of two add up to the whole trail
    paged: list[dict[str, Any]] = []
    cursor: int | None = 0
    while cursor is not None:
        page = audit(client, tenant, limit=2, after=cursor)
        paged += page["entries"]
        cursor = page["next_after"]
    assert paged == entries

    # exports: every entry, streamed
    r = client.get(f"{tenant.url}/v1/audit", params={"format": "jsonl"}, headers=tenant.headers())
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line) for line in r.text.splitlines()] == entries
    r = client.get(f"{tenant.url}/v1/audit", params={"format": "csv", "action": "moderation"}, headers=tenant.headers())
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["action"] for row in rows] == ["MemberMuted", "MemberBanned", "MessageDeleted"]
    assert rows[1]["request_id"] == rid["ban"] and json.loads(rows[1]["details"])["reason"] == "spam"
    # a client's request id that a spreadsheet would run as a formula is defused
    hold = {"reason": "=cmd"}
    r = client.post(
        f"{tenant.url}/v1/channels/room/legal-hold", json=hold, headers={**tenant.headers(), "x-request-id": "=1+1"}
    )
    r = client.get(f"{tenant.url}/v1/audit", params={"format": "csv", "min_position": ok(r)["position"]},
                   headers=tenant.headers())  # fmt: skip
    last = list(csv.DictReader(io.StringIO(r.text)))[-1]
    assert last["request_id"] == "'=1+1" and last["action"] == "LegalHoldPlaced"


def test_the_audit_is_tenant_scoped_and_refuses_bad_queries(aged: Server, client: httpx.Client) -> None:
    one, other = new_tenant(client, aged.url), new_tenant(client, aged.url)
    rid, position = acted(client, one)
    mine = audit(client, other, min_position=position)["entries"]
    assert [e["action"] for e in mine] == ["TenantRegistered", "ApiKeyIssued"]
    assert not set(rid.values()) & {e["request_id"] for e in mine}
    r = client.get(f"{other.url}/v1/audit", params={"format": "jsonl"}, headers=other.headers())
    assert not any(value in r.text for value in rid.values())
    for params in ({"action": "Nope"}, {"from": "yesterday"}, {"to": "2026-12-03T10:00:00"}, {"format": "xml"},
                   {"limit": 0}, {"after": "x"}, {"actor": ""}, {"bogus": 1}):  # fmt: skip
        r = client.get(f"{one.url}/v1/audit", params=params, headers=one.headers())
        assert r.status_code == 422, (params, r.text)
    alice = one.user(client, "alice")
    r = client.get(f"{one.url}/v1/audit", headers=bearer(alice))
    assert r.status_code == 403
