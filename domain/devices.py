"""A user's devices for end-to-end encryption (docs/e2e.md): each holds an identity key, a
signed prekey and a pool of one-time prekeys, all public keys as the client uploaded them.

The user aggregate decides every device command (``domain.user.decide`` hands them here), so
a one-time prekey is handed out by exactly one decision: the aggregate's stream has a single
writer on every backend. A handed-out key is gone from the pool and its id is remembered, so
neither a second fetch nor a re-upload of the same id can hand it out again.

Keys are checked for shape (base64 of the right length) by the API and the signed prekey's
signature by the API too (``api/devices.py``, PyNaCl): the domain stays free of cryptography.
A command carrying a signature names the identity key it was verified against
(``signed_by``), and is refused if the device has another one by the time it is decided.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from domain import errors
from domain.base import Command, Decision, Unchanged
from domain.events import (
    DeviceRegistered,
    DeviceRemoved,
    DomainEvent,
    IdentityKeyChanged,
    OneTimePrekeyClaimed,
    OneTimePrekeysAdded,
    SignedPrekeyRotated,
)

MAX_DEVICES = 10  # devices per user
MAX_PREKEYS_PER_UPLOAD = 100  # one-time prekeys per request
MAX_PREKEYS = 500  # one-time prekeys waiting in a device's pool
LOW_PREKEYS = 10  # a claim that leaves fewer than this in the pool notifies the user's sockets


class SignedPrekey(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    key_id: int
    public_key: str
    signature: str


class OneTimePrekey(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    key_id: int
    public_key: str


# --- commands ------------------------------------------------------------------------------
class RegisterDevice(Command):
    """Create the device, or replace its keys (PUT semantics). With the same identity key the
    signed prekey and the pool of one-time prekeys are replaced by these; with another one the
    device is a new installation: ``IdentityKeyChanged`` is recorded before its new keys (also when
    the device id was removed before: its last identity key is remembered)."""

    device_id: str
    identity_key: str
    signed_prekey: SignedPrekey
    one_time_prekeys: list[OneTimePrekey] = Field(default_factory=list)


class AddOneTimePrekeys(Command):
    device_id: str
    one_time_prekeys: list[OneTimePrekey]


class RotateSignedPrekey(Command):
    device_id: str
    signed_prekey: SignedPrekey
    signed_by: str  # the identity key the signature was verified against


class RemoveDevice(Command):
    device_id: str


class ClaimPrekeys(Command):
    """Hand out one one-time prekey of each named device (``None``: every device of the user)
    that has one left. Raises :class:`errors.NoPrekeysLeft` when none has."""

    device_ids: list[str] | None = None


# --- state ---------------------------------------------------------------------------------
@dataclass(slots=True)
class DeviceState:
    identity_key: str
    signed_prekey: dict[str, Any]  # {"key_id", "public_key", "signature"}
    prekeys: dict[int, str] = field(default_factory=dict)  # the pool: key id -> public key, in upload order
    used: set[int] = field(default_factory=set)  # key ids handed out (under this identity key)
    seq: int = 0  # of the event that last changed the device's keys
    removed: bool = False  # kept (its handed-out ids with it) so a re-registration cannot reuse them


DeviceMap = dict[str, DeviceState]


def live(devices: DeviceMap) -> dict[str, DeviceState]:
    """The user's devices that are registered now, in registration order."""
    return {device_id: d for device_id, d in devices.items() if not d.removed}


# --- decide --------------------------------------------------------------------------------
def decide(devices: DeviceMap, version: int, command: Command) -> Decision:
    """The events a device command causes, given the user's devices and stream version."""
    handler = _HANDLERS.get(type(command))
    if handler is None:
        raise TypeError(f"not a device command: {type(command).__name__}")
    return handler(devices, version, command)


def _device(devices: DeviceMap, device_id: str) -> DeviceState:
    found = devices.get(device_id)
    if found is None or found.removed:
        raise errors.DeviceNotFound(
            f"no device {device_id!r}; register it with PUT /v1/users/{{uid}}/devices/{device_id}", device_id=device_id
        )
    return found


def _check_new_prekeys(device: DeviceState | None, prekeys: list[OneTimePrekey], pooled: int) -> None:
    """Refuse an upload that repeats a key id, reuses a handed-out one, or overfills the pool."""
    if len(prekeys) > MAX_PREKEYS_PER_UPLOAD:
        raise errors.TooManyPrekeys(
            f"at most {MAX_PREKEYS_PER_UPLOAD} one-time prekeys per request", count=len(prekeys)
        )
    ids = [k.key_id for k in prekeys]
    if len(set(ids)) != len(ids):
        raise errors.DuplicatePrekeyId("one-time prekey key_ids must be unique")
    if device is not None:
        used = sorted(device.used.intersection(ids))
        if used:
            raise errors.PrekeyReused(
                f"one-time prekey {used[0]} of this device was already handed out; upload new keys with new ids",
                key_ids=used[:10],
            )
    if pooled + len(prekeys) > MAX_PREKEYS:
        raise errors.TooManyPrekeys(f"a device holds at most {MAX_PREKEYS} unused one-time prekeys", pooled=pooled)


