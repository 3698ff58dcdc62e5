"""End-to-end encryption's server side through the real server, on both backends (docs/e2e.md):
devices and their public keys, bundles that hand out each one-time prekey once (also to 20
clients at once), bad bundles refused, the low-prekey and identity-change frames, and e2e
channels that take ciphertext envelopes only and give them back in history and on sockets."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.e2e.test_websocket import recv, subscribe, ws_connect
from tests.e2e_keys import Device, envelope
from tests.support import Server, Tenant, bearer

WAIT = 30.0


def put_device(client: httpx.Client, tenant: Tenant, uid: str, device_id: str, body: dict[str, Any]) -> httpx.Response:
    return client.put(f"{tenant.url}/v1/users/{uid}/devices/{device_id}", json=body, headers=tenant.headers())


def devices_of(client: httpx.Client, tenant: Tenant, uid: str) -> dict[str, dict[str, Any]]:
    r = client.get(f"{tenant.url}/v1/users/{uid}/devices", headers=tenant.headers())
    assert r.status_code == 200, r.text
    return {d["device_id"]: d for d in r.json()["devices"]}


def assert_error(r: httpx.Response, status: int, code: str, rule: str | None = None) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code, error
    if rule is not None:
        assert error["details"].get("rule") == rule, error


async def frame_of_type(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next frame of ``kind`` (other frames, such as presence, are passed over)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        frame = await recv(ws, timeout=max(deadline - loop.time(), 0.01))
        if frame["type"] == kind:
            return frame


# --- devices -------------------------------------------------------------------------------
def test_a_user_registers_devices_and_lists_their_public_keys_only(client: httpx.Client, tenant: Tenant) -> None:
    token = tenant.user(client, "alice")
    tenant.user(client, "mallory")
    phone = Device()
    body = phone.bundle(prekeys=5)
    url = f"{tenant.url}/v1/users/alice/devices/phone"
    r = client.put(url, json=body, headers=bearer(token))
    assert r.status_code == 201, r.text
    assert r.json()["device_id"] == "phone" and r.json()["user_id"] == "alice"
    again = client.put(url, json=body, headers=bearer(token))  # the same keys: nothing new recorded
    assert again.status_code == 200 and again.json()["seq"] == r.json()["seq"], again.text
    listed = devices_of(client, tenant, "alice")
    assert listed == {
        "phone": {
            "device_id": "phone",
            "identity_key": phone.identity_key,
            "signed_prekey": body["signed_prekey"],
            "one_time_prekeys_left": 5,
        }
    }
    more = client.post(f"{url}/prekeys", json={"one_time_prekeys": phone.prekeys(3)}, headers=bearer(token))
    assert more.status_code == 201, more.text
    assert devices_of(client, tenant, "alice")["phone"]["one_time_prekeys_left"] == 8
    spk = phone.signed_prekey(key_id=2)
    rotated = client.put(f"{url}/signed-prekey", json=spk, headers=bearer(token))
    assert rotated.status_code == 200, rotated.text
    assert devices_of(client, tenant, "alice")["phone"]["signed_prekey"] == spk
    # another user may fetch bundles, not manage alice's devices
    other = bearer(tenant.user(client, "mallory"))
    assert_error(client.put(url, json=Device().bundle(), headers=other), 403, "forbidden", "not_your_device")
    assert_error(client.delete(url, headers=other), 403, "forbidden", "not_your_device")
    gone = client.delete(url, headers=bearer(token))
    assert gone.status_code == 200, gone.text
    assert devices_of(client, tenant, "alice") == {}
    assert_error(client.delete(url, headers=bearer(token)), 404, "not_found", "device_not_found")


def test_bad_bundles_are_refused_with_a_4xx_and_record_nothing(client: httpx.Client, tenant: Tenant) -> None:
    tenant.user(client, "alice")
    device = Device()
    good = device.bundle(prekeys=2)
    stranger = Device()
    forged = {**good, "signed_prekey": stranger.signed_prekey()}  # signed by another identity key
    short_key = {**good, "identity_key": base64.b64encode(bytes(31)).decode()}
    not_base64 = {**good, "identity_key": "not base64!"}
    unpadded = {**good, "identity_key": good["identity_key"].rstrip("=")}
    bad_signature = {
        **good,
        "signed_prekey": {**good["signed_prekey"], "signature": base64.b64encode(bytes(63)).decode()},
    }
    too_many = {**good, "one_time_prekeys": device.prekeys(101)}
    duplicated = {**good, "one_time_prekeys": [good["one_time_prekeys"][0]] * 2}
    negative_id = {**good, "one_time_prekeys": [{**good["one_time_prekeys"][0], "key_id": -1}]}
    huge_id = {**good, "one_time_prekeys": [{**good["one_time_prekeys"][0], "key_id": 2**32}]}
    unknown_field = {**good, "private_key": good["identity_key"]}
    for body in (forged, short_key, not_base64, unpadded, bad_signature, too_many, duplicated, negative_id, huge_id,
                 unknown_field, {}, {"identity_key": good["identity_key"]}):  # fmt: skip
        r = put_device(client, tenant, "alice", "phone", body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["code"] == "invalid_request"
    assert_error(put_device(client, tenant, "alice", "phone", forged), 422, "invalid_request", "bad_signature")
    assert_error(put_device(client, tenant, "nobody", "phone", good), 404, "not_found", "user_not_found")
    assert_error(put_device(client, tenant, "alice", "bad id", good), 422, "invalid_request")
    assert devices_of(client, tenant, "alice") == {}

    assert put_device(client, tenant, "alice", "phone", good).status_code == 201
    url = f"{tenant.url}/v1/users/alice/devices/phone"
    r = client.put(f"{url}/signed-prekey", json=stranger.signed_prekey(), headers=tenant.headers())
    assert_error(r, 422, "invalid_request", "bad_signature")
    reused = client.post(f"{url}/prekeys", json={"one_time_prekeys": [{**good["one_time_prekeys"][0],
                         "public_key": base64.b64encode(bytes(32)).decode()}]}, headers=tenant.headers())  # fmt: skip
    assert_error(reused, 409, "conflict", "prekey_reused")
    r = client.post(f"{url}/prekeys", json={"one_time_prekeys": []}, headers=tenant.headers())
    assert_error(r, 422, "invalid_request")
    for n in range(2, 11):  # ten devices at most
        assert put_device(client, tenant, "alice", f"d{n}", Device().bundle()).status_code == 201
    assert_error(put_device(client, tenant, "alice", "d11", Device().bundle()), 409, "conflict", "too_many_devices")
    assert devices_of(client, tenant, "alice")["phone"]["one_time_prekeys_left"] == 2


def test_a_bundle_hands_out_each_one_time_prekey_once_then_none(client: httpx.Client, tenant: Tenant) -> None:
    tenant.user(client, "alice")
    bob = bearer(tenant.user(client, "bob"))
    phone = Device()
    body = phone.bundle(prekeys=2)
    assert put_device(client, tenant, "alice", "phone", body).status_code == 201
    url = f"{tenant.url}/v1/users/alice/devices/phone/bundle"
    bundles = [client.post(url, headers=bob) for _ in range(3)]
    assert [b.status_code for b in bundles] == [200, 200, 200], [b.text for b in bundles]
    first = bundles[0].json()
    assert first == {
        "user_id": "alice",
        "device_id": "phone",
        "identity_key": phone.identity_key,
        "signed_prekey": body["signed_prekey"],
        "one_time_prekey": body["one_time_prekeys"][0],
    }
    assert bundles[1].json()["one_time_prekey"] == body["one_time_prekeys"][1]
    assert bundles[2].json()["one_time_prekey"] is None  # none left: the bundle still starts a session
    # a retry with the same Idempotency-Key gets its first answer, not another key
    retry = {**bob, "idempotency-key": "fetch-1"}
    assert client.post(f"{tenant.url}/v1/users/alice/bundles", headers=retry).json()["bundles"][0][
        "one_time_prekey"] is None  # fmt: skip
    assert_error(client.post(f"{tenant.url}/v1/users/alice/devices/tablet/bundle", headers=bob), 404, "not_found")
    assert client.post(f"{tenant.url}/v1/users/bob/bundles", headers=bob).json() == {"bundles": []}


async def test_twenty_clients_fetching_bundles_at_once_never_get_the_same_prekey(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    tenant.user(client, "alice")
    tokens = [tenant.user(client, f"u{n}") for n in range(20)]
    for device_id in ("phone", "laptop"):
        assert put_device(client, tenant, "alice", device_id, Device().bundle(prekeys=15)).status_code == 201

    async def fetch(http: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
        r = await http.post(f"{server.url}/v1/users/alice/bundles", headers=bearer(token))
        assert r.status_code == 200, r.text
        bundles: list[dict[str, Any]] = r.json()["bundles"]
        return bundles

    async with httpx.AsyncClient(timeout=60) as http:
        answers = await asyncio.gather(*(fetch(http, token) for token in tokens))
    handed = Counter(
        (b["device_id"], b["one_time_prekey"]["key_id"], b["one_time_prekey"]["public_key"])
        for bundles in answers
        for b in bundles
        if b["one_time_prekey"] is not None
    )
    assert all(n == 1 for n in handed.values()), [k for k, n in handed.items() if n > 1]
    for device_id in ("phone", "laptop"):
        got = [b for bundles in answers for b in bundles if b["device_id"] == device_id]
        assert len(got) == 20  # every fetch answered every device
        assert sum(b["one_time_prekey"] is not None for b in got) == 15  # each key once, then none
    assert {d["one_time_prekeys_left"] for d in devices_of(client, tenant, "alice").values()} == {0}


# --- frames --------------------------------------------------------------------------------
async def test_a_low_prekey_pool_is_told_to_the_users_own_sockets(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    alice = tenant.user(client, "alice")
    bob = bearer(tenant.user(client, "bob"))
    assert put_device(client, tenant, "alice", "phone", Device().bundle(prekeys=11)).status_code == 201
    async with ws_connect(server.ws_url, alice) as ws:
        await ws.send('{"type":"ping"}')
        assert (await frame_of_type(ws, "pong"))["type"] == "pong"  # the socket is registered
        for _ in range(2):  # 10 left, then 9: under the threshold of 10
            r = client.post(f"{server.url}/v1/users/alice/devices/phone/bundle", headers=bob)
            assert r.status_code == 200, r.text
        frame = await frame_of_type(ws, "prekeys_low")
    # the first notice is for 9 left (none for 10, which would have come first)
    assert frame == {"type": "prekeys_low", "user_id": "alice", "device_id": "phone", "remaining": 9, "threshold": 10}


async def test_an_identity_key_change_is_pushed_to_the_users_contacts(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    tokens = {uid: tenant.user(client, uid) for uid in ("alice", "bob", "carol")}
    r = client.post(f"{server.url}/v1/channels", json={"channel_id": "ab", "members": ["alice", "bob"]},
                    headers=tenant.headers())  # fmt: skip
    assert r.status_code == 201, r.text
    client.get(f"{server.url}/v1/channels/ab", params={"min_position": r.json()["position"]}, headers=tenant.headers())
    first, second, third = Device(), Device(), Device()
    assert put_device(client, tenant, "alice", "phone", first.bundle(prekeys=3)).status_code == 201
    async with ws_connect(server.ws_url, tokens["bob"]) as bob, ws_connect(server.ws_url, tokens["carol"]) as carol:
        for ws in (bob, carol):
            await ws.send('{"type":"ping"}')
            await frame_of_type(ws, "pong")
        r = put_device(client, tenant, "alice", "phone", second.bundle(prekeys=2))
        assert r.status_code == 200, r.text  # the device existed: replaced
        changed = await frame_of_type(bob, "identity_key_changed")
        assert changed == {
            "type": "identity_key_changed",
            "user_id": "alice",
            "device_id": "phone",
            "identity_key": second.identity_key,
            "previous_identity_key": first.identity_key,
            "occurred_at": changed["occurred_at"],
        }
        # carol shares no channel with alice: she hears of the next change only once she does
        r = client.post(f"{server.url}/v1/channels", json={"channel_id": "ac", "members": ["alice", "carol"]},
                        headers=tenant.headers())  # fmt: skip
        assert r.status_code == 201, r.text
        r = client.get(f"{server.url}/v1/channels/ac", params={"min_position": r.json()["position"]},
                       headers=tenant.headers())  # fmt: skip
        assert r.status_code == 200, r.text
        assert put_device(client, tenant, "alice", "phone", third.bundle()).status_code == 200
        told = await frame_of_type(carol, "identity_key_changed")
        assert (told["previous_identity_key"], told["identity_key"]) == (second.identity_key, third.identity_key)
        again = await frame_of_type(bob, "identity_key_changed")
        assert again["identity_key"] == third.identity_key
        # removing the device and registering another key under its id is a key change too
        r = client.delete(f"{server.url}/v1/users/alice/devices/phone", headers=tenant.headers())
        assert r.status_code in (200, 204), r.text
        fourth = Device()
        assert put_device(client, tenant, "alice", "phone", fourth.bundle()).status_code == 201
        for ws in (bob, carol):
            told = await frame_of_type(ws, "identity_key_changed")
            assert (told["previous_identity_key"], told["identity_key"]) == (third.identity_key, fourth.identity_key)
    # the new installation starts with its own keys: the old pool is gone
    assert devices_of(client, tenant, "alice")["phone"]["identity_key"] == fourth.identity_key
    assert devices_of(client, tenant, "alice")["phone"]["one_time_prekeys_left"] == 0


# --- e2e channels --------------------------------------------------------------------------
@pytest.fixture
def e2e_room(client: httpx.Client, tenant: Tenant) -> dict[str, str]:
    """``alice`` and ``bob``, each with a device, in the e2e group channel ``secret``."""
    tokens = {uid: tenant.user(client, uid) for uid in ("alice", "bob")}
    for uid in tokens:
        assert put_device(client, tenant, uid, "phone", Device().bundle(prekeys=1)).status_code == 201
    r = client.post(f"{tenant.url}/v1/channels", json={"channel_id": "secret", "members": ["bob"], "e2e": True},
                    headers=bearer(tokens["alice"]))  # fmt: skip
    assert r.status_code == 201, r.text
    return tokens


async def test_e2e_channels_refuse_plaintext_and_round_trip_envelopes(
    server: Server, client: httpx.Client, tenant: Tenant, e2e_room: dict[str, str]
) -> None:
    alice = bearer(e2e_room["alice"])
    url = f"{server.url}/v1/channels/secret/messages"
    sealed = envelope("phone", [("bob", "phone"), ("alice", "phone")], group=True)
    link = {"type": "link", "url": "https://example.com/x"}
    for plain in ({"text": "hello"}, {"attachments": [link]}, {"text": "hi", "e2e": sealed}):
        assert_error(client.post(url, json=plain, headers=alice), 422, "plaintext_in_e2e_channel",
                     "plaintext_in_e2e_channel")  # fmt: skip
    bad_envelopes = (
        {"sender_device": "phone"},  # neither ciphertexts nor group
        {**sealed, "group": "***"},
        {**sealed, "ciphertexts": [{"user_id": "bob", "device_id": "phone", "body": ""}]},
        {**sealed, "ciphertexts": sealed["ciphertexts"][:1] * 2},  # twice to one device
        {**sealed, "plaintext": "oops"},
    )
    for bad in bad_envelopes:
        assert_error(client.post(url, json={"e2e": bad}, headers=alice), 422, "invalid_request")
    r = client.post(url, json={"e2e": {**sealed, "sender_device": "tablet"}}, headers=alice)
    assert_error(r, 422, "invalid_request", "unknown_sender_device")
    assert_error(client.post(url, json={}, headers=alice), 422, "invalid_request", "empty_message")

    async with ws_connect(server.ws_url, e2e_room["bob"]) as bob_ws:
        await subscribe(bob_ws, "secret")
        posted = client.post(url, json={"e2e": sealed}, headers=alice)
        assert posted.status_code == 201, posted.text
        live = await frame_of_type(bob_ws, "event")
        assert live["event"]["type"] == "MessagePosted"
        assert live["event"]["payload"]["e2e"] == sealed and live["event"]["payload"]["text"] == ""
    mid = posted.json()["message_id"]
    history = client.get(url, params={"min_position": posted.json()["position"]}, headers=alice).json()["messages"]
    assert [(m["message_id"], m["text"], m["e2e"]) for m in history] == [(mid, "", sealed)]

    edit_url = f"{url}/{mid}"
    assert_error(client.patch(edit_url, json={"text": "plain"}, headers=alice), 422, "plaintext_in_e2e_channel")
    resealed = envelope("phone", [("bob", "phone")])
    edited = client.patch(edit_url, json={"e2e": resealed}, headers=alice)
    assert edited.status_code == 200, edited.text
    history = client.get(url, params={"min_position": edited.json()["position"]}, headers=alice).json()["messages"]
    assert history[0]["e2e"] == resealed and history[0]["text"] == "" and history[0]["edited_at"] is not None
    async with ws_connect(server.ws_url, e2e_room["bob"]) as bob_ws:  # a replay shows the latest envelope
        await subscribe(bob_ws, "secret", since=0)
        replayed = []
        while len(replayed) < 2:
            frame = await frame_of_type(bob_ws, "event")
            if frame["event"]["type"] in ("MessagePosted", "MessageEdited"):
                replayed.append(frame["event"]["payload"])
    assert [(p["e2e"], p.get("redacted")) for p in replayed] == [(resealed, "edited"), (resealed, None)]


def test_an_envelope_is_refused_in_a_channel_that_is_not_e2e(client: httpx.Client, tenant: Tenant) -> None:
    alice = bearer(tenant.user(client, "alice"))
    assert put_device(client, tenant, "alice", "phone", Device().bundle()).status_code == 201
    r = client.post(f"{tenant.url}/v1/channels", json={"channel_id": "open"}, headers=alice)
    assert r.status_code == 201, r.text
    sealed = envelope("phone", [("alice", "phone")])
    r = client.post(f"{tenant.url}/v1/channels/open/messages", json={"e2e": sealed}, headers=alice)
    assert_error(r, 422, "invalid_request", "e2e_in_plain_channel")
    assert client.post(f"{tenant.url}/v1/channels/open/messages", json={"text": "hi"}, headers=alice).status_code == 201
