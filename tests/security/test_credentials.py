"""Credentials: end-user JWTs (every way a forged or stale one can be presented), API key
revocation, signing-key rotation, and the admin token's reach. Tokens are forged with pyjwt
and the server's own key derivation, so a refusal is about the claim under test."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jwt
import pytest

from tests.security.common import (
    WAIT,
    b64,
    claims,
    eventually,
    forge,
    raw_token,
    recv,
    server_secret,
    signing_key,
    until_pong,
    ws_connect,
)
from tests.support import ADMIN, Server, Tenant, bearer, new_tenant

LEEWAY = 30  # commands.auth.LEEWAY_SECONDS


@pytest.fixture
def room(server: Server, client: httpx.Client, tenant: Tenant) -> str:
    """alice's channel ``room`` in ``tenant``; returns the url of its history."""
    token = tenant.user(client, "alice")
    tenant.user(client, "bob")
    r = client.post(f"{server.url}/v1/channels", json={"channel_id": "room", "members": ["bob"]}, headers=bearer(token))
    assert r.status_code == 201, r.text
    r = client.post(f"{server.url}/v1/channels/room/messages", json={"text": "hi"}, headers=bearer(token))
    assert r.status_code == 201, r.text
    return f"{server.url}/v1/channels/room/messages"


def refused(client: httpx.Client, url: str, token: str) -> httpx.Response:
    r = client.get(url, headers=bearer(token))
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthenticated"
    assert r.headers["www-authenticate"] == "Bearer"
    return r


def test_a_correctly_forged_token_is_accepted(server: Server, client: httpx.Client, tenant: Tenant, room: str) -> None:
    """The control for every refusal below: a token built exactly like the server's works."""
    token = forge(server_secret(server), tenant.tenant_id, claims(tenant.tenant_id, "alice"))
    r = client.get(room, headers=bearer(token))
    assert r.status_code == 200, r.text


def test_expired_token_is_refused(server: Server, client: httpx.Client, tenant: Tenant, room: str) -> None:
    now = time.time()
    token = forge(server_secret(server), tenant.tenant_id,
                  claims(tenant.tenant_id, "alice", now=now - 3600, exp=int(now) - LEEWAY - 60))  # fmt: skip
    assert "expired" in refused(client, room, token).json()["error"]["message"]


def test_token_expired_within_the_clock_skew_allowance_is_accepted(
    server: Server, client: httpx.Client, tenant: Tenant, room: str
) -> None:
    now = time.time()
    token = forge(server_secret(server), tenant.tenant_id,
                  claims(tenant.tenant_id, "alice", now=now - 600, exp=int(now) - 5))  # fmt: skip
    assert client.get(room, headers=bearer(token)).status_code == 200


def test_not_yet_valid_token_is_refused(server: Server, client: httpx.Client, tenant: Tenant, room: str) -> None:
    now = time.time()
    token = forge(server_secret(server), tenant.tenant_id,
                  claims(tenant.tenant_id, "alice", nbf=int(now) + LEEWAY + 300, exp=int(now) + 3600))  # fmt: skip
    refused(client, room, token)


def test_token_issued_in_the_future_is_refused(server: Server, client: httpx.Client, tenant: Tenant, room: str) -> None:
    now = time.time()
    token = forge(server_secret(server), tenant.tenant_id,
                  claims(tenant.tenant_id, "alice", iat=int(now) + LEEWAY + 300, exp=int(now) + 3600))  # fmt: skip
    refused(client, room, token)


@pytest.mark.parametrize("missing", ["exp", "nbf", "iat", "sub", "aud", "iss"])
def test_token_missing_a_required_claim_is_refused(
    server: Server, client: httpx.Client, tenant: Tenant, room: str, missing: str
) -> None:
    token = forge(server_secret(server), tenant.tenant_id, claims(tenant.tenant_id, "alice", **{missing: None}))
    refused(client, room, token)


