"""Headers every response carries, and CORS per tenant (sent by ``api.edge.Edge``).

A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered for any
origin: it carries no credential, so the tenant is not known yet, and it reveals nothing.
The real response carries ``Access-Control-Allow-Origin`` only if the caller's tenant
listed that origin (``PUT /v1/cors``), so a browser at any other origin cannot read it.
"""

from __future__ import annotations

from typing import NamedTuple

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"cache-control", b"no-store"),
]
# The only defaults a response may set for itself (a UI page: its own CSP, and caching for hashed
# assets); every other security header is always the default, whatever a route sets
OWN_HEADERS = frozenset({b"content-security-policy", b"cache-control"})
SECURITY_NAMES = frozenset(name for name, _ in SECURITY_HEADERS)
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
