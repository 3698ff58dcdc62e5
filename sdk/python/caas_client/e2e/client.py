"""The SDK's E2E client: this device's keys on the server's devices API, and messages of ``e2e``
channels encrypted into (and decrypted from) the ``e2e`` envelope. The crypto lives in
:class:`~caas_client.e2e.device.Device`; this module only moves its bytes over HTTP.

    e2e = await E2EClient.open(client, "alice", "phone", FileDeviceStore("alice-phone.json"))
    await e2e.register()
    await e2e.send("room", "hello")              # every member's devices, this user's others too
    for msg in await e2e.client.call(...): e2e.decrypt(msg)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from caas_client.calls import Call, Json, seg
from caas_client.client import AsyncClient
from caas_client.e2e import primitives as p
from caas_client.e2e.device import Device, IdentityChangeHook, address
from caas_client.e2e.keys import Bundle
from caas_client.e2e.store import DeviceStore, MemoryDeviceStore


def _devices(user_id: str, *rest: str) -> str:
    return "/".join([f"/v1/users/{seg(user_id)}/devices", *(seg(r) for r in rest)])


@dataclass(frozen=True)
class Decrypted:
    """A decrypted message of an ``e2e`` channel."""

    channel_id: str
    author_id: str
    sender_device: str
    text: str
    attachments: list[Json] = field(default_factory=list)
    message: Json = field(default_factory=dict)  # the message (or frame payload) as received


class E2EClient:
    """One device of one user, over an :class:`AsyncClient` (the user's token, or the tenant key
    acting for ``user_id``). Every change of the device's state is saved to ``store``."""

    def __init__(self, client: AsyncClient, device: Device, store: DeviceStore | None = None) -> None:
        self.client = client
        self.device = device
        self.store = store or MemoryDeviceStore()
        self.identity_changes: list[str] = []  # peers whose identity key changed (safety numbers)

    @staticmethod
    async def open(
        client: AsyncClient,
        user_id: str,
        device_id: str,
        store: DeviceStore | None = None,
        prekeys: int = 50,
        on_identity_change: IdentityChangeHook | None = None,
    ) -> E2EClient:
        """The device saved in ``store``, or a new one with ``prekeys`` one-time prekeys.
        ``on_identity_change(peer, previous, new) -> accept?`` decides on a known device's new
        identity key; by default it is refused for a peer marked verified and accepted otherwise
        (every accepted change is listed in ``identity_changes``)."""
        store = store or MemoryDeviceStore()
        saved = store.load()
        device = Device.from_json(saved) if saved else Device.create(user_id, device_id, prekeys)
        device.on_identity_change = on_identity_change
        e2e = E2EClient(client, device, store)
        e2e.save()
        return e2e

    def save(self) -> None:
        self.store.save(self.device.to_json())

    # --- keys on the devices API ------------------------------------------------------------
    async def register(self) -> Json:
        """``PUT …/devices/{device_id}`` with the identity key, signed prekey and one-time prekeys."""
        d = self.device
        return await self.client.call(Call("PUT", _devices(d.user_id, d.device_id), dict, d.registration()))

    async def top_up(self, minimum: int = 20, batch: int = 50) -> int:
        """Uploads ``batch`` one-time prekeys when fewer than ``minimum`` are left on the server;
        how many were uploaded."""
        mine = next(
            (x for x in await self.devices(self.device.user_id) if x["device_id"] == self.device.device_id), None
        )
        if mine is not None and int(mine.get("one_time_prekeys_left", 0)) >= minimum:
            return 0
        made = self.device.new_one_time_prekeys(batch)
        self.save()
        path = _devices(self.device.user_id, self.device.device_id, "prekeys")
        await self.client.call(Call("POST", path, dict, {"one_time_prekeys": made}))
        return len(made)

    async def rotate_signed_prekey(self) -> Json:
        spk = self.device.rotate_signed_prekey()
        self.save()
        path = _devices(self.device.user_id, self.device.device_id, "signed-prekey")
        return await self.client.call(Call("PUT", path, dict, spk))

    async def devices(self, user_id: str) -> list[Json]:
        # the route takes no min_position: it answers from the user aggregate
        answer = await self.client.call(Call("GET", _devices(user_id), dict))
        return list(answer.get("devices", []))

    async def bundle(self, user_id: str, device_id: str) -> Bundle:
        """Claims one of the device's one-time prekeys (each is handed out once)."""
        return Bundle.from_json(await self.client.call(Call("POST", _devices(user_id, device_id, "bundle"), dict)))

    async def bundles(self, user_id: str) -> list[Bundle]:
        answer = await self.client.call(Call("POST", f"/v1/users/{seg(user_id)}/bundles", dict))
        return [Bundle.from_json(b) for b in answer.get("bundles", [])]

    # --- sending ----------------------------------------------------------------------------
    async def recipients(self, member_ids: list[str]) -> list[str]:
        """Every device of the members (this user's other devices included) with a session,
        starting sessions from bundles where there is none, or where the device's identity key
        changed (recorded in ``identity_changes``)."""
        out = []
        for user_id in sorted(set(member_ids) | {self.device.user_id}):
            for info in await self.devices(user_id):
                peer = address(user_id, str(info["device_id"]))
                if peer == self.device.address:
                    continue
                known = self.device.identity_of(peer)
                if known is not None and p.b64(known) != info.get("identity_key"):
                    self.device.forget(peer)  # re-registered: its sessions are of the old key
                if not self.device.has_session(peer):  # IdentityChanged if the app refuses a new key
                    self.device.start_session(await self.bundle(user_id, str(info["device_id"])))
                if known is not None and self.device.identity_of(peer) != known:
                    self.identity_changes.append(peer)
                out.append(peer)
        return out

    async def send(
        self,
        channel_id: str,
        text: str,
        attachments: list[Json] | None = None,
        member_ids: list[str] | None = None,
        mode: Literal["pairwise", "group", "auto"] = "auto",
        user_id: str | None = None,
    ) -> Json:
        """Encrypts ``text`` for every device of the channel's members and posts the envelope.
        ``mode``: one pairwise ciphertext per device, or a sender-key message (the key travels in
        pairwise messages to the devices that lack it); "auto" picks group for more than two
        members. ``user_id``: the author, when the client holds the tenant key."""
        if member_ids is None:
            channel = await self.client.call(Call("GET", f"/v1/channels/{seg(channel_id)}", dict, reads=True))
            member_ids = [str(m["user_id"]) for m in channel.get("members", [])]
        peers = await self.recipients(member_ids)
        if not peers:
            mode = "group"  # no other device yet: the sender-key message alone is the envelope
        plaintext = json.dumps({"type": "message", "text": text, "attachments": attachments or []}).encode()
        envelope: Json = {"sender_device": self.device.device_id}
        if mode == "group" or (mode == "auto" and len(set(member_ids)) > 2):
            pairwise, group = self.device.encrypt_group(channel_id, plaintext, peers)
            envelope["group"] = p.b64(group)
        else:
            pairwise = {peer: self.device.encrypt(peer, plaintext) for peer in peers}
        self.save()
        envelope["ciphertexts"] = [
            {"user_id": peer.rsplit("/", 1)[0], "device_id": peer.rsplit("/", 1)[1], "body": p.b64(body)}
            for peer, body in pairwise.items()
        ]
        body: Json = {"e2e": envelope}
        if user_id is not None:
            body["user_id"] = user_id
        return await self.client.call(Call("POST", f"/v1/channels/{seg(channel_id)}/messages", dict, body))

    # --- receiving --------------------------------------------------------------------------
    async def history(self, channel_id: str, after_seq: int = 0) -> list[Json]:
        """The channel's messages after ``after_seq``, oldest first, as the server sent them."""
        out: list[Json] = []
        nxt: int | None = after_seq
        while nxt is not None:
            path = f"/v1/channels/{seg(channel_id)}/messages"
            page = await self.client.call(Call("GET", path, dict, query={"after_seq": nxt}, reads=True))
            out += page.get("messages", [])
            nxt = page.get("next_after_seq")
        return out

    def decrypt(self, message: Json, channel_id: str | None = None, author_id: str | None = None) -> Decrypted | None:
        """A message of history decrypted for this device, or a websocket event's payload
        (``MessagePosted``; give ``channel_id`` from the frame, and ``author_id`` for a
        ``MessageEdited``). None when it holds nothing for this device (its own message, or a
        sender-key distribution only). Raises an :class:`~caas_client.e2e.errors.E2EError` when
        it cannot decrypt; a peer whose identity key changed is added to ``identity_changes``."""
        envelope = message.get("e2e")
        if not envelope:
            return None
        author = str(author_id or message["author_id"])
        channel_id = str(channel_id or message["channel_id"])
        sender = address(author, str(envelope["sender_device"]))
        if sender == self.device.address:
            return None
        known = self.device.identity_of(sender)
        result: Json | None = None
        try:
            for entry in envelope.get("ciphertexts") or []:
                if (entry.get("user_id"), entry.get("device_id")) == (self.device.user_id, self.device.device_id):
                    data = json.loads(self.device.decrypt(sender, p.unb64(entry["body"])))
                    if data.get("type") == "message":
                        result = data
            if envelope.get("group"):
                result = json.loads(self.device.decrypt_group(sender, channel_id, p.unb64(envelope["group"])))
        finally:
            self.save()  # a sender key or session advanced before a failure is kept
        if known is not None and self.device.identity_of(sender) != known:
            self.identity_changes.append(sender)
        if result is None:
            return None
        return Decrypted(
            channel_id,
            author,
            str(envelope["sender_device"]),
            str(result.get("text", "")),
            list(result.get("attachments") or []),
            dict(message),
        )
