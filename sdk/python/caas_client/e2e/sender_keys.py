"""Sender keys for group channels: one symmetric chain per (sender device, channel, key id),
each message signed by the sender key's Ed25519 key; the chain key and the signing public key
reach the members inside pairwise messages (a ``sender_key`` distribution)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from caas_client.e2e import primitives as p
from caas_client.e2e.errors import MalformedMessage, ReplayedMessage, TooManySkipped
from caas_client.e2e.ratchet import MAX_SKIP, kdf_ck
from caas_client.e2e.wire import SenderKeyMessage, decode

INFO = b"CAAS_SenderKey"


def _key_nonce(mk: bytes) -> bytes:
    return p.hkdf(mk, p.ZERO_SALT, INFO, 56)


@dataclass
class _Chain:
    """What both ends of a sender key hold: the chain at an iteration."""

    channel_id: str
    key_id: int
    iteration: int
    chain_key: bytes

    def chain_json(self) -> dict[str, Any]:
        return {
            "channel_id": self.channel_id,
            "key_id": self.key_id,
            "iteration": self.iteration,
            "chain_key": p.b64(self.chain_key),
        }


def _chain_fields(data: dict[str, Any]) -> tuple[str, int, int, bytes]:
    return str(data["channel_id"]), int(data["key_id"]), int(data["iteration"]), p.unb64(data["chain_key"])


@dataclass
class OwnSenderKey(_Chain):
    """This device's sending chain in one channel."""

    signing_seed: bytes
    recipients: set[str] = field(default_factory=set)  # "user_id/device_id" that hold this key

    @staticmethod
    def generate(channel_id: str, key_id: int) -> OwnSenderKey:
        return OwnSenderKey(channel_id, key_id, 0, p.random_bytes(32), p.random_bytes(32))

    @cached_property
    def signing_public(self) -> bytes:
        return p.ed25519_keypair(self.signing_seed)[0]

    @cached_property
    def signing_secret(self) -> bytes:
        return p.ed25519_keypair(self.signing_seed)[1]

    def distribution(self) -> bytes:
        """The pairwise plaintext that hands this chain (from its current iteration) to a member."""
        body = {"type": "sender_key", **self.chain_json(), "signing_key": p.b64(self.signing_public)}
        return json.dumps(body, separators=(",", ":")).encode()

    def encrypt(self, plaintext: bytes) -> bytes:
        """The sender-key message bytes; advances the chain."""
        next_ck, mk = kdf_ck(self.chain_key)
        ct = p.aead_encrypt(_key_nonce(mk), plaintext, self.channel_id.encode())
        signed = SenderKeyMessage.signed_part(self.key_id, self.iteration, ct)
        sig = p.sign(self.signing_secret, signed)
        self.chain_key, self.iteration = next_ck, self.iteration + 1
        return signed + sig

    def to_json(self) -> dict[str, Any]:
        return {**self.chain_json(), "signing_seed": p.b64(self.signing_seed), "recipients": sorted(self.recipients)}

    @staticmethod
    def from_json(data: dict[str, Any]) -> OwnSenderKey:
        return OwnSenderKey(*_chain_fields(data), p.unb64(data["signing_seed"]), set(data["recipients"]))


@dataclass
class ReceivedSenderKey(_Chain):
    """Another device's chain in one channel, as its distribution gave it."""

    signing_key: bytes
    skipped: dict[int, bytes] = field(default_factory=dict)

    @staticmethod
    def from_distribution(data: dict[str, Any]) -> ReceivedSenderKey:
        try:
            return ReceivedSenderKey.from_json(data)
        except (KeyError, ValueError, TypeError) as exc:
            raise MalformedMessage("a sender_key distribution lacks a field") from exc

    def decrypt(self, message: bytes) -> tuple[ReceivedSenderKey, bytes]:
        """(new state, plaintext): the signature is checked before anything else; the state
        passed in is never changed."""
        msg = decode(message)
        if not isinstance(msg, SenderKeyMessage):
            raise MalformedMessage("not a sender-key message")
        if msg.key_id != self.key_id:
            raise MalformedMessage(f"sender key {msg.key_id} is not the one held ({self.key_id})")
        p.verify(self.signing_key, message[: -len(msg.signature)], msg.signature)
        new = replace(self, skipped=dict(self.skipped))
        if msg.iteration < new.iteration:
            mk = new.skipped.pop(msg.iteration, None)
            if mk is None:
                raise ReplayedMessage("this group message was already decrypted (or its key was dropped)")
        else:
            if msg.iteration - new.iteration > MAX_SKIP:
                raise TooManySkipped(f"the message is {msg.iteration - new.iteration} ahead (at most {MAX_SKIP})")
            while new.iteration < msg.iteration:
                new.chain_key, skipped_mk = kdf_ck(new.chain_key)
                new.skipped[new.iteration] = skipped_mk
                new.iteration += 1
            new.chain_key, mk = kdf_ck(new.chain_key)
            new.iteration += 1
            while len(new.skipped) > MAX_SKIP:
                del new.skipped[min(new.skipped)]
        plaintext = p.aead_decrypt(_key_nonce(mk), msg.ciphertext, self.channel_id.encode())
        return new, plaintext

    def to_json(self) -> dict[str, Any]:
        skipped = {str(i): p.b64(mk) for i, mk in self.skipped.items()}
        return {**self.chain_json(), "signing_key": p.b64(self.signing_key), "skipped": skipped}

    @staticmethod
    def from_json(data: dict[str, Any]) -> ReceivedSenderKey:
        """From ``to_json()`` or from a distribution (no skipped keys yet)."""
        skipped = {int(i): p.unb64(mk) for i, mk in data.get("skipped", {}).items()}
        return ReceivedSenderKey(*_chain_fields(data), p.unb64(data["signing_key"]), skipped)
