"""ABAC on the v1 API (docs/abac.md): the tenant's policy routes, the check of every read,
and the re-check of open subscriptions when a policy changes.

Commands are judged by the command side itself (``commands.policies.PolicyCommands``);
reads and websocket frames are not commands, so their endpoints call :func:`authorize`
once the caller's ordinary permission (membership, credential kind) has been checked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from api import schemas
from api.errors import ApiError
from api.plumbing import body, engine, execute, idempotency, json, principal, raw_body, written
from commands.auth import Principal
from commands.policies import PolicyGate
from commands.service import CommandEnvelope
from domain import errors, policy, tenant
from domain.channel import ChannelState
from domain.events import Event, StreamId, stream_name

if TYPE_CHECKING:
    from api.socket_watch import SocketWatch
    from api.ws import Session

log = structlog.get_logger("caas.abac")


def gate(request: HTTPConnection) -> PolicyGate:
    found = engine(request).policies
    assert found is not None  # set by Engine.__post_init__
    return found


async def authorize(
    request: HTTPConnection,
    who: Principal,
    action: str,
    *,
    channel: ChannelState | None = None,
    channel_id: str | None = None,
    user_id: str | None = None,
    target_id: str | None = None,
) -> None:
    """Raise ``policy_denied`` if the tenant's policies refuse ``action`` to ``who`` (a read, or
    a websocket's: the console's live tail)."""
    if who.kind not in ("user", "tenant"):
        return
    await gate(request).check(
        who.tenant_id,
        who.kind,
        who.user_id if who.kind == "user" else who.key_id,
        action,
        user_id=user_id,
        channel_id=channel_id,
        channel=channel,
        target_id=target_id,
    )


def _policy_id(request: Request) -> str:
    value: str = request.path_params["policy_id"]
    if not policy.POLICY_ID.fullmatch(value):
        raise ApiError("invalid_request", "policy_id is 1 to 64 of letters, digits, _.- (a letter or digit first)")
    return value


async def put_policy(request: Request) -> Response:
    who = await principal(request, "tenant")
    policy_id = _policy_id(request)
    raw = await raw_body(request)
    data = await body(request, schemas.PutPolicy, raw)
    command = tenant.SetPolicy(
        policy_id=policy_id,
        effect=data.effect,
        actions=data.actions,
        condition=data.condition,
        description=data.description,
    )
    policy.parse_policy(policy_id, data.effect, data.actions, data.condition, data.description)  # 422 before sending
    outcome = await execute(
        request,
        CommandEnvelope(
            who.tenant_id,
            stream_name("tenant", who.tenant_id),
            command,
            actor=who.actor.label,
            idempotency=idempotency(request, raw, who),
        ),
    )
    return written(outcome, policy_id=policy_id)


async def delete_policy(request: Request) -> Response:
    who = await principal(request, "tenant")
    policy_id = _policy_id(request)
    outcome = await execute(
        request,
        CommandEnvelope(
            who.tenant_id,
            stream_name("tenant", who.tenant_id),
            tenant.DeletePolicy(policy_id=policy_id),
            actor=who.actor.label,
        ),
    )
    return written(outcome, policy_id=policy_id)


async def list_policies(request: Request) -> Response:
    who = await principal(request, "tenant")
    state = await engine(request).service.tenant(who.tenant_id)
    return json({"policies": [p.document() for p in state.ordered_policies], "actions": ["*", *policy.actions()]})


async def get_policy(request: Request) -> Response:
    who = await principal(request, "tenant")
    policy_id = _policy_id(request)
    state = await engine(request).service.tenant(who.tenant_id)
    found = state.policies.get(policy_id)
    if found is None:
        raise errors.PolicyNotFound(f"no policy {policy_id!r} in this tenant", policy_id=policy_id)
    return json(found.document())


# What a change re-judges: ``None`` every open subscription and presence watch of the tenant's
# sockets (its policies changed); else, by user, ``None`` all of that user's (their metadata
# changed) or the channels whose subscriptions to judge again (their role there changed).
Scope = dict[str, set[str] | None] | None
POLICY_EVENTS = frozenset({"PolicySet", "PolicyDeleted"})
USER_EVENTS = frozenset({"UserRegistered", "UserUpdated", "UserErased"})  # ``user.metadata``
ROLE_EVENTS = frozenset({"MemberRoleChanged"})  # ``user.role``


def _widen(scopes: dict[str, Scope], event: Event) -> None:
    """Add what ``event`` changes of the attributes policies read to ``scopes``, by tenant."""
    tenant_id, kind = event.tenant_id, event.type
    if kind in POLICY_EVENTS:
        scopes[tenant_id] = None
        return
    if tenant_id in scopes and scopes[tenant_id] is None:
        return
    users = scopes.setdefault(tenant_id, {})
    assert users is not None
    if kind in USER_EVENTS:
        users[StreamId.parse(event.stream).id] = None
    else:
        user_id = str(event.payload.get("user_id"))
        channels = users.setdefault(user_id, set())
        if channels is not None:
            channels.add(StreamId.parse(event.stream).id)


class PolicyWatch:
    """A log listener: an open subscription (action ``subscribe``) or presence watch
    (``read_presence``) is judged again when what decides it changes: the tenant's policies
    (every socket of the tenant), the user's metadata (``UserRegistered``, ``UserUpdated``,
    ``UserErased``: that user's sockets), the user's role in a channel (``MemberRoleChanged``:
    that user's subscriptions of that channel). One refused now ends with a ``policy_denied``
    error frame naming the channel (none for presence) and the policy; the socket stays open.
    A channel's attributes (id, kind, e2e, name) never change once it is created.

    Time passes without an event: at each multiple of ``every`` seconds of UTC (a minute by
    default, when ``time.hour``/``minute``/``weekday``/``date`` change), the open subscriptions
    and presence watches of the tenants with a policy of ``subscribe`` or ``read_presence`` that
    reads ``time.*`` are judged again."""

    WATCHED = POLICY_EVENTS | USER_EVENTS | ROLE_EVENTS
    TIMED = ("subscribe", "read_presence")  # what the timer judges again

    def __init__(self, sockets: SocketWatch, gate: PolicyGate, *, every: float = 60.0) -> None:
        self.sockets = sockets
        self.gate = gate
        self.every = every
        self._checks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().create_task(self._ticks())

    async def _ticks(self) -> None:
        while True:
            now = self.gate.clock().timestamp()
            await asyncio.sleep(self.every - now % self.every + 0.001)  # just after the next multiple
            for tenant_id in self.sockets.tenants():
                try:
                    if await self._timed(tenant_id):
                        await self._recheck(tenant_id)
                except Exception:  # a read that failed: the next tick judges it again
                    log.exception("policy_timer_failed", tenant_id=tenant_id)

    async def _timed(self, tenant_id: str) -> bool:
        """Whether a policy of the tenant on an open subscription or presence watch reads the time."""
        state = await self.gate.commands.tenant(tenant_id)
        return any("time" in p.roots and any(p.applies_to(a) for a in self.TIMED) for p in state.ordered_policies)

    def on_events(self, events: Sequence[Event]) -> None:
        scopes: dict[str, Scope] = {}
        watched = self.WATCHED
        for event in events:
            if event.type in watched:
                _widen(scopes, event)
        for tenant_id, scope in scopes.items():
            if self.sockets.sessions(tenant_id):
                task = asyncio.get_running_loop().create_task(self._recheck(tenant_id, scope))
                self._checks.add(task)
                task.add_done_callback(self._checks.discard)

    async def _recheck(self, tenant_id: str, scope: Scope = None) -> None:
        for session in self.sockets.sessions(tenant_id):
            if scope is None:
                channels, presence = list(session.subs), True
            elif session.who.user_id in scope:
                only = scope[session.who.user_id]
                channels = list(session.subs) if only is None else [c for c in only if c in session.subs]
                presence = only is None
            else:
                continue
            for cid in channels:
                await self._judge(session, "subscribe", cid)
            if presence and session.watching:
                await self._judge(session, "read_presence", None)
            await asyncio.sleep(0)  # many sockets: other work runs between them

    async def _judge(self, session: Session, action: str, cid: str | None) -> None:
        """Judge one open subscription (``cid``) or the presence watches (``None``) of ``session``
        again; a refused one ends with a ``policy_denied`` error frame."""
        tenant_id = session.who.tenant_id
        try:
            await self.gate.check(tenant_id, "user", session.who.user_id, action, channel_id=cid)
        except errors.PolicyDenied as exc:
            session.policy_denied(cid, exc.message, exc.details)
        except Exception:  # a read that failed: the next change judges it again
            log.exception("policy_recheck_failed", tenant_id=tenant_id, channel_id=cid, action=action)

    async def close(self) -> None:
        tasks = [*self._checks, *([self._timer] if self._timer is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
