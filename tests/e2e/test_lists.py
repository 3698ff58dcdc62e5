"""The list routes the tenant portal reads (docs/api.md): API keys, signing keys, CORS origins, users
by id prefix, a channel's members with their moderation state. Tenant API key only; bad input is
``422 invalid_request``."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support import Server, Tenant


def get(client: httpx.Client, tenant: Tenant, path: str, **params: Any) -> Any:
    r = client.get(f"{tenant.url}{path}", params=params, headers=tenant.headers())
    assert r.status_code == 200, r.text
    return r.json()


def test_api_keys_signing_keys_and_origins_list_what_was_recorded(
    server: Server, tenant: Tenant, client: httpx.Client
) -> None:
    first = get(client, tenant, "/v1/api-keys")["api_keys"]
    assert [(k["name"], k["revoked"]) for k in first] == [("default", False)]
    issued = client.post(f"{server.url}/v1/api-keys", json={"name": "ci"}, headers=tenant.headers()).json()
    client.delete(f"{server.url}/v1/api-keys/{issued['key_id']}", headers=tenant.headers())
    listed = get(client, tenant, "/v1/api-keys")
    assert [(k["key_id"], k["name"], k["revoked"]) for k in listed["api_keys"]] == [
        (first[0]["key_id"], "default", False),
        (issued["key_id"], "ci", True),
    ]
    assert issued["api_key"].split("_", 4)[4] not in str(listed), "a secret is shown once"
    assert get(client, tenant, "/v1/signing-keys") == {"kid": "v1", "verifying": ["v1"]}
    client.post(f"{server.url}/v1/signing-keys", headers=tenant.headers())
    assert get(client, tenant, "/v1/signing-keys") == {"kid": "v2", "verifying": ["v2", "v1"]}
    assert get(client, tenant, "/v1/cors") == {"origins": []}
    origins = ["https://b.example", "https://a.example"]
    client.put(f"{server.url}/v1/cors", json={"origins": origins}, headers=tenant.headers())
    assert get(client, tenant, "/v1/cors") == {"origins": sorted(origins)}


def test_users_are_searched_by_id_prefix_and_paged(server: Server, tenant: Tenant, client: httpx.Client) -> None:
    position = 0
    for uid in ("bob", "alice", "alex", "al.x", "carol"):
        r = client.put(f"{server.url}/v1/users/{uid}", json={"name": uid.title()}, headers=tenant.headers())
        position = r.json()["position"]
    everyone = get(client, tenant, "/v1/users", min_position=position)
    assert [u["user_id"] for u in everyone["users"]] == ["al.x", "alex", "alice", "bob", "carol"]
    assert everyone["next_after"] is None
    assert everyone["users"][2]["name"] == "Alice" and everyone["users"][2]["created_at"]
    assert [u["user_id"] for u in get(client, tenant, "/v1/users", prefix="al")["users"]] == ["al.x", "alex", "alice"]
    assert get(client, tenant, "/v1/users", prefix="zed")["users"] == []
    page = get(client, tenant, "/v1/users", prefix="al", limit=2)
    assert [u["user_id"] for u in page["users"]] == ["al.x", "alex"] and page["next_after"] == "alex"
    rest = get(client, tenant, "/v1/users", prefix="al", limit=2, after=page["next_after"])
    assert [u["user_id"] for u in rest["users"]] == ["alice"]
    for bad in (
        {"prefix": ""},
        {"prefix": "a b"},
        {"prefix": "x" * 129},
        {"after": "-x"},
        {"limit": "0"},
        {"limit": "201"},
    ):
        r = client.get(f"{server.url}/v1/users", params=bad, headers=tenant.headers())
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", (bad, r.text)


def channel_of(client: httpx.Client, tenant: Tenant, cid: str, members: list[str]) -> None:
    """Register ``members`` and make them channel ``cid``."""
    for uid in members:
        tenant.user(client, uid)
    body = {"channel_id": cid, "name": cid.title(), "members": members}
    made = client.post(f"{tenant.url}/v1/channels", json=body, headers=tenant.headers())
    assert made.status_code == 201, made.text


def test_members_list_roles_mutes_and_bans(server: Server, tenant: Tenant, client: httpx.Client) -> None:
    channel_of(client, tenant, "mod", ["owner", "m1", "m2"])
    url = f"{server.url}/v1/channels/mod"
    client.post(f"{url}/members", json={"user_id": "owner", "role": "owner"}, headers=tenant.headers())
    client.post(f"{url}/mutes", json={"user_id": "m1"}, headers=tenant.headers())
    last = client.post(f"{url}/bans", json={"user_id": "m2", "reason": "spam"}, headers=tenant.headers())
    assert last.status_code == 201, last.text
    members = get(client, tenant, "/v1/channels/mod/members", min_position=last.json()["position"])["members"]
    by_id = {m["user_id"]: m for m in members}
    assert [m["user_id"] for m in members][-1] == "m2", "current members first"
    assert by_id["owner"]["role"] == "owner" and by_id["owner"]["active"]
    assert by_id["m1"]["muted"] and by_id["m1"]["active"] and not by_id["m1"]["banned"]
    assert by_id["m2"]["banned"] and not by_id["m2"]["active"]
    missing = client.get(f"{server.url}/v1/channels/nope/members", headers=tenant.headers())
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    alice = tenant.user(client, "alice")
    as_user = client.get(f"{url}/members", headers={"authorization": f"Bearer {alice}"})
    assert as_user.status_code == 403 and as_user.json()["error"]["details"]["rule"] == "wrong_credential"


def test_members_and_api_keys_page_with_limit_and_after_and_list_all_without(
    server: Server, tenant: Tenant, client: httpx.Client
) -> None:
    channel_of(client, tenant, "paged", ["zed", "amy", "kim"])
    left = client.delete(f"{server.url}/v1/channels/paged/members/amy", headers=tenant.headers())
    assert left.status_code == 200, left.text
    path, at = "/v1/channels/paged/members", left.json()["position"]
    everyone = get(client, tenant, path, min_position=at)
    assert [m["user_id"] for m in everyone["members"]][-1] == "amy" and everyone["next_after"] is None
    first = get(client, tenant, path, limit=2)
    assert [m["user_id"] for m in first["members"]] == ["amy", "kim"] and first["next_after"] == "kim"
    rest = get(client, tenant, path, limit=2, after="kim")
    assert [m["user_id"] for m in rest["members"]] == ["zed"] and rest["next_after"] is None

    keys = [get(client, tenant, "/v1/api-keys")["api_keys"][0]["key_id"]]
    for name in ("ci", "ops"):
        issued = client.post(f"{server.url}/v1/api-keys", json={"name": name}, headers=tenant.headers())
        keys.append(issued.json()["key_id"])
    listed = get(client, tenant, "/v1/api-keys")
    assert [k["key_id"] for k in listed["api_keys"]] == keys and listed["next_after"] is None
    page = get(client, tenant, "/v1/api-keys", limit=2)
    assert [k["key_id"] for k in page["api_keys"]] == keys[:2] and page["next_after"] == keys[1]
    last = get(client, tenant, "/v1/api-keys", limit=2, after=keys[1])
    assert [k["key_id"] for k in last["api_keys"]] == keys[2:] and last["next_after"] is None
    for route, bad in (
        (path, {"limit": "0"}),
        (path, {"limit": "201"}),
        (path, {"after": "-x"}),
        ("/v1/api-keys", {"limit": "0"}),
        ("/v1/api-keys", {"after": "k-nobody"}),
    ):
        r = client.get(f"{server.url}{route}", params=bad, headers=tenant.headers())
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", (route, bad, r.text)
