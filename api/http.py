"""HTTP endpoints of the v1 API: parse, authenticate, call, render."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api import schemas
from api.errors import ApiError, error_response
from api.observability import record_status
from api.plumbing import (
    admit,
    as_of_param,
    body,
    engine,
    execute,
    idempotency,
    int_param,
    json,
    meter_write,
    principal,
    raw_body,
    refusable,
    refuse_deferred,
    wait_min_position,
    written,
)
from api.policies import authorize
from commands.auth import Principal, erased_user, new_api_key
from commands.keys import user_key_id
from commands.ports import Idempotency
from commands.quotas import Adds
from commands.service import CommandEnvelope
from domain import channel as ch
from domain import errors, tenant, user
from domain.base import format_time
from domain.devices import live as live_devices
from domain.events import stream_name
from projections.chat import ERASURES
from projections.queries import ChatQueries
from projections.timetravel import AsOf, ChannelTooLarge
from projections.usage import edit_growth, posted_bytes
from projections.usage.projection import message_meter
from streams.fanout import expire
from streams.projector import stall_reason


def _path(request: Request, name: str) -> str:
    value: str = request.path_params[name]
    if not re.fullmatch(schemas.ID_PATTERN, value):  # fullmatch: `$` alone lets a trailing newline through
        raise ApiError("invalid_request", f"{name} is not a valid id (letters, digits, _.@=+- ; up to 128)")
    return value


# --- tenants and keys ----------------------------------------------------------------------
def _new_tenant_id(request: Request, retry: Idempotency | None) -> str:
    """A new tenant's id. With an ``Idempotency-Key`` it is the same for every retry, so a
    retry (or a concurrent duplicate) meets the first request's record in that tenant's log
    instead of creating a second tenant."""
    if retry is None:
        return engine(request).short_id("t")
    return "t" + hashlib.sha256(f"tenant-id\n{retry.key}".encode()).hexdigest()[:16]


async def create_tenant(request: Request) -> Response:
    who = await principal(request, "admin")
    raw = await raw_body(request)
    data = await body(request, schemas.CreateTenant, raw)
    retry = idempotency(request, raw, who)
    tenant_id, key_id = _new_tenant_id(request, retry), engine(request).short_id("k")
    api_key, key_hash = new_api_key(tenant_id, key_id)
    now = format_time(engine(request).clock())
    command = tenant.RegisterTenant(name=data.name, key_id=key_id, key_hash=key_hash, registered_at=now)
    outcome = await execute(
        request,
        CommandEnvelope(tenant_id, stream_name("tenant", tenant_id), command, actor="admin:admin", idempotency=retry),
    )
    first = outcome.events[0]
    issued = outcome.events[-1].payload
    return written(
        outcome, tenant_id=first.tenant_id, key_id=issued["key_id"], api_key=None if outcome.replayed else api_key
    )


async def create_api_key(request: Request) -> Response:
    who = await principal(request, "tenant")
    raw = await raw_body(request)
    data = await body(request, schemas.CreateApiKey, raw)
    key_id = engine(request).short_id("k")
    api_key, key_hash = new_api_key(who.tenant_id, key_id)
    outcome = await execute(
        request,
        CommandEnvelope(
            who.tenant_id,
            stream_name("tenant", who.tenant_id),
            tenant.IssueApiKey(key_id=key_id, key_hash=key_hash, name=data.name),
            actor=who.actor.label,
            idempotency=idempotency(request, raw, who),
        ),
    )
    issued = outcome.last.payload
    return written(outcome, key_id=issued["key_id"], api_key=None if outcome.replayed else api_key)


async def revoke_api_key(request: Request) -> Response:
    who = await principal(request, "tenant")
    key_id = _path(request, "key_id")
    outcome = await execute(
        request,
        CommandEnvelope(
            who.tenant_id,
            stream_name("tenant", who.tenant_id),
            tenant.RevokeApiKey(key_id=key_id),
            actor=who.actor.label,
        ),
    )
    return written(outcome, key_id=key_id)


async def rotate_signing_key(request: Request) -> Response:
    who = await principal(request, "tenant")
    raw = await raw_body(request)
    outcome = await execute(
        request,
        CommandEnvelope(
            who.tenant_id,
            stream_name("tenant", who.tenant_id),
            tenant.RotateSigningKey(),
            actor=who.actor.label,
            idempotency=idempotency(request, raw, who),
        ),
    )
    return written(outcome, kid=outcome.last.payload["kid"])


async def set_allowed_origins(request: Request) -> Response:
    who = await principal(request, "tenant")
    raw = await raw_body(request)
    data = await body(request, schemas.AllowedOrigins, raw)
    outcome = await execute(
        request,
        CommandEnvelope(
            who.tenant_id,
            stream_name("tenant", who.tenant_id),
            tenant.SetAllowedOrigins(origins=data.origins),
            actor=who.actor.label,
            idempotency=idempotency(request, raw, who),
        ),
    )
    return written(outcome, origins=sorted(set(data.origins)))


async def list_api_keys(request: Request) -> Response:
    who = await principal(request, "tenant")
    after = request.query_params.get("after")
    limit = int_param(request, "limit", minimum=1, maximum=200)
    state = await engine(request).service.tenant(who.tenant_id)
    keys = list(state.keys.values())  # oldest first
    if after is not None:
        if after not in state.keys:
            raise ApiError("invalid_request", "after is a key id of this tenant (the last one of the previous page)")
        keys = keys[[k.key_id for k in keys].index(after) + 1 :]
    page = keys if limit is None else keys[:limit]
    cursor = page[-1].key_id if len(page) < len(keys) else None
    return json(
        {"api_keys": [{"key_id": k.key_id, "name": k.name, "revoked": k.revoked} for k in page], "next_after": cursor}
    )


async def get_signing_keys(request: Request) -> Response:
    who = await principal(request, "tenant")
    state = await engine(request).service.tenant(who.tenant_id)
    return json({"kid": state.signing_keys[0], "verifying": state.verifying_keys})


async def get_allowed_origins(request: Request) -> Response:
    who = await principal(request, "tenant")
    state = await engine(request).service.tenant(who.tenant_id)
    return json({"origins": sorted(state.origins)})


# --- users ---------------------------------------------------------------------------------
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_.@=+\-]{1,128}")


async def list_users(request: Request) -> Response:
    who = await principal(request, "tenant")
    prefix = request.query_params.get("prefix")
    if prefix is not None and not PREFIX_PATTERN.fullmatch(prefix):  # an empty prefix too: leave it out
        raise ApiError("invalid_request", "prefix is the start of a user id: 1 to 128 of letters, digits, _.@=+-")
    after = _after_user(request)
    limit = int_param(request, "limit", minimum=1, maximum=200) or 50
    await wait_min_position(request)
    await authorize(request, who, "list_users")
    users = await engine(request).queries.users(who.tenant_id, prefix or "", after, limit)
    cursor = users[-1]["user_id"] if len(users) == limit else None
    return json({"users": users, "next_after": cursor})


def _after_user(request: Request) -> str | None:
    """The ``after`` cursor of a list in user id order."""
    after = request.query_params.get("after")
    if after is not None and not re.fullmatch(schemas.ID_PATTERN, after):
        raise ApiError("invalid_request", "after is a user id (the last one of the previous page)")
    return after


async def put_user(request: Request) -> Response:
    who = await principal(request, "tenant")
    user_id = _path(request, "user_id")
    raw = await raw_body(request)
    data = await body(request, schemas.PutUser, raw)
    outcome = await execute(
        request,
        CommandEnvelope(
            who.tenant_id,
            stream_name("user", user_id),
            user.RegisterUser(name=data.name, metadata=data.metadata),
            actor=who.actor.label,
            idempotency=idempotency(request, raw, who),
        ),
    )
    return written(outcome, user_id=user_id)


async def erase_user(request: Request) -> Response:
    """``DELETE /v1/users/{uid}?erase=true`` (the tenant's API key): record ``UserErased``, then
    destroy the user's data key. A retry, or erasing an erased user, destroys it again (a no-op)
    and answers with the first ``UserErased``: the key is destroyed even if the first attempt
    stopped between the two."""
    who = await principal(request, "tenant")
    user_id = _path(request, "user_id")
    if request.query_params.get("erase") != "true":
        raise ApiError("invalid_request", "erasing a user is for good: confirm it with ?erase=true")
    await _refuse_if_held(request, who.tenant_id, user_id)
    outcome = await execute(
        request,
        CommandEnvelope(
            who.tenant_id,
            stream_name("user", user_id),
            user.EraseUser(),
            actor=who.actor.label,
        ),
    )
    node = engine(request)
    await node.backend.keyring.destroy(who.tenant_id, user_key_id(user_id))
    # the read models' copies of what the user's events said: once they have applied UserErased
    # (so nothing of the user's from before it is still on its way), overwritten
    await node.backend.wait_for(outcome.last.position, node.settings.query_wait_seconds)
    for collection, field, erased in ERASURES:
        await node.store.erase(collection, who.tenant_id, field, user_id, erased)
    node.timetravel.forget(who.tenant_id)  # what it folded before the key was destroyed
    return written(outcome, user_id=user_id)


async def _refuse_if_held(request: Request, tenant_id: str, user_id: str) -> None:
    """``409 legal_hold`` while a channel the user is or was a member of is under a legal hold:
    its messages' texts are sealed under the user's key too, and a hold shreds nothing
    (docs/retention.md). The user's own hold is the user aggregate's to refuse. An erased user
    (a retry) is not refused: the key is gone already."""
    node = engine(request)
    if (await node.service.user(tenant_id, user_id)).erased_seq:
        return
    # the memberships read model, once it holds every event this node knows of
    await node.backend.wait_for(await node.log.head_position(), node.settings.query_wait_seconds)
    for cid in await node.queries.channels_ever_of(tenant_id, user_id):
        if (await node.service.channel(tenant_id, cid)).legal_hold:
            raise errors.LegalHold(
                f"channel {cid!r}, which the user is or was a member of, is under a legal hold: "
                "erasure waits until it is released",
                channel_id=cid,
            )


async def _require_users(request: Request, tenant_id: str, user_ids: list[str]) -> None:
    service = engine(request).service
    missing = [u for u in user_ids if not (await service.user(tenant_id, u)).exists]
    if missing:
        raise errors.UserNotFound(
            f"user {missing[0]!r} is not registered; create it with PUT /v1/users/{missing[0]}", user_ids=missing
        )


async def _not_erased(request: Request, tenant_id: str, user_id: str) -> None:
    """Refuse a token for, or a command as, an erased user: ``410 user_erased`` (docs/erasure.md)."""
    if (await engine(request).service.user(tenant_id, user_id)).erased_seq:
        raise erased_user(user_id)


async def create_token(request: Request) -> Response:
    who = await principal(request, "tenant")
    user_id = _path(request, "user_id")
    data = await body(request, schemas.CreateToken)
    # The Idempotency-Key every write accepts is checked as documented; a mint records nothing,
    # so a retry simply mints another token.
    idempotency(request, b"", who)
    settings = engine(request).settings
    ttl = data.ttl_seconds or settings.token_ttl_seconds
    if ttl > settings.max_token_ttl_seconds:
        raise ApiError("invalid_request", f"ttl_seconds is at most {settings.max_token_ttl_seconds}")
    await _require_users(request, who.tenant_id, [user_id])
    await _not_erased(request, who.tenant_id, user_id)
    await authorize(request, who, "mint_token", target_id=user_id)
    meter_write(request)
    token, expires = await engine(request).auth.mint(who.tenant_id, user_id, engine(request).clock(), ttl)
    return json({"token": token, "expires_at": format_time(expires)}, 201)


# --- channels ------------------------------------------------------------------------------
def _metered(command: ch.ChannelCommand) -> tuple[str, ...]:
    """The quota meters a channel command counts in (docs/quotas.md)."""
    if isinstance(command, ch.PostMessage):
        return (message_meter(command.parent_id),)
    if isinstance(command, ch.EditMessage):
        return ("edits",)
    return ()


# the user a channel command acts for, as the usage projection counts it active (``mau``)
_WRITER_FIELD = {ch.PostMessage: "author_id", ch.AddReaction: "user_id", ch.RemoveReaction: "user_id",
                 ch.MoveReadMarker: "user_id"}  # fmt: skip


def _writer(command: ch.ChannelCommand) -> str | None:
    name = _WRITER_FIELD.get(type(command))
    if name is not None:
        return str(getattr(command, name))
    return command.actor.id if command.actor.kind == "user" else None


def _stored(request: Request, who: Principal, cid: str, command: ch.ChannelCommand) -> Adds | None:
    """What a channel command adds to the stored bytes (docs/quotas.md)."""
    if isinstance(command, ch.PostMessage):
        return posted_bytes(command.text, command.attachments, command.e2e)
    if isinstance(command, ch.EditMessage):
        store = engine(request).store
        return lambda: edit_growth(store, who.tenant_id, cid, command.message_id, command.text, command.e2e)
    return None


async def _channel_command(
    request: Request, who: Principal, cid: str, command: ch.ChannelCommand, raw: bytes = b""
) -> Response:
    meters = _metered(command)
    writer = _writer(command)
    if who.kind == "tenant" and writer is not None:  # a user token's user was checked when it authenticated
        await _not_erased(request, who.tenant_id, writer)
    if refusable(request):  # removals are never refused, not even by the gauges
        user, stored = writer, _stored(request, who, cid, command)
        if meters or user is not None or stored is not None:
            await admit(request, who.tenant_id, meters, user=user, stored=stored)
    outcome = await execute(
        request,
        CommandEnvelope(
            who.tenant_id,
            stream_name("channel", cid),
            command,
            actor=who.actor.label,  # correlation_id: the request id (api.observability.MeteredCommands)
            idempotency=idempotency(request, raw, who) if raw or request.method == "POST" else None,
        ),
    )
    extra = {"channel_id": outcome.last.stream_id}  # a replay answers with the first request's channel
    message_id = getattr(command, "message_id", None)
    if message_id is not None:
        extra["message_id"] = outcome.last.payload.get("message_id", message_id)
    return written(outcome, **extra)


async def create_channel(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    raw = await raw_body(request)
    data = await body(request, schemas.CreateChannel, raw)
    members = list(dict.fromkeys(data.members))
    if who.kind == "user" and who.user_id not in members:
        members.insert(0, who.user_id)
    cid = data.channel_id or (ch.direct_channel_id(members) if data.kind == "direct" else engine(request).short_id("c"))
    ch.check_channel_id(cid, data.kind, members)
    settings = engine(request).settings
    if len(members) > settings.max_members:
        raise ApiError("invalid_request", f"a channel holds at most {settings.max_members} members")
    await _require_users(request, who.tenant_id, members)
    command = ch.CreateChannel(
        actor=who.actor, name=data.name, kind=data.kind, e2e=data.e2e, members=members, max_members=settings.max_members
    )
    return await _channel_command(request, who, cid, command, raw)


async def add_member(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    cid = _path(request, "cid")
    raw = await raw_body(request)
    data = await body(request, schemas.AddMember, raw)
    await _require_users(request, who.tenant_id, [data.user_id])
    command = ch.AddMember(
        actor=who.actor, user_id=data.user_id, role=data.role, max_members=engine(request).settings.max_members
    )
    return await _channel_command(request, who, cid, command, raw)


async def remove_member(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    cid, uid = _path(request, "cid"), _path(request, "uid")
    return await _channel_command(request, who, cid, ch.RemoveMember(actor=who.actor, user_id=uid))


def _acting_user(who: Principal, given: str | None) -> str:
    """The user a command is for: the token's user, or ``user_id`` when a tenant key acts."""
    if who.kind == "user":
        if given is not None and given != who.user_id:
            raise ApiError("forbidden", "user_id may differ from the token's user only with a tenant API key")
        return who.user_id
    if given is None:
        raise ApiError("invalid_request", "with a tenant API key, say which user acts: add user_id")
    return given


async def post_message(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    cid = _path(request, "cid")
    raw = await raw_body(request)
    data = await body(request, schemas.PostMessage, raw)
    settings = engine(request).settings
    if len(data.text) > settings.max_text_chars:
        raise ApiError(
            "invalid_request", f"text is longer than {settings.max_text_chars} characters", rule="text_too_long"
        )
    if not data.text.strip() and not data.attachments and data.e2e is None:
        raise ApiError("invalid_request", "a message needs text or attachments", rule="empty_message")
    if len(data.attachments) > settings.max_attachments:
        raise ApiError("invalid_request", f"a message has at most {settings.max_attachments} attachments")
    author = _acting_user(who, data.user_id)
    command = ch.PostMessage(
        actor=who.actor,
        message_id=engine(request).new_id(),
        author_id=author,
        text=data.text,
        parent_id=data.parent_id,
        attachments=[a.model_dump(exclude_none=True) for a in data.attachments],
        client_msg_id=data.client_msg_id,
        now=format_time(engine(request).clock()),
        e2e=await _envelope(request, who.tenant_id, author, data.e2e),
    )
    return await _channel_command(request, who, cid, command, raw)


async def _envelope(
    request: Request, tenant_id: str, author: str, e2e: schemas.E2EEnvelope | None
) -> dict[str, Any] | None:
    """The ciphertext envelope as recorded, once its sender device is known to be the author's."""
    if e2e is None:
        return None
    state = await engine(request).service.user(tenant_id, author)
    if e2e.sender_device not in live_devices(state.devices):
        raise ApiError(
            "invalid_request",
            f"sender_device {e2e.sender_device!r} is not a registered device of user {author!r}",
            rule="unknown_sender_device",
        )
    return e2e.model_dump(exclude_none=True)


async def edit_message(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    cid, mid = _path(request, "cid"), _path(request, "mid")
    raw = await raw_body(request)
    data = await body(request, schemas.EditMessage, raw)
    settings = engine(request).settings
    if len(data.text) > settings.max_text_chars:
        raise ApiError(
            "invalid_request", f"text is longer than {settings.max_text_chars} characters", rule="text_too_long"
        )
    if not data.text.strip() and data.e2e is None:
        raise ApiError("invalid_request", "an edit needs text; delete the message instead", rule="empty_message")
    e2e = None
    if data.e2e is not None:  # the author's device: the message's author, or the token's user
        found = (await engine(request).service.channel(who.tenant_id, cid)).messages.get(mid)
        e2e = await _envelope(request, who.tenant_id, found.author_id if found else who.user_id, data.e2e)
    return await _channel_command(
        request, who, cid, ch.EditMessage(actor=who.actor, message_id=mid, text=data.text, e2e=e2e), raw
    )


async def delete_message(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    cid, mid = _path(request, "cid"), _path(request, "mid")
    return await _channel_command(request, who, cid, ch.DeleteMessage(actor=who.actor, message_id=mid))


async def add_reaction(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    cid, mid = _path(request, "cid"), _path(request, "mid")
    raw = await raw_body(request)
    data = await body(request, schemas.AddReaction, raw)
    command = ch.AddReaction(actor=who.actor, message_id=mid, user_id=_acting_user(who, data.user_id), emoji=data.emoji)
    return await _channel_command(request, who, cid, command, raw)


async def remove_reaction(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    cid, mid = _path(request, "cid"), _path(request, "mid")
    emoji: str = request.path_params["emoji"]
    if not re.fullmatch(schemas.EMOJI_PATTERN, emoji):
        raise ApiError("invalid_request", "emoji is 1 to 64 characters: no spaces, dots, $ or control characters")
    uid = _acting_user(who, request.query_params.get("user_id"))
    command = ch.RemoveReaction(actor=who.actor, message_id=mid, user_id=uid, emoji=emoji)
    return await _channel_command(request, who, cid, command)


async def move_read_marker(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    cid = _path(request, "cid")
    raw = await raw_body(request)
    data = await body(request, schemas.MoveReadMarker, raw)
    command = ch.MoveReadMarker(actor=who.actor, user_id=_acting_user(who, data.user_id), seq=data.seq)
    return await _channel_command(request, who, cid, command, raw)


async def typing(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    refuse_deferred()  # nothing recorded, so nothing to replay
    meter_write(request)
    cid = _path(request, "cid")
    data = await body(request, schemas.Typing)
    uid = _acting_user(who, data.user_id)
    node = engine(request)
    state = await node.service.channel(who.tenant_id, cid)
    if not state.exists:
        raise errors.ChannelNotFound("no such channel")
    if uid not in state.members:
        raise errors.NotAMember(f"user {uid!r} is not a member of this channel", user_id=uid)
    await authorize(request, who, "typing", channel=state, channel_id=cid, user_id=uid)
    sent = node.presence.typing(who.tenant_id, cid, uid)
    ttl = int(node.settings.typing_ttl_seconds * 1000)
    return json({"channel_id": cid, "user_id": uid, "sent": sent, "expires_in_ms": ttl}, 202)


async def mute(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    cid = _path(request, "cid")
    raw = await raw_body(request)
    data = await body(request, schemas.Mute, raw)
    until = format_time(data.until) if data.until is not None else None
    return await _channel_command(
        request, who, cid, ch.MuteMember(actor=who.actor, user_id=data.user_id, until=until), raw
    )


async def unmute(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    cid, uid = _path(request, "cid"), _path(request, "uid")
    return await _channel_command(request, who, cid, ch.UnmuteMember(actor=who.actor, user_id=uid))


async def ban(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    cid = _path(request, "cid")
    raw = await raw_body(request)
    data = await body(request, schemas.Ban, raw)
    await _require_users(request, who.tenant_id, [data.user_id])
    return await _channel_command(
        request, who, cid, ch.BanMember(actor=who.actor, user_id=data.user_id, reason=data.reason), raw
    )


async def unban(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    cid, uid = _path(request, "cid"), _path(request, "uid")
    return await _channel_command(request, who, cid, ch.UnbanMember(actor=who.actor, user_id=uid))


# --- queries -------------------------------------------------------------------------------
async def _readable_channel(request: Request, who: Principal, cid: str, action: str) -> ch.ChannelState:
    """The channel, if the caller may read it: a member, or the tenant; and the tenant's
    policies allow ``action`` there (docs/abac.md)."""
    state = await engine(request).service.channel(who.tenant_id, cid)
    if not state.exists:
        raise errors.ChannelNotFound(f"no channel {cid!r}")
    if who.kind == "user" and who.user_id not in state.members:
        raise errors.NotAMember(f"user {who.user_id!r} is not a member of channel {cid!r}", user_id=who.user_id)
    await authorize(request, who, action, channel=state, channel_id=cid)
    return state


async def list_channels(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    limit = int_param(request, "limit", minimum=1, maximum=200) or 50
    await wait_min_position(request)
    await authorize(request, who, "list_channels")
    queries = engine(request).queries
    if who.kind == "user":
        channels = await queries.channels_of_user(who.tenant_id, who.user_id, limit)
        return json({"channels": channels})
    after = request.query_params.get("after")
    channels = await queries.channels_of_tenant(who.tenant_id, after, limit)
    cursor = channels[-1]["channel_id"] if len(channels) == limit else None
    return json({"channels": channels, "next_after": cursor})


def _as_of_asked(request: Request, who: Principal) -> AsOf | None:
    """``as_of``, if asked and the caller may ask it: the tenant's API key only (the analyst's
    persona). The past holds what end users were meant to stop seeing (deleted messages, the
    text before an edit), so a user token asking with ``as_of`` is refused (``403 forbidden``,
    ``details.rule: as_of_tenant_only``); a malformed ``as_of`` is ``422`` first."""
    as_of = as_of_param(request)
    if as_of is not None and who.kind != "tenant":
        raise ApiError(
            "forbidden",
            "as_of is for the tenant's API key only: a channel's past shows deleted messages and the "
            "text before edits, which end users may not see",
            rule="as_of_tenant_only",
        )
    return as_of


async def _as_of(request: Request, who: Principal, cid: str) -> tuple[ChatQueries, dict[str, Any] | None]:
    """The queries that answer: the live read model's, or with ``as_of`` the channel's past
    (folded from its stream by ``projections.timetravel``) and where the point fell."""
    node = engine(request)
    as_of = _as_of_asked(request, who)
    if as_of is None:
        return node.queries, None
    try:
        past = await node.timetravel.view(who.tenant_id, cid, as_of)
    except ChannelTooLarge as exc:  # permanent for this node's budget: retrying cannot help, so not a 503
        raise ApiError(
            "invalid_request",
            f"{exc}: its past would take more memory than the node allows time travel (CAAS_ASOF_CACHE_MB)",
            rule="as_of_channel_too_large",
        ) from exc
    if past is None:
        when = as_of.time if as_of.time is not None else f"position {as_of.position}"
        raise errors.ChannelNotFound(f"channel {cid!r} did not exist as of {when}")
    view, point = past
    queries = ChatQueries(view, receipts_up_to=node.queries.receipts_up_to, horizon=node.queries.horizon)
    return queries, {"seq": point.seq, "position": point.position, "occurred_at": point.occurred_at}


async def get_channel(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    cid = _path(request, "cid")
    _as_of_asked(request, who)  # a malformed or forbidden as_of is refused before any wait
    await wait_min_position(request)
    await _readable_channel(request, who, cid, "read_channel")
    queries, point = await _as_of(request, who, cid)
    found = await queries.channel(who.tenant_id, cid, who.user_id or None)
    if found is None:
        raise errors.ChannelNotFound(f"channel {cid!r} is not in the read model yet; pass min_position")
    if point is not None:
        found["as_of"] = point
    return json(found)


async def list_members(request: Request) -> Response:
    who = await principal(request, "tenant")
    cid = _path(request, "cid")
    after = _after_user(request)
    limit = int_param(request, "limit", minimum=1, maximum=200)
    await wait_min_position(request)
    await _readable_channel(request, who, cid, "list_members")
    # one more than the page: whether there is a next one
    members = await engine(request).queries.member_details(
        who.tenant_id, cid, after, None if limit is None else limit + 1
    )
    page = members if limit is None else members[:limit]
    cursor = page[-1]["user_id"] if len(page) < len(members) else None
    return json({"members": page, "next_after": cursor})


async def list_messages(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    cid = _path(request, "cid")
    before = int_param(request, "before_seq", minimum=1)
    after = int_param(request, "after_seq")
    limit = int_param(request, "limit", minimum=1, maximum=200) or 50
    _as_of_asked(request, who)  # a malformed or forbidden as_of is refused before any wait
    await wait_min_position(request)
    await _readable_channel(request, who, cid, "read_messages")
    queries, point = await _as_of(request, who, cid)
    messages, cursor = await queries.messages(who.tenant_id, cid, before_seq=before, after_seq=after, limit=limit)
    key = "next_after_seq" if after is not None else "next_before_seq"
    page: dict[str, Any] = {"messages": messages, key: cursor}
    if point is not None:
        page["as_of"] = point
    return json(page)


async def get_thread(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    cid, mid = _path(request, "cid"), _path(request, "mid")
    limit = int_param(request, "limit", minimum=1, maximum=1000) or 200
    await wait_min_position(request)
    state = await _readable_channel(request, who, cid, "read_messages")
    if mid not in state.messages:
        raise errors.MessageNotFound(f"no message {mid!r} in channel {cid!r}")
    replies = await engine(request).queries.thread(who.tenant_id, cid, mid, limit)
    return json({"messages": replies})


async def list_events(request: Request) -> Response:
    who = await principal(request, "tenant")
    after = int_param(request, "after_position") or 0
    limit = int_param(request, "limit", minimum=1, maximum=1000) or 100
    types = [t for t in request.query_params.get("types", "").split(",") if t]
    if engine(request).backend.events_projected:
        await wait_min_position(request)  # served by a read model (the event index), not the log
    await authorize(request, who, "read_events")
    events = await engine(request).log.read_tenant(who.tenant_id, after_position=after, limit=limit, types=types)
    cursor = events[-1].position if len(events) == limit else None
    events = await expire(events, who.tenant_id, engine(request).queries.horizon)  # docs/retention.md
    return json({"events": [e.model_dump() for e in events], "next_after_position": cursor})


async def get_presence(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    raw = request.query_params.get("user_ids", "")
    user_ids = list(dict.fromkeys(u for u in raw.split(",") if u))
    if not user_ids or len(user_ids) > 100:
        raise ApiError("invalid_request", "user_ids takes 1 to 100 comma-separated user ids")
    bad = [u for u in user_ids if not re.fullmatch(schemas.ID_PATTERN, u)]
    if bad:
        raise ApiError("invalid_request", f"user id {bad[0]!r} is not a valid id")
    node = engine(request)
    await authorize(request, who, "read_presence")
    found = {}
    for user_id in user_ids:
        live = node.presence.snapshot(who.tenant_id, user_id)
        if live["last_seen_at"] is None:  # not seen by this node since it started: the durable record
            state = await node.service.user(who.tenant_id, user_id)
            live["last_seen_at"] = state.last_seen_at
        found[user_id] = live
    return json(found)


async def channel_presence(request: Request) -> Response:
    who = await principal(request, "tenant", "user")
    cid = _path(request, "cid")
    state = await _readable_channel(request, who, cid, "read_presence")
    presence = engine(request).presence
    statuses = {uid: presence.snapshot(who.tenant_id, uid)["status"] for uid in state.members}
    online = sum(1 for s in statuses.values() if s != "offline")
    return json({"channel_id": cid, "members": len(statuses), "online": online, "statuses": statuses})


# --- operations ----------------------------------------------------------------------------
async def healthz(request: Request) -> Response:
    return json({"status": "ok"})


async def readyz(request: Request) -> Response:
    node = engine(request)
    try:
        async with asyncio.timeout(3):
            await node.backend.check()
            status = await node.backend.status()
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        return error_response(ApiError("unavailable", f"the backend is not reachable: {reason}", status="unavailable"))
    record_status(status)
    stalled = stall_reason(status["projections"])
    if stalled is not None:  # the read models stopped following the log: queries would wait, then 404
        return error_response(ApiError("unavailable", stalled, status="unavailable", **status))
    return json({"status": "ready", "backend": node.backend.name, **status})