def test_wrong_audience_is_refused(server: Server, client: httpx.Client, tenant: Tenant, room: str) -> None:
    for aud in ("caas:t-someone-else", "caas", f"{tenant.tenant_id}", ["caas:x"]):
        token = forge(server_secret(server), tenant.tenant_id, claims(tenant.tenant_id, "alice", aud=aud))
        refused(client, room, token)


def test_wrong_issuer_is_refused(server: Server, client: httpx.Client, tenant: Tenant, room: str) -> None:
    for iss in ("evil", "CAAS", ""):
        token = forge(server_secret(server), tenant.tenant_id, claims(tenant.tenant_id, "alice", iss=iss))
        refused(client, room, token)


def test_token_signed_with_another_tenants_key_is_refused(
    server: Server, client: httpx.Client, tenant: Tenant, room: str
) -> None:
    """A token claiming this tenant but signed with another tenant's key (which that tenant's
    user could know nothing of, but the derivation must still bind the key to the tenant)."""
    other = new_tenant(client, server.url, "other")
    secret = server_secret(server)
    token = forge(secret, tenant.tenant_id, claims(tenant.tenant_id, "alice"),
                  key=signing_key(secret, other.tenant_id, "v1"))  # fmt: skip
    refused(client, room, token)
    # another tenant's genuine token, relabelled with this tenant's id in tid and aud
    genuine = other.user(client, "alice")
    signature = genuine.split(".")[2]
    body: dict[str, Any] = jwt.decode(genuine, options={"verify_signature": False})
    body.update(tid=tenant.tenant_id, aud=f"caas:{tenant.tenant_id}")
    relabelled = raw_token(jwt.get_unverified_header(genuine), body, None)
    refused(client, room, relabelled.rsplit(".", 1)[0] + "." + signature)


def test_another_tenants_genuine_token_reaches_only_that_tenant(
    server: Server, client: httpx.Client, tenant: Tenant, room: str
) -> None:
    """The other tenant's alice is a different person: her token authenticates, in her tenant."""
    other = new_tenant(client, server.url, "other")
    token = other.user(client, "alice")
    r = client.get(room, headers=bearer(token))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
    r = client.post(room, json={"text": "intrusion"}, headers=bearer(token))
    assert r.status_code == 404, r.text
    history = client.get(room, headers=tenant.headers()).json()["messages"]
    assert [m["text"] for m in history] == ["hi"]


def test_tampered_payload_is_refused(server: Server, client: httpx.Client, tenant: Tenant, room: str) -> None:
    genuine = tenant.user(client, "carol")  # not a member of room
    header, _, signature = genuine.split(".")
    body: dict[str, Any] = jwt.decode(genuine, options={"verify_signature": False})
    body["sub"] = "alice"
    tampered = f"{header}.{b64(json.dumps(body).encode())}.{signature}"
    refused(client, room, tampered)
    r = client.get(room, headers=bearer(genuine))
    assert r.status_code == 403  # the genuine one is carol, who may not read room


def test_alg_none_is_refused(server: Server, client: httpx.Client, tenant: Tenant, room: str) -> None:
    payload = claims(tenant.tenant_id, "alice")
    for alg in ("none", "None", "NONE"):
        refused(client, room, raw_token({"alg": alg, "typ": "JWT", "kid": "v1"}, payload, None))
    refused(client, room, jwt.encode(payload, None, algorithm="none", headers={"kid": "v1"}))


def test_hs256_signed_with_the_wrong_key_is_refused(
    server: Server, client: httpx.Client, tenant: Tenant, room: str
) -> None:
    payload = claims(tenant.tenant_id, "alice")
    for key in (b"secret", b"", server_secret(server).encode(), signing_key("wrong", tenant.tenant_id, "v1")):
        refused(client, room, raw_token({"alg": "HS256", "typ": "JWT", "kid": "v1"}, payload, key))


