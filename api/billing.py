"""HTTP endpoints of billing: a tenant's plan (admin), the preview and invoices (tenant), and
Stripe's webhook (signed by Stripe, no bearer credential)."""

from __future__ import annotations

import re

import structlog
from starlette.requests import Request
from starlette.responses import Response

from api import schemas
from api.errors import ApiError
from api.plumbing import body, engine, json, principal, raw_body, written
from commands.billing import BadPayload, BadSignature
from domain import billing
from projections.billing import tenant_of

log = structlog.get_logger("caas.billing")

# Stripe event types CAAS records, and what each says about the tenant.
WEBHOOK_KINDS: dict[str, billing.StripeKind] = {
    "invoice.paid": "invoice_paid",
    "invoice.payment_succeeded": "invoice_paid",
    "invoice.payment_failed": "payment_failed",
    "customer.subscription.created": "subscription_changed",
    "customer.subscription.updated": "subscription_changed",
    "customer.subscription.deleted": "subscription_changed",
}
INVOICE_FIELDS = (
    "id", "status", "number", "currency", "amount_due", "amount_paid", "period_start", "period_end",
    "hosted_invoice_url",
)  # fmt: skip
SUBSCRIPTION_FIELDS = ("id", "status", "current_period_end", "cancel_at_period_end")


async def put_plan(request: Request) -> Response:
    who = await principal(request, "admin")
    tenant_id: str = request.path_params["tenant_id"]
    if not re.fullmatch(schemas.ID_PATTERN, tenant_id):
        raise ApiError("invalid_request", "tenant_id is not a valid tenant id")
    data = await body(request, schemas.PutPlan, await raw_body(request))
    node = engine(request)
    outcome = await node.billing.change_plan(tenant_id, data.plan, who.actor.label)
    node.quotas.forget(tenant_id)
    return written(outcome, tenant_id=tenant_id, plan=data.plan, effective_at=outcome.last.payload["effective_at"])


async def preview(request: Request) -> Response:
    who = await principal(request, "tenant")
    return json(await engine(request).billing.preview(who.tenant_id))


async def invoices(request: Request) -> Response:
    who = await principal(request, "tenant")
    return json(await engine(request).billing.invoices(who.tenant_id))


async def stripe_webhook(request: Request) -> Response:
    """Verify ``Stripe-Signature``, then record what the event says (once per Stripe event id)."""
    node = engine(request)
    payload = await raw_body(request)
    if node.webhooks is None:
        raise ApiError("invalid_signature", "webhooks are not configured here: set CAAS_STRIPE_WEBHOOK_SECRET")
    try:
        event = node.webhooks.verify(payload, request.headers.get("stripe-signature", ""))
    except BadSignature as exc:
        raise ApiError("invalid_signature", f"Stripe-Signature: {exc}") from None
    except BadPayload as exc:
        raise ApiError("invalid_request", str(exc)) from None
    kind = WEBHOOK_KINDS.get(str(event.get("type")))
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if kind is None or not isinstance(obj, dict):
        return json({"received": True, "recorded": False})
    customer = obj.get("customer")
    tenant_id = await tenant_of(node.store, customer) if isinstance(customer, str) else None
    if tenant_id is None:  # not yet in the billing read model, or not ours: Stripe retries for 3 days
        log.info("stripe_webhook_unknown_customer", stripe_event=event.get("id"), type=event.get("type"))
        raise ApiError(
            "unavailable",
            "the event's customer is not known here (yet); Stripe retries it",
            headers={"Retry-After": "60"},
            rule="unknown_customer",
        )
    is_invoice = kind != "subscription_changed"
    fields = INVOICE_FIELDS if is_invoice else SUBSCRIPTION_FIELDS
    summary = {name: obj.get(name) for name in fields}
    created = event.get("created")
    command = billing.RecordStripeEvent(
        stripe_event_id=str(event.get("id")),
        kind=kind,
        created=created if isinstance(created, int) and not isinstance(created, bool) and created >= 0 else 0,
        invoice=summary if is_invoice else None,
        subscription=None if is_invoice else summary,
    )
    outcome = await node.billing.record(tenant_id, command, "system:stripe")
    node.quotas.forget(tenant_id)
    return json({"received": True, "recorded": not outcome.replayed})
