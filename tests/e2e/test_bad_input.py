"""Bad input on every route: a clear JSON error with the right status, never a 500, and nothing recorded.

The routes come from ``api.routes.ROUTES`` (the table that drives the router and ``/openapi.json``),
so a new route is covered by the generic checks as soon as it exists. Every test runs against one
shared, fully set-up tenant and checks afterwards that the tenant's event log did not grow.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from api.routes import ROUTES, Api
from tests.e2e_keys import Device
from tests.support import ADMIN, Server, Tenant, bearer, new_tenant, requested_events

SECRET_TEXT = "the-other-tenants-secret-text"
DEVICE = Device()  # real keys for the devices routes' valid bodies (docs/e2e.md)


# --- the world the bad requests are aimed at ------------------------------------------------
@dataclass
class World:
    url: str
    client: httpx.Client
    tenant: Tenant  # alice owns channel c, bob is a member, carol is not
    other: Tenant  # a second tenant with its own channel "secret" and users
    tokens: dict[str, str]
    other_token: str
    key_id: str  # a second, revocable API key of ``tenant``
    mid: str  # alice's message in c, with bob's 👍
    other_mid: str
    other_key_id: str
    counts: dict[str, int]

    def credential(self, kind: str) -> dict[str, str]:
        return {
            "admin": bearer(ADMIN),
            "tenant": self.tenant.headers(),
            "user": bearer(self.tokens["alice"]),
        }[kind]

    def path(self, api: Api, **override: str) -> str:
        values = {"key_id": self.key_id, "user_id": "bob", "cid": "c", "uid": "bob", "mid": self.mid, "emoji": "👍",
                  "tenant_id": self.tenant.tenant_id, "webhook_id": "w-none", "device_id": "phone",
                  "policy_id": "p-none"}  # fmt: skip
        values.update(override)
        return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], api.path)

    def count(self, tenant: Tenant) -> int:
        total, after = 0, 0
        while True:
            r = self.client.get(
                f"{self.url}/v1/events", params={"after_position": after, "limit": 1000}, headers=tenant.headers()
            )
            assert r.status_code == 200, r.text
            page = r.json()
            total += len(requested_events(page["events"]))
            if page["next_after_position"] is None:
                return total
            after = page["next_after_position"]


def _ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code in (200, 201), r.text
    data: dict[str, Any] = r.json()
    return data


@pytest.fixture(scope="module")
def world(server: Server) -> Iterator[World]:
    with httpx.Client(timeout=30) as client:
        tenant = new_tenant(client, server.url, "acme")
        tokens = {u: tenant.user(client, u) for u in ("alice", "bob", "carol")}
        url = server.url
        _ok(
            client.post(
                f"{url}/v1/channels",
                json={"channel_id": "c", "name": "c", "members": ["bob"]},
                headers=bearer(tokens["alice"]),
            )
        )
        mid = _ok(
            client.post(f"{url}/v1/channels/c/messages", json={"text": "hello"}, headers=bearer(tokens["alice"]))
        )["message_id"]
        _ok(
            client.post(
                f"{url}/v1/channels/c/messages/{mid}/reactions", json={"emoji": "👍"}, headers=bearer(tokens["bob"])
            )
        )
        key_id = _ok(client.post(f"{url}/v1/api-keys", json={"name": "spare"}, headers=tenant.headers()))["key_id"]
        other = new_tenant(client, url, "umbrella")
        other_token = other.user(client, "alice")  # same user id as in acme, other tenant
        other.user(client, "bob")
        _ok(
            client.post(
                f"{url}/v1/channels",
                json={"channel_id": "secret", "name": "secret", "members": ["bob"]},
                headers=bearer(other_token),
            )
        )
        other_mid = _ok(
            client.post(f"{url}/v1/channels/secret/messages", json={"text": SECRET_TEXT}, headers=bearer(other_token))
        )["message_id"]
        other_key_id = other.api_key.split("_")[3]
        w = World(url, client, tenant, other, tokens, other_token, key_id, mid, other_mid, other_key_id, {})
        w.counts = {"tenant": w.count(tenant), "other": w.count(other)}
        yield w


@pytest.fixture(autouse=True)
def nothing_recorded(world: World) -> Iterator[None]:
    before = world.counts["tenant"]
    yield
    world.counts["tenant"] = now = world.count(world.tenant)  # so one failure does not fail every later test
    assert now == before, f"rejected requests recorded {now - before} events"


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    where = f"{r.request.method} {r.request.url.path}"
    assert r.status_code < 500, f"{where}: {r.status_code} {r.text}"
    assert r.status_code == status, f"{where}: expected {status}, got {r.status_code} {r.text}"
    assert r.headers.get("content-type", "").startswith("application/json"), where
    body = r.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, (where, error)
    assert isinstance(error["message"], str) and error["message"].strip(), error
    assert isinstance(error["details"], dict), error
    return error


# --- the routes ----------------------------------------------------------------------------
AUTHENTICATED = [api for api in ROUTES if api.who]
WITH_BODY = [api for api in ROUTES if api.body is not None]
WITH_PATH_IDS = [(api, name) for api in ROUTES for name in re.findall(r"\{(\w+)\}", api.path)]


def route_id(api: Api) -> str:
    return f"{api.method} {api.path}"


def kind_for(api: Api) -> str:
    """A credential the route accepts; the user token where both work (it is the most restricted)."""
    return "user" if "user" in api.who else api.who[0]


VALID_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/tenants"): {"name": "x"},
    ("POST", "/v1/api-keys"): {"name": "k"},
    ("PUT", "/v1/cors"): {"origins": ["https://app.example"]},
    ("PUT", "/v1/tenants/{tenant_id}/plan"): {"plan": "free"},
    ("PUT", "/v1/users/{user_id}"): {"name": "Bob"},
    ("POST", "/v1/users/{user_id}/tokens"): {"ttl_seconds": 600},
    ("POST", "/v1/channels"): {"name": "n", "members": ["bob"]},
    ("POST", "/v1/channels/{cid}/members"): {"user_id": "carol", "role": "member"},
    ("POST", "/v1/channels/{cid}/messages"): {"text": "hi"},
    ("PATCH", "/v1/channels/{cid}/messages/{mid}"): {"text": "edited"},
    ("POST", "/v1/channels/{cid}/messages/{mid}/reactions"): {"emoji": "🎉"},
    ("POST", "/v1/channels/{cid}/read"): {"seq": 1},
    ("POST", "/v1/channels/{cid}/typing"): {},
    ("POST", "/v1/channels/{cid}/mutes"): {"user_id": "bob"},
    ("POST", "/v1/channels/{cid}/bans"): {"user_id": "bob"},
    ("POST", "/v1/webhooks"): {"url": "https://hooks.example/in"},
    ("PATCH", "/v1/webhooks/{webhook_id}"): {"enabled": True},
    ("POST", "/v1/webhooks/{webhook_id}/replay"): {"from_position": 0},
    ("PUT", "/v1/users/{user_id}/devices/{device_id}"): DEVICE.bundle(prekeys=1),
    ("POST", "/v1/users/{user_id}/devices/{device_id}/prekeys"): {"one_time_prekeys": DEVICE.prekeys(1)},
    ("PUT", "/v1/users/{user_id}/devices/{device_id}/signed-prekey"): DEVICE.signed_prekey(2),
    ("PUT", "/v1/policies/{policy_id}"): {"actions": ["typing"], "condition": False},
    ("PUT", "/v1/retention"): {"days": 30},
    ("PUT", "/v1/channels/{cid}/retention"): {"days": 7},
    ("POST", "/v1/channels/{cid}/legal-hold"): {"reason": "case 1"},
    ("DELETE", "/v1/channels/{cid}/legal-hold"): {"reason": "closed"},
    ("POST", "/v1/users/{uid}/legal-hold"): {"reason": "case 1"},
    ("DELETE", "/v1/users/{uid}/legal-hold"): {"reason": "closed"},
}

WRONG_TYPES: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("POST", "/v1/tenants"): [{"name": 7}, {"name": ""}, {"name": None}],
    ("POST", "/v1/api-keys"): [{"name": ["k"]}, {"name": "x" * 201}],
    ("PUT", "/v1/cors"): [{"origins": "https://app.example"}, {"origins": ["javascript:alert(1)"]}],
    ("PUT", "/v1/tenants/{tenant_id}/plan"): [{"plan": 7}, {"plan": ""}, {"plan": "a b"}],
    ("PUT", "/v1/users/{user_id}"): [{"name": "Bob", "metadata": "vip"}, {"name": True}, {}],
    ("POST", "/v1/users/{user_id}/tokens"): [{"ttl_seconds": "600"}, {"ttl_seconds": 1.5}, {"ttl_seconds": -1}],
    ("POST", "/v1/channels"): [
        {"members": "bob"},
        {"kind": "broadcast"},
        {"e2e": "yes"},
        {"channel_id": "a b"},
        {"members": ["bo\u0000b"]},
    ],
    ("POST", "/v1/channels/{cid}/members"): [{"user_id": "carol", "role": "king"}, {"user_id": 5}, {}],
    ("POST", "/v1/channels/{cid}/messages"): [
        {"text": 5},
        {"text": "hi", "attachments": {"url": "x"}},
        {"text": "bell\u0007"},
        {"text": "hi", "parent_id": 3},
        {"text": "hi", "client_msg_id": "has space"},
        {"text": "", "attachments": [{"type": "file", "url": "ftp://x"}]},
    ],
    ("PATCH", "/v1/channels/{cid}/messages/{mid}"): [{"text": None}, {"text": ["edited"]}, {}],
    ("POST", "/v1/channels/{cid}/messages/{mid}/reactions"): [{"emoji": 1}, {"emoji": "a b"}, {"emoji": ""}, {}],
    ("POST", "/v1/channels/{cid}/read"): [{"seq": "1"}, {"seq": 0}, {"seq": 1.0}, {}],
    ("POST", "/v1/channels/{cid}/typing"): [{"user_id": 1}],
    ("POST", "/v1/channels/{cid}/mutes"): [{"user_id": "bob", "until": "tomorrow"}, {"user_id": ["bob"]}],
    ("POST", "/v1/channels/{cid}/bans"): [{"user_id": "bob", "reason": 5}, {"user_id": None}],
    ("POST", "/v1/webhooks"): [
        {"url": 5},
        {"url": "ftp://hooks.example/in"},
        {"url": "https://hooks.example/in", "event_types": "MessagePosted"},
        {"url": "https://hooks.example/in", "event_types": []},
        {"url": "https://hooks.example/in", "event_types": ["NoSuchEvent"]},
        {},
    ],
    ("PATCH", "/v1/webhooks/{webhook_id}"): [{"enabled": "yes"}, {"url": 3}, {"event_types": []}],
    ("POST", "/v1/webhooks/{webhook_id}/replay"): [{"from_position": -1}, {"from_position": "1"}, {}],
    ("PUT", "/v1/users/{user_id}/devices/{device_id}"): [
        {**DEVICE.bundle(), "identity_key": 5},
        {**DEVICE.bundle(), "identity_key": "AAAA"},
        {**DEVICE.bundle(), "signed_prekey": {"key_id": "1", "public_key": "", "signature": ""}},
        {**DEVICE.bundle(), "one_time_prekeys": {"key_id": 1}},
        # 0xFFFFFFFF means "no one-time prekey" in a prekey message
        {**DEVICE.bundle(), "one_time_prekeys": [{"key_id": 0xFFFFFFFF, "public_key": DEVICE.identity_key}]},
        {},
    ],
    ("POST", "/v1/users/{user_id}/devices/{device_id}/prekeys"): [
        {"one_time_prekeys": [{"key_id": 1.5, "public_key": DEVICE.identity_key}]},
        {"one_time_prekeys": [{"key_id": 1, "public_key": "x"}]},
        {"one_time_prekeys": [{"key_id": 0xFFFFFFFF, "public_key": DEVICE.identity_key}]},
        {"one_time_prekeys": []},
        {},
    ],
    ("PUT", "/v1/users/{user_id}/devices/{device_id}/signed-prekey"): [
        {**DEVICE.signed_prekey(), "signature": DEVICE.identity_key},  # 32 bytes, not 64
        {**DEVICE.signed_prekey(), "key_id": -1},
        {},
    ],
    ("PUT", "/v1/policies/{policy_id}"): [
        {"actions": "typing"},
        {"actions": ["typing"], "effect": "maybe"},
        {"actions": ["fly"]},
        {"actions": ["typing"], "condition": {"x": 1}},
        {},
    ],
    ("PUT", "/v1/retention"): [{"days": "30"}, {"days": 0}, {"days": 36_501}, {"days": 1.5}, {}],
    ("PUT", "/v1/channels/{cid}/retention"): [{"days": "7"}, {"days": -1}, {}],
    ("POST", "/v1/channels/{cid}/legal-hold"): [{"reason": 5}, {"reason": ""}, {"reason": "  "}, {}],
    ("DELETE", "/v1/channels/{cid}/legal-hold"): [{"reason": 5}, {"reason": "x" * 501}],
    ("POST", "/v1/users/{uid}/legal-hold"): [{"reason": ["x"]}, {"reason": "x" * 501}, {}],
    ("DELETE", "/v1/users/{uid}/legal-hold"): [{"reason": None}],
}

MALFORMED = [b"{", b'{"text": "hi",}', b"[]", b'"text"', b"null", b"\xff\xfe", b"{'text': 'hi'}"]


def test_every_route_with_a_body_is_covered() -> None:
    assert {(api.method, api.path) for api in WITH_BODY} == set(VALID_BODIES) == set(WRONG_TYPES)


@pytest.mark.parametrize("api", AUTHENTICATED, ids=route_id)
def test_missing_or_invalid_credential_is_401(world: World, api: Api) -> None:
    url = world.url + world.path(api)
    body = VALID_BODIES.get((api.method, api.path))
    for headers in (
        {},
        {"authorization": "Bearer"},
        {"authorization": "Basic YWxpY2U6c2VjcmV0"},
        bearer("garbage"),
        bearer("caas_sk_nope"),
        bearer(world.tenant.api_key + "x"),
    ):
        r = world.client.request(api.method, url, json=body, headers=headers)
        assert_error(r, 401, "unauthenticated")


def forged_token(world: World) -> str:
    """bob's token of the other tenant with its tenant claim changed to ours: the signature no longer matches."""
    header, payload, signature = world.other_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["tid"] = world.tenant.tenant_id
    claims["aud"] = f"caas:{world.tenant.tenant_id}"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize("api", AUTHENTICATED, ids=route_id)
