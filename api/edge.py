"""The one pure ASGI middleware in front of every HTTP request: early refusals of a credential
just refused for its rate, the request id, the trace (its server span while tracing, and the
trace and span ids of its log lines either way), the latency histogram, the access line, and the
headers every response carries (security, ``RateLimit-*``, CORS).

One layer, one pass over the request headers and one wrapper of ``send`` per request: the three
concerns used to be three middlewares, each copying the headers into a dict and wrapping ``send``
again, which cost the hot path more than some of its real work.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters import tracing
from adapters.ids import random_hex
from api.limits import Refused, refuse_early
from api.observability import HTTP_SECONDS, REQUEST_ID, labelled
from api.security import (
    ALLOW_HEADERS,
    ALLOW_METHODS,
    CORS_STATE,
    EXPOSE_HEADERS,
    OWN_HEADERS,
    QUOTA_STATE,
    SECURITY_HEADERS,
    SECURITY_NAMES,
    Quota,
)

log = structlog.get_logger("caas.http")
_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")  # 1 to 128 visible ASCII characters


def given_request_id(value: bytes) -> bytes | None:
    """A client's ``X-Request-Id``, if it can name the request: 1 to 128 visible ASCII
    characters once the whitespace around them is cut. Otherwise (empty, blank, too long,
    other characters) ``None``: the request gets a generated id, which the response carries,
    the log lines bind and its commands record as their ``correlation_id``."""
    value = value.strip()
    return value if _REQUEST_ID.fullmatch(value) else None


class Edge:
    """See the module doc. The outermost layer of ours (Starlette's error middleware is outside
    it): a refused credential's repeat costs the node least."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        refused: Callable[[], Refused],
        access_log: bool = False,
        trust_traceparent: bool = False,
    ) -> None:
        """``trust_traceparent``: a client's ``traceparent`` parents the request's span and its
        log ids (``CAAS_TRACE_TRUST_INCOMING``, for a port only trusted callers reach); otherwise
        the request starts a trace of its own (:class:`adapters.tracing.Request`)."""
        self.app = app
        self.refused = refused
        self.access_log = access_log
        self.trust_traceparent = trust_traceparent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorization = given_id = origin = traceparent = None
        preflight = False
        for name, value in scope["headers"]:  # the last of a repeated header counts
            if name == b"authorization":
                authorization = value
            elif name == b"x-request-id":
                given_id = value
            elif name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                preflight = True
            elif name == b"traceparent":
                traceparent = value
        method = scope["method"]
        if given_id is not None:
            given_id = given_request_id(given_id)
        if authorization is not None:
            wait, limit, state = self.refused().wait(authorization.decode("latin-1").strip(), method != "GET")
            if wait:
                raw = given_id or random_hex().encode()
                await refuse_early(send, wait, limit, state, raw)
                if self.access_log:  # its access line, with the ids every request line has (no span: not routed)
                    trace_id, span_id = tracing.log_ids(traceparent if self.trust_traceparent else None)
                    structlog.contextvars.clear_contextvars()
                    structlog.contextvars.bind_contextvars(
                        request_id=raw.decode("latin-1"), tenant_id=None, trace_id=trace_id, span_id=span_id
                    )
                    log.info("request", method=method, route="unmatched", status=429, ms=0.0, early=True)
                return
        request_id = given_id.decode("latin-1") if given_id else random_hex()
        raw_id = request_id.encode("latin-1")
        # every line logged for the request carries its ids (docs/operations-tracing.md, "Logs");
        # the tenant is bound once the credential names it (api/plumbing.py)
        trusted = traceparent if self.trust_traceparent else None
        traced = (
            tracing.Request(method, scope["path"], traceparent, trust=self.trust_traceparent) if tracing.ON else None
        )
        trace_id, span_id = tracing.log_ids(trusted) if traced is None else traced.ids
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            request_id=request_id, tenant_id=None, trace_id=trace_id, span_id=span_id
        )
        REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500
        try:
            if method == "OPTIONS" and origin and preflight:
                # answered for any origin: a preflight carries no credential (api/security.py)
                status = 204
                await send({"type": "http.response.start", "status": 204, "headers": [
                    *SECURITY_HEADERS,
                    (b"access-control-allow-origin", origin),
                    (b"access-control-allow-methods", ALLOW_METHODS),
                    (b"access-control-allow-headers", ALLOW_HEADERS),
                    (b"access-control-max-age", b"600"),
                    (b"vary", b"origin"),
                    (b"x-request-id", raw_id),
                ]})  # fmt: skip
                await send({"type": "http.response.body", "body": b""})
                return

            async def send_with_headers(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    own = message.get("headers", ())
                    if any(name in OWN_HEADERS for name, _ in own):  # a UI page's own CSP or caching stays
                        named = {name for name, _ in own if name in OWN_HEADERS}
                        mine = [h for h in own if h[0] not in SECURITY_NAMES or h[0] in named]
                        headers = [*mine, *(h for h in SECURITY_HEADERS if h[0] not in named)]
                    else:
                        headers = [*own, *SECURITY_HEADERS]  # one list per response
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
                    headers.append((b"x-request-id", raw_id))
                    message["headers"] = headers
                await send(message)

            await self.app(scope, receive, send_with_headers)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            elapsed = time.perf_counter() - started
            labelled(HTTP_SECONDS, method, template, f"{status // 100}xx").observe(elapsed)
            if traced is not None:
                traced.end(method, template, status, structlog.contextvars.get_contextvars().get("tenant_id"))
            if self.access_log or status >= 500:  # the one access line (uvicorn's own is off: api/cli.py)
                log.info("request", method=method, route=template, status=status, ms=round(elapsed * 1000, 2))
