"""Distributed tracing: OpenTelemetry spans exported over OTLP/HTTP, one trace per command.

Off unless the environment names an exporter (:func:`enabled_by`): then :data:`ON` is false and
every hook below returns before it builds anything, so the hot path creates no span objects.
Callers test ``tracing.ON`` (an attribute read) before they build names or attributes.

A command's trace (docs/operations-tracing.md)::

    HTTP POST /v1/...            caas-node      (api/edge.py; a root, or the trusted caller's child)
      command PostMessage        caas-node      (TracedCommands)
        sqlite.commit            caas-node      embedded: the group commit that made it durable
        kafka.produce commands   caas-node      Kafka: the request to the deciders
          decide PostMessage     caas-decider   (its consumer of the command topic)
            kafka.produce events caas-decider   until the broker acknowledged the events
      project                    caas-projector the read-model batch that applied the events
        store.apply <model>      caas-projector one store write (SQLite or MongoDB)
      ws.deliver                 caas-node      the events handed to this node's sockets (every node)

The context crosses processes as a W3C ``traceparent``: in a ``traceparent`` header of the
command and event records on Kafka, and in the recorded event itself (:attr:`Event.traceparent`,
kept by both logs, never in the public event JSON), so whatever reads the log later (a
projector, every node's fan-out) continues the trace of the command that caused the event.

Service names: ``caas-node`` (``caas serve``), ``caas-decider`` and ``caas-projector`` (``caas
worker``; the embedded backend's projector runs in ``caas serve`` and is ``caas-projector``
too); ``OTEL_SERVICE_NAME`` replaces the ``caas`` prefix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags, Tracer

from adapters.ids import random_hex
from commands.ports import Listener
from commands.service import CommandEnvelope, CommandsAround, Outcome
from domain.events import Event

if TYPE_CHECKING:  # the SDK is imported only by a process that traces (configure)
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler

ON = False  # set by configure(): every hook checks it first
NODE, DECIDER, PROJECTOR = "node", "decider", "projector"
TRACEPARENT = "traceparent"  # the W3C header, and its name in Kafka record headers

_providers: dict[str, TracerProvider] = {}
_tracers: dict[str, Tracer] = {}
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


# --- configuration ----------------------------------------------------------------------------
def enabled_by(env: Mapping[str, str]) -> bool:
    """Whether ``env`` turns tracing on: an OTLP endpoint is named (``OTEL_EXPORTER_OTLP_ENDPOINT``
    or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), or ``OTEL_TRACES_EXPORTER`` names an exporter
    (``otlp``, ``console``); ``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true`` keep it off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def _endpoint(env: Mapping[str, str]) -> str:
    """Where OTLP/HTTP traces go, by the OpenTelemetry rules for the two variables."""
    traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318"
    return base.rstrip("/") + "/v1/traces"


def sampler_of(env: Mapping[str, str]) -> Sampler:
    """``OTEL_TRACES_SAMPLER`` (and ``OTEL_TRACES_SAMPLER_ARG``), as the SDK reads them; by default
    every trace is kept unless the caller's ``traceparent`` says it was not sampled."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, TraceIdRatioBased

    name = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    try:
        ratio = float(env.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
    except ValueError:
        ratio = 1.0
    root: Sampler = {"always_on": ALWAYS_ON, "always_off": ALWAYS_OFF}.get(
        name.removeprefix("parentbased_"), TraceIdRatioBased(ratio)
    )
    return ParentBased(root) if name.startswith("parentbased_") else root


def _exporter(env: Mapping[str, str]) -> SpanExporter:
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=_endpoint(env))


def configure(env: Mapping[str, str], roles: Sequence[str]) -> bool:
    """Turn tracing on for this process if ``env`` asks for it (:func:`enabled_by`): one tracer
    provider per role (its own ``service.name``), exporting in batches from a background thread."""
    global ON
    if not enabled_by(env):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    prefix = env.get("OTEL_SERVICE_NAME") or "caas"
    sampler = sampler_of(env)
    instance = f"{socket.gethostname()}-{os.getpid()}"  # tells apart the nodes (and workers) of one service
    for role in roles:
        if role in _providers:
            continue
        provider = TracerProvider(
            sampler=sampler,
            resource=Resource.create(
                {"service.name": f"{prefix}-{role}", "service.namespace": "caas", "service.instance.id": instance}
            ),
            shutdown_on_exit=False,  # shutdown() flushes: at exit, the exporter's thread may be gone
        )
        provider.add_span_processor(BatchSpanProcessor(_exporter(env)))
        _providers[role] = provider
        _tracers[role] = provider.get_tracer("caas")
    ON = True
    return True


def shutdown() -> None:
    """Export what is buffered and stop (a process that ends; spans after this are dropped)."""
    global ON
    ON = False
    for provider in _providers.values():
        provider.shutdown()
    _providers.clear()
    _tracers.clear()


def use_provider(role: str, provider: TracerProvider) -> None:
    """Trace ``role`` with a provider of the caller's (a test's in-memory exporter)."""
    global ON
    _providers[role] = provider
    _tracers[role] = provider.get_tracer("caas")
    ON = True


def tracer(role: str) -> Tracer:
    return _tracers.get(role) or trace.NoOpTracer()


# --- traceparent ------------------------------------------------------------------------------
def traceparent(span: Span) -> str | None:
    """The W3C ``traceparent`` that makes ``span`` the parent of what another process does."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def current_traceparent() -> str | None:
    return traceparent(trace.get_current_span())