def test_forged_user_token_is_401(world: World, api: Api) -> None:
    body = VALID_BODIES.get((api.method, api.path))
    r = world.client.request(api.method, world.url + world.path(api), json=body, headers=bearer(forged_token(world)))
    assert_error(r, 401, "unauthenticated")


WRONG_KINDS = [(api, kind) for api in AUTHENTICATED for kind in ("admin", "tenant", "user") if kind not in api.who]


@pytest.mark.parametrize(("api", "kind"), WRONG_KINDS, ids=lambda v: v if isinstance(v, str) else route_id(v))
def test_wrong_credential_kind_is_403(world: World, api: Api, kind: str) -> None:
    body = VALID_BODIES.get((api.method, api.path))
    r = world.client.request(api.method, world.url + world.path(api), json=body, headers=world.credential(kind))
    assert_error(r, 403, "forbidden")


BAD_IDS = ["a%01b", "a%00", "ok%0A", "a%7Fb", "a%20b", "x" * 129]  # control chars, trailing newline, space, too long


@pytest.mark.parametrize(("api", "name"), WITH_PATH_IDS, ids=lambda v: v if isinstance(v, str) else route_id(v))
def test_bad_path_ids_are_422(world: World, api: Api, name: str) -> None:
    body = VALID_BODIES.get((api.method, api.path))
    for bad in BAD_IDS:
        url = world.url + world.path(api, **{name: bad})
        r = world.client.request(api.method, url, json=body, headers=world.credential(kind_for(api)))
        assert_error(r, 422, "invalid_request")


