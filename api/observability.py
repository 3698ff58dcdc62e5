"""Operations: Prometheus metrics and a metered view of the command side (request ids and the
latency histogram per request are ``api.edge``'s)."""

from __future__ import annotations

import dataclasses
import hmac
import time
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from starlette.requests import Request
from starlette.responses import Response

from api.plumbing import principal
from commands.service import CommandEnvelope, CommandsAround, Outcome
from domain.errors import DomainError
from domain.events import Event

COMMANDS = Counter("caas_commands_total", "Commands handled, by type and outcome", ["command", "outcome"])
COMMAND_SECONDS = Histogram(
    "caas_command_seconds",
    "Time from command received to events durable",
    ["command"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENTS = Counter("caas_events_total", "Events recorded (seen by this node), by type", ["type"])
HTTP_SECONDS = Histogram(
    "caas_http_request_seconds",
    "HTTP request latency by route and status class",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SOCKETS = Gauge("caas_websocket_connections", "Open websocket connections")
SUBSCRIPTIONS = Gauge("caas_websocket_subscriptions", "Channel subscriptions on open sockets")
EARLY_REFUSALS = Counter(
    "caas_http_early_rate_limited_total", "Requests refused 429 before routing (their credential was just refused)"
)
CONNECTIONS_REFUSED = Counter(
    "caas_http_connections_refused_total", "Connections closed on arrival: their client address was at its cap"
)
REQUEST_TIMEOUTS = Counter(
    "caas_http_request_timeouts_total",
    "Connections closed because a request's headers or body arrived too slowly",
    ["phase"],
)
SLOW_CLOSES = Counter("caas_websocket_slow_consumer_closes_total", "Sockets closed with 1013 for falling behind")
LAG = Gauge("caas_projection_lag_events", "Events recorded but not yet in the read models")
PARTITION_LAG = Gauge(
    "caas_projection_partition_lag_events",
    "Events of a partition not yet applied by a projection (as this node sees the log)",
    ["projection", "partition"],
)
STALLED = Gauge(
    "caas_projection_stalled",
    "1 while a projection is behind and its checkpoint has not moved for CAAS_PROJECTION_STALL_SECONDS",
    ["projection", "partition"],
)
HEAD = Gauge("caas_log_head_position", "Position of the newest event this node knows")

# The id of the HTTP request being served (``api.edge``), as bound into its log lines: the
# correlation id of the commands it runs (read from here, not by scanning the log context).
REQUEST_ID: ContextVar[str | None] = ContextVar("caas_request_id", default=None)
_children: dict[tuple[str, ...], Any] = {}


def labelled(metric: MetricWrapperBase, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered: the same child the client library returns, without
    its label validation and lock on every request."""
    key = (metric._name, *labels)  # the metric's name tells the metrics apart
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def record_projections(status: dict[str, Any]) -> None:
    """Export a runner's status (``projection_lag_events`` and, per projection and partition,
    ``lag_events`` and ``stalled_seconds``) as gauges."""
    LAG.set(status.get("projection_lag_events", 0))
    for entry in status.get("projections", []):
        labels = (entry["projection"], str(entry["partition"]))
        PARTITION_LAG.labels(*labels).set(entry["lag_events"])
        STALLED.labels(*labels).set(1 if entry["stalled_seconds"] is not None else 0)


def count_events(events: Sequence[Event]) -> None:
    for event in events:
        labelled(EVENTS, event.type).inc()


class MeteredCommands(CommandsAround):
    """The command side with counters and latency histograms around every command."""

    async def execute(self, envelope: CommandEnvelope) -> Outcome:
        name = type(envelope.command).__name__
        started = time.perf_counter()
        outcome = "unavailable"
        try:
            if envelope.correlation_id is None and (request_id := REQUEST_ID.get()) is not None:
                envelope = dataclasses.replace(envelope, correlation_id=request_id)
            result = await self.inner.execute(envelope)
            outcome = "replayed" if result.replayed else "recorded"
            return result
        except DomainError:
            outcome = "rejected"
            raise
        finally:
            labelled(COMMANDS, name, outcome).inc()
            labelled(COMMAND_SECONDS, name).observe(time.perf_counter() - started)


async def metrics(request: Request) -> Response:
    """Prometheus text, for the admin token or ``CAAS_METRICS_TOKEN`` (a scraper needs no more
    than this): the counters span every tenant."""
    node = request.app.state.engine
    scrape_token = node.settings.metrics_token
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    given = credential.strip().encode()
    if not (scrape_token and scheme.lower() == "bearer" and hmac.compare_digest(given, scrape_token.encode())):
        await principal(request, "admin")
    status = await node.backend.status()
    HEAD.set(status["head_position"])
    record_projections(status)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
