"""Rate limits and caps, on a server of each backend configured with small limits: per-user
and per-tenant token buckets (429 ``rate_limited`` with ``Retry-After``), body size, text
length, members per channel, subscriptions per socket, sockets per user, socket frame rate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.cluster import serving
from tests.security.common import WAIT, recv, send, subscribe, until_pong, ws_connect
from tests.support import Server, Tenant, bearer, new_tenant

USER_WRITES_BURST = 5
TENANT_WRITES_BURST = 40
TENANT_READS_BURST = 30
FRAMES_BURST = 5
MAX_SOCKETS = 2
MAX_SUBSCRIPTIONS = 2
MAX_MEMBERS = 3
MAX_TEXT = 100
MAX_BODY = 2048
LIMITS = {
    "CAAS_RATE_USER_WRITES_PER_SECOND": "0.2",
    "CAAS_RATE_USER_WRITES_BURST": str(USER_WRITES_BURST),
    "CAAS_RATE_TENANT_WRITES_PER_SECOND": "0.2",
    "CAAS_RATE_TENANT_WRITES_BURST": str(TENANT_WRITES_BURST),
    "CAAS_RATE_TENANT_READS_PER_SECOND": "0.2",
    "CAAS_RATE_TENANT_READS_BURST": str(TENANT_READS_BURST),
    "CAAS_WS_FRAMES_PER_SECOND": "0.5",
    "CAAS_WS_FRAMES_BURST": str(FRAMES_BURST),
    "CAAS_WS_MAX_SOCKETS_PER_USER": str(MAX_SOCKETS),
    "CAAS_WS_MAX_SUBSCRIPTIONS": str(MAX_SUBSCRIPTIONS),
    "CAAS_MAX_MEMBERS": str(MAX_MEMBERS),
    "CAAS_MAX_TEXT_CHARS": str(MAX_TEXT),
    "CAAS_MAX_BODY_BYTES": str(MAX_BODY),
}


@pytest.fixture(scope="module", params=["embedded", "kafka"])
def limited(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of each backend with the small limits above (the suite's servers lift them)."""
    root = Path(tmp_path_factory.mktemp(f"limits-{request.param}"))
    with serving(request.param, root, LIMITS) as server:
        yield server


@pytest.fixture
def org(limited: Server, client: httpx.Client) -> Tenant:
    return new_tenant(client, limited.url)


def room(client: httpx.Client, tenant: Tenant, *users: str) -> dict[str, str]:
    """Users (the first owns group channel ``room``; all are members); returns their tokens."""
    tokens = {uid: tenant.user(client, uid) for uid in users}
    r = client.post(f"{tenant.url}/v1/channels", json={"channel_id": "room", "members": list(users)},
                    headers=tenant.headers())  # fmt: skip
    assert r.status_code == 201, r.text
    return tokens


def assert_rate_limited(r: httpx.Response, scope: str) -> None:
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert error["code"] == "rate_limited" and error["details"]["scope"] == scope, error
    retry = r.headers["retry-after"]
    assert retry.isdigit() and int(retry) >= 1, retry


def until_limited(send_one: Any, bound: int) -> tuple[int, httpx.Response]:
    """Send until the first 429; how many were accepted before it, and the 429."""
    for accepted in range(bound + 1):
        r = send_one(accepted)
        if r.status_code == 429:
            return accepted, r
        assert r.status_code < 300, r.text
    raise AssertionError(f"no 429 after {bound} requests")


# --- HTTP token buckets ----------------------------------------------------------------------
def test_user_over_its_write_rate_gets_429_with_retry_after_and_other_users_are_unaffected(
    limited: Server, client: httpx.Client, org: Tenant
) -> None:
    tokens = room(client, org, "alice", "bob")
    url = f"{limited.url}/v1/channels/room/messages"

    def post(i: int) -> httpx.Response:
        return client.post(url, json={"text": f"m{i}"}, headers=bearer(tokens["alice"]))

    accepted, r = until_limited(post, USER_WRITES_BURST + 2)
    assert USER_WRITES_BURST <= accepted <= USER_WRITES_BURST + 1
    assert_rate_limited(r, "user writes")
    assert int(r.headers["retry-after"]) <= 5  # 1 token at 0.2 per second
    r = client.post(url, json={"text": "bob"}, headers=bearer(tokens["bob"]))
    assert r.status_code == 201, r.text  # the bucket is alice's, not the channel's or the tenant's
    r = client.get(url, headers=bearer(tokens["alice"]))
    assert r.status_code == 200, "reads are not charged to the write bucket"
    texts = [m["text"] for m in r.json()["messages"]]
    assert len(texts) == accepted + 1, "a refused write must append nothing"


