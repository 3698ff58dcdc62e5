"""Property tests of the E2E state machines: whatever the interleaving of sends and deliveries
(within the skip window), every pairwise and every group message decrypts exactly once to what
was sent; a replay is refused; an altered byte anywhere is refused and leaves the session able
to decrypt the genuine message."""

from __future__ import annotations

import json

import pytest
from caas_client.e2e import Device, E2EError, ReplayedMessage
from caas_client.e2e.sender_keys import OwnSenderKey, ReceivedSenderKey
from hypothesis import given, settings
from hypothesis import strategies as st

PEER = {"alice/a1": "bob/b1", "bob/b1": "alice/a1"}


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_delivery_order_decrypts_every_pairwise_message_exactly_once(data: st.DataObject) -> None:
    alice, bob = Device.create("alice", "a1"), Device.create("bob", "b1", one_time_prekeys=1)
    alice.start_session(bob.bundle(data.draw(st.sampled_from([1, None]), label="opk")))
    devices = {"alice/a1": alice, "bob/b1": bob}
    in_flight: dict[str, list[tuple[bytes, bytes]]] = {"alice/a1": [], "bob/b1": []}  # by recipient
    delivered: dict[str, list[bytes]] = {"alice/a1": [], "bob/b1": []}
    sent: dict[str, list[bytes]] = {"alice/a1": [], "bob/b1": []}
    counter = 0

    def deliver(to: str, index: int) -> None:
        body, plaintext = in_flight[to].pop(index)
        assert devices[to].decrypt(PEER[to], body) == plaintext
        delivered[to].append(body)
        with pytest.raises(ReplayedMessage):
            devices[to].decrypt(PEER[to], body)

    for _ in range(data.draw(st.integers(1, 40), label="steps")):
        actor = data.draw(st.sampled_from(sorted(devices)), label="actor")
        can_send = devices[actor].sessions.get(PEER[actor]) is not None and (
            actor == "alice/a1" or bool(delivered["bob/b1"])
        )
        if can_send and data.draw(st.booleans(), label="send?"):
            counter += 1
            plaintext = f"{actor} #{counter}".encode()
            in_flight[PEER[actor]].append((devices[actor].encrypt(PEER[actor], plaintext), plaintext))
            sent[actor].append(plaintext)
        elif in_flight[actor]:
            deliver(actor, data.draw(st.integers(0, len(in_flight[actor]) - 1), label="which"))
    for to in sorted(in_flight):
        while in_flight[to]:
            deliver(to, data.draw(st.integers(0, len(in_flight[to]) - 1), label="late"))
    assert len(delivered["bob/b1"]) == len(sent["alice/a1"])
    assert len(delivered["alice/a1"]) == len(sent["bob/b1"])


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 12), st.data())
def test_an_altered_byte_is_refused_and_the_genuine_message_still_decrypts(count: int, data: st.DataObject) -> None:
    alice, bob = Device.create("alice", "a1"), Device.create("bob", "b1", one_time_prekeys=1)
    alice.start_session(bob.bundle(1))
    bob.decrypt("alice/a1", alice.encrypt("bob/b1", b"open"))
    alice.decrypt("bob/b1", bob.encrypt("alice/a1", b"answer"))
    bodies = [alice.encrypt("bob/b1", f"m{i}".encode()) for i in range(count)]
    target = data.draw(st.integers(0, count - 1))
    body = bodies[target]
    position = data.draw(st.integers(0, len(body) - 1))
    flipped = bytearray(body)
    flipped[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(E2EError):
        bob.decrypt("alice/a1", bytes(flipped))
    order = data.draw(st.permutations(range(count)))
    for i in order:
        assert bob.decrypt("alice/a1", bodies[i]) == f"m{i}".encode()


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 30), st.data())
def test_any_order_of_group_messages_decrypts_each_once_and_alterations_are_refused(
    count: int, data: st.DataObject
) -> None:
    own = OwnSenderKey.generate("room", 9)
    skip = data.draw(st.integers(0, 3), label="sent before the distribution")
    for _ in range(skip):
        own.encrypt(b"before")
    held = ReceivedSenderKey.from_distribution(json.loads(own.distribution()))
    bodies = [own.encrypt(f"g{i}".encode()) for i in range(count)]
    for i in data.draw(st.permutations(range(count)), label="order"):
        body = bodies[i]
        flipped = bytearray(body)
        flipped[data.draw(st.integers(0, len(body) - 1), label="at")] ^= 0x40
        with pytest.raises(E2EError):
            held.decrypt(bytes(flipped))
        held, plaintext = held.decrypt(body)
        assert plaintext == f"g{i}".encode()
        with pytest.raises(ReplayedMessage):
            held.decrypt(body)


@settings(max_examples=40, deadline=None)
@given(
    later=st.integers(0, 6),
    opk=st.booleans(),
    forget=st.booleans(),
    restore=st.booleans(),
    replied=st.booleans(),
)
def test_a_replayed_prekey_message_is_refused_even_once_its_session_is_gone(
    later: int, opk: bool, forget: bool, restore: bool, replied: bool
) -> None:
    """However many sessions came after it (evicting it), whether the peer was forgotten (an
    identity change) or the state saved and restored, a prekey message opens one session once."""
    bob = Device.create("bob", "b1", one_time_prekeys=1 if opk else 0)
    alice = Device.create("alice", "a1")
    alice.start_session(bob.bundle(1 if opk else None))
    first = alice.encrypt("bob/b1", b"transfer 100 to carol")
    assert bob.decrypt("alice/a1", first) == b"transfer 100 to carol"
    if replied:
        alice.decrypt("bob/b1", bob.encrypt("alice/a1", b"ok"))
    for i in range(later):  # new sessions from alice's device push the first one out of the archive
        alice.start_session(bob.bundle(None))
        assert bob.decrypt("alice/a1", alice.encrypt("bob/b1", b"later %d" % i)) == b"later %d" % i
    if forget:
        bob.forget("alice/a1")
    if restore:
        bob = Device.from_json(json.loads(json.dumps(bob.to_json())))
    before = bob.to_json()
    with pytest.raises((ReplayedMessage, E2EError)) as refused:
        bob.decrypt("alice/a1", first)
    assert bob.to_json() == before  # the refusal changed nothing
    if later > 3 or forget:  # the session is gone: only the remembered base key refuses it
        assert isinstance(refused.value, ReplayedMessage)
