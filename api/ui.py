"""The browser apps ``caas serve`` hosts, and the demo chat's session route.

Each app is a built single-page app (``npm run build`` output) mounted under a path by
:func:`ui_routes`, one line per app. Its pages get their own Content-Security-Policy (scripts,
styles and connections from this origin only) instead of the API's ``default-src 'none'``; an app
that was not built answers ``404 not_found`` saying how to build it.

The demo chat (``/demo``, ``examples/web-chat``) needs end-user tokens. Its session route
``POST /demo/session`` exists only when the server runs with ``--demo`` (``CAAS_DEMO=on``;
``make serve`` sets it): it creates a demo tenant once (its id and API key kept in the data dir,
``demo_tenant.json``, mode 0600), registers the demo users and channels, and answers a user token
for one of the demo users. The browser never sees the admin token nor the tenant's API key: the
route calls this node's own API in-process with them, and hands out only a token of a demo user of
the demo tenant, which can do nothing outside that tenant.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from api.bootstrap import admin_token
from api.errors import ApiError, error_response, validation_error
from api.plumbing import engine, json

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIST = ROOT / "examples" / "web-chat" / "dist"
CONSOLE_DIST = ROOT / "ui" / "console" / "dist"

# The apps' pages: their own scripts, styles and API calls (the websocket too: 'self' covers ws: and
# wss: of this host), images of attachments from any https address, nothing framed, no plugins.
UI_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class BuiltApp(StaticFiles):
    """A built single-page app: its files, ``index.html`` for the app's root, the UI's CSP on every
    answer, long caching for the content-hashed ``assets/`` (a new build has new names)."""

    def __init__(self, dist: Path, name: str, build: str) -> None:
        super().__init__(directory=dist, html=True, check_dir=False)
        self.dist = dist
        self.name = name
        self.build = build

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (self.dist / "index.html").is_file():
            missing = error_response(ApiError("not_found", f"the {self.name} is not built here: {self.build}"))
            await missing(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code == 404:
                return error_response(ApiError("not_found", f"no such file in the {self.name}: {path}"))
            raise
        response.headers["content-security-policy"] = UI_CSP
        immutable = path.startswith("assets/") and response.status_code == 200
        response.headers["cache-control"] = "public, max-age=31536000, immutable" if immutable else "no-cache"
        return response


# --- the demo chat's credentials ------------------------------------------------------------------
DEMO_USERS = {"alice": "Alice Ames", "bob": "Bob Brook", "carol": "Carol Chen"}
DEMO_CHANNELS = {"general": "General", "random": "Random"}
DEMO_TOKEN_TTL = 3600


class DemoSessionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str


@dataclass
class Demo:
    """The demo tenant, made once per data dir and its users and channels once per process."""

    data_dir: Path
    admin: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    credentials: tuple[str, str] | None = None  # tenant id, API key
    ready: bool = False

    @property
    def path(self) -> Path:
        return self.data_dir / "demo_tenant.json"

    async def tenant(self, api: httpx.AsyncClient) -> tuple[str, str]:
        if self.credentials is None and self.path.is_file():
            stored = jsonlib.loads(self.path.read_text())
            self.credentials = (str(stored["tenant_id"]), str(stored["api_key"]))
        if self.credentials is None:
            r = await api.post(
                "/v1/tenants", json={"name": "CAAS demo"}, headers={"authorization": f"Bearer {self.admin}"}
            )
            created = _answer(r, 201)
            self.credentials = (str(created["tenant_id"]), str(created["api_key"]))
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                jsonlib.dump({"tenant_id": self.credentials[0], "api_key": self.credentials[1]}, f)
        return self.credentials

    async def prepare(self, api: httpx.AsyncClient) -> str:
        """The demo tenant's API key, its users and channels in place."""
        _, key = await self.tenant(api)
        headers = {"authorization": f"Bearer {key}"}
        if not self.ready:
            for user_id, name in DEMO_USERS.items():
                _answer(await api.put(f"/v1/users/{user_id}", json={"name": name}, headers=headers), 200, 201)
            for channel_id, name in DEMO_CHANNELS.items():
                body = {"channel_id": channel_id, "name": name, "members": list(DEMO_USERS)}
                retry = {**headers, "idempotency-key": f"caas-demo-channel-{channel_id}"}
                r = await api.post("/v1/channels", json=body, headers=retry)
                if r.status_code != 409:  # made by an earlier process (another idempotency window)
                    _answer(r, 200, 201)
            self.ready = True
        return key

    async def session(self, request: Request, user_id: str) -> dict[str, Any]:
        transport = httpx.ASGITransport(app=request.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://caas.internal", timeout=30) as api:
            async with self.lock:
                key = await self.prepare(api)
            r = await api.post(
                f"/v1/users/{user_id}/tokens",
                json={"ttl_seconds": DEMO_TOKEN_TTL},
                headers={"authorization": f"Bearer {key}"},
            )
            token = _answer(r, 201)["token"]
        return {
            "user_id": user_id,
            "name": DEMO_USERS[user_id],
            "token": token,
            "expires_in": DEMO_TOKEN_TTL,
            "users": [{"user_id": u, "name": n} for u, n in DEMO_USERS.items()],
            "channels": [{"channel_id": c, "name": n} for c, n in DEMO_CHANNELS.items()],
        }


def _answer(r: httpx.Response, *statuses: int) -> dict[str, Any]:
    if r.status_code not in statuses:
        # the body may hold the demo tenant's key or a token: it stays in the server's log, by status only
        request_id = structlog.contextvars.get_contextvars().get("request_id", "")
        structlog.get_logger("caas.demo").error("demo_setup_failed", status=r.status_code, url=str(r.url.path))
        raise ApiError("unavailable", f"the demo could not be set up (request {request_id}); see the server's log")
    data: dict[str, Any] = r.json()
    return data


async def demo_session(request: Request) -> Response:
    """``POST /demo/session`` ``{"user_id": "alice"}``: a token of that demo user (demo mode only)."""
    node = engine(request)
    if node.settings.demo != "on":
        return error_response(
            ApiError("not_found", "the demo is off: start the server with `caas serve --demo` (or CAAS_DEMO=on)")
        )
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return error_response(ApiError("invalid_request", "send the body as application/json"))
    try:
        data = DemoSessionBody.model_validate_json(await request.body())
    except ValidationError as exc:
        return error_response(validation_error(exc))
    if data.user_id not in DEMO_USERS:
        return error_response(
            ApiError("invalid_request", f"the demo users are {', '.join(DEMO_USERS)}", rule="not_a_demo_user")
        )
    demo: Demo | None = getattr(request.app.state, "demo", None)
    if demo is None:
        demo = request.app.state.demo = Demo(node.settings.data_dir, admin_token(node.settings))
    return json(await demo.session(request, data.user_id))


def ui_routes() -> list[BaseRoute]:
    """The browser apps, one line each (the demo's session route before its files)."""
    return [
        Route("/demo/session", demo_session, methods=["POST"]),
        Mount("/demo", BuiltApp(DEMO_DIST, "demo chat", "run `make demo` (examples/web-chat, npm run build)")),
        Mount("/console", BuiltApp(CONSOLE_DIST, "tenant portal", "run `make console` (ui/console, npm run build)")),
    ]
