"""What every endpoint shares: credentials, bounded JSON bodies, idempotency, answers."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson
import structlog
from pydantic import BaseModel, ValidationError
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from api.errors import ApiError, validation_error
from api.security import QUOTA_STATE
from api.tenant_metrics import TENANTS
from commands.auth import Principal
from commands.ports import Idempotency
from commands.quotas import Adds, PaymentRequired, QuotaExceeded
from commands.service import CommandEnvelope, NotReplayed, Outcome
from domain import events as ev
from domain.base import format_time
from domain.errors import DomainError
from projections.timetravel import AsOf
from projections.usage.ranges import EARLIEST

if TYPE_CHECKING:
    from api.bootstrap import Engine

B = TypeVar("B", bound=BaseModel)
CONSOLE_PRINCIPAL = "caas.console_principal"  # the ASGI scope key api/console.py sets for a portal request
WRITE_METERS = ("api_writes",)  # what every write request counts (docs/quotas.md)
# Writes a quota or a past-due standing never refuses (docs/quotas.md): removals (revoking a
# leaked key, deleting a message, a reaction, a member), and the credentials a tenant must
# always be able to manage (issuing and revoking API keys, rotating the signing key, minting
# end-user tokens).
UNREFUSED_PATHS = re.compile(r"^/v1/(api-keys(/[^/]+)?|signing-keys|users/[^/]+/tokens)$")
# A write refused at a quota that carries an Idempotency-Key: its command runs replay-only
# (docs/quotas.md), so the retry of a write admitted earlier still gets its first answer.
_deferred: ContextVar[Exception | None] = ContextVar("caas_deferred_refusal", default=None)
# The tenant of a write request not metered yet: a write counts in ``api_writes`` once admitted
# (when its command runs, or its handler does what it asked), never when refused.
_unmetered: ContextVar[str | None] = ContextVar("caas_unmetered_write", default=None)


def meter_write(request: Request) -> None:
    """Count the request's write in the tenant's usage, once, now that it is admitted."""
    tenant_id = _unmetered.get()
    if tenant_id is not None:
        _unmetered.set(None)
        engine(request).meter.request(tenant_id, write=True)


def refusable(request: Request) -> bool:
    """Whether a quota or a past-due standing may refuse this write."""
    # the path as routed (``request.url`` would build and parse a whole URL for it)
    return request.method != "DELETE" and not UNREFUSED_PATHS.match(request.scope["path"])


async def admit(
    request: Request, tenant_id: str, meters: tuple[str, ...], *, user: str | None = None, stored: Adds | None = None
) -> None:
    """Count a write in ``meters`` (and ``user``'s activity, the ``stored`` bytes it adds) or
    refuse it (402), unless it is a retry: with an Idempotency-Key the refusal waits for the
    command, which then only replays (see :func:`execute`)."""
    quotas = engine(request).quotas
    try:
        await quotas.admit(tenant_id, meters, user=user, stored=stored)
    except (QuotaExceeded, PaymentRequired) as exc:
        if meters != WRITE_METERS and _deferred.get() is None:
            quotas.release(tenant_id, WRITE_METERS)  # the request as a whole is refused
        if request.headers.get("idempotency-key") is None:
            raise
        if _deferred.get() is None:
            _deferred.set(exc)


def refuse_deferred() -> None:
    """Raise the refusal a write without a command (nothing to replay) was given, if any."""
    refusal = _deferred.get()
    if refusal is not None:
        _deferred.set(None)
        raise refusal


async def execute(request: Request, envelope: CommandEnvelope) -> Outcome:
    """Run a request's command; if a quota refused the request, only replay an earlier run
    under the same Idempotency-Key, or give the refusal."""
    refusal = _deferred.get()
    if refusal is None:
        meter_write(request)
        return await engine(request).service.execute(envelope)
    _deferred.set(None)
    if envelope.idempotency is None:
        raise refusal
    try:
        return await engine(request).service.execute(dataclasses.replace(envelope, replay_only=True))
    except NotReplayed:
        raise refusal from None
    except DomainError as exc:  # the same refusal carried back from a remote decider
        if exc.rule == NotReplayed.rule:
            raise refusal from None
        raise


def engine(connection: HTTPConnection) -> Engine:
    """The node serving a request or a websocket (kept in its scope: a handler asks often)."""
    scope = connection.scope
    found = scope.get("caas.engine")
    if found is None:
        found = scope["caas.engine"] = connection.app.state.engine
    return cast("Engine", found)


def json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


async def principal(request: Request, *kinds: str) -> Principal:
    """Authenticate the caller and require one of ``kinds``."""
    if request.scope["query_string"] and len(request.query_params.multi_items()) != len(request.query_params):
        raise ApiError("invalid_request", "a query parameter is repeated; give each at most once")
    node = engine(request)
    # a tenant portal request (/console/api/v1/…, api/console.py): its session, already checked, is the tenant
    session: Principal | None = request.scope.get(CONSOLE_PRINCIPAL)
    header = "" if session is not None else request.headers.get("authorization", "")
    if session is not None:
        who = session
    else:
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise ApiError(
                "unauthenticated",
                "send Authorization: Bearer <admin token | API key | user token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        who = await node.auth.authenticate(credential.strip(), node.clock())
    if who.tenant_id:  # the request's log lines (and its access line) name the tenant from here on
        structlog.contextvars.bind_contextvars(tenant_id=who.tenant_id)
    if who.kind not in kinds:
        need = " or ".join(
            {"admin": "the admin token", "tenant": "a tenant API key", "user": "a user token"}[k] for k in kinds
        )
        raise ApiError("forbidden", f"this route needs {need}", rule="wrong_credential")
    if who.kind != "admin":
        await limit(request, who, header.strip())
        origin = request.headers.get("origin")
        if origin is not None and session is None:  # the portal is same-origin: no CORS
            state = await node.service.tenant(who.tenant_id)
            request.state.cors_origin = origin in state.origins
    return who


async def limit(request: Request, who: Principal, credential: str) -> None:
    """A tenant's or user's request: its rate (429), a write's quota (402), and its metering."""
    node = engine(request)
    write = request.method != "GET"
    TENANTS.of(who.tenant_id).requests += 1
    setattr(request.state, QUOTA_STATE, node.limits.check(who, write=write, credential=credential))
    _deferred.set(None)
    _unmetered.set(None)
    if write and refusable(request):  # a capped tenant at its limit, or past due where that means read-only: 402
        await admit(request, who.tenant_id, WRITE_METERS)
    if write:  # metered once admitted (meter_write), so a refused write is not billed
        _unmetered.set(who.tenant_id)
    else:
        node.meter.request(who.tenant_id, write=False)


async def raw_body(request: Request) -> bytes:
    limit = engine(request).settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError("payload_too_large", f"the body is larger than {limit} bytes", limit=limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError("payload_too_large", f"the body is larger than {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def body(request: Request, model: type[B], raw: bytes | None = None) -> B:
    """The request body validated as ``model``; an empty body counts as ``{}``."""
    if raw is None:
        raw = await raw_body(request)
    try:
        return model.model_validate_json(raw if raw.strip() else b"{}")
    except ValidationError as exc:
        raise validation_error(exc) from None


def idempotency_scope(who: Principal) -> str:
    """Whose retries an ``Idempotency-Key`` names: one user, the tenant, or the admin.

    A tenant's API keys share one scope: they are all the tenant's backend (each acts as
    super-admin), and a backend that retries through another key after a rotation must
    still be recognised.
    """
    return f"user:{who.user_id}" if who.kind == "user" else who.kind


def idempotency(request: Request, raw: bytes, who: Principal) -> Idempotency | None:
    """The request's ``Idempotency-Key`` within the caller's scope, and its fingerprint.

    The key the log records is a digest of the scope and the client's key: the same string
    sent by another principal is another key (it neither replays nor blocks their write),
    and the recorded ``command_id`` does not carry the client's key.
    """
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise ApiError("invalid_request", "Idempotency-Key must be 1 to 255 printable characters")
    scoped = hashlib.sha256(f"{idempotency_scope(who)}\n{key}".encode()).hexdigest()
    fingerprint = hashlib.sha256(f"{request.method} {request.url.path}\n".encode() + raw).hexdigest()
    return Idempotency(scoped, fingerprint)


# The events that bring a resource into being. A write that records one answers 201 Created;
# an edit, an update or a removal answers 200 OK, and so does the replay of any retry (the route
# table in api/routes.py documents the same statuses in /openapi.json).
CREATING_EVENTS = frozenset(
    kind.__name__
    for kind in (
        ev.TenantRegistered, ev.ApiKeyIssued, ev.SigningKeyRotated, ev.UserRegistered, ev.ChannelCreated,
        ev.MemberAdded, ev.MessagePosted, ev.ReactionAdded, ev.MemberMuted, ev.MemberBanned,
        ev.WebhookRegistered,
    )
)  # fmt: skip


def written(outcome: Outcome, **extra: Any) -> Response:
    """The last appended event: ``201`` if the write created something, else ``200``."""
    last = outcome.last
    data = {"event_id": last.event_id, "position": last.position, "seq": last.seq, **extra}
    created = not outcome.replayed and any(e.type in CREATING_EVENTS for e in outcome.events)
    return json(data, 201 if created else 200)


MAX_INT = 2**63 - 1  # the largest integer the stores hold; past it SQLite raises OverflowError


def int_param(request: Request, name: str, *, minimum: int = 0, maximum: int = MAX_INT) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None  # an empty value is refused below: absent and empty are not the same
    # str.isdigit alone takes '²', which int() refuses; int() also refuses over 4300 digits
    digits = value.isascii() and value.isdigit() and len(value) <= 20
    if not digits or not minimum <= int(value) <= maximum:
        bound = f" and at most {maximum}"
        raise ApiError("invalid_request", f"query parameter {name} must be an integer of at least {minimum}{bound}")
    return int(value)


AS_OF_POSITION = re.compile(r"(?:pos:)?([0-9]{1,19})")


def as_of_param(request: Request) -> AsOf | None:
    """``as_of``: a log position (``pos:12345`` or ``12345``) or an RFC 3339 time with its
    offset (``2026-12-03T10:00:00Z``), normalised as the log writes times (UTC, milliseconds;
    a finer time is cut to its millisecond, which keeps ``occurred_at <= t`` exact)."""
    value = request.query_params.get("as_of")
    if value is None:
        return None
    if (number := AS_OF_POSITION.fullmatch(value)) is not None and int(number.group(1)) <= MAX_INT:
        return AsOf(position=int(number.group(1)))
    try:
        moment = datetime.fromisoformat(value) if "T" in value or "t" in value else None
        # from 1970 on: the log's times are compared as text, which is time order only for
        # four-digit years (year 999 would sort after 2026 and answer the present)
        if moment is not None and moment.tzinfo is not None and moment >= EARLIEST:
            return AsOf(time=format_time(moment))
    except (ValueError, OverflowError):  # OverflowError: a time whose offset moves it out of years 1-9999
        pass
    raise ApiError(
        "invalid_request",
        "as_of is a log position (pos:12345 or 12345) or an RFC 3339 time with its offset "
        "(2026-12-03T10:00:00Z), from 1970 on",
    )


async def wait_min_position(request: Request) -> None:
    """Honour ``min_position``: wait (bounded) until the read models have applied it.

    Without it, a query still waits (bounded, then answers anyway) for the writes this node
    had acknowledged when the query arrived, so a client reads its own writes by default.
    """
    position = int_param(request, "min_position")
    node = engine(request)
    if position is None:
        await node.backend.wait_for(await node.log.head_position(), node.settings.query_wait_seconds)
        return
    if not await node.backend.wait_for(position, node.settings.query_wait_seconds):
        raise ApiError(
            "unavailable",
            f"the read models have not reached position {position} yet; retry shortly",
            headers={"Retry-After": "1"},
            position=position,
        )
