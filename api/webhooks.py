"""The outbound webhook endpoints of the v1 API (docs/webhooks.md): a tenant's endpoints,
their delivery logs and replays. Delivery itself is :mod:`streams.webhooks`."""

from __future__ import annotations

import hashlib
import re

from starlette.requests import Request
from starlette.responses import Response

from adapters.webhook_http import InvalidWebhookUrl, check_url, parse_ports, port_allowed
from api import schemas
from api.bootstrap import server_key, webhook_refusal
from api.errors import ApiError
from api.plumbing import (
    body,
    engine,
    execute,
    idempotency,
    int_param,
    json,
    principal,
    raw_body,
    wait_min_position,
    written,
)
from commands.auth import Principal
from commands.ports import Idempotency
from commands.service import CommandEnvelope, Outcome
from domain import errors, webhook
from domain.base import Command
from domain.events import stream_name
from projections.webhooks import SCOPE, doc_id, public
from streams.webhooks import DELIVERIES, endpoint_secret


def _webhook_id(request: Request) -> str:
    value: str = request.path_params["webhook_id"]
    if not re.fullmatch(schemas.ID_PATTERN, value):
        raise ApiError("invalid_request", "webhook_id is not a valid id (letters, digits, _.@=+- ; up to 128)")
    return value


def _new_id(request: Request, who: Principal, retry: Idempotency | None) -> str:
    """A new endpoint's id: with an ``Idempotency-Key`` the same for every retry, so a retry
    meets the first request's record (and is shown the same secret)."""
    if retry is None:
        return engine(request).short_id("w")
    return "w" + hashlib.sha256(f"webhook-id\n{who.tenant_id}\n{retry.key}".encode()).hexdigest()[:16]


def _url(request: Request, url: str) -> str:
    settings = engine(request).settings
    try:
        parsed = check_url(url, allow_private=settings.webhook_allow_private)
    except InvalidWebhookUrl as exc:
        raise ApiError("invalid_request", f"url: {exc}", rule="invalid_webhook_url") from None
    if not port_allowed(parsed, parse_ports(settings.webhook_allowed_ports)):
        raise ApiError(
            "invalid_request",
            f"url: the port is not one webhooks are sent to ({settings.webhook_allowed_ports})",
            rule="invalid_webhook_url",
        )
    return url


def _types(types: list[str]) -> list[str]:
    unknown = [t for t in types if t != webhook.ALL and t not in webhook.DELIVERABLE]
    if unknown:
        raise ApiError(
            "invalid_request",
            f"event_types: {unknown[0]!r} is not an event type an endpoint can receive; see docs/webhooks.md",
            rule="invalid_event_type",
            allowed=[webhook.ALL, *webhook.DELIVERABLE],
        )
    return list(dict.fromkeys(types))


async def _command(request: Request, who: Principal, endpoint_id: str, command: Command, raw: bytes) -> Outcome:
    return await execute(
        request,
        CommandEnvelope(
            who.tenant_id,
            stream_name("webhook", endpoint_id),
            command,
            actor=who.actor.label,
            idempotency=idempotency(request, raw, who) if raw or request.method == "POST" else None,
        ),
    )


async def create_webhook(request: Request) -> Response:
    who = await principal(request, "tenant")
    refused = webhook_refusal(engine(request).settings)
    if refused is not None:
        raise ApiError("unavailable", refused, rule="webhooks_unavailable")
    raw = await raw_body(request)
    data = await body(request, schemas.CreateWebhook, raw)
    command = webhook.RegisterWebhook(
        url=_url(request, data.url), event_types=_types(data.event_types), description=data.description
    )
    endpoint_id = _new_id(request, who, idempotency(request, raw, who))
    await _room_for_one(request, who, endpoint_id)
    outcome = await _command(request, who, endpoint_id, command, raw)
    secret = endpoint_secret(server_key(engine(request).settings), who.tenant_id, endpoint_id)
    return written(outcome, webhook_id=endpoint_id, secret=secret)


