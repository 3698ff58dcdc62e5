"""The Starlette application: routes, lifespan, error handlers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette._utils import get_route_path
from starlette.applications import Starlette
from starlette.convertors import StringConvertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route, Router, WebSocketRoute
from starlette.types import Receive, Scope, Send

from api.asyncapi import asyncapi, public_server, served, server
from api.bootstrap import Engine, admin_token, build_engine
from api.console import ConsoleApi, console_routes
from api.edge import Edge
from api.errors import ApiError, handle
from api.metrics_port import start_metrics_port
from api.observability import metrics
from api.plumbing import json
from api.routes import ROUTES, openapi
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


class IndexedRouter(Router):
    """Starlette's router, trying first only the routes that can match the path.

    A route whose parameters are all plain segments (``{cid}``: no ``/`` in it) matches only
    paths with as many ``/`` as its own, so the routes are grouped by that count, in their
    order. A full match among them is the one Starlette's scan of every route finds first;
    anything else (a method the path does not take, no such route) goes to that scan, so the
    answers stay Starlette's. The scan tried two dozen regular expressions before the hottest
    route, a message post.
    """

    def __init__(self, routes: list[BaseRoute], **kwargs: Any) -> None:
        super().__init__(routes, **kwargs)
        self._by_slashes: dict[int, list[Route]] | None = {}
        for route in self.routes:
            if isinstance(route, WebSocketRoute):
                continue  # never matches an HTTP request
            plain = isinstance(route, Route) and all(
                type(c) is StringConvertor for c in route.param_convertors.values()
            )
            if not plain or self._by_slashes is None:
                self._by_slashes = None  # a route this index cannot place: scan them all
                break
            assert isinstance(route, Route)
            self._by_slashes.setdefault(route.path.count("/"), []).append(route)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._by_slashes is not None:
            for route in self._by_slashes.get(get_route_path(scope).count("/"), ()):
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.setdefault("router", self)
                    scope["route"] = route
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
        await super().app(scope, receive, send)


class Endpoint:
    """A request handler as a plain ASGI app: the request, the handler's response, nothing between.

    Starlette wraps a function endpoint in an exception handler of its own (a second one, with its
    own ``send`` wrapper, on every request); the app's exception middleware, right outside the
    router, already answers every error these handlers raise (:data:`HANDLERS`).
    """

    __slots__ = ("handler",)

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handler(Request(scope, receive, send))
        await response(scope, receive, send)


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
        admin = None
        try:
            if settings.metrics_port is not None:  # /metrics there only, not on the public port
                tokens = [admin_token(settings), settings.metrics_token]
                admin = await start_metrics_port(settings.metrics_host, settings.metrics_port, tokens, node.scrape)
            yield
        finally:
            if admin is not None:
                admin.close()
            await node.close()

    routes: list[BaseRoute] = [
        Route(api.path, Endpoint(api.handler), methods=[api.method], name=api.endpoint.__name__) for api in ROUTES
    ]
    routes += [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/asyncapi.json", asyncapi_json, methods=["GET"]),
        *([Route("/metrics", metrics, methods=["GET"])] if settings.metrics_port is None else []),
        WebSocketRoute("/v1/ws", websocket_endpoint),
        *console_routes(),  # the tenant portal's session and live tail (api/console.py)
        *ui_routes(),  # the browser apps (api/ui.py)
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=HANDLERS,
        middleware=[  # outermost first
            Middleware(
                Edge,
                refused=lambda: node.limits.refused,
                access_log=settings.access_log,
                trust_traceparent=settings.trace_trust_incoming,
            ),
            Middleware(ConsoleApi),  # /console/api/v1/… as /v1/… with the portal's session (api/console.py)
        ],
    )
    app.router = IndexedRouter(routes, lifespan=lifespan)
    app.state.engine = node
    return app