@pytest.mark.parametrize("api", WITH_BODY, ids=route_id)
def test_malformed_json_is_422(world: World, api: Api) -> None:
    headers = {**world.credential(kind_for(api)), "content-type": "application/json"}
    for raw in MALFORMED:
        r = world.client.request(api.method, world.url + world.path(api), content=raw, headers=headers)
        assert_error(r, 422, "invalid_request")


@pytest.mark.parametrize("api", WITH_BODY, ids=route_id)
def test_unknown_fields_are_422(world: World, api: Api) -> None:
    body = {**VALID_BODIES[(api.method, api.path)], "tenant_id": world.other.tenant_id}
    r = world.client.request(
        api.method, world.url + world.path(api), json=body, headers=world.credential(kind_for(api))
    )
    error = assert_error(r, 422, "invalid_request")
    assert "tenant_id" in error["message"] + json.dumps(error["details"])


@pytest.mark.parametrize("api", WITH_BODY, ids=route_id)
def test_wrong_types_are_422(world: World, api: Api) -> None:
    for body in WRONG_TYPES[(api.method, api.path)]:
        r = world.client.request(
            api.method, world.url + world.path(api), json=body, headers=world.credential(kind_for(api))
        )
        assert_error(r, 422, "invalid_request")


@pytest.mark.parametrize("api", WITH_BODY, ids=route_id)
def test_oversized_bodies_are_413(world: World, api: Api) -> None:
    body = {**VALID_BODIES[(api.method, api.path)], "padding": "x" * (65 * 1024)}
    headers = world.credential(kind_for(api))
    r = world.client.request(api.method, world.url + world.path(api), json=body, headers=headers)
    error = assert_error(r, 413, "payload_too_large")
    assert error["details"].get("limit") == 64 * 1024

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count as it reads
        yield b'{"padding": "'
        for _ in range(70):
            yield b"y" * 1024
        yield b'"}'

    r = world.client.request(
        api.method,
        world.url + world.path(api),
        content=chunks(),
        headers={**headers, "content-type": "application/json"},
    )
    assert_error(r, 413, "payload_too_large")


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/channels/c/messages"), ("PATCH", "message")])
def test_texts_over_5000_characters_are_422(world: World, method: str, path: str) -> None:
    path = f"/v1/channels/c/messages/{world.mid}" if path == "message" else path
    for text in ("x" * 5001, "é" * 5001, "😀" * 5001):
        r = world.client.request(method, world.url + path, json={"text": text}, headers=world.credential("user"))
        assert_error(r, 422, "invalid_request")


