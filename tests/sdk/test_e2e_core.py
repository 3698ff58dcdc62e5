"""The E2E core of the Python SDK without a network: X3DH with and without a one-time prekey,
signed prekey checks and rotation, multi-device fan-out, sender keys and their rotation,
persistence, and the JSON-lines driver the TypeScript SDK's interop tests run."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from caas_client.e2e import (
    BadSignature,
    DecryptionFailed,
    Device,
    E2EError,
    IdentityChanged,
    NoSession,
    ReplayedMessage,
    TooManySkipped,
    UnknownPrekey,
    x3dh,
)
from caas_client.e2e.ratchet import MAX_SKIP
from caas_client.e2e.wire import NORMAL, PREKEY

SDK = Path(__file__).resolve().parents[2] / "sdk" / "python"


def pair(opk: bool = True) -> tuple[Device, Device]:
    alice, bob = Device.create("alice", "a1"), Device.create("bob", "b1", one_time_prekeys=2)
    alice.start_session(bob.bundle(1 if opk else None))
    return alice, bob


@pytest.mark.parametrize("opk", [True, False])
def test_x3dh_both_sides_agree_with_and_without_a_one_time_prekey(opk: bool) -> None:
    alice, bob = pair(opk)
    body = alice.encrypt("bob/b1", b"hi")
    assert body[1] == PREKEY
    assert bob.decrypt("alice/a1", body) == b"hi"
    assert sorted(bob.one_time_prekeys) == ([2] if opk else [1, 2])
    reply = bob.encrypt("alice/a1", b"hello")
    assert reply[1] == NORMAL
    assert alice.decrypt("bob/b1", reply) == b"hello"
    assert alice.encrypt("bob/b1", b"now normal")[1] == NORMAL


def test_prekey_messages_continue_until_the_first_reply_and_reuse_the_session() -> None:
    alice, bob = pair()
    bodies = [alice.encrypt("bob/b1", f"m{i}".encode()) for i in range(3)]
    assert all(b[1] == PREKEY for b in bodies)
    assert [bob.decrypt("alice/a1", b) for b in reversed(bodies)] == [b"m2", b"m1", b"m0"]


def test_a_bundle_whose_signed_prekey_signature_is_bad_is_refused() -> None:
    alice, bob = Device.create("alice", "a1"), Device.create("bob", "b1", 1)
    good = bob.bundle(1)
    with pytest.raises(BadSignature):
        alice.start_session(replace(good, spk_signature=bytes(64)))
    mallory = Device.create("mallory", "m1")
    with pytest.raises(BadSignature):  # a signed prekey passed off under another identity
        alice.start_session(replace(good, identity_key=mallory.identity.public))
    with pytest.raises(BadSignature):  # another signed prekey under bob's signature
        alice.start_session(replace(good, spk_public=mallory.signed_prekey.pair.public))
    assert not alice.has_session("bob/b1")


def test_a_rotated_signed_prekey_starts_sessions_and_the_previous_one_still_opens() -> None:
    bob = Device.create("bob", "b1", 2)
    old_bundle = bob.bundle(1)
    bob.rotate_signed_prekey()
    new_bundle = bob.bundle(2)
    assert new_bundle.spk_id == old_bundle.spk_id + 1
    for name, bundle in (("early", old_bundle), ("late", new_bundle)):
        sender = Device.create(name, "d")
        sender.start_session(bundle)
        assert bob.decrypt(f"{name}/d", sender.encrypt("bob/b1", name.encode())) == name.encode()
    for _ in range(3):
        bob.rotate_signed_prekey()
    stale = Device.create("stale", "d")
    stale.start_session(replace(old_bundle, opk_id=None, opk_public=None))
    with pytest.raises(UnknownPrekey):
        bob.decrypt("stale/d", stale.encrypt("bob/b1", b"too old"))


def test_a_one_time_prekey_opens_one_session_only() -> None:
    bob = Device.create("bob", "b1", 1)
    bundle = bob.bundle(1)
    first, second = Device.create("a", "1"), Device.create("b", "1")
    first.start_session(bundle)
    second.start_session(bundle)
    bob.decrypt("a/1", first.encrypt("bob/b1", b"x"))
    with pytest.raises(UnknownPrekey):
        bob.decrypt("b/1", second.encrypt("bob/b1", b"y"))


def test_replays_tampering_and_far_future_messages_are_refused_without_harming_the_session() -> None:
    alice, bob = pair()
    first = alice.encrypt("bob/b1", b"one")
    bob.decrypt("alice/a1", first)
    with pytest.raises(ReplayedMessage):
        bob.decrypt("alice/a1", first)
    body = bytearray(alice.encrypt("bob/b1", b"two"))
    body[-1] ^= 1
    with pytest.raises(DecryptionFailed):
        bob.decrypt("alice/a1", bytes(body))
    body[-1] ^= 1
    header_tampered = bytearray(body)
    header_tampered[2 + 72 + 39] ^= 2  # the header's n: 1 becomes 3
    with pytest.raises(DecryptionFailed):
        bob.decrypt("alice/a1", bytes(header_tampered))
    assert bob.decrypt("alice/a1", bytes(body)) == b"two"
    for _ in range(MAX_SKIP + 1):
        alice.encrypt("bob/b1", b"lost")
    with pytest.raises(TooManySkipped):
        bob.decrypt("alice/a1", alice.encrypt("bob/b1", b"far"))
    with pytest.raises(NoSession):
        Device.create("x", "y").decrypt("alice/a1", bob.encrypt("alice/a1", b"z")[:2] + bytes(60))


def test_multi_device_every_device_of_both_users_gets_its_own_ciphertext() -> None:
    alice1, alice2 = Device.create("alice", "a1"), Device.create("alice", "a2", 1)
    bob1, bob2 = Device.create("bob", "b1", 1), Device.create("bob", "b2", 1)
    others = {d.address: d for d in (alice2, bob1, bob2)}
    bodies = {}
    for addr, device in others.items():
        alice1.start_session(device.bundle(1))
        bodies[addr] = alice1.encrypt(addr, b"to everyone")
    assert len(set(bodies.values())) == 3
    for addr, device in others.items():
        assert device.decrypt("alice/a1", bodies[addr]) == b"to everyone"
        with pytest.raises(E2EError):  # a body made for another device opens nowhere else
            others[next(a for a in others if a != addr)].decrypt("alice/a1", bodies[addr])


def test_group_sender_keys_reach_members_and_rotate_when_a_member_leaves() -> None:
    alice = Device.create("alice", "a1")
    bob, carol, alice2 = Device.create("bob", "b1", 1), Device.create("carol", "c1", 1), Device.create("alice", "a2", 1)
    members = {d.address: d for d in (bob, carol, alice2)}
    bundles = {a: d.bundle(1) for a, d in members.items()}
    pairwise, group = alice.encrypt_group("room", b"hello all", list(members), bundles)
    assert set(pairwise) == set(members)
    for addr, device in members.items():
        device.decrypt("alice/a1", pairwise[addr])
        assert device.decrypt_group("alice/a1", "room", group) == b"hello all"
    pairwise, group = alice.encrypt_group("room", b"second", list(members))
    assert pairwise == {}  # the key is already held
    assert carol.decrypt_group("alice/a1", "room", group) == b"second"
    with pytest.raises(ReplayedMessage):
        carol.decrypt_group("alice/a1", "room", group)

    remaining = ["bob/b1", "alice/a2"]
    pairwise, group = alice.encrypt_group("room", b"without carol", remaining)
    assert set(pairwise) == set(remaining)
    for addr in remaining:
        members[addr].decrypt("alice/a1", pairwise[addr])
        assert members[addr].decrypt_group("alice/a1", "room", group) == b"without carol"
    with pytest.raises(NoSession):
        carol.decrypt_group("alice/a1", "room", group)


def test_a_device_persisted_to_json_and_restored_carries_on() -> None:
    alice, bob = pair()
    early = alice.encrypt("bob/b1", b"early")
    bob.decrypt("alice/a1", alice.encrypt("bob/b1", b"skipped over"))
    alice.encrypt_group("room", b"g", ["bob/b1"])
    restored_bob = Device.from_json(json.loads(json.dumps(bob.to_json())))
    restored_alice = Device.from_json(json.loads(json.dumps(alice.to_json())))
    assert restored_bob.to_json() == bob.to_json()
    assert restored_bob.decrypt("alice/a1", early) == b"early"
    assert restored_alice.decrypt("bob/b1", restored_bob.encrypt("alice/a1", b"back")) == b"back"


def test_no_opk_marker_is_all_ones() -> None:
    alice, _ = pair(opk=False)
    body = alice.encrypt("bob/b1", b"x")
    assert body[2 + 68 : 2 + 72] == x3dh.NO_OPK.to_bytes(4, "big")


def test_a_bundle_whose_one_time_prekey_id_is_the_none_marker_is_refused() -> None:
    bob = Device.create("bob", "b1", 1)
    bundle = replace(bob.bundle(1), opk_id=x3dh.NO_OPK)
    alice = Device.create("alice", "a1")
    with pytest.raises(E2EError):
        alice.start_session(bundle)
    assert not alice.has_session("bob/b1")


def test_driver_speaks_json_lines_between_two_devices() -> None:
    requests = [
        {"cmd": "create", "device": "bob", "user_id": "bob", "device_id": "b1", "one_time_prekeys": 1},
        {"cmd": "create", "device": "alice", "user_id": "alice", "device_id": "a1"},
        {"cmd": "bundle", "device": "bob", "id": "bundle"},
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "caas_client.e2e.driver"],
        cwd=SDK,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def ask(req: dict[str, object]) -> dict[str, object]:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(req) + "\n")
        proc.stdin.flush()
        answer: dict[str, object] = json.loads(proc.stdout.readline())
        return answer

    try:
        for req in requests[:2]:
            assert "registration" in ask(req)
        bundle = ask(requests[2])
        assert bundle["id"] == "bundle"
        sent = ask(
            {"cmd": "encrypt", "device": "alice", "to": "bob/b1", "bundle": bundle["bundle"], "plaintext": "héllo"}
        )
        got = ask({"cmd": "decrypt", "device": "bob", "from": "alice/a1", "body": sent["body"]})
        assert got["plaintext"] == "héllo"
        again = ask({"cmd": "decrypt", "device": "bob", "from": "alice/a1", "body": sent["body"]})
        assert again["error"] == "ReplayedMessage"
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_two_devices_that_start_sessions_to_each_other_at_once_still_read_each_other() -> None:
    alice, bob = Device.create("alice", "a1", 1), Device.create("bob", "b1", 1)
    alice.start_session(bob.bundle(1))
    bob.start_session(alice.bundle(1))
    from_alice, from_bob = alice.encrypt("bob/b1", b"hi bob"), bob.encrypt("alice/a1", b"hi alice")
    assert bob.decrypt("alice/a1", from_alice) == b"hi bob"
    assert alice.decrypt("bob/b1", from_bob) == b"hi alice"
    for i in range(3):  # whichever session each now sends on, the other still holds it
        assert bob.decrypt("alice/a1", alice.encrypt("bob/b1", f"a{i}".encode())) == f"a{i}".encode()
        assert alice.decrypt("bob/b1", bob.encrypt("alice/a1", f"b{i}".encode())) == f"b{i}".encode()
    restored = Device.from_json(json.loads(json.dumps(alice.to_json())))
    assert restored.to_json() == alice.to_json()


def talking() -> tuple[Device, Device, Device]:
    """alice and bob with a session both ways, and mallory (the server's own keys) who makes a
    prekey message from bob's bundle claiming to be alice's device."""
    alice, bob = pair(opk=False)
    bob.decrypt("alice/a1", alice.encrypt("bob/b1", b"hi"))
    alice.decrypt("bob/b1", bob.encrypt("alice/a1", b"hello"))
    return alice, bob, Device.create("alice", "a1")


def test_a_new_identity_key_of_a_verified_contact_is_refused_and_nothing_changes() -> None:
    alice, bob, mallory = talking()
    bob.mark_verified("alice/a1")
    mallory.start_session(bob.bundle(None))
    before = bob.to_json()
    with pytest.raises(IdentityChanged):
        bob.decrypt("alice/a1", mallory.encrypt("bob/b1", b"I am alice"))
    assert bob.to_json() == before
    assert bob.identity_of("alice/a1") == alice.identity.public
    # a bundle of the verified device with another key starts no session either
    with pytest.raises(IdentityChanged):
        bob.start_session(mallory.bundle())
    # bob's next message still goes to alice's real session, not to mallory
    reply = bob.encrypt("alice/a1", b"bob's secret")
    assert alice.decrypt("bob/b1", reply) == b"bob's secret"
    with pytest.raises(E2EError):
        mallory.decrypt("bob/b1", reply)


def test_an_unverified_contacts_new_identity_key_is_accepted_and_reported_unless_the_hook_refuses() -> None:
    alice, bob, mallory = talking()
    seen: list[tuple[str, bytes, bytes]] = []
    bob.on_identity_change = lambda peer, old, new: seen.append((peer, old, new)) is None
    mallory.start_session(bob.bundle(None))
    assert bob.decrypt("alice/a1", mallory.encrypt("bob/b1", b"reinstalled")) == b"reinstalled"
    assert seen == [("alice/a1", alice.identity.public, mallory.identity.public)]
    assert bob.identity_of("alice/a1") == mallory.identity.public
    # an app hook that answers False refuses even an unverified contact
    other = Device.create("alice", "a1")
    other.start_session(bob.bundle(None))
    bob.on_identity_change = lambda peer, old, new: False
    with pytest.raises(IdentityChanged):
        bob.decrypt("alice/a1", other.encrypt("bob/b1", b"again"))
    assert bob.identity_of("alice/a1") == mallory.identity.public


def test_identities_and_verified_marks_survive_a_restore_and_forget() -> None:
    alice, bob, mallory = talking()
    bob.mark_verified("alice/a1")
    bob.forget("alice/a1")  # the sessions go, the known key stays
    restored = Device.from_json(json.loads(json.dumps(bob.to_json())))
    assert restored.identity_of("alice/a1") == alice.identity.public
    mallory.start_session(restored.bundle(None))
    with pytest.raises(IdentityChanged):
        restored.decrypt("alice/a1", mallory.encrypt("bob/b1", b"I am alice"))
    restored.mark_verified("alice/a1", False)  # the user accepts the change: the default then takes it
    assert restored.decrypt("alice/a1", mallory.encrypt("bob/b1", b"new phone")) == b"new phone"
    assert "alice/a1" not in restored.verified
