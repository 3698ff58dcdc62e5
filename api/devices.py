"""HTTP endpoints of end-to-end encryption's devices and prekey bundles (docs/e2e.md).

The server holds public keys only. A signed prekey's signature is verified here (Ed25519,
PyNaCl) before its command is sent, so a bad bundle is refused with 422 and never recorded;
the user aggregate (domain/devices.py) decides everything else, including which one-time
prekey a bundle fetch hands out: once, on every backend.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, TypeVar

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from api import schemas
from api.errors import ApiError
from api.http import _path
from api.plumbing import body, engine, execute, idempotency, json, principal, raw_body
from api.policies import authorize
from commands.auth import Principal
from commands.service import CommandEnvelope, Outcome
from domain import devices, errors
from domain.base import Command
from domain.events import stream_name
from domain.user import UserState

B = TypeVar("B", bound=BaseModel)


def verify_signed_prekey(identity_key: str, spk: schemas.SignedPrekey) -> None:
    """Refuse (422) a signed prekey whose signature is not the identity key's over its public key."""
    try:
        VerifyKey(base64.b64decode(identity_key)).verify(
            base64.b64decode(spk.public_key), base64.b64decode(spk.signature)
        )
    except (BadSignatureError, ValueError, TypeError):
        raise ApiError(
            "invalid_request",
            "signed_prekey.signature is not the identity key's Ed25519 signature of signed_prekey.public_key",
            rule="bad_signature",
        ) from None


def _owner(who: Principal, user_id: str) -> None:
    """Devices are managed by their user (a user token of theirs) or by the tenant's API key."""
    if who.kind == "user" and who.user_id != user_id:
        raise ApiError("forbidden", "a user manages only their own devices", rule="not_your_device")


async def _user(request: Request, who: Principal, user_id: str) -> UserState:
    state = await engine(request).service.user(who.tenant_id, user_id)
    if not state.exists:
        raise errors.UserNotFound(f"user {user_id!r} is not registered", user_id=user_id)
    return state


async def _run(request: Request, who: Principal, user_id: str, command: Command, raw: bytes = b"") -> Outcome:
    return await execute(
        request,
        CommandEnvelope(
            who.tenant_id,
            stream_name("user", user_id),
            command,
            actor=who.actor.label,
            idempotency=idempotency(request, raw, who) if raw or request.method == "POST" else None,
        ),
    )


def _written(outcome: Outcome, user_id: str, device_id: str, created: bool = False) -> Response:
    last = outcome.last
    data = {"event_id": last.event_id, "position": last.position, "seq": last.seq}
    return json({**data, "user_id": user_id, "device_id": device_id}, 201 if created and not outcome.replayed else 200)


def _prekeys(keys: list[schemas.OneTimePrekey]) -> list[devices.OneTimePrekey]:
    return [devices.OneTimePrekey(key_id=k.key_id, public_key=k.public_key) for k in keys]


def _signed(spk: schemas.SignedPrekey) -> devices.SignedPrekey:
    return devices.SignedPrekey(key_id=spk.key_id, public_key=spk.public_key, signature=spk.signature)


@dataclass(frozen=True, slots=True)
class _Managed:
    """A request that manages one of a user's devices, parsed and allowed."""

    who: Principal
    user_id: str
    device_id: str
    raw: bytes
    state: UserState  # the user's, before the command


async def _managing(request: Request, model: type[B]) -> tuple[_Managed, B]:
    """Authenticate, parse the body as ``model``, then check the caller manages the user's devices."""
    who = await principal(request, "tenant", "user")
    user_id, device_id = _path(request, "user_id"), _path(request, "device_id")
    raw = await raw_body(request)
    data = await body(request, model, raw)
    _owner(who, user_id)
    return _Managed(who, user_id, device_id, raw, await _user(request, who, user_id)), data


async def _decide(request: Request, m: _Managed, command: Command, *, created: bool = False) -> Response:
    outcome = await _run(request, m.who, m.user_id, command, m.raw)
    return _written(outcome, m.user_id, m.device_id, created=created)