def test_algorithm_confusion_is_refused(server: Server, client: httpx.Client, tenant: Tenant, room: str) -> None:
    """An RS256 (or other) header over a valid HMAC signature with the real key: the server must
    pin HS256, not pick the algorithm the token names."""
    payload = claims(tenant.tenant_id, "alice")
    key = signing_key(server_secret(server), tenant.tenant_id, "v1")
    for alg in ("RS256", "ES256", "PS256", "HS512", "HS384", "EdDSA"):
        refused(client, room, raw_token({"alg": alg, "typ": "JWT", "kid": "v1"}, payload, key))
    assert client.get(room, headers=bearer(raw_token({"alg": "HS256", "kid": "v1"}, payload, key))).status_code == 200


def test_unknown_kid_is_refused(server: Server, client: httpx.Client, tenant: Tenant, room: str) -> None:
    secret = server_secret(server)
    for kid in ("v2", "v0", "../v1", ""):
        refused(client, room, forge(secret, tenant.tenant_id, claims(tenant.tenant_id, "alice"), kid=kid))
    refused(client, room, raw_token({"alg": "HS256"}, claims(tenant.tenant_id, "alice"),
                                    signing_key(secret, tenant.tenant_id, "v1")))  # fmt: skip


def test_garbage_bearer_values_are_refused(server: Server, client: httpx.Client, tenant: Tenant, room: str) -> None:
    for value in ("x", "a.b.c", "caas_sk_", "caas_sk_t_k_s", "eyJ.eyJ.", ADMIN + "x", ADMIN[:-1]):
        r = client.get(room, headers={"authorization": f"Bearer {value}"})
        assert r.status_code == 401, (value, r.text)
    for header in ({}, {"authorization": "Basic dXNlcjpwYXNz"}, {"authorization": f"Token {tenant.api_key}"}):
        r = client.get(room, headers=header)
        assert r.status_code == 401, (header, r.text)


async def test_refused_token_gets_an_error_frame_and_close_1008_on_the_websocket(
    server: Server, client: httpx.Client, tenant: Tenant, room: str
) -> None:
    now = time.time()
    secret = server_secret(server)
    bad = [
        forge(secret, tenant.tenant_id, claims(tenant.tenant_id, "alice", now=now - 3600, exp=int(now) - 600)),
        forge(secret, tenant.tenant_id, claims(tenant.tenant_id, "alice", aud="caas:elsewhere")),
        raw_token({"alg": "none", "kid": "v1"}, claims(tenant.tenant_id, "alice"), None),
        tenant.api_key,  # a tenant key is not a user token
    ]
    for token in bad:
        async with ws_connect(server.ws_url, token) as ws:
            frame = await recv(ws)
            assert frame["type"] == "error" and frame["code"] == "unauthenticated", frame
            await ws.wait_closed()
            assert ws.close_code == 1008


