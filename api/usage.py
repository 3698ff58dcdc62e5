"""``GET /v1/usage`` (a tenant's own usage) and ``GET /v1/tenants/{tenant_id}/usage`` (the
admin's view of any tenant's): parse the range, read the usage read model, render."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import cast

from starlette.requests import Request
from starlette.responses import Response

from api import schemas
from api.errors import ApiError
from api.plumbing import engine, json, principal, wait_min_position
from domain.base import format_time
from projections import usage

GRANULARITIES = ("hour", "day", "month")
MAX_BUCKETS = 10_000  # hours in about 14 months; days and months reach further
MAX_RANGE = timedelta(days=5 * 366)


def _time(request: Request, name: str) -> datetime:
    raw = request.query_params.get(name)
    if raw is None:
        raise ApiError("invalid_request", f"query parameter {name} is required (RFC 3339, e.g. 2026-01-01T00:00:00Z)")
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ApiError(
            "invalid_request", f"query parameter {name} must be an RFC 3339 time with a zone, e.g. 2026-01-01T00:00:00Z"
        )
    return moment.astimezone(UTC)


def _range(request: Request) -> tuple[datetime, datetime, usage.Granularity, list[str]]:
    start, end = _time(request, "from"), _time(request, "to")
    if end <= start:
        raise ApiError("invalid_request", "to must be later than from", rule="empty_range")
    granularity = request.query_params.get("granularity", "hour")
    if granularity not in GRANULARITIES:
        raise ApiError("invalid_request", "granularity must be hour, day or month", rule="unknown_granularity")
    grain = cast(usage.Granularity, granularity)
    step = {"hour": 3600, "day": 86400, "month": 28 * 86400}[grain]
    if end - start > MAX_RANGE or (end - start).total_seconds() / step > MAX_BUCKETS:
        raise ApiError(
            "invalid_request",
            f"the range is too long: at most {MAX_BUCKETS} buckets and {MAX_RANGE.days} days; "
            "ask for a coarser granularity or a shorter range",
            rule="range_too_large",
        )
    raw = request.query_params.get("meters")
    meters = list(dict.fromkeys(m for m in raw.split(",") if m)) if raw is not None else list(usage.METERS)
    unknown = [m for m in meters if m not in usage.METERS]
    if unknown or not meters:
        raise ApiError(
            "invalid_request",
            f"unknown meter {unknown[0]!r}" if unknown else "meters names none",
            rule="unknown_meter",
            meters=list(usage.METERS),
        )
    return start, end, grain, meters


async def _report(request: Request, tenant_id: str) -> Response:
    start, end, granularity, meters = _range(request)
    await wait_min_position(request)
    report = await usage.usage_report(engine(request).store, tenant_id, start, end, granularity, meters)
    return json(
        {
            "tenant_id": tenant_id,
            "from": format_time(start),
            "to": format_time(end),
            "granularity": granularity,
            "meters": meters,
            "buckets": [{"start": format_time(at), "meters": values} for at, values in report.buckets],
            "totals": report.totals,
        }
    )


async def get_usage(request: Request) -> Response:
    who = await principal(request, "tenant")
    return await _report(request, who.tenant_id)


async def get_tenant_usage(request: Request) -> Response:
    await principal(request, "admin")
    tenant_id: str = request.path_params["tenant_id"]
    if not re.fullmatch(schemas.ID_PATTERN, tenant_id):
        raise ApiError("invalid_request", "tenant_id is not a valid id (letters, digits, _.@=+- ; up to 128)")
    if not (await engine(request).service.tenant(tenant_id)).exists:
        raise ApiError("not_found", f"no tenant {tenant_id!r}", rule="tenant_not_found")
    return await _report(request, tenant_id)
