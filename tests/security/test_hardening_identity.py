"""Identities that must not be taken: a token's subject must be a registered user of its
tenant, and the ``dm-`` channel ids belong to the direct channels of exactly their members."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.security.common import claims, forge, recv, server_secret, until_pong, ws_connect
from tests.support import Server, Tenant, bearer, new_tenant


def direct_id(*members: str) -> str:
    """The deterministic id of the direct channel of ``members`` (``api.http._direct_id``)."""
    return "dm-" + hashlib.sha256("\n".join(sorted(set(members))).encode()).hexdigest()[:24]


# --- tokens of users who do not exist (issue 8, defect 14) ---------------------------------
@pytest.mark.parametrize("sub", ["ghost", "../mem", "alice/../bob", "alice\n", "", " alice"])
async def test_a_signed_token_of_an_unregistered_or_malformed_user_is_refused(
    server: Server, client: httpx.Client, tenant: Tenant, sub: str
) -> None:
    tenant.user(client, "alice")
    secret = server_secret(server)
    genuine = forge(secret, tenant.tenant_id, claims(tenant.tenant_id, "alice"))
    r = client.get(f"{server.url}/v1/channels", headers=bearer(genuine))
    assert r.status_code == 200, r.text  # the control: signed the same way, for a registered user

    token = forge(secret, tenant.tenant_id, claims(tenant.tenant_id, sub))
    for method, path in (("GET", "/v1/channels"), ("POST", "/v1/channels"), ("GET", "/v1/presence?user_ids=alice")):
        r = client.request(method, f"{server.url}{path}", headers=bearer(token), json={"members": ["alice"]})
        assert r.status_code == 401, (method, path, r.text)
        assert r.json()["error"]["code"] == "unauthenticated"
    async with ws_connect(server.ws_url, token) as ws:
        frame = await recv(ws)
        assert frame["type"] == "error" and frame["code"] == "unauthenticated", frame
        await ws.wait_closed()
        assert ws.close_code == 1008
    async with ws_connect(server.ws_url, genuine) as ws:
        assert await until_pong(ws) == []


def test_a_token_for_a_user_of_another_tenant_is_refused(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    """The subject must be registered in the token's own tenant, not merely somewhere."""
    other = new_tenant(client, server.url, name="other")
    other.user(client, "dora")
    token = forge(server_secret(server), tenant.tenant_id, claims(tenant.tenant_id, "dora"))
    r = client.get(f"{server.url}/v1/channels", headers=bearer(token))
    assert r.status_code == 401, r.text


# --- the dm- namespace (issue 8, defect 7) -------------------------------------------------
def create(client: httpx.Client, url: str, headers: dict[str, str], **body: object) -> httpx.Response:
    return client.post(f"{url}/v1/channels", json={"name": "x", **body}, headers=headers)


def assert_reserved(r: httpx.Response) -> None:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and error["details"]["rule"] == "reserved_channel_id", error


def test_nobody_can_take_the_id_of_someone_elses_direct_channel(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    tokens = {uid: tenant.user(client, uid) for uid in ("alice", "bob", "mallory")}
    mallory = bearer(tokens["mallory"])
    theirs = direct_id("alice", "bob")
    # a group channel under the direct channel's id, with both of them in it and mallory the owner
    assert_reserved(create(client, server.url, mallory, channel_id=theirs, kind="group", members=["alice", "bob"]))
    # a direct channel of other members under their id
    assert_reserved(create(client, server.url, mallory, channel_id=theirs, kind="direct", members=["bob"]))
    # any other id in the namespace, also with the tenant's key
    assert_reserved(create(client, server.url, mallory, channel_id="dm-mine", kind="group", members=["bob"]))
    assert_reserved(create(client, server.url, tenant.headers(), channel_id=theirs, kind="group", members=["alice"]))
    assert_reserved(create(client, server.url, tenant.headers(), channel_id="dm-x", kind="direct",
                           members=["alice", "bob"]))  # fmt: skip

    # so alice still opens her direct channel with bob, and it is theirs alone
    r = create(client, server.url, bearer(tokens["alice"]), kind="direct", members=["bob"])
    assert r.status_code == 201, r.text
    assert r.json()["channel_id"] == theirs
    r = client.get(f"{server.url}/v1/channels/{theirs}", headers=bearer(tokens["bob"]))
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "direct"
    assert sorted(m["user_id"] for m in r.json()["members"]) == ["alice", "bob"]
    assert client.get(f"{server.url}/v1/channels/{theirs}", headers=mallory).status_code == 403


def test_direct_channels_may_name_their_own_id(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    """The deterministic id given explicitly is accepted; so is a custom id outside ``dm-``."""
    tokens = {uid: tenant.user(client, uid) for uid in ("alice", "bob", "carol")}
    r = create(client, server.url, tenant.headers(), channel_id=direct_id("alice", "carol"), kind="direct",
               members=["carol", "alice"])  # fmt: skip
    assert r.status_code == 201, r.text
    r = create(client, server.url, bearer(tokens["carol"]), kind="direct", members=["alice"])
    assert r.status_code == 200, r.text  # the same direct channel: the first result
    assert r.json()["channel_id"] == direct_id("alice", "carol")
    r = create(client, server.url, bearer(tokens["alice"]), channel_id="ab-chat", kind="direct", members=["bob"])
    assert r.status_code == 201, r.text
