"""Every error leaves as ``{"error": {"code", "message", "details"}}`` with its 4xx/5xx status."""

from __future__ import annotations

from typing import Any, Literal, get_args

import orjson
import structlog
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from commands.auth import Unauthenticated
from commands.ports import ConcurrencyError, IdempotencyKeyReused, LogUnavailable
from commands.quotas import PaymentRequired, QuotaExceeded
from domain.errors import DomainError
from projections.ports import ReadStoreUnavailable

log = structlog.get_logger("caas.api")

# Every error code the HTTP API answers with: ``/openapi.json`` lists them as the enum of
# ``error.code``, and mypy holds every ``ApiError`` (and every domain error's category) to them.
ErrorCode = Literal[
    "invalid_signature",
    "invalid_request",
    "unauthenticated",
    "payment_required",
    "quota_exceeded",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "conflict",
    "payload_too_large",
    "rate_limited",
    "internal",
    "unavailable",
    "legal_hold",
    "user_erased",
]
ERROR_CODES: tuple[ErrorCode, ...] = get_args(ErrorCode)
STATUS: dict[ErrorCode, int] = {
    "invalid_signature": 400,
    "invalid_request": 422,
    "unauthenticated": 401,
    "payment_required": 402,
    "quota_exceeded": 402,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "payload_too_large": 413,
    "rate_limited": 429,
    "internal": 500,
    "unavailable": 503,
    "legal_hold": 409,
    "user_erased": 410,
}


class ApiError(Exception):
    """An error the API answers with; ``code`` is one of :data:`STATUS`."""

    def __init__(self, code: ErrorCode, message: str, headers: dict[str, str] | None = None, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return STATUS[self.code]


def error_body(code: ErrorCode, message: str, details: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "details": details or {}}})


def error_response(error: ApiError) -> Response:
    return Response(
        error_body(error.code, error.message, error.details),
        status_code=error.status,
        media_type="application/json",
        headers=error.headers,
    )


def validation_error(exc: ValidationError, where: str = "body") -> ApiError:
    problems = [{"loc": [where, *[str(p) for p in e["loc"]]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    first = problems[0]
    return ApiError("invalid_request", f"{'.'.join(first['loc'])}: {first['msg']}", errors=problems)


def translate(exc: Exception) -> ApiError:
    """Map any exception from the layers below to the API's error vocabulary."""
    match exc:
        case ApiError():
            return exc
        case QuotaExceeded():
            return ApiError(
                "quota_exceeded", str(exc), meter=exc.meter, limit=exc.limit, used=exc.used, resets_at=exc.resets_at
            )
        case PaymentRequired():
            return ApiError("payment_required", str(exc), rule="past_due")
        case DomainError() if exc.rule == "legal_hold":
            return ApiError("legal_hold", exc.message, rule=exc.rule, **exc.details)
        case DomainError() if exc.rule == "user_erased":
            return ApiError("user_erased", exc.message, rule=exc.rule, **exc.details)
        case DomainError():
            return ApiError(exc.category, exc.message, rule=exc.rule, **exc.details)
        case Unauthenticated():
            return ApiError("unauthenticated", str(exc), headers={"WWW-Authenticate": "Bearer"})
        case IdempotencyKeyReused():
            return ApiError(
                "conflict",
                "this Idempotency-Key was already used for a different request; use a new key",
                rule="idempotency_key_reused",
            )
        case ConcurrencyError():
            return ApiError("unavailable", "the stream is busy; retry the request", headers={"Retry-After": "1"})
        case LogUnavailable() | ReadStoreUnavailable():
            return ApiError("unavailable", str(exc) or "the backend is unavailable", headers={"Retry-After": "1"})
        case ValidationError():
            return validation_error(exc)
        case ClientDisconnect():
            # the client closed the connection (or the server did, for a body arriving too
            # slowly) before the whole body arrived: nothing went wrong here, and no one reads
            # this answer; a 4xx keeps it out of the 5xx log and metrics
            log.debug("client_disconnected")
            return ApiError("invalid_request", "the connection closed before the whole request body arrived")
        case HTTPException() if exc.status_code == 404:
            return ApiError("not_found", "no such route; see /openapi.json")
        case HTTPException() if exc.status_code == 405:
            return ApiError("method_not_allowed", "this route does not take that method; see /openapi.json")
    log.exception("unhandled_error", error=repr(exc))
    return ApiError("internal", "an internal error occurred; it has been logged")


async def handle(request: Request, exc: Exception) -> Response:
    return error_response(translate(exc))