def context_of(value: str | bytes | None) -> Context | None:
    """The parent context a ``traceparent`` names (``None``: missing or malformed)."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    match = _TRACEPARENT.match(text.strip().lower())
    if match is None or match[1] == "0" * 32 or match[2] == "0" * 16:
        return None
    parent = SpanContext(int(match[1], 16), int(match[2], 16), True, TraceFlags(int(match[3], 16)))
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def header_value(headers: Sequence[tuple[str, bytes]] | None) -> bytes | None:
    """The ``traceparent`` of Kafka record headers."""
    for key, value in headers or ():
        if key == TRACEPARENT:
            return value
    return None


def kafka_headers(value: str | None) -> list[tuple[str, bytes]]:
    return [] if value is None else [(TRACEPARENT, value.encode())]


def log_ids(header: bytes | None) -> tuple[str, str]:
    """``(trace_id, span_id)`` for a request's log lines while tracing is off: the caller's trace
    id if it sent a valid ``traceparent`` (so its lines join the caller's trace), else a fresh
    one; a fresh span id."""
    span_id = random_hex()[:16]
    if header is not None:
        match = _TRACEPARENT.match(header.decode("latin-1").strip().lower())
        if match is not None and match[1] != "0" * 32:
            return match[1], span_id
    return random_hex(), span_id


# --- spans ------------------------------------------------------------------------------------
@contextlib.contextmanager
def span(
    role: str,
    name: str,
    *,
    parent: str | bytes | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span of ``role``, current inside the block: a child of ``parent`` (a ``traceparent``)
    if given, else of the current span. An exception leaves it with an error status."""
    context = context_of(parent) if parent is not None else None
    with tracer(role).start_as_current_span(name, context=context, kind=kind, attributes=attributes) as current:
        yield current


def producing(role: str, topic: str, parent: str | None = None) -> Span:
    """A producer span for records sent to ``topic``, a child of ``parent`` (a ``traceparent``)
    or else of the current span; the caller ends it once the broker acknowledged them."""
    return tracer(role).start_span(
        f"kafka.produce {topic}",
        context=context_of(parent),
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "kafka", "messaging.destination.name": topic},
    )


def _ids(span: Span) -> tuple[str, str]:
    ctx = span.get_span_context()
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


class Request:
    """The server span of one HTTP request (``api/edge.py``), current until :meth:`end`."""

    __slots__ = ("ids", "span", "token")

    def __init__(self, method: str, path: str, header: bytes | None, *, trust: bool) -> None:
        """``header``: the client's ``traceparent``. Trusted (``trust``), it is the span's parent,
        whose sampled flag decides. Otherwise the span is a new root (the sampler decides as for
        any root) and the client's context is only a link and the ``caas.client_traceparent``
        attribute: a client can neither force sampling nor join a trace it names."""
        client = context_of(header)
        attributes: dict[str, Any] = {"http.request.method": method, "url.path": path}
        links: list[trace.Link] = []
        if client is not None and not trust:
            given = trace.get_current_span(client).get_span_context()
            links.append(trace.Link(given))
            attributes["caas.client_traceparent"] = header.decode("latin-1").strip() if header else ""
        self.span = tracer(NODE).start_span(
            f"HTTP {method}",
            context=client if trust else otel_context.Context(),
            kind=SpanKind.SERVER,
            attributes=attributes,
            links=links,
        )
        self.token: Token[Context] = otel_context.attach(trace.set_span_in_context(self.span))
        self.ids = _ids(self.span)

    def end(self, method: str, route: str, status: int, tenant_id: str | None) -> None:
        self.span.update_name(f"HTTP {method} {route}")
        self.span.set_attribute("http.route", route)
        self.span.set_attribute("http.response.status_code", status)
        if tenant_id is not None:
            self.span.set_attribute("caas.tenant_id", tenant_id)
        if status >= 500:
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()
        otel_context.detach(self.token)


