"""``GET /v1/analytics``: a tenant's active users, posts, channels and reply times by UTC day
or month (docs/analytics.md): parse the range, read the analytics read model, render."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.errors import ApiError
from api.plumbing import engine, json, principal, wait_min_position
from api.policies import authorize
from domain.base import format_time
from projections import analytics
from projections.usage import RangeError


async def get_analytics(request: Request) -> Response:
    who = await principal(request, "tenant")
    await authorize(request, who, "read_analytics")
    q = request.query_params
    node = engine(request)
    try:
        asked = analytics.parse_range(q.get("from"), q.get("to"), q.get("granularity", "day"))
        await wait_min_position(request)
        report = await analytics.analytics_report(node.store, who.tenant_id, asked, node.settings.analytics_max_docs)
    except RangeError as exc:  # a malformed range, or one holding more than a report reads
        details = {"rule": exc.rule, **exc.details} if exc.rule is not None else {}
        raise ApiError("invalid_request", exc.message, **details) from None
    return json(render(who.tenant_id, asked, report))


def render(tenant_id: str, asked: analytics.AnalyticsRange, report: analytics.Report) -> dict[str, Any]:
    """The body of an analytics response (the ``AnalyticsReport`` schema)."""
    return {
        "tenant_id": tenant_id,
        "from": format_time(asked.start),
        "to": format_time(asked.end),
        "granularity": asked.granularity,
        "buckets": [{"start": format_time(start), **figures.as_dict()} for start, figures in report.buckets],
        "totals": report.totals.as_dict(),
        "channels": report.channels,
    }