BAD_QUERIES = [
    ("/v1/channels", {"limit": "0"}),
    ("/v1/channels", {"limit": "201"}),
    ("/v1/channels", {"min_position": "-1"}),
    ("/v1/channels/c", {"min_position": "soon"}),
    ("/v1/channels/c/messages", {"before_seq": "0"}),
    ("/v1/channels/c/messages", {"after_seq": "-5"}),
    ("/v1/channels/c/messages", {"limit": "ten"}),
    ("/v1/channels/c/messages", {"limit": "1e3"}),
    ("/v1/channels/c/messages", {"before_seq": "²"}),  # a digit to str.isdigit, not to int()
    ("/v1/channels/c/messages", {"after_seq": "٣"}),  # an Arabic-Indic digit
    ("/v1/channels/c/messages/{mid}/thread", {"limit": "0"}),
    ("/v1/channels/c", {"as_of": "yesterday"}),  # as_of: a position or an RFC 3339 time with its offset
    ("/v1/channels/c/messages", {"as_of": "2026-01-01T00:00:00"}),
    ("/v1/channels/c/messages", {"as_of": "0001-01-01T00:00:00+01:00"}),
    ("/v1/events", {"after_position": "x"}),
    ("/v1/events", {"limit": "1001"}),
    # usage ranges at the ends of the calendar: once overflows, now 422 out_of_range
    ("/v1/usage", {"from": "0001-01-01T00:00:00+01:00", "to": "2026-01-01T00:00:00Z"}),
    ("/v1/usage", {"from": "9999-12-31T00:00:00Z", "to": "9999-12-31T23:30:00Z"}),
    ("/v1/usage", {"from": "9999-11-01T00:00:00Z", "to": "9999-12-31T00:00:00Z", "granularity": "month"}),
    ("/v1/usage", {"from": "2026-01-01T00:00:00", "to": "2026-01-02T00:00:00Z"}),  # no zone
    ("/v1/usage", {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}),  # too long
    ("/v1/analytics", {"from": "0001-01-01T00:00:00+01:00", "to": "2026-01-01T00:00:00Z"}),
    ("/v1/analytics", {"from": "9999-11-01T00:00:00Z", "to": "9999-12-31T00:00:00Z", "granularity": "month"}),
    ("/v1/analytics", {"from": "2026-01-01T00:00:00Z", "to": "2027-06-01T00:00:00Z", "granularity": "month"}),
    ("/v1/analytics", {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "granularity": "hour"}),
]