# Spans of the batch being applied, by the traceparent of the events they continue: a nested
# batch (one read model's store write inside the projector's batch) is their child.
_BATCH: ContextVar[dict[str, Span] | None] = ContextVar("caas_trace_batch", default=None)


class Batch:
    """Spans around work done for many events at once (a group commit, a read-model batch): one
    span per trace among ``traceparents`` (usually one per command in the batch), each a child of
    its command's span, or of the enclosing batch's span of the same trace. Use only when
    :data:`ON`."""

    def __init__(
        self, role: str, name: str, traceparents: Sequence[str | None], attributes: Mapping[str, Any] | None = None
    ) -> None:
        self.role, self.name, self.attributes = role, name, attributes
        self.traceparents = list(dict.fromkeys(tp for tp in traceparents if tp is not None))
        self.spans: dict[str, Span] = {}
        self._token: Token[dict[str, Span] | None] | None = None

    def __enter__(self) -> Batch:
        outer = _BATCH.get() or {}
        start = tracer(self.role).start_span
        for value in self.traceparents:
            around = outer.get(value)
            parent = trace.set_span_in_context(around) if around is not None else context_of(value)
            if parent is not None:
                self.spans[value] = start(self.name, context=parent, attributes=self.attributes)
        self._token = _BATCH.set(self.spans)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self._token is not None:
            _BATCH.reset(self._token)
        for each in self.spans.values():
            if exc is not None:
                each.record_exception(exc)
                each.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            each.end()


class Traced(Protocol):
    """Anything that keeps the ``traceparent`` of the command behind it (events, new or recorded)."""

    @property
    def traceparent(self) -> str | None: ...


UNTRACED = contextlib.nullcontext()  # reusable: what every hook returns while tracing is off


def of_events(
    role: str, name: str, events: Sequence[Traced], **attributes: Any
) -> contextlib.AbstractContextManager[Any]:
    """A :class:`Batch` over the traces of ``events`` (nothing when tracing is off)."""
    if not ON:
        return UNTRACED
    named = {f"caas.{key}": value for key, value in attributes.items()}
    return Batch(role, name, [event.traceparent for event in events], {"caas.events": len(events), **named})


def projector_spans(name: str, events: Sequence[Event]) -> contextlib.AbstractContextManager[Any]:
    """The embedded projection runner's hook (:class:`streams.projector.ProjectionRunner`)."""
    return of_events(PROJECTOR, name, events)


# --- decorators the composition root applies when tracing is on ----------------------------------
class TracedCommands(CommandsAround):
    """The command side with a span per command, whose ``traceparent`` the command's events keep."""

    async def execute(self, envelope: CommandEnvelope) -> Outcome:
        name = type(envelope.command).__name__
        attributes = {"caas.command": name, "caas.tenant_id": envelope.tenant_id, "caas.stream": envelope.stream}
        with span(NODE, f"command {name}", attributes=attributes) as current:
            envelope = dataclasses.replace(envelope, traceparent=traceparent(current))
            outcome = await self.inner.execute(envelope)
            current.set_attribute("caas.events", len(outcome.events))
            current.set_attribute("caas.replayed", outcome.replayed)
            return outcome


def delivering(listener: Listener) -> Listener:
    """``listener`` (a node's websocket hub) with a ``ws.deliver`` span per trace of each batch
    it is handed; ``listener`` itself when tracing is off."""
    if not ON:
        return listener

    def deliver(events: Sequence[Event]) -> None:
        with of_events(NODE, "ws.deliver", events):
            listener(events)

    return deliver
