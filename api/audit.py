"""``GET /v1/audit``: the tenant's audit trail, filtered, paged, exported (docs/audit.md)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api.errors import ApiError
from api.plumbing import engine, int_param, json, principal, wait_min_position
from api.policies import authorize
from domain import audit as table
from domain.base import format_time
from projections import audit
from projections.ports import Doc

EXPORT_PAGE = 1000
CSV_FIELDS = ("position", "occurred_at", "actor", "request_id", "action", "category", "target", "details")


def _time(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or moment.year < 1000:
        raise ApiError("invalid_request", f"{name} is an RFC 3339 time with its offset (2026-12-03T10:00:00Z)")
    return format_time(moment)


def _filter(request: Request) -> dict[str, Any]:
    """The audit documents the query names (``from`` inclusive, ``to`` exclusive)."""
    flt: dict[str, Any] = {}
    start, end = _time(request, "from"), _time(request, "to")
    if start is not None or end is not None:
        flt["occurred_at"] = {**({"$gte": start} if start else {}), **({"$lt": end} if end else {})}
    actor = request.query_params.get("actor")
    if actor is not None:
        if not actor:
            raise ApiError("invalid_request", "actor is who acted: tenant:<key id>, user:<id>, admin:admin, system:…")
        flt["actor"] = actor
    action = request.query_params.get("action")
    if action is not None:
        names = [a for a in action.split(",") if a]
        unknown = [a for a in names if a not in table.AUDITED and a not in table.CATEGORIES]
        if not names or unknown:
            raise ApiError(
                "invalid_request",
                f"action takes comma-separated event types or categories ({', '.join(sorted(table.CATEGORIES))}); "
                f"not {unknown[0] if unknown else action!r}",
            )
        types = {a for a in names if a in table.AUDITED}
        types |= {t for t, c in table.AUDITED.items() if c in names}
        flt["action"] = {"$in": sorted(types)}
    return flt


async def _page(
    request: Request, tenant_id: str, flt: dict[str, Any], after: int, limit: int
) -> tuple[list[Doc], int | None]:
    """Up to ``limit`` entries after position ``after``, and the cursor past the documents read
    (``None``: there are no more). A user deleting their own message is read but not shown, so
    a page may hold fewer entries than ``limit`` while more follow."""
    store = engine(request).store
    docs = await store.find("audit", tenant_id, {**flt, "position": {"$gt": after}}, [("position", 1)], limit)
    shown = []
    for doc in docs:
        if await _own_message(request, tenant_id, doc):
            continue
        shown.append(audit.render(doc))
    return shown, docs[-1]["position"] if len(docs) == limit else None


async def _own_message(request: Request, tenant_id: str, doc: Doc) -> bool:
    actor = doc.get("actor") or ""
    if doc["action"] != "MessageDeleted" or not actor.startswith("user:"):
        return False
    message = await engine(request).store.get("messages", tenant_id, doc["message"])
    return message is not None and f"user:{message.get('author_id')}" == actor


async def get_audit(request: Request) -> Response:
    who = await principal(request, "tenant")
    await authorize(request, who, "read_audit")
    after = int_param(request, "after") or 0
    limit = int_param(request, "limit", minimum=1, maximum=1000) or 100
    form = request.query_params.get("format", "json")
    if form not in ("json", "jsonl", "csv"):
        raise ApiError("invalid_request", "format is json (a page), jsonl or csv (every entry, streamed)")
    flt = _filter(request)
    await wait_min_position(request)
    if form == "json":
        entries, cursor = await _page(request, who.tenant_id, flt, after, limit)
        return json({"entries": entries, "next_after": cursor})

    async def rows() -> AsyncIterator[bytes]:
        position: int | None = after
        if form == "csv":
            yield _csv(CSV_FIELDS)
        while position is not None:
            entries, position = await _page(request, who.tenant_id, flt, position, EXPORT_PAGE)
            for entry in entries:
                if form == "jsonl":
                    yield orjson.dumps(entry) + b"\n"
                else:
                    yield _csv([*(entry[f] for f in CSV_FIELDS[:-1]), orjson.dumps(entry["details"]).decode()])

    media = "application/x-ndjson" if form == "jsonl" else "text/csv; charset=utf-8"
    return StreamingResponse(rows(), media_type=media)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell as a formula


def _csv(values: Any) -> bytes:
    """One CSV row; a text cell a spreadsheet would take for a formula (a client's request id,
    say) is prefixed with ``'`` (docs/audit.md)."""
    out = io.StringIO()
    cells = ["" if v is None else f"'{v}" if isinstance(v, str) and v.startswith(FORMULA_START) else v for v in values]
    csv.writer(out, lineterminator="\n").writerow(cells)
    return out.getvalue().encode()