@pytest.mark.parametrize(("path", "params"), BAD_QUERIES, ids=lambda v: v if isinstance(v, str) else json.dumps(v))
def test_bad_query_parameters_are_422(world: World, path: str, params: dict[str, str]) -> None:
    who = "tenant" if path in ("/v1/events", "/v1/usage", "/v1/analytics") else "user"
    r = world.client.get(world.url + path.replace("{mid}", world.mid), params=params, headers=world.credential(who))
    error = assert_error(r, 422, "invalid_request")
    if path in ("/v1/usage", "/v1/analytics") and params["from"][:4] in ("0001", "9999"):
        assert error["details"]["rule"] == "out_of_range", error


UNKNOWN_IDS: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("tenant", "DELETE", "/v1/api-keys/k-missing", None),
    ("tenant", "POST", "/v1/users/ghost/tokens", {}),
    ("user", "POST", "/v1/channels", {"name": "n", "members": ["ghost"]}),
    ("user", "GET", "/v1/channels/nowhere", None),
    ("user", "POST", "/v1/channels/nowhere/members", {"user_id": "bob"}),
    ("user", "POST", "/v1/channels/c/members", {"user_id": "ghost"}),
    ("user", "DELETE", "/v1/channels/nowhere/members/bob", None),
    ("user", "DELETE", "/v1/channels/c/members/ghost", None),
    ("user", "GET", "/v1/channels/nowhere/messages", None),
    ("user", "POST", "/v1/channels/nowhere/messages", {"text": "hi"}),
    ("user", "PATCH", "/v1/channels/c/messages/m-missing", {"text": "x"}),
    ("user", "DELETE", "/v1/channels/c/messages/m-missing", None),
    ("user", "GET", "/v1/channels/c/messages/m-missing/thread", None),
    ("user", "POST", "/v1/channels/c/messages/m-missing/reactions", {"emoji": "👍"}),
    ("user", "DELETE", "/v1/channels/c/messages/m-missing/reactions/👍", None),
    ("user", "DELETE", "/v1/channels/c/messages/{mid}/reactions/🦄", None),
    ("user", "POST", "/v1/channels/nowhere/read", {"seq": 1}),
    ("user", "POST", "/v1/channels/nowhere/typing", {}),
    ("user", "POST", "/v1/channels/c/mutes", {"user_id": "ghost"}),
    ("user", "DELETE", "/v1/channels/c/mutes/bob", None),
    ("user", "POST", "/v1/channels/c/bans", {"user_id": "ghost"}),
    ("user", "DELETE", "/v1/channels/c/bans/bob", None),
    ("tenant", "GET", "/v1/channels/nowhere", None),
    ("tenant", "DELETE", "/v1/channels/nowhere/bans/bob", None),
]


