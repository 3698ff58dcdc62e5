"""Known-answer vectors of the wire protocol, from fixed private keys: X3DH's DH outputs and SK
(with and without a one-time prekey), the first prekey message, the responder's first reply and
two sender-key messages. The TypeScript SDK checks its bytes against the committed file;
tests/sdk/test_e2e_vectors.py checks this code against it.

    python -m caas_client.e2e.vectors > tests/e2e_vectors/caas-e2e-v1.json
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

from caas_client.e2e import primitives as p
from caas_client.e2e import ratchet, x3dh
from caas_client.e2e.device import Device
from caas_client.e2e.keys import IdentityKey, KeyPair, SignedPrekey
from caas_client.e2e.sender_keys import OwnSenderKey


def fixed(label: str) -> bytes:
    """A 32-byte private key or seed: SHA-256 of the label."""
    return hashlib.sha256(label.encode()).digest()


def vectors() -> dict[str, Any]:
    alice = Device(
        "alice",
        "a1",
        IdentityKey(fixed("alice identity")),
        SignedPrekey.generate(IdentityKey(fixed("alice identity")), 1, KeyPair.from_private(fixed("alice spk"))),
    )
    bob_identity = IdentityKey(fixed("bob identity"))
    bob = Device(
        "bob", "b1", bob_identity, SignedPrekey.generate(bob_identity, 7, KeyPair.from_private(fixed("bob spk")))
    )
    bob.one_time_prekeys[42] = KeyPair.from_private(fixed("bob opk"))
    ek = KeyPair.from_private(fixed("alice ephemeral"))
    alice_ratchet = KeyPair.from_private(fixed("alice ratchet 1"))
    bob_ratchet = KeyPair.from_private(fixed("bob ratchet 1"))
    bundle = bob.bundle(42)
    ik_b_x = p.ed25519_pk_to_x25519(bob_identity.public)
    dhs = [
        p.dh(alice.identity.dh_private, bundle.spk_public),
        p.dh(ek.private, ik_b_x),
        p.dh(ek.private, bundle.spk_public),
        p.dh(ek.private, bob.one_time_prekeys[42].public),
    ]
    with_opk = x3dh.initiate(alice.identity, bundle, ek)
    without_opk = x3dh.initiate(alice.identity, bob.bundle(None), ek)
    rk, cks = ratchet.kdf_rk(with_opk.sk, p.dh(alice_ratchet.private, bundle.spk_public))
    next_ck, mk = ratchet.kdf_ck(cks)

    alice.start_session(bundle, ek, alice_ratchet)
    first_plaintext = '{"type":"message","text":"hello bob","attachments":[]}'
    first = alice.encrypt("bob/b1", first_plaintext.encode())
    # bob's first reply: decrypting makes a DH ratchet step with a fixed key pair
    agreed = x3dh.respond(
        bob_identity, bob.signed_prekey.pair, bob.one_time_prekeys[42], alice.identity.public, ek.public
    )
    state = ratchet.RatchetState.responder(agreed.sk, agreed.ad, bob.signed_prekey.pair)
    state, _ = ratchet.decrypt(state, first[2 + 72 : 2 + 72 + 40], first[2 + 72 + 40 :], bob_ratchet)
    reply_plaintext = '{"type":"message","text":"hi alice","attachments":[]}'
    state, header, ct = ratchet.encrypt(state, reply_plaintext.encode())
    reply = bytes([1, 2]) + header + ct

    sender = OwnSenderKey("room-1", 5, 0, fixed("sender chain key"), fixed("sender signing seed"))
    group = [sender.encrypt(f'{{"type":"message","text":"group {i}","attachments":[]}}'.encode()) for i in range(2)]

    def pub(pair: KeyPair) -> dict[str, str]:
        return {"private": p.b64(pair.private), "public": p.b64(pair.public)}

    return {
        "description": "CAAS E2E v1 known answers (docs/e2e-protocol.md); all bytes standard base64",
        "keys": {
            "alice_identity_seed": p.b64(alice.identity.seed),
            "alice_identity_public": p.b64(alice.identity.public),
            "alice_identity_x25519_private": p.b64(alice.identity.dh_private),
            "bob_identity_seed": p.b64(bob_identity.seed),
            "bob_identity_public": p.b64(bob_identity.public),
            "bob_identity_x25519_public": p.b64(ik_b_x),
            "bob_signed_prekey": {
                **pub(bob.signed_prekey.pair),
                "key_id": 7,
                "signature": p.b64(bob.signed_prekey.signature),
            },
            "bob_one_time_prekey": {**pub(bob.one_time_prekeys[42]), "key_id": 42},
            "alice_ephemeral": pub(ek),
            "alice_ratchet_1": pub(alice_ratchet),
            "bob_ratchet_1": pub(bob_ratchet),
        },
        "x3dh": {
            "dh1": p.b64(dhs[0]),
            "dh2": p.b64(dhs[1]),
            "dh3": p.b64(dhs[2]),
            "dh4": p.b64(dhs[3]),
            "sk_with_opk": p.b64(with_opk.sk),
            "sk_without_opk": p.b64(without_opk.sk),
            "ad": p.b64(with_opk.ad),
        },
        "ratchet": {
            "alice_root_key_1": p.b64(rk),
            "alice_sending_chain_1": p.b64(cks),
            "message_key_0": p.b64(mk),
            "next_chain_key": p.b64(next_ck),
            "key_nonce_0": p.b64(ratchet.message_key_nonce(mk)),
        },
        "first_message": {"plaintext": first_plaintext, "bytes": p.b64(first)},
        "bob_reply": {"plaintext": reply_plaintext, "bytes": p.b64(reply)},
        "sender_key": {
            "channel_id": "room-1",
            "key_id": 5,
            "chain_key": p.b64(fixed("sender chain key")),
            "signing_seed": p.b64(fixed("sender signing seed")),
            "signing_public": p.b64(p.ed25519_keypair(fixed("sender signing seed"))[0]),
            "messages": [
                {
                    "iteration": i,
                    "plaintext": f'{{"type":"message","text":"group {i}","attachments":[]}}',
                    "bytes": p.b64(m),
                }
                for i, m in enumerate(group)
            ],
        },
    }


if __name__ == "__main__":
    json.dump(vectors(), sys.stdout, indent=2)
    sys.stdout.write("\n")
