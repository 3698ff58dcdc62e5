"""The Python SDK's E2E client against a real server (embedded and Kafka): devices registered
with their keys, sessions started from claimed bundles, pairwise and sender-key messages posted
as ciphertext envelopes and decrypted by every device of every member (the sender's other
devices too), a member who left unable to read what follows, prekeys topped up, and a rotated
signed prekey that still starts sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from caas_client import AsyncClient, CaasError, EventFrame, Realtime
from caas_client.calls import Call
from caas_client.e2e import E2EClient, FileDeviceStore, IdentityChanged, NoSession

from tests.sdk.helpers import admin_for, read_until
from tests.support import Server


async def e2e_room(admin: AsyncClient, cid: str, *users: str) -> dict[str, str]:
    tokens = {}
    for uid in users:
        await admin.put_user(uid, uid.title())
        tokens[uid] = (await admin.create_token(uid)).token
    await admin.call(Call("POST", "/v1/channels", dict, {"channel_id": cid, "members": list(users), "e2e": True}))
    return tokens


async def device(server: Server, token: str, user_id: str, device_id: str, prekeys: int = 5) -> E2EClient:
    e2e = await E2EClient.open(AsyncClient(server.url, token), user_id, device_id, prekeys=prekeys)
    await e2e.register()
    return e2e


async def received(reader: E2EClient, channel_id: str, written: dict[str, Any]) -> dict[str, Any]:
    """The posted message as ``reader`` reads it back (its reads wait for the post's position)."""
    reader.client.observe_position(written["position"])
    [message] = [m for m in await reader.history(channel_id) if m["message_id"] == written["message_id"]]
    return message


async def test_pairwise_messages_reach_every_device_of_both_users_and_only_ciphertext_is_stored(
    server: Server, tmp_path: Path
) -> None:
    admin = await admin_for(server, "e2e-pairwise")
    tokens = await e2e_room(admin, "dm", "alice", "bob")
    laptop = await E2EClient.open(
        AsyncClient(server.url, tokens["alice"]), "alice", "laptop", FileDeviceStore(tmp_path / "laptop.json")
    )
    await laptop.register()
    phone = await device(server, tokens["alice"], "alice", "phone")
    bob = await device(server, tokens["bob"], "bob", "b1")

    posted = await received(bob, "dm", await laptop.send("dm", "the secret plan"))
    assert posted["text"] in (None, "") and "the secret plan" not in str(posted)
    assert {(c["user_id"], c["device_id"]) for c in posted["e2e"]["ciphertexts"]} == {("alice", "phone"), ("bob", "b1")}
    for reader in (bob, phone):
        got = reader.decrypt(posted)
        assert got is not None and (got.text, got.author_id, got.sender_device) == (
            "the secret plan",
            "alice",
            "laptop",
        )
    assert laptop.decrypt(posted) is None  # its own message

    reply = await received(laptop, "dm", await bob.send("dm", "agreed"))
    for reader in (laptop, phone):
        got = reader.decrypt(reply)
        assert got is not None and got.text == "agreed"

    # the laptop's state was saved: a restart carries the session on
    restored = await E2EClient.open(
        AsyncClient(server.url, tokens["alice"]), "alice", "laptop", FileDeviceStore(tmp_path / "laptop.json")
    )
    got = bob.decrypt(await received(bob, "dm", await restored.send("dm", "after a restart")))
    assert got is not None and got.text == "after a restart"

    # and over the websocket: the MessagePosted payload of a channel frame decrypts the same
    async with Realtime(server.url, tokens["bob"]) as realtime:
        channel = realtime.channel("dm", since_seq=0)
        written = await restored.send("dm", "over the socket")
        frames = await read_until(channel, written["seq"], [])
    frame = next(f for f in frames if isinstance(f, EventFrame) and f.seq == written["seq"])
    got = bob.decrypt(frame.event.payload, channel_id=frame.channel_id)
    assert got is not None and got.text == "over the socket"

    with pytest.raises(CaasError) as refused:
        await admin.post_message("dm", "plaintext", user_id="alice")
    assert refused.value.status == 422


async def test_group_messages_use_sender_keys_and_a_member_who_left_reads_nothing_after(server: Server) -> None:
    admin = await admin_for(server, "e2e-group")
    tokens = await e2e_room(admin, "room", "alice", "bob", "carol")
    alice, bob, carol = [await device(server, tokens[u], u, "d1") for u in ("alice", "bob", "carol")]

    first = await received(bob, "room", await alice.send("room", "hello group"))
    assert first["e2e"]["group"]
    for reader in (bob, carol):
        got = reader.decrypt(first)
        assert got is not None and got.text == "hello group"
    second = await received(bob, "room", await alice.send("room", "second"))
    assert second["e2e"]["ciphertexts"] == []  # the sender key is already held
    assert [r.decrypt(second).text for r in (bob, carol)] == ["second", "second"]  # type: ignore[union-attr]

    alice.client.observe_position((await admin.remove_member("room", "carol")).position)
    third = await received(bob, "room", await alice.send("room", "carol is gone", mode="group"))
    got = bob.decrypt(third)
    assert got is not None and got.text == "carol is gone"
    assert {c["user_id"] for c in third["e2e"]["ciphertexts"]} == {"bob"}
    assert third["e2e"]["group"]
    with pytest.raises(NoSession):  # a new sender key, which carol never got
        carol.decrypt(third)


async def test_prekeys_are_topped_up_and_a_rotated_signed_prekey_still_starts_sessions(server: Server) -> None:
    admin = await admin_for(server, "e2e-prekeys")
    tokens = await e2e_room(admin, "dm", "alice", "bob")
    bob = await device(server, tokens["bob"], "bob", "b1", prekeys=3)
    first, second = await bob.bundle("bob", "b1"), await bob.bundle("bob", "b1")
    assert first.opk_id is not None and second.opk_id is not None and first.opk_id != second.opk_id
    assert await bob.top_up(minimum=10, batch=20) == 20
    [info] = await bob.devices("bob")
    assert info["one_time_prekeys_left"] == 21
    assert await bob.top_up(minimum=10) == 0

    await bob.rotate_signed_prekey()
    alice = await device(server, tokens["alice"], "alice", "a1")
    written = await alice.send("dm", "after the rotation")
    assert alice.device.sessions["bob/b1"].pending is not None
    assert alice.device.sessions["bob/b1"].pending[1] == bob.device.signed_prekey.key_id
    got = bob.decrypt(await received(bob, "dm", written))
    assert got is not None and got.text == "after the rotation"


async def test_a_reinstalled_device_is_refused_for_a_verified_contact_and_accepted_and_reported_otherwise(
    server: Server,
) -> None:
    admin = await admin_for(server, "e2e-identity")
    tokens = await e2e_room(admin, "dm", "alice", "bob")
    seen: list[str] = []
    alice = await E2EClient.open(
        AsyncClient(server.url, tokens["alice"]), "alice", "a1", prekeys=5,
        on_identity_change=lambda peer, old, new: seen.append(peer) is None and peer not in alice.device.verified,
    )  # fmt: skip
    await alice.register()
    await device(server, tokens["bob"], "bob", "b1")
    await alice.send("dm", "hello")
    alice.device.mark_verified("bob/b1")
    reinstalled = await device(server, tokens["bob"], "bob", "b1")  # another identity key, same device id
    with pytest.raises(IdentityChanged):
        await alice.send("dm", "for the verified bob only")
    assert seen == ["bob/b1"] and alice.identity_changes == []
    alice.device.mark_verified("bob/b1", False)  # the user accepts the new safety number
    got = reinstalled.decrypt(await received(reinstalled, "dm", await alice.send("dm", "welcome back")))
    assert got is not None and got.text == "welcome back"
    assert alice.identity_changes == ["bob/b1"]
    assert alice.device.identity_of("bob/b1") == reinstalled.device.identity.public
