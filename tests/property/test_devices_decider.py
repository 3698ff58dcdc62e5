"""Property tests of the devices part of the user aggregate (domain/devices.py): whatever the
sequence of registrations, uploads, rotations, removals and bundle fetches, a one-time prekey
is handed out at most once per installation (a device under one identity key), the pool's
counts stay consistent with what was uploaded and claimed, and the recorded events alone
rebuild the state (also through a snapshot)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commands import snapshots
from domain import devices, errors, user
from domain.base import Command, Unchanged
from domain.events import (
    EVENT_TYPES,
    DeviceRegistered,
    DomainEvent,
    IdentityKeyChanged,
    OneTimePrekeyClaimed,
    UserRegistered,
)
from projections.usage import posted_bytes
from projections.usage.projection import text_size

DEVICE_IDS = ["phone", "laptop", "tablet"]
IDENTITIES = ["ik-a", "ik-b"]

device_ids = st.sampled_from(DEVICE_IDS)
key_ids = st.integers(0, 12)
spks = st.builds(devices.SignedPrekey, key_id=st.integers(0, 3), public_key=st.sampled_from(["s1", "s2"]),
                 signature=st.just("sig"))  # fmt: skip


@st.composite
def prekeys(draw: st.DrawFn) -> list[devices.OneTimePrekey]:
    ids = draw(st.lists(key_ids, max_size=6))
    return [devices.OneTimePrekey(key_id=k, public_key=draw(st.sampled_from([f"p{k}", f"q{k}"]))) for k in ids]


commands = st.one_of(
    st.builds(devices.RegisterDevice, device_id=device_ids, identity_key=st.sampled_from(IDENTITIES),
              signed_prekey=spks, one_time_prekeys=prekeys()),
    st.builds(devices.AddOneTimePrekeys, device_id=device_ids, one_time_prekeys=prekeys()),
    st.builds(devices.RotateSignedPrekey, device_id=device_ids, signed_prekey=spks,
              signed_by=st.sampled_from(IDENTITIES)),
    st.builds(devices.RemoveDevice, device_id=device_ids),
    st.builds(devices.ClaimPrekeys, device_ids=st.one_of(st.none(), st.lists(device_ids, min_size=1, max_size=2))),
    st.builds(devices.ClaimPrekeys, device_ids=st.none()),
)  # fmt: skip


def through_log(event: DomainEvent) -> DomainEvent:
    return EVENT_TYPES[event.type].model_validate(event.model_dump(mode="json"))


def registered() -> tuple[user.UserState, list[DomainEvent]]:
    first = UserRegistered(name="alice")
    return user.evolve(user.UserState(), first), [first]


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(commands, max_size=40))
def test_a_prekey_is_handed_out_once_and_counts_stay_consistent(steps: list[Command]) -> None:
    state, recorded = registered()
    handed: dict[tuple[str, str], set[int]] = {}  # (device, identity key) -> key ids handed out
    for command in steps:
        before = copy.deepcopy(state)
        try:
            decision = user.decide(state, command)
        except errors.DomainError as exc:
            assert exc.category in errors.CATEGORIES
            assert state == before  # a refusal changes nothing
            continue
        if isinstance(decision, Unchanged):
            assert 0 < decision.seq <= state.version
            assert state == before
            continue
        assert decision, f"{type(command).__name__} decided nothing"
        for event in decision:
            known = before.devices.get(getattr(event, "device_id", ""))
            if isinstance(event, DeviceRegistered) and known is not None and known.identity_key != event.identity_key:
                # another key under a known device id, removed or not: contacts must be told
                assert any(isinstance(e, IdentityKeyChanged) for e in decision)
            pool = state.devices.get(getattr(event, "device_id", ""))
            if isinstance(event, OneTimePrekeyClaimed):
                assert pool is not None and not pool.removed
                assert pool.prekeys.get(event.key_id) == event.public_key  # handed out from the pool
                taken = handed.setdefault((event.device_id, pool.identity_key), set())
                assert event.key_id not in taken, "a one-time prekey was handed out twice"
                taken.add(event.key_id)
                assert event.remaining == len(pool.prekeys) - 1
            if isinstance(event, IdentityKeyChanged):
                assert pool is not None and pool.identity_key == event.previous_identity_key
                # a new installation starts its pool afresh, even under a key this device id had before
                handed.pop((event.device_id, event.identity_key), None)
            state = user.evolve(state, through_log(event))
            recorded.append(event)
        check_invariants(state, handed)
    replayed = user.UserState()
    for event in recorded:
        user.evolve(replayed, through_log(event))
    assert replayed == state
    restored = snapshots.decode(user.UserState, snapshots.encode(state))
    assert restored == state


def check_invariants(state: user.UserState, handed: dict[tuple[str, str], set[int]]) -> None:
    live = devices.live(state.devices)
    assert len(live) <= devices.MAX_DEVICES
    for device_id, device in state.devices.items():
        assert len(device.prekeys) <= devices.MAX_PREKEYS
        assert not device.used & set(device.prekeys), "a handed-out key id is back in the pool"
        assert device.used == handed.get((device_id, device.identity_key), set())
        if device.removed:
            assert not device.prekeys


@settings(max_examples=100, deadline=None)
@given(fetches=st.integers(1, 30), uploaded=st.integers(0, 20))
def test_fetches_hand_out_every_key_once_then_none(fetches: int, uploaded: int) -> None:
    state, _ = registered()
    keys = [devices.OneTimePrekey(key_id=k, public_key=f"p{k}") for k in range(uploaded)]
    spk = devices.SignedPrekey(key_id=1, public_key="s", signature="sig")
    register = devices.RegisterDevice(device_id="phone", identity_key="ik", signed_prekey=spk, one_time_prekeys=keys)
    apply(state, register)
    got: list[Any] = []
    for _ in range(fetches):
        try:
            (claim,) = apply(state, devices.ClaimPrekeys())
        except errors.NoPrekeysLeft:
            got.append(None)
            continue
        assert isinstance(claim, OneTimePrekeyClaimed)
        got.append(claim.key_id)
    handed = [k for k in got if k is not None]
    assert handed == list(range(min(fetches, uploaded)))  # oldest first, each once
    assert got.count(None) == max(0, fetches - uploaded)


def apply(state: user.UserState, command: Command) -> list[DomainEvent]:
    decision = user.decide(state, command)
    assert not isinstance(decision, Unchanged)
    for event in decision:
        user.evolve(state, through_log(event))
    return decision


@settings(max_examples=50, deadline=None)
@given(bodies=st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=4))
def test_an_envelope_counts_in_the_stored_bytes_as_its_json(bodies: list[bytes]) -> None:
    """An e2e message has no text: its envelope is what it stores (docs/meters.md), measured the
    same way before the write (the quota) and by the usage projection (the meter)."""
    sealed = {
        "sender_device": "d",
        "ciphertexts": [{"user_id": "u", "device_id": "d", "body": b.hex()} for b in bodies],
    }
    size = len(orjson.dumps(sealed))
    assert posted_bytes("", [], sealed) == size == text_size("", sealed)
    assert posted_bytes("hé", []) == 3


def test_a_full_pool_takes_a_retry_but_no_new_key() -> None:
    state, _ = registered()
    spk = devices.SignedPrekey(key_id=1, public_key="s", signature="sig")
    apply(state, devices.RegisterDevice(device_id="phone", identity_key="ik", signed_prekey=spk))
    uploads = [
        [
            devices.OneTimePrekey(key_id=n, public_key=f"p{n}")
            for n in range(start, start + devices.MAX_PREKEYS_PER_UPLOAD)
        ]
        for start in range(0, devices.MAX_PREKEYS, devices.MAX_PREKEYS_PER_UPLOAD)
    ]
    for keys in uploads:
        apply(state, devices.AddOneTimePrekeys(device_id="phone", one_time_prekeys=keys))
    assert len(state.devices["phone"].prekeys) == devices.MAX_PREKEYS
    retry = user.decide(state, devices.AddOneTimePrekeys(device_id="phone", one_time_prekeys=uploads[-1]))
    assert isinstance(retry, Unchanged)
    extra = [devices.OneTimePrekey(key_id=devices.MAX_PREKEYS, public_key="late")]
    with pytest.raises(errors.TooManyPrekeys):
        user.decide(state, devices.AddOneTimePrekeys(device_id="phone", one_time_prekeys=extra))
