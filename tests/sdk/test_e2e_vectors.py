"""The committed known-answer vectors (tests/e2e_vectors/caas-e2e-v1.json, which the TypeScript
SDK checks its bytes against) are what this SDK computes, and they decrypt."""

from __future__ import annotations

import json
from pathlib import Path

from caas_client.e2e import primitives as p
from caas_client.e2e.device import Device
from caas_client.e2e.keys import IdentityKey, KeyPair, SignedPrekey
from caas_client.e2e.sender_keys import ReceivedSenderKey
from caas_client.e2e.vectors import fixed, vectors

FILE = Path(__file__).resolve().parents[1] / "e2e_vectors" / "caas-e2e-v1.json"


def test_committed_vectors_are_what_the_sdk_computes() -> None:
    assert json.loads(FILE.read_text()) == vectors()


def test_hkdf_is_rfc5869() -> None:
    # RFC 5869, test case 1
    okm = p.hkdf(bytes([0x0B] * 22), bytes(range(13)), bytes(range(0xF0, 0xFA)), 42)
    assert okm.hex() == ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")


def test_vector_messages_decrypt_for_their_recipients() -> None:
    v = json.loads(FILE.read_text())
    bob_identity = IdentityKey(fixed("bob identity"))
    bob = Device(
        "bob", "b1", bob_identity, SignedPrekey.generate(bob_identity, 7, KeyPair.from_private(fixed("bob spk")))
    )
    bob.one_time_prekeys[42] = KeyPair.from_private(fixed("bob opk"))
    first = p.unb64(v["first_message"]["bytes"])
    assert bob.decrypt("alice/a1", first).decode() == v["first_message"]["plaintext"]
    assert 42 not in bob.one_time_prekeys  # a one-time prekey opens one session only

    chain = ReceivedSenderKey(
        "room-1", 5, 0, p.unb64(v["sender_key"]["chain_key"]), p.unb64(v["sender_key"]["signing_public"])
    )
    for message in v["sender_key"]["messages"]:
        chain, plaintext = chain.decrypt(p.unb64(message["bytes"]))
        assert plaintext.decode() == message["plaintext"]