async def _room_for_one(request: Request, who: Principal, endpoint_id: str) -> None:
    """Refuse a new endpoint past ``CAAS_WEBHOOK_MAX_ENDPOINTS`` (counted in the read model: a
    retry of a registration that went through is not a new endpoint)."""
    store, limit = engine(request).store, engine(request).settings.webhook_max_endpoints
    if await store.count("webhooks", SCOPE, {"tenant": who.tenant_id, "deleted": False}) < limit:
        return
    if await store.get("webhooks", SCOPE, doc_id(who.tenant_id, endpoint_id)) is not None:
        return
    raise ApiError(
        "conflict",
        f"a tenant may have at most {limit} webhook endpoints; delete one first",
        rule="webhook_limit",
        limit=limit,
    )


async def _endpoint(request: Request, who: Principal, endpoint_id: str) -> dict[str, object]:
    doc = await engine(request).store.get("webhooks", SCOPE, doc_id(who.tenant_id, endpoint_id))
    if doc is None or doc.get("deleted"):
        raise errors.WebhookNotFound(f"no webhook endpoint {endpoint_id!r}; pass min_position after a write")
    return doc


async def list_webhooks(request: Request) -> Response:
    who = await principal(request, "tenant")
    await wait_min_position(request)
    docs = await engine(request).store.find(
        "webhooks", SCOPE, {"tenant": who.tenant_id, "deleted": False}, sort=[("created_at", 1)], limit=1000
    )
    return json({"webhooks": [public(doc) for doc in docs]})


async def get_webhook(request: Request) -> Response:
    who = await principal(request, "tenant")
    endpoint_id = _webhook_id(request)
    await wait_min_position(request)
    return json(public(await _endpoint(request, who, endpoint_id)))


async def update_webhook(request: Request) -> Response:
    who = await principal(request, "tenant")
    endpoint_id = _webhook_id(request)
    raw = await raw_body(request)
    data = await body(request, schemas.UpdateWebhook, raw)
    command = webhook.UpdateWebhook(
        url=None if data.url is None else _url(request, data.url),
        event_types=None if data.event_types is None else _types(data.event_types),
        description=data.description,
        enabled=data.enabled,
    )
    return written(await _command(request, who, endpoint_id, command, raw), webhook_id=endpoint_id)


async def delete_webhook(request: Request) -> Response:
    who = await principal(request, "tenant")
    endpoint_id = _webhook_id(request)
    return written(await _command(request, who, endpoint_id, webhook.DeleteWebhook(), b""), webhook_id=endpoint_id)


async def replay_webhook(request: Request) -> Response:
    who = await principal(request, "tenant")
    endpoint_id = _webhook_id(request)
    raw = await raw_body(request)
    data = await body(request, schemas.ReplayWebhook, raw)
    head = await engine(request).log.head_position()
    if data.from_position > head:
        raise ApiError(
            "invalid_request",
            f"from_position {data.from_position} is past the log's head ({head}); replay starts at a recorded position",
            rule="replay_past_head",
            head_position=head,
        )
    outcome = await _command(request, who, endpoint_id, webhook.ReplayWebhook(from_position=data.from_position), raw)
    return written(outcome, webhook_id=endpoint_id)


async def rotate_secret(request: Request) -> Response:
    """A new signing secret, shown in this answer (and a retry's, with the same
    ``Idempotency-Key``); the old one still signs for a grace period (docs/webhooks.md)."""
    who = await principal(request, "tenant")
    endpoint_id = _webhook_id(request)
    raw = await raw_body(request)
    outcome = await _command(request, who, endpoint_id, webhook.RotateWebhookSecret(), raw)
    generation = outcome.last.seq
    secret = endpoint_secret(server_key(engine(request).settings), who.tenant_id, endpoint_id, generation)
    return written(outcome, webhook_id=endpoint_id, secret=secret)


async def list_deliveries(request: Request) -> Response:
    who = await principal(request, "tenant")
    endpoint_id = _webhook_id(request)
    limit = int_param(request, "limit", minimum=1, maximum=200) or 50
    after = request.query_params.get("after", "")
    await wait_min_position(request)
    await _endpoint(request, who, endpoint_id)
    docs = await engine(request).store.find(
        DELIVERIES,
        who.tenant_id,
        {"webhook_id": endpoint_id, "delivery_id": {"$gt": after}},
        sort=[("delivery_id", 1)],
        limit=limit,
    )
    deliveries = [{k: v for k, v in doc.items() if k not in ("_id", "tenant_id", "webhook_id")} for doc in docs]
    cursor = deliveries[-1]["delivery_id"] if len(deliveries) == limit else None
    return json({"deliveries": deliveries, "next_after": cursor})