def _register(devices: DeviceMap, version: int, c: RegisterDevice) -> Decision:
    device = devices.get(c.device_id)
    # a removed device's identity key is remembered: a new installation under its id is a key change
    previous = device.identity_key if device is not None and device.identity_key != c.identity_key else None
    if device is not None and device.removed and previous is not None:
        device = None  # a new installation under the id of a removed device: nothing carries over
    prekeys = [k.model_dump() for k in c.one_time_prekeys]
    registered = DeviceRegistered(
        device_id=c.device_id,
        identity_key=c.identity_key,
        signed_prekey=c.signed_prekey.model_dump(),
        one_time_prekeys=prekeys,
    )
    if device is None or device.removed:
        count = len(live(devices))
        if count >= MAX_DEVICES:
            raise errors.TooManyDevices(f"a user has at most {MAX_DEVICES} devices; remove one first", devices=count)
        _check_new_prekeys(device, c.one_time_prekeys, 0)
        if previous is not None:  # contacts are told, as when a live device's key changes
            return [_changed(c, previous), registered]
        return [registered]
    if device.identity_key != c.identity_key:  # a new installation under the same device id
        _check_new_prekeys(None, c.one_time_prekeys, 0)
        return [_changed(c, device.identity_key), registered]
    pool = {k.key_id: k.public_key for k in c.one_time_prekeys}
    if device.signed_prekey == registered.signed_prekey and device.prekeys == pool:
        return Unchanged(device.seq)
    # the same identity: the pool is replaced, so only the handed-out ids are off limits
    _check_new_prekeys(device, c.one_time_prekeys, 0)
    return [registered]


def _changed(c: RegisterDevice, previous: str) -> IdentityKeyChanged:
    return IdentityKeyChanged(device_id=c.device_id, identity_key=c.identity_key, previous_identity_key=previous)


def _add(devices: DeviceMap, version: int, c: AddOneTimePrekeys) -> Decision:
    device = _device(devices, c.device_id)
    new = [k for k in c.one_time_prekeys if device.prekeys.get(k.key_id) != k.public_key]
    clash = [k.key_id for k in new if k.key_id in device.prekeys]
    if clash:
        raise errors.PrekeyReused(
            f"one-time prekey {clash[0]} is already in the pool with another public key", key_ids=clash[:10]
        )
    already = len(c.one_time_prekeys) - len(new)  # in the pool already: a retry counts them once
    _check_new_prekeys(device, c.one_time_prekeys, len(device.prekeys) - already)
    if not new:  # every key is in the pool already: a retry
        return Unchanged(device.seq)
    return [OneTimePrekeysAdded(device_id=c.device_id, one_time_prekeys=[k.model_dump() for k in new])]


def _rotate(devices: DeviceMap, version: int, c: RotateSignedPrekey) -> Decision:
    device = _device(devices, c.device_id)
    if device.identity_key != c.signed_by:
        raise errors.Conflict(
            "the device's identity key changed while the signed prekey was checked; fetch it and sign again",
            device_id=c.device_id,
        )
    spk = c.signed_prekey.model_dump()
    if device.signed_prekey == spk:
        return Unchanged(device.seq)
    return [SignedPrekeyRotated(device_id=c.device_id, signed_prekey=spk)]


def _remove(devices: DeviceMap, version: int, c: RemoveDevice) -> Decision:
    _device(devices, c.device_id)
    return [DeviceRemoved(device_id=c.device_id)]


def _claim(devices: DeviceMap, version: int, c: ClaimPrekeys) -> Decision:
    if c.device_ids is None:
        names = list(live(devices))
    else:
        names = list(dict.fromkeys(c.device_ids))
        for device_id in names:
            _device(devices, device_id)
    events: list[DomainEvent] = []
    for device_id in names:
        device = devices[device_id]
        if device.prekeys:
            key_id, public_key = next(iter(device.prekeys.items()))  # the oldest upload first
            remaining = len(device.prekeys) - 1
            events.append(
                OneTimePrekeyClaimed(device_id=device_id, key_id=key_id, public_key=public_key, remaining=remaining)
            )
    if not events:
        raise errors.NoPrekeysLeft("no one-time prekey is left on these devices", device_ids=names)
    return events


_HANDLERS: dict[type[Command], Callable[[DeviceMap, int, Any], Decision]] = {
    RegisterDevice: _register,
    AddOneTimePrekeys: _add,
    RotateSignedPrekey: _rotate,
    RemoveDevice: _remove,
    ClaimPrekeys: _claim,
}
COMMANDS = tuple(_HANDLERS)


# --- evolve --------------------------------------------------------------------------------
def evolve(devices: DeviceMap, seq: int, event: DomainEvent) -> None:
    """Apply one recorded device event (at ``seq`` of the user's stream) to ``devices``."""
    match event:
        case DeviceRegistered():
            prekeys = {k["key_id"]: k["public_key"] for k in event.one_time_prekeys}
            old = devices.get(event.device_id)
            used = old.used if old is not None and old.identity_key == event.identity_key else set()
            devices[event.device_id] = DeviceState(event.identity_key, dict(event.signed_prekey), prekeys, used, seq)
        case IdentityKeyChanged():
            device = devices.get(event.device_id)
            if device is not None:  # the registration that follows starts its pool afresh
                device.identity_key, device.used, device.seq = event.identity_key, set(), seq
        case OneTimePrekeysAdded():
            device = devices[event.device_id]
            for key in event.one_time_prekeys:
                device.prekeys[key["key_id"]] = key["public_key"]
            device.seq = seq
        case SignedPrekeyRotated():
            device = devices[event.device_id]
            device.signed_prekey, device.seq = dict(event.signed_prekey), seq
        case DeviceRemoved():
            device = devices[event.device_id]
            device.prekeys, device.removed, device.seq = {}, True, seq
        case OneTimePrekeyClaimed():
            device = devices[event.device_id]
            device.prekeys.pop(event.key_id, None)
            device.used.add(event.key_id)


EVENTS = (
    DeviceRegistered,
    IdentityKeyChanged,
    OneTimePrekeysAdded,
    SignedPrekeyRotated,
    DeviceRemoved,
    OneTimePrekeyClaimed,
)