# --- API keys ------------------------------------------------------------------------------
def test_revoked_api_key_is_refused_within_a_second_and_others_keep_working(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    r = client.post(f"{server.url}/v1/api-keys", json={"name": "second"}, headers=tenant.headers())
    assert r.status_code == 201, r.text
    second = {"authorization": f"Bearer {r.json()['api_key']}"}
    key_id = tenant.api_key.removeprefix("caas_sk_").split("_", 2)[1]
    assert client.get(f"{server.url}/v1/channels", headers=tenant.headers()).status_code == 200
    r = client.delete(f"{server.url}/v1/api-keys/{key_id}", headers=second)
    assert r.status_code == 200, r.text
    revoked_at = time.monotonic()

    def refused_now() -> bool:
        return client.get(f"{server.url}/v1/channels", headers=tenant.headers()).status_code == 401

    eventually(refused_now, timeout=1.0, interval=0.01)
    assert time.monotonic() - revoked_at <= 1.0
    r = client.get(f"{server.url}/v1/channels", headers=tenant.headers())
    assert r.json()["error"]["message"] == "this API key was revoked"
    assert client.get(f"{server.url}/v1/channels", headers=second).status_code == 200
    # revoking again is an idempotent no-op; revoking the last active key is refused
    second_id = second["authorization"].removeprefix("Bearer caas_sk_").split("_", 2)[1]
    r = client.delete(f"{server.url}/v1/api-keys/{second_id}", headers=second)
    assert r.status_code == 409 and "last active API key" in r.json()["error"]["message"], r.text


def test_api_key_with_a_wrong_secret_or_foreign_tenant_is_refused(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    other = new_tenant(client, server.url, "other")
    tid, kid, secret = tenant.api_key.removeprefix("caas_sk_").split("_", 2)
    forged = [
        f"caas_sk_{tid}_{kid}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}",  # one character off
        f"caas_sk_{other.tenant_id}_{kid}_{secret}",  # this key presented as the other tenant's
        f"caas_sk_{tid}_{kid}_",
        f"caas_sk_{tid}_kzzzz_{secret}",
    ]
    for key in forged:
        r = client.get(f"{server.url}/v1/channels", headers=bearer(key))
        assert r.status_code == 401, (key, r.text)


# --- signing-key rotation --------------------------------------------------------------------
def test_rotated_signing_key_keeps_previous_tokens_for_one_rotation(
    server: Server, client: httpx.Client, tenant: Tenant, room: str
) -> None:
    first = tenant.user(client, "alice")
    assert jwt.get_unverified_header(first)["kid"] == "v1"
    r = client.post(f"{server.url}/v1/signing-keys", headers=tenant.headers())
    assert r.status_code == 201 and r.json()["kid"] == "v2", r.text
    second = eventually(lambda: (t := tenant.user(client, "alice")) and jwt.get_unverified_header(t)["kid"] == "v2"
                        and t)  # fmt: skip
    assert client.get(room, headers=bearer(first)).status_code == 200, "one rotation must not log anyone out"
    assert client.get(room, headers=bearer(second)).status_code == 200
    r = client.post(f"{server.url}/v1/signing-keys", headers=tenant.headers())
    assert r.status_code == 201 and r.json()["kid"] == "v3", r.text
    eventually(lambda: client.get(room, headers=bearer(first)).status_code == 401, timeout=1.0, interval=0.01)
    r = client.get(room, headers=bearer(first))
    assert "rotated out" in r.json()["error"]["message"]
    assert client.get(room, headers=bearer(second)).status_code == 200
    # a forged v1 token (valid signature, fresh claims) is refused too: the key itself is retired
    forged = forge(server_secret(server), tenant.tenant_id, claims(tenant.tenant_id, "alice"), kid="v1")
    refused(client, room, forged)


async def test_rotated_out_token_cannot_open_a_socket(
    server: Server, client: httpx.Client, tenant: Tenant, room: str
) -> None:
    first = tenant.user(client, "alice")
    async with ws_connect(server.ws_url, first) as ws:
        assert await until_pong(ws) == []
    for _ in range(2):
        assert client.post(f"{server.url}/v1/signing-keys", headers=tenant.headers()).status_code == 201
    eventually(lambda: client.get(room, headers=bearer(first)).status_code == 401, timeout=WAIT)
    async with ws_connect(server.ws_url, first) as ws:
        frame = await recv(ws)
        assert frame["code"] == "unauthenticated", frame
        await ws.wait_closed()
        assert ws.close_code == 1008


# --- the admin token ---------------------------------------------------------------------------
def test_wrong_admin_token_is_refused(server: Server, client: httpx.Client) -> None:
    for token in (ADMIN + "-", ADMIN[:-1], ADMIN.upper(), "admin"):
        r = client.post(f"{server.url}/v1/tenants", json={"name": "x"}, headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 401, (token, r.text)


def test_admin_token_cannot_read_or_change_tenant_data(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    tenant.user(client, "alice")
    admin = bearer(ADMIN)
    for method, path in [
        ("GET", "/v1/events"),
        ("GET", "/v1/channels"),
        ("GET", "/v1/channels/room"),
        ("GET", "/v1/channels/room/messages"),
        ("GET", "/v1/presence?user_ids=alice"),
        ("POST", "/v1/users/alice/tokens"),
        ("PUT", "/v1/users/alice"),
        ("POST", "/v1/api-keys"),
        ("POST", "/v1/channels"),
    ]:
        r = client.request(method, f"{server.url}{path}", json={}, headers=admin)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["code"] == "forbidden"
        assert tenant.tenant_id not in r.text
