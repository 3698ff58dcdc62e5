"""The tenant portal's server side (``/console``, docs/console.md): sessions, CSRF, its API.

- ``POST /console/api/session`` ``{"api_key": …}`` exchanges a tenant API key for a session: the
  browser gets an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` when served over https),
  path ``/console``, and the page gets the session's anti-CSRF token in the answer. The session
  is recorded in the tenant's log (``ConsoleSessionOpened``, only a hash of its secret), so every
  node of a cluster knows it; ``DELETE /console/api/session`` records ``ConsoleSessionClosed``
  and the cookie stops working at once, on every node. A session also ends when it expires
  (``CAAS_CONSOLE_SESSION_SECONDS``) and when the API key it signed in with is revoked.
- The portal's API calls go to ``/console/api/v1/…``: the same routes as ``/v1/…`` (only those a
  tenant API key may call), authenticated by the session cookie instead of ``Authorization``. The
  session acts exactly as the API key it signed in with (same tenant, same actor ``tenant:<key_id>``,
  same limits and metering). ``/v1`` itself never reads a cookie, so the public API's credentials,
  CORS and isolation stay what they were.
- Unsafe methods (anything but GET/HEAD) must carry the session's token in ``X-CAAS-CSRF``
  (compared in constant time) and, when the browser says where it comes from, this server's own
  origin (``Origin``; else ``Sec-Fetch-Site: same-origin``). The live tail's websocket
  (``/console/api/tail``) checks the origin and takes the token as ``?csrf=``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.errors import ApiError, error_response, translate, validation_error
from api.plumbing import CONSOLE_PRINCIPAL, engine, execute, json, limit, raw_body
from api.policies import POLICY_EVENTS, authorize
from api.routes import ROUTES
from commands.auth import Principal, Unauthenticated, new_console_session, session_parts
from commands.service import CommandEnvelope
from domain import tenant
from domain.base import format_time
from domain.errors import DomainError, PolicyDenied
from domain.events import Event, stream_name
from streams.frames import POLICY_VIOLATION, TRY_AGAIN_LATER

COOKIE = "caas_console"
COOKIE_PATH = "/console"
CSRF_HEADER = "x-caas-csrf"
API_PREFIX = "/console/api"
SAFE_METHODS = frozenset({"GET", "HEAD"})
TAIL_QUEUE = 2000  # events a tail holds for a slow page before it is closed (1013: reconnect)
RECHECK_SECONDS = 5.0  # a tail re-checks its session at least this often, busy or idle (docs/console.md)
# The /v1 routes the portal may call through its session: those a tenant API key may call.
CONSOLE_ROUTES = [(api.method, compile_path(api.path)[0]) for api in ROUTES if "tenant" in api.who]


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    api_key: str = Field(min_length=1, max_length=512)


def own_origin(conn: HTTPConnection) -> str:
    """This server's origin as browsers name it: ``CAAS_PUBLIC_URL``'s, else the request's."""
    public = engine(conn).settings.public_url
    if public:
        parts = urlsplit(public)
        return f"{parts.scheme}://{parts.netloc}"
    scheme = {"ws": "http", "wss": "https"}.get(conn.url.scheme, conn.url.scheme)
    return f"{scheme}://{conn.headers.get('host', '')}"


def https(conn: HTTPConnection) -> bool:
    return own_origin(conn).startswith("https://")


def refuse_cross_origin(conn: HTTPConnection) -> None:
    """A browser request from another site (its ``Origin`` or ``Sec-Fetch-Site`` says so): 403."""
    origin = conn.headers.get("origin")
    if origin is not None:
        if origin != own_origin(conn):
            raise ApiError("forbidden", "the console's API answers its own pages only", rule="cross_origin")
    elif conn.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise ApiError("forbidden", "the console's API answers its own pages only", rule="cross_origin")


async def session_of(conn: HTTPConnection) -> tuple[Principal, str]:
    """The session the request's cookie names, and the cookie's value; 401 if none is valid."""
    credential = conn.cookies.get(COOKIE, "")
    if not credential:
        raise ApiError("unauthenticated", "not signed in: POST /console/api/session with an API key")
    node = engine(conn)
    return await node.auth.console_session(credential, node.clock()), credential