async def put_device(request: Request) -> Response:
    m, data = await _managing(request, schemas.PutDevice)
    verify_signed_prekey(data.identity_key, data.signed_prekey)
    command = devices.RegisterDevice(
        device_id=m.device_id,
        identity_key=data.identity_key,
        signed_prekey=_signed(data.signed_prekey),
        one_time_prekeys=_prekeys(data.one_time_prekeys),
    )
    return await _decide(request, m, command, created=m.device_id not in devices.live(m.state.devices))


async def add_prekeys(request: Request) -> Response:
    m, data = await _managing(request, schemas.AddPrekeys)
    command = devices.AddOneTimePrekeys(device_id=m.device_id, one_time_prekeys=_prekeys(data.one_time_prekeys))
    return await _decide(request, m, command, created=True)


async def rotate_signed_prekey(request: Request) -> Response:
    m, data = await _managing(request, schemas.SignedPrekey)
    device = devices.live(m.state.devices).get(m.device_id)
    if device is None:
        raise errors.DeviceNotFound(f"no device {m.device_id!r} of user {m.user_id!r}", device_id=m.device_id)
    verify_signed_prekey(device.identity_key, data)
    command = devices.RotateSignedPrekey(
        device_id=m.device_id, signed_prekey=_signed(data), signed_by=device.identity_key
    )
    return await _decide(request, m, command)


async def remove_device(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    user_id, device_id = _path(request, "user_id"), _path(request, "device_id")
    _owner(who, user_id)
    await _user(request, who, user_id)
    return _written(await _run(request, who, user_id, devices.RemoveDevice(device_id=device_id)), user_id, device_id)


def _device_view(device_id: str, device: devices.DeviceState) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "identity_key": device.identity_key,
        "signed_prekey": dict(device.signed_prekey),
    }


async def list_devices(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    user_id = _path(request, "user_id")
    state = await _user(request, who, user_id)
    await authorize(request, who, "list_devices", target_id=user_id)
    found = [
        {**_device_view(device_id, device), "one_time_prekeys_left": len(device.prekeys)}
        for device_id, device in devices.live(state.devices).items()
    ]
    return json({"devices": found})


async def _claim(request: Request, who: Principal, user_id: str, device_ids: list[str] | None) -> list[dict[str, Any]]:
    """Hand out one one-time prekey per device (all of the user's when ``device_ids`` is
    ``None``) and answer each device's bundle; a device with none left has ``null``."""
    state = await _user(request, who, user_id)
    # judged here too (the command is judged again), so a refusal answers before "no devices: []"
    await authorize(request, who, "claim_prekeys", target_id=user_id)
    claimed: dict[str, dict[str, Any]] = {}
    if device_ids is None and not devices.live(state.devices):
        return []
    try:
        outcome = await _run(request, who, user_id, devices.ClaimPrekeys(device_ids=device_ids))
    except errors.DomainError as exc:  # none left (the decider's, carried back from a remote one too)
        if exc.rule != errors.NoPrekeysLeft.rule:
            raise
    else:
        for event in outcome.events:
            if event.type == "OneTimePrekeyClaimed":
                p = event.payload
                claimed[p["device_id"]] = {"key_id": p["key_id"], "public_key": p["public_key"]}
    # after the command: this node's state includes what it recorded (on every backend)
    live = devices.live((await _user(request, who, user_id)).devices)
    names = list(live) if device_ids is None else device_ids
    return [
        {"user_id": user_id, **_device_view(d, live[d]), "one_time_prekey": claimed.get(d)} for d in names if d in live
    ]


async def claim_bundle(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    user_id, device_id = _path(request, "user_id"), _path(request, "device_id")
    found = await _claim(request, who, user_id, [device_id])
    if not found:  # removed meanwhile
        raise errors.DeviceNotFound(f"no device {device_id!r} of user {user_id!r}", device_id=device_id)
    return json(found[0])


async def claim_bundles(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    user_id = _path(request, "user_id")
    return json({"bundles": await _claim(request, who, user_id, None)})
