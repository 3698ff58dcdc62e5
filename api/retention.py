"""Retention and legal hold endpoints (docs/retention.md): the tenant's API key only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from api import schemas
from api.http import _path
from api.plumbing import body, engine, execute, idempotency, json, principal, raw_body, written
from commands.auth import Principal
from commands.service import CommandEnvelope
from domain import errors
from domain.base import Command, format_time
from domain.events import stream_name
from domain.retention import PlaceLegalHold, ReleaseLegalHold, SetRetention


async def _record(request: Request, who: Principal, stream: str, command: Command, raw: bytes) -> Response:
    # like every DELETE, a release ignores Idempotency-Key (releasing again is a 404, changing nothing)
    retry = idempotency(request, raw, who) if request.method != "DELETE" else None
    outcome = await execute(
        request, CommandEnvelope(who.tenant_id, stream, command, actor=who.actor.label, idempotency=retry)
    )
    extra = {"days": command.days} if isinstance(command, SetRetention) else {}
    if isinstance(command, PlaceLegalHold | ReleaseLegalHold):
        extra = {"legal_hold": isinstance(command, PlaceLegalHold)}
    return written(outcome, **extra)


async def put_retention(request: Request) -> Response:
    who = await principal(request, "tenant")
    raw = await raw_body(request)
    data = await body(request, schemas.PutRetention, raw)
    stream = stream_name("tenant", who.tenant_id)
    return await _record(request, who, stream, SetRetention(days=data.days), raw)


async def get_retention(request: Request) -> Response:
    who = await principal(request, "tenant")
    state = await engine(request).service.tenant(who.tenant_id)
    return json({"days": state.retention_days})


async def _channel(request: Request, who: Principal) -> str:
    cid = _path(request, "cid")
    if not (await engine(request).service.channel(who.tenant_id, cid)).exists:
        raise errors.ChannelNotFound(f"no channel {cid!r}")
    return cid


async def _user(request: Request, who: Principal) -> str:
    uid = _path(request, "uid")
    if not (await engine(request).service.user(who.tenant_id, uid)).exists:
        raise errors.UserNotFound(f"user {uid!r} is not registered")
    return uid


async def put_channel_retention(request: Request) -> Response:
    who = await principal(request, "tenant")
    cid = await _channel(request, who)
    raw = await raw_body(request)
    data = await body(request, schemas.PutRetention, raw)
    return await _record(request, who, stream_name("channel", cid), SetRetention(days=data.days), raw)


async def get_channel_retention(request: Request) -> Response:
    who = await principal(request, "tenant")
    cid = await _channel(request, who)
    node = engine(request)
    state = await node.service.channel(who.tenant_id, cid)
    assert node.retention is not None
    policy = await node.retention.retention(who.tenant_id, cid)
    cutoff = policy.cutoff(node.retention.clock())
    return json(
        {
            "channel_id": cid,
            "days": state.retention_days,
            "effective_days": policy.days,
            "legal_hold": state.legal_hold,
            "held": policy.held,
            "hidden_before": None if cutoff is None else format_time(cutoff),
            "shredded_days": sorted(state.shredded_days),
        }
    )


async def _hold(request: Request, place: bool, stream: Callable[[Request, Principal], Awaitable[str]]) -> Response:
    """Place (or release) a legal hold on the stream ``stream`` names: a channel's or a user's."""
    who = await principal(request, "tenant")
    target = await stream(request, who)
    raw = await raw_body(request)
    command: Command
    if place:
        command = PlaceLegalHold(reason=(await body(request, schemas.PlaceLegalHold, raw)).reason)
    else:
        command = ReleaseLegalHold(reason=(await body(request, schemas.ReleaseLegalHold, raw)).reason)
    return await _record(request, who, target, command, raw)


async def _channel_stream(request: Request, who: Principal) -> str:
    return stream_name("channel", await _channel(request, who))


async def _user_stream(request: Request, who: Principal) -> str:
    return stream_name("user", await _user(request, who))


async def place_channel_hold(request: Request) -> Response:
    return await _hold(request, True, _channel_stream)


async def release_channel_hold(request: Request) -> Response:
    return await _hold(request, False, _channel_stream)


async def place_user_hold(request: Request) -> Response:
    return await _hold(request, True, _user_stream)


async def release_user_hold(request: Request) -> Response:
    return await _hold(request, False, _user_stream)