def check_csrf(conn: HTTPConnection, credential: str, token: str | None) -> None:
    if not token or not engine(conn).auth.csrf_valid(credential, token):
        raise ApiError("forbidden", f"send the session's anti-CSRF token in {CSRF_HEADER}", rule="csrf")


async def describe(conn: HTTPConnection, who: Principal, credential: str, expires_at: str) -> dict[str, object]:
    state = await engine(conn).service.tenant(who.tenant_id)
    key = state.keys[who.key_id]
    return {
        "tenant_id": who.tenant_id,
        "tenant_name": state.name,
        "key_id": key.key_id,
        "key_name": key.name,
        "expires_at": expires_at,
        "csrf_token": engine(conn).auth.csrf_token(credential),
    }


# --- /console/api/session ----------------------------------------------------------------------
async def sign_in(request: Request) -> Response:
    refuse_cross_origin(request)
    raw = await raw_body(request)
    try:
        data = SignIn.model_validate_json(raw if raw.strip() else b"{}")
    except ValidationError as exc:
        raise validation_error(exc) from None
    node = engine(request)
    now = node.clock()
    who = await node.auth.authenticate(data.api_key, now)
    if who.kind != "tenant":
        raise ApiError("forbidden", "sign in to the console with a tenant API key", rule="wrong_credential")
    await limit(request, who, data.api_key)  # a write of the key: its rate, quota and metering
    session_id = node.short_id("s")
    credential, secret_hash = new_console_session(who.tenant_id, session_id)
    seconds = node.settings.console_session_seconds
    expires_at = format_time(now + timedelta(seconds=seconds))
    command = tenant.OpenConsoleSession(
        session_id=session_id,
        key_id=who.key_id,
        secret_hash=secret_hash,
        opened_at=format_time(now),
        expires_at=expires_at,
    )
    stream = stream_name("tenant", who.tenant_id)
    await execute(request, CommandEnvelope(who.tenant_id, stream, command, actor=who.actor.label))
    response = json(await describe(request, who, credential, expires_at), 201)
    response.set_cookie(
        COOKIE, credential, max_age=seconds, path=COOKIE_PATH, secure=https(request), httponly=True, samesite="strict"
    )
    return response


async def current_session(request: Request) -> Response:
    who, credential = await session_of(request)
    state = await engine(request).service.tenant(who.tenant_id)
    session = state.sessions.get(session_parts(credential)[1])
    if session is None:  # signed out (or pruned) since session_of checked it
        raise Unauthenticated("no such console session (signed out?); sign in again")
    expires_at = session.expires_at
    return json(await describe(request, who, credential, expires_at))


async def sign_out(request: Request) -> Response:
    refuse_cross_origin(request)
    try:
        who, credential = await session_of(request)
    except (ApiError, Unauthenticated) as exc:
        response = error_response(translate(exc))
        response.delete_cookie(COOKIE, path=COOKIE_PATH, secure=https(request), httponly=True, samesite="strict")
        return response
    check_csrf(request, credential, request.headers.get(CSRF_HEADER))
    command = tenant.CloseConsoleSession(session_id=session_parts(credential)[1])
    stream = stream_name("tenant", who.tenant_id)
    await engine(request).service.execute(CommandEnvelope(who.tenant_id, stream, command, actor=who.actor.label))
    response = json({"signed_out": True})
    response.delete_cookie(COOKIE, path=COOKIE_PATH, secure=https(request), httponly=True, samesite="strict")
    return response