def test_tenant_over_its_write_rate_gets_429_and_another_tenant_is_unaffected(
    limited: Server, client: httpx.Client, org: Tenant
) -> None:
    def put(i: int) -> httpx.Response:
        return client.put(f"{limited.url}/v1/users/u{i}", json={"name": "u"}, headers=org.headers())

    accepted, r = until_limited(put, TENANT_WRITES_BURST + 2)
    assert TENANT_WRITES_BURST - 1 <= accepted <= TENANT_WRITES_BURST + 1
    assert_rate_limited(r, "tenant writes")
    r = client.post(f"{limited.url}/v1/users/u0/tokens", json={}, headers=org.headers())
    assert_rate_limited(r, "tenant writes")  # every write route draws on the same bucket
    other = new_tenant(client, limited.url, "other")
    tokens = room(client, other, "alice")
    r = client.post(f"{limited.url}/v1/channels/room/messages", json={"text": "x"}, headers=bearer(tokens["alice"]))
    assert r.status_code == 201, r.text


def test_repeats_of_a_refused_credential_are_refused_before_anything_else_and_admitted_after_the_wait(
    limited: Server, client: httpx.Client, org: Tenant
) -> None:
    tokens = room(client, org, "alice")
    url = f"{limited.url}/v1/channels/room/messages"
    accepted, first = until_limited(
        lambda i: client.post(url, json={"text": f"m{i}"}, headers=bearer(tokens["alice"])), USER_WRITES_BURST + 2
    )
    assert_rate_limited(first, "user writes")
    # A repeat is refused with the same error even if its body is garbage and its route unknown:
    # the node neither parses it nor routes it, and records nothing.
    for repeat in (
        client.post(url, content=b"{not json", headers=bearer(tokens["alice"])),
        client.delete(f"{limited.url}/v1/no/such/route", headers=bearer(tokens["alice"])),
    ):
        assert_rate_limited(repeat, "user writes")
        assert repeat.headers["x-content-type-options"] == "nosniff" and repeat.headers["x-request-id"]
    assert client.get(url, headers=bearer(tokens["alice"])).status_code == 200, "reads have their own bucket"
    time.sleep(int(first.headers["retry-after"]))
    r = client.post(url, json={"text": "after the wait"}, headers=bearer(tokens["alice"]))
    assert r.status_code == 201, r.text
    texts = [
        m["text"] for m in client.get(url, params={"limit": 100}, headers=bearer(tokens["alice"])).json()["messages"]
    ]
    assert sorted(texts) == sorted([f"m{i}" for i in range(accepted)] + ["after the wait"])


def test_tenant_over_its_read_rate_gets_429_and_another_tenant_is_unaffected(
    limited: Server, client: httpx.Client, org: Tenant
) -> None:
    def read(i: int) -> httpx.Response:
        return client.get(f"{limited.url}/v1/channels", headers=org.headers())

    accepted, r = until_limited(read, TENANT_READS_BURST + 2)
    assert TENANT_READS_BURST <= accepted <= TENANT_READS_BURST + 1
    assert_rate_limited(r, "tenant reads")
    other = new_tenant(client, limited.url, "other")
    assert client.get(f"{limited.url}/v1/channels", headers=other.headers()).status_code == 200
    # writes have their own bucket
    r = client.put(f"{limited.url}/v1/users/alice", json={"name": "a"}, headers=org.headers())
    assert r.status_code == 201, r.text