@pytest.mark.parametrize(("who", "method", "path", "body"), UNKNOWN_IDS, ids=lambda v: v if isinstance(v, str) else "")
def test_unknown_ids_are_404(world: World, who: str, method: str, path: str, body: dict[str, Any] | None) -> None:
    r = world.client.request(
        method, world.url + path.replace("{mid}", world.mid), json=body, headers=world.credential(who)
    )
    assert_error(r, 404, "not_found")


def other_tenant_requests(world: World) -> list[tuple[dict[str, str], str, str, dict[str, Any] | None]]:
    """Requests from acme's credentials aimed at umbrella's resources, and the other way round."""
    om, ours, alice, theirs = (
        world.other_mid,
        world.tenant.headers(),
        world.credential("user"),
        bearer(world.other_token),
    )
    return [
        (ours, "DELETE", f"/v1/api-keys/{world.other_key_id}", None),
        (ours, "GET", "/v1/channels/secret", None),
        (ours, "GET", "/v1/channels/secret/messages", None),
        (alice, "GET", "/v1/channels/secret/messages", None),
        (alice, "GET", f"/v1/channels/secret/messages/{om}/thread", None),
        (alice, "POST", "/v1/channels/secret/messages", {"text": "hi"}),
        (alice, "PATCH", f"/v1/channels/secret/messages/{om}", {"text": "x"}),
        (alice, "DELETE", f"/v1/channels/secret/messages/{om}", None),
        (alice, "POST", f"/v1/channels/secret/messages/{om}/reactions", {"emoji": "👍"}),
        (ours, "POST", "/v1/channels/secret/members", {"user_id": "carol"}),
        (ours, "POST", "/v1/channels/secret/bans", {"user_id": "bob"}),
        (ours, "POST", "/v1/channels/secret/mutes", {"user_id": "bob"}),
        (ours, "DELETE", "/v1/channels/secret/members/bob", None),
        (ours, "POST", "/v1/channels/secret/read", {"seq": 1, "user_id": "alice"}),
        (ours, "GET", "/v1/channels/secret/presence", None),
        (theirs, "GET", "/v1/channels/c", None),
        (theirs, "GET", "/v1/channels/c/messages", None),
        (theirs, "POST", "/v1/channels/c/messages", {"text": "intrusion"}),
        (theirs, "DELETE", f"/v1/channels/c/messages/{world.mid}", None),
        (theirs, "DELETE", f"/v1/channels/c/messages/{world.mid}/reactions/👍", None),
        (theirs, "POST", "/v1/channels/c/typing", {}),
        (world.other.headers(), "POST", "/v1/channels/c/members", {"user_id": "alice"}),
        (world.other.headers(), "POST", "/v1/users/alice/tokens", {"user_id": "alice"}),
    ]


