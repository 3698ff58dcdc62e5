"""``GET /v1/usage`` (a tenant's own usage) and ``GET /v1/tenants/{tenant_id}/usage`` (the
admin's view of any tenant's): parse the range, read the usage read model, render."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api import schemas
from api.errors import ApiError
from api.plumbing import engine, json, principal, wait_min_position
from api.policies import authorize
from domain.base import format_time
from projections import usage


def _range(request: Request) -> usage.UsageRange:
    q = request.query_params
    try:
        return usage.parse_range(
            q.get("from"), q.get("to"), q.get("granularity", "hour"), q.get("meters"), usage.METERS
        )
    except usage.RangeError as exc:
        details = {"rule": exc.rule, **exc.details} if exc.rule is not None else {}
        raise ApiError("invalid_request", exc.message, **details) from None


async def _report(request: Request, tenant_id: str) -> Response:
    asked = _range(request)
    start, end, granularity, meters = asked.start, asked.end, asked.granularity, asked.meters
    await wait_min_position(request)
    report = await usage.usage_report(engine(request).store, tenant_id, start, end, granularity, meters)
    return json(render(tenant_id, asked, report))


def render(tenant_id: str, asked: usage.UsageRange, report: usage.Report) -> dict[str, Any]:
    """The body of a usage response (the ``Usage`` schema)."""
    return {
        "tenant_id": tenant_id,
        "from": format_time(asked.start),
        "to": format_time(asked.end),
        "granularity": asked.granularity,
        "meters": asked.meters,
        "buckets": [
            {"start": label, "meters": values} for label, (_, values) in zip(report.labels, report.buckets, strict=True)
        ],
        "totals": report.totals,
    }


async def get_usage(request: Request) -> Response:
    who = await principal(request, "tenant")
    await authorize(request, who, "read_usage")
    return await _report(request, who.tenant_id)


async def get_tenant_usage(request: Request) -> Response:
    await principal(request, "admin")
    tenant_id: str = request.path_params["tenant_id"]
    if not re.fullmatch(schemas.ID_PATTERN, tenant_id):
        raise ApiError("invalid_request", "tenant_id is not a valid id (letters, digits, _.@=+- ; up to 128)")
    if not (await engine(request).service.tenant(tenant_id)).exists:
        raise ApiError("not_found", f"no tenant {tenant_id!r}", rule="tenant_not_found")
    return await _report(request, tenant_id)
