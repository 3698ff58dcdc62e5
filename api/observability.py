"""Operations: Prometheus metrics and a metered view of the command side (request ids and the
latency histogram per request are ``api.edge``'s)."""

from __future__ import annotations

import dataclasses
import hmac
import time
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from api.plumbing import principal
from api.tenant_metrics import TENANTS
from commands.service import CommandEnvelope, CommandsAround, Outcome
from domain.errors import DomainError
from domain.events import Event
from streams.projector import PARKED

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
for _phase in ("headers", "body"):  # both series exist from the start (an alert's increase() needs them)
    REQUEST_TIMEOUTS.labels(_phase)
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
CONSUMER_LAG = Gauge(
    "caas_consumer_lag_messages",
    "Records of a partition not yet processed by a consumer of this process (deciders, projectors, node)",
    ["consumer", "partition"],
)
DECIDER_STALLED = Gauge(
    "caas_decider_stalled",
    "1 while a partition's deciders have commands waiting and have decided none for CAAS_PROJECTION_STALL_SECONDS",
    ["partition"],
)
PROCESSOR_UP = Gauge("caas_processor_up", "1 while a processor of this process runs", ["processor"])
PROCESSOR_AGE = Gauge(
    "caas_processor_progress_age_seconds",
    "Seconds since a processor last made progress (0 while it has nothing to do)",
    ["processor"],
)


class ParkedEvents(Collector):
    """``caas_projection_parked_events_total``: events a projection of this process could not
    apply and went past (``streams.projector.PARKED``)."""

    def collect(self) -> Any:
        family = CounterMetricFamily(
            "caas_projection_parked_events",
            "Events a projection could not apply and parked (logged as projection_parked)",
            labels=["projection"],
        )
        for projection, count in sorted(PARKED.items()):
            family.add_metric([projection], count)
        yield family


REGISTRY.register(TENANTS)
REGISTRY.register(ParkedEvents())

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


def record_status(status: dict[str, Any]) -> None:
    """Export a process's status as gauges: what it has of ``head_position``,
    ``projection_lag_events``, ``projections`` (per projection and partition: ``lag_events``,
    ``stalled_seconds``), ``consumers`` (``consumer``, ``partition``, ``lag``), ``deciders``
    (per partition, as ``projections``) and ``processors`` (``processor``, ``up``,
    ``progress_age_seconds``). A partition or processor no longer in it is no longer exported."""
    if "head_position" in status:
        HEAD.set(status["head_position"])
    if "projection_lag_events" in status:
        LAG.set(status["projection_lag_events"])
    if "projections" in status:
        PARTITION_LAG.clear()
        STALLED.clear()
        for entry in status["projections"]:
            labels = (entry["projection"], str(entry["partition"]))
            PARTITION_LAG.labels(*labels).set(entry["lag_events"])
            STALLED.labels(*labels).set(1 if entry["stalled_seconds"] is not None else 0)
    if "consumers" in status:
        CONSUMER_LAG.clear()
        for entry in status["consumers"]:
            CONSUMER_LAG.labels(entry["consumer"], str(entry["partition"])).set(entry["lag"])
    if "deciders" in status:
        DECIDER_STALLED.clear()
        for entry in status["deciders"]:
            DECIDER_STALLED.labels(str(entry["partition"])).set(1 if entry["stalled_seconds"] is not None else 0)
    if "processors" in status:
        PROCESSOR_UP.clear()
        PROCESSOR_AGE.clear()
        for entry in status["processors"]:
            PROCESSOR_UP.labels(entry["processor"]).set(1 if entry["up"] else 0)
            PROCESSOR_AGE.labels(entry["processor"]).set(round(entry["progress_age_seconds"], 3))


def scrape_allowed(authorization: str, tokens: Sequence[str | None]) -> bool:
    """Whether ``authorization`` is ``Bearer <one of tokens>`` (compared in constant time)."""
    scheme, _, credential = authorization.partition(" ")
    given = credential.strip().encode()
    found = False
    for token in tokens:
        if token and scheme.lower() == "bearer" and hmac.compare_digest(given, token.encode()):
            found = True
    return found


def exposition() -> bytes:
    """Every metric of this process, in Prometheus text."""
    return generate_latest()


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
            if not envelope.correlation_id and (request_id := REQUEST_ID.get()) is not None:
                envelope = dataclasses.replace(envelope, correlation_id=request_id)
            result = await self.inner.execute(envelope)
            outcome = "replayed" if result.replayed else "recorded"
            if not result.replayed:
                for event in result.events:
                    if event.type == "MessagePosted":
                        TENANTS.of(envelope.tenant_id).messages += 1
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
    if not scrape_allowed(request.headers.get("authorization", ""), [node.settings.metrics_token]):
        await principal(request, "admin")
    return Response(await node.scrape(), media_type=CONTENT_TYPE_LATEST)