def test_another_tenants_resources_are_out_of_reach(world: World) -> None:
    for headers, method, path, body in other_tenant_requests(world):
        r = world.client.request(method, world.url + path, json=body, headers=headers)
        assert r.status_code in (403, 404, 422), f"{method} {path}: {r.status_code} {r.text}"
        assert_error(r, r.status_code, r.json()["error"]["code"])
        assert SECRET_TEXT not in r.text and "hello" not in r.text
    # their listings show none of ours, and ours none of theirs
    listed = world.client.get(f"{world.url}/v1/channels", headers=world.tenant.headers()).json()["channels"]
    assert [c["channel_id"] for c in listed] == ["c"]
    assert (
        world.client.get(f"{world.url}/v1/channels", headers=bearer(world.other_token)).json()["channels"][0][
            "channel_id"
        ]
        == "secret"
    )
    events = world.client.get(f"{world.url}/v1/events", params={"limit": 1000}, headers=world.tenant.headers())
    assert SECRET_TEXT not in events.text and world.other.tenant_id not in events.text
    assert world.count(world.other) == world.counts["other"]


def test_unknown_routes_and_methods_get_json_errors(world: World) -> None:
    h = world.credential("tenant")
    assert_error(world.client.get(f"{world.url}/v1/nothing-here", headers=h), 404, "not_found")
    assert_error(world.client.get(f"{world.url}/v2/channels", headers=h), 404, "not_found")
    r = world.client.put(f"{world.url}/v1/channels/c/messages", json={"text": "x"}, headers=h)
    assert r.status_code == 405 and set(r.json()) == {"error"}
    r = world.client.delete(f"{world.url}/v1/tenants", headers=bearer(ADMIN))
    assert r.status_code == 405 and set(r.json()) == {"error"}


def test_bad_idempotency_keys_are_422(world: World) -> None:
    for key in ("", "x" * 256, "tab\there"):
        r = world.client.post(
            f"{world.url}/v1/channels/c/messages",
            json={"text": "hi"},
            headers={**world.credential("user"), "Idempotency-Key": key},
        )
        assert_error(r, 422, "invalid_request")


def test_acting_for_another_user_needs_the_tenant_key(world: World) -> None:
    alice = world.credential("user")
    for method, path, body in [
        ("POST", "/v1/channels/c/messages", {"text": "as bob", "user_id": "bob"}),
        ("POST", f"/v1/channels/c/messages/{world.mid}/reactions", {"emoji": "🎉", "user_id": "bob"}),
        ("POST", "/v1/channels/c/read", {"seq": 1, "user_id": "bob"}),
        ("POST", "/v1/channels/c/typing", {"user_id": "bob"}),
    ]:
        r = world.client.request(method, world.url + path, json=body, headers=alice)
        assert_error(r, 403, "forbidden")
    r = world.client.delete(
        f"{world.url}/v1/channels/c/messages/{world.mid}/reactions/👍", params={"user_id": "bob"}, headers=alice
    )
    assert_error(r, 403, "forbidden")
