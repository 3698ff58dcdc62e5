"""The Starlette application: routes, lifespan, error handlers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from api.asyncapi import asyncapi, public_server, served, server
from api.bootstrap import Engine, build_engine
from api.console import ConsoleApi, console_routes
from api.errors import ApiError, handle
from api.limits import RefuseLimited
from api.observability import RequestContext, metrics
from api.plumbing import json
from api.routes import ROUTES, openapi
from api.security import SecurityHeaders
from api.settings import Settings
from api.ui import ui_routes
from api.ws import websocket_endpoint
from commands.auth import Unauthenticated
from commands.ports import PersistenceError
from commands.quotas import PaymentRequired, QuotaExceeded
from domain.errors import DomainError
from projections.ports import ReadStoreUnavailable

# ``Exception`` goes to Starlette's outermost middleware, which answers and then re-raises for
# the server to log as a crash; every other class here is answered and done with
HANDLERS = {
    cls: handle
    for cls in (ApiError, DomainError, Unauthenticated, PersistenceError, ReadStoreUnavailable, ValidationError,
                HTTPException, ClientDisconnect, QuotaExceeded, PaymentRequired, Exception)
}  # fmt: skip


def create_app(settings: Settings, engine: Engine | None = None) -> Starlette:
    node = engine or build_engine(settings)
    document = openapi()
    frames = asyncapi()  # built once: generating it costs milliseconds, and the route is public
    public = public_server(settings.public_url) if settings.public_url else None

    async def openapi_json(request: Request) -> Response:
        return json(document)

    async def asyncapi_json(request: Request) -> Response:
        where = public or server(request.headers.get("host") or "localhost", request.url.scheme)
        return json(served(frames, where))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            await node.close()

    routes: list[BaseRoute] = [Route(api.path, api.handler, methods=[api.method]) for api in ROUTES]
    routes += [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/asyncapi.json", asyncapi_json, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        WebSocketRoute("/v1/ws", websocket_endpoint),
        *console_routes(),  # the tenant portal's session and live tail (api/console.py)
        *ui_routes(),  # the browser apps (api/ui.py)
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=HANDLERS,
        middleware=[  # outermost first: a repeat of a refused credential costs the node least
            Middleware(RefuseLimited, refused=lambda: node.limits.refused),
            Middleware(RequestContext, access_log=settings.access_log),
            Middleware(SecurityHeaders),
            Middleware(ConsoleApi),  # /console/api/v1/… as /v1/… with the portal's session (api/console.py)
        ],
    )
    app.state.engine = node
    return app
