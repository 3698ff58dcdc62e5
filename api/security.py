"""Headers every response carries, and CORS per tenant.

A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered for any
origin: it carries no credential, so the tenant is not known yet, and it reveals nothing.
The real response carries ``Access-Control-Allow-Origin`` only if the caller's tenant
listed that origin (``PUT /v1/cors``), so a browser at any other origin cannot read it.
"""

from __future__ import annotations

from typing import NamedTuple

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"cache-control", b"no-store"),
]
ALLOW_HEADERS = b"authorization, content-type, idempotency-key, x-request-id"
EXPOSE_HEADERS = b"x-request-id, retry-after, ratelimit-limit, ratelimit-remaining, ratelimit-reset"
ALLOW_METHODS = b"GET, POST, PUT, PATCH, DELETE"
CORS_STATE = "cors_origin"
QUOTA_STATE = "rate_quota"  # the request's Quota, once its credential drew on a rate limit


class Quota(NamedTuple):
    """The rate limit a request drew on, as the ``RateLimit-Limit``, ``RateLimit-Remaining``
    and ``RateLimit-Reset`` headers state it (IETF httpapi rate-limit headers draft)."""

    limit: int  # requests the bucket holds when full
    remaining: int  # requests it holds now
    reset: int  # seconds until it is full again

    def headers(self) -> dict[str, str]:
        if not self.limit:
            return {}
        return {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
                "RateLimit-Reset": str(self.reset)}  # fmt: skip

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        if not self.limit:
            return []
        return [(b"ratelimit-limit", b"%d" % self.limit), (b"ratelimit-remaining", b"%d" % self.remaining),
                (b"ratelimit-reset", b"%d" % self.reset)]  # fmt: skip


NO_QUOTA = Quota(0, 0, 0)  # a request with no figures to state: no RateLimit-* headers


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if scope["method"] == "OPTIONS" and origin and b"access-control-request-method" in headers:
            await send({"type": "http.response.start", "status": 204, "headers": [
                *SECURITY_HEADERS,
                (b"access-control-allow-origin", origin),
                (b"access-control-allow-methods", ALLOW_METHODS),
                (b"access-control-allow-headers", ALLOW_HEADERS),
                (b"access-control-max-age", b"600"),
                (b"vary", b"origin"),
            ]})  # fmt: skip
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                own = message.get("headers", ())
                named = {name.lower() for name, _ in own}  # a header the app set (a UI page's CSP) stays its own
                headers = [*own, *(h for h in SECURITY_HEADERS if h[0] not in named)]  # one list per response
                state = scope.get("state", {})
                rate: Quota | None = state.get(QUOTA_STATE)
                if rate is not None:
                    headers += rate.raw_headers()
                if origin and state.get(CORS_STATE):
                    headers += (
                        (b"access-control-allow-origin", origin),
                        (b"access-control-expose-headers", EXPOSE_HEADERS),
                        (b"vary", b"origin"),
                    )
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