# --- /console/api/v1/… -------------------------------------------------------------------------
class ConsoleApi:
    """Pure ASGI middleware: a ``/console/api/v1/…`` request is checked (session, CSRF, origin),
    then routed as the ``/v1/…`` route it names with the session as its tenant credential."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(f"{API_PREFIX}/v1/"):
            await self.app(scope, receive, send)
            return
        target = path[len(API_PREFIX) :]
        request = Request(scope, receive)
        wanted = "GET" if request.method == "HEAD" else request.method  # HEAD is GET without a body, as on /v1
        try:
            if not any(method == wanted and rx.match(target) for method, rx in CONSOLE_ROUTES):
                raise ApiError("not_found", "the console's API has the /v1 routes a tenant API key may call")
            if request.headers.get("authorization") is not None:
                raise ApiError("invalid_request", "the console's API takes its session cookie, not Authorization")
            who, credential = await session_of(request)
            if request.method not in SAFE_METHODS:
                refuse_cross_origin(request)
                check_csrf(request, credential, request.headers.get(CSRF_HEADER))
        except (ApiError, Unauthenticated, DomainError) as exc:
            await error_response(translate(exc))(scope, receive, send)
            return
        forwarded = {**scope, "path": target, "raw_path": target.encode(), CONSOLE_PRINCIPAL: who}
        await self.app(forwarded, receive, send)


# --- WS /console/api/tail ----------------------------------------------------------------------
async def tail(ws: WebSocket) -> None:
    """The tenant's events, live, as they are committed: ``{"type": "ready"}`` once subscribed,
    then ``{"type": "event", "event": {…}}`` per event (the envelope ``GET /v1/events`` lists)."""
    try:
        refuse_cross_origin(ws)
        who, credential = await session_of(ws)
        check_csrf(ws, credential, ws.query_params.get("csrf"))
        await authorize(ws, who, "read_events")  # a live GET /v1/events (docs/abac.md)
    except (ApiError, Unauthenticated, PolicyDenied) as exc:
        await ws.accept()  # then closed with the reason: a refused handshake would tell the page nothing
        await ws.close(POLICY_VIOLATION, reason=str(translate(exc).message)[:120])
        return
    node = engine(ws)
    queue: asyncio.Queue[Event | None] = asyncio.Queue(TAIL_QUEUE)

    def feed(events: Sequence[Event]) -> None:
        for event in events:
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.get_nowait()
                    queue.put_nowait(None)  # overflowed: the page reconnects and reloads
                return

    await ws.accept()
    node.tails.add(who.tenant_id, feed)
    reader = asyncio.ensure_future(_drain(ws))
    session_id = session_parts(credential)[1]
    state = await node.service.tenant(who.tenant_id)
    session = state.sessions.get(session_id)
    expires_at = session.expires_at if session is not None else ""
    loop = asyncio.get_running_loop()
    next_check = loop.time() + RECHECK_SECONDS
    try:
        await ws.send_text('{"type":"ready"}')
        while not reader.done():
            # re-checked on a deadline, busy or idle: steady traffic must not keep a dead session alive
            if loop.time() >= next_check or expires_at <= format_time(node.clock()):
                await node.auth.console_session(credential, node.clock())  # signed out: Unauthenticated
                await authorize(ws, who, "read_events")  # a policy on time.*, on the key's attributes
                next_check = loop.time() + RECHECK_SECONDS
            try:
                event = await asyncio.wait_for(queue.get(), max(0.0, next_check - loop.time()))
            except TimeoutError:
                continue
            if event is None:
                await ws.close(TRY_AGAIN_LATER, reason="the tail fell behind; reconnect")
                return
            if _ends(event, session_id, who.key_id):
                raise Unauthenticated("this console session was signed out or its key revoked; sign in again")
            if event.type in POLICY_EVENTS:
                await authorize(ws, who, "read_events")  # the tenant's policies changed: judged again at once
            await ws.send_text(orjson.dumps({"type": "event", "event": event.model_dump()}).decode())
    except (Unauthenticated, PolicyDenied) as exc:
        await ws.close(POLICY_VIOLATION, reason=str(translate(exc).message)[:120])
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        node.tails.remove(who.tenant_id, feed)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


def _ends(event: Event, session_id: str, key_id: str) -> bool:
    """Whether ``event`` (of the tail's tenant) ends this session: its sign-out, or its key revoked."""
    if event.type == "ConsoleSessionClosed":
        return bool(event.payload.get("session_id") == session_id)
    if event.type == "ApiKeyRevoked":
        return bool(event.payload.get("key_id") == key_id)
    return False


async def _drain(ws: WebSocket) -> None:
    """Reads (and ignores) what the page sends, to notice when it goes away."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return


def console_routes() -> list[BaseRoute]:
    """The portal's own routes (its files are mounted by api/ui.py; its API by :class:`ConsoleApi`)."""
    return [
        Route(f"{API_PREFIX}/session", sign_in, methods=["POST"]),
        Route(f"{API_PREFIX}/session", current_session, methods=["GET"]),
        Route(f"{API_PREFIX}/session", sign_out, methods=["DELETE"]),
        WebSocketRoute(f"{API_PREFIX}/tail", tail),
    ]
