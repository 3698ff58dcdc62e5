"""Server-blind end-to-end encryption (issue 14): after E2E conversations through a real server —
pairwise and sender-key messages, a user with two devices, an edit — a scan of every byte the
server keeps (each SQLite file of the embedded data dir; every record of every Kafka topic and
every document of every MongoDB collection on the Kafka backend) finds none of the texts sent,
while the devices read all of them. A text posted in an ordinary channel of the same tenant is
found by the same scan, in the read model: the scan sees what it looks for."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from caas_client import AsyncClient
from caas_client.calls import Call
from caas_client.e2e import E2EClient

from tests.erasure_scenario import found_in, stored
from tests.sdk.helpers import admin_for
from tests.support import Server


async def test_after_e2e_conversations_no_text_sent_is_anywhere_the_server_keeps_bytes(server: Server) -> None:
    admin = await admin_for(server, "e2e-blind")
    tokens: dict[str, str] = {}
    for uid in ("alice", "bob", "carol"):
        await admin.put_user(uid, uid.title())
        tokens[uid] = (await admin.create_token(uid)).token
    for cid, members in (("dm", ["alice", "bob"]), ("team", ["alice", "bob", "carol"])):
        await admin.call(Call("POST", "/v1/channels", dict, {"channel_id": cid, "members": members, "e2e": True}))
    await admin.create_channel(["alice", "bob"], channel_id="plain", name="plain")

    devices: dict[str, E2EClient] = {}
    for uid, device_id in (("alice", "laptop"), ("alice", "phone"), ("bob", "b1"), ("carol", "c1")):
        e2e = await E2EClient.open(AsyncClient(server.url, tokens[uid]), uid, device_id, prekeys=5)
        await e2e.register()
        devices[f"{uid}/{device_id}"] = e2e

    sent: list[bytes] = []

    async def say(sender: str, cid: str, readers: list[str], **options: Any) -> None:
        text = f"secret-{secrets.token_hex(12)}"
        written = await devices[sender].send(cid, text, **options)
        sent.append(text.encode())
        for reader in readers:
            device = devices[reader]
            device.client.observe_position(written["position"])
            [message] = [m for m in await device.history(cid) if m["message_id"] == written["message_id"]]
            got = device.decrypt(message)
            assert got is not None and got.text == text, (reader, message)

    await say("alice/laptop", "dm", ["bob/b1", "alice/phone"])
    await say("bob/b1", "dm", ["alice/laptop", "alice/phone"])
    await say("alice/phone", "dm", ["bob/b1", "alice/laptop"])
    await say("alice/laptop", "team", ["bob/b1", "carol/c1", "alice/phone"], mode="group")
    await say("carol/c1", "team", ["alice/laptop", "bob/b1"], mode="group")
    await say("bob/b1", "team", ["carol/c1", "alice/phone"], mode="pairwise")

    canary = f"canary-{secrets.token_hex(12)}"
    posted = await admin.post_message("plain", canary, user_id="alice")
    assert admin.position >= posted.position
    assert [m.text for m in (await admin.messages("plain")).messages] == [canary]  # read after its position

    blobs = await asyncio.to_thread(stored, server)
    assert found_in(blobs, [canary.encode()]), "the scan finds a text posted in the clear"
    assert not found_in(blobs, sent)