# --- caps ----------------------------------------------------------------------------------------
def test_body_over_the_size_cap_is_refused_with_413(limited: Server, client: httpx.Client, org: Tenant) -> None:
    room(client, org, "alice")
    url = f"{limited.url}/v1/channels/room/messages"
    big = {"text": "x" * 50, "user_id": "alice", "attachments": [{"type": "link", "url": "https://e.x/" + "y" * 3000}]}
    r = client.post(url, json=big, headers=org.headers())
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large", r.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap must hold while streaming
        yield b'{"user_id": "alice", "text": "'
        for _ in range(10):
            yield b"z" * 512
        yield b'"}'

    r = client.post(url, content=chunks(), headers={**org.headers(), "content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert client.get(url, headers=org.headers()).json()["messages"] == []


def test_text_over_the_length_cap_is_refused(limited: Server, client: httpx.Client, org: Tenant) -> None:
    room(client, org, "alice")
    url = f"{limited.url}/v1/channels/room/messages"
    r = client.post(url, json={"text": "é" * MAX_TEXT, "user_id": "alice"}, headers=org.headers())
    assert r.status_code == 201, r.text
    mid = r.json()["message_id"]
    r = client.post(url, json={"text": "é" * (MAX_TEXT + 1), "user_id": "alice"}, headers=org.headers())
    assert r.status_code == 422 and r.json()["error"]["details"]["rule"] == "text_too_long", r.text
    r = client.patch(f"{url}/{mid}", json={"text": "e" * (MAX_TEXT + 1)}, headers=org.headers())
    assert r.status_code == 422 and r.json()["error"]["details"]["rule"] == "text_too_long", r.text


def test_members_per_channel_are_capped(limited: Server, client: httpx.Client, org: Tenant) -> None:
    for uid in ("a", "b", "c", "d"):
        org.user(client, uid)
    r = client.post(f"{limited.url}/v1/channels", json={"channel_id": "big", "members": ["a", "b", "c", "d"]},
                    headers=org.headers())  # fmt: skip
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text
    r = client.post(f"{limited.url}/v1/channels", json={"channel_id": "full", "members": ["a", "b", "c"]},
                    headers=org.headers())  # fmt: skip
    assert r.status_code == 201, r.text
    r = client.post(f"{limited.url}/v1/channels/full/members", json={"user_id": "d"}, headers=org.headers())
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text
    r = client.get(f"{limited.url}/v1/channels/full", headers=org.headers())
    assert sorted(m["user_id"] for m in r.json()["members"]) == ["a", "b", "c"]


# --- websockets ------------------------------------------------------------------------------------
async def test_subscriptions_per_socket_are_capped_and_the_socket_stays_usable(
    limited: Server, client: httpx.Client, org: Tenant
) -> None:
    token = org.user(client, "alice")
    for i in range(MAX_SUBSCRIPTIONS + 1):
        r = client.post(f"{limited.url}/v1/channels", json={"channel_id": f"c{i}"}, headers=bearer(token))
        assert r.status_code == 201, r.text
    async with ws_connect(limited.ws_url, token) as ws:
        for i in range(MAX_SUBSCRIPTIONS):
            await subscribe(ws, f"c{i}")
        await send(ws, {"type": "subscribe", "channel_id": f"c{MAX_SUBSCRIPTIONS}"})
        frame = await recv(ws)
        assert frame["type"] == "error" and "too many subscriptions" in frame["message"], frame
        await send(ws, {"type": "unsubscribe", "channel_id": "c0"})
        assert (await recv(ws))["type"] == "unsubscribed"
        await subscribe(ws, f"c{MAX_SUBSCRIPTIONS}")  # room again after an unsubscribe


async def test_sockets_per_user_are_capped_and_a_closed_socket_frees_its_place(
    limited: Server, client: httpx.Client, org: Tenant
) -> None:
    alice, bob = org.user(client, "alice"), org.user(client, "bob")
    async with ws_connect(limited.ws_url, alice) as first, ws_connect(limited.ws_url, alice) as second:
        assert await until_pong(first) == [] and await until_pong(second) == []
        async with ws_connect(limited.ws_url, alice) as third:
            frame = await recv(third)
            assert frame["type"] == "error" and frame["code"] == "rate_limited", frame
            await third.wait_closed()
            assert third.close_code == 1008
        async with ws_connect(limited.ws_url, bob) as other:  # the cap is per user
            assert await until_pong(other) == []
        assert await until_pong(first) == []  # the refused socket disturbed nobody
    # both closed: their places are free again (the server notices the close asynchronously)
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        async with ws_connect(limited.ws_url, alice) as a, ws_connect(limited.ws_url, alice) as b:
            try:
                await until_pong(a)
                await until_pong(b)
                return
            except ConnectionClosed:
                assert asyncio.get_running_loop().time() < deadline, "closed sockets still count against the cap"
        await asyncio.sleep(0.05)


async def test_frames_over_the_socket_rate_get_rate_limited_errors_and_the_socket_stays_open(
    limited: Server, client: httpx.Client, org: Tenant
) -> None:
    alice = org.user(client, "alice")
    sent = 3 * FRAMES_BURST
    async with ws_connect(limited.ws_url, alice) as ws, ws_connect(limited.ws_url, alice) as calm:
        for _ in range(sent):
            await send(ws, {"type": "ping"})
        replies = [await recv(ws) for _ in range(sent)]
        pongs = [f for f in replies if f["type"] == "pong"]
        limited_ = [f for f in replies if f["type"] == "error" and f["code"] == "rate_limited"]
        assert len(pongs) + len(limited_) == sent, replies
        assert FRAMES_BURST <= len(pongs) <= FRAMES_BURST + 2, replies
        assert await until_pong(calm) == []  # the bucket is per socket
        # the socket is still open and answers again once its bucket refills
        deadline = asyncio.get_running_loop().time() + WAIT
        while (frame := (await send(ws, {"type": "ping"}), await recv(ws))[1])["type"] != "pong":
            assert frame["code"] == "rate_limited", frame
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.5)


def test_console_sign_in_spends_the_tenants_write_rate(org: Tenant, client: httpx.Client) -> None:
    """Each sign-in writes to the tenant's log: it is a write of its key, rate-limited as one."""
    url = f"{org.url}/console/api/session"
    answers = [client.post(url, json={"api_key": org.api_key}) for _ in range(TENANT_WRITES_BURST + 1)]
    assert {r.status_code for r in answers[:-1]} <= {201, 429}, [r.text for r in answers]
    assert_rate_limited(answers[-1], "tenant writes")
