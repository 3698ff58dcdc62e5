"""How a trace's context travels (adapters/tracing.py): through Kafka record values and headers,
through the SQLite log and its older files, through the command wire, and into spans parented
as the command's path; while tracing is off, nothing of the SDK is touched. Spans are read from
the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import structlog
import structlog.testing
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.types import Message, Receive, Scope, Send

from adapters import tracing
from adapters.kafka.codec import event_from_record, event_value
from adapters.kafka.wire import CommandRequest, decode_request, request_from
from adapters.sqlite_log import SqliteEventLog
from api.edge import Edge
from api.limits import Refused
from commands.ports import NewEvent
from commands.service import CommandEnvelope
from domain.base import Actor
from domain.channel import PostMessage
from domain.events import Event

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def recorded(traceparent: str | None) -> Event:
    return Event(
        event_id="e1", tenant_id="t1", stream="channel:c1", seq=1, position=1, type="MessagePosted",
        schema_version=1, occurred_at="2026-12-03T00:00:00Z", payload={"text": "hi"}, traceparent=traceparent,
    )  # fmt: skip


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    for role in (tracing.NODE, tracing.DECIDER, tracing.PROJECTOR):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracing.use_provider(role, provider)
    yield exporter
    tracing.shutdown()


def test_the_public_event_json_never_shows_the_traceparent() -> None:
    event = recorded(PARENT)
    assert "traceparent" not in event.model_dump() and "traceparent" not in event.model_dump_json()


def test_a_kafka_record_keeps_the_traceparent_and_an_old_record_reads_as_untraced() -> None:
    assert event_from_record(event_value(recorded(PARENT)), 0, 7).traceparent == PARENT
    untraced = event_value(recorded(None))
    assert b"traceparent" not in untraced  # records of untraced commands are as they were
    old = orjson.loads(untraced)
    assert event_from_record(orjson.dumps(old), 0, 7).traceparent is None


def test_a_command_request_carries_its_traceparent_to_the_decider() -> None:
    command = PostMessage(
        actor=Actor("user", "u1"), message_id="m1", author_id="u1", text="hi", now="2026-12-03T00:00:00Z"
    )
    envelope = CommandEnvelope("t1", "channel:c1", command, actor="user:u1", command_id="c", traceparent=PARENT)
    _, _, message = decode_request(CommandRequest("r1", "node-1", envelope).encode())
    assert request_from(message).envelope.traceparent == PARENT
    plain = CommandRequest("r1", "node-1", CommandEnvelope("t1", "channel:c1", command, actor=None, command_id="c"))
    assert b"traceparent" not in plain.encode()


def new_event(seq: int, traceparent: str | None) -> NewEvent:
    return NewEvent(
        event_id=f"e{seq}", seq=seq, type="MessagePosted", schema_version=1, occurred_at="2026-12-03T00:00:00Z",
        actor=None, command_id=None, causation_id=None, correlation_id=None, payload={"text": "hi"},
        traceparent=traceparent,
    )  # fmt: skip


def test_the_sqlite_log_keeps_the_traceparent_and_opens_files_written_before_it(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    old = sqlite3.connect(path)  # the schema before tracing, with one event in it
    old.execute(
        "CREATE TABLE events (position INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, stream TEXT NOT NULL, "
        "seq INTEGER NOT NULL, event_id TEXT NOT NULL, type TEXT NOT NULL, schema_version INTEGER NOT NULL, "
        "occurred_at TEXT NOT NULL, actor TEXT, command_id TEXT, causation_id TEXT, correlation_id TEXT, "
        "payload TEXT NOT NULL, UNIQUE (tenant_id, stream, seq))"
    )
    old.execute(
        "INSERT INTO events VALUES (1, 't1', 'channel:c1', 1, 'e1', 'MessagePosted', 1, 'x', NULL, NULL, NULL, "
        'NULL, \'{"text": "old"}\')'
    )
    old.commit()
    old.close()

    async def scenario() -> list[Event]:
        log = SqliteEventLog(path)
        await log.start()
        try:
            await log.append("t1", "channel:c1", 1, [new_event(2, PARENT)])
            return await log.read_stream("t1", "channel:c1")
        finally:
            await log.close()

    events = asyncio.run(scenario())
    assert [(e.seq, e.traceparent) for e in events] == [(1, None), (2, PARENT)]
    assert events[0].payload["text"] == "old"  # (a MessagePosted of v1, read upcast: mentions added)


@given(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.sampled_from([0, 1]))
def test_a_traceparent_names_the_context_it_was_made_from(trace_id: int, span_id: int, flags: int) -> None:
    value = f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
    context = tracing.context_of(value)
    assert context is not None
    from opentelemetry import trace

    assert tracing.traceparent(trace.get_current_span(context)) == value


@pytest.mark.parametrize(
    "value", [None, "", "garbage", "00-" + "0" * 32 + "-b7ad6b7169203331-01", "00-abc-def-01", PARENT + "x"]
)
def test_a_missing_or_malformed_traceparent_starts_a_new_trace(value: str | None) -> None:
    assert tracing.context_of(value) is None


def test_kafka_headers_carry_the_traceparent() -> None:
    headers = [("caas-reply", b"node r 1"), *tracing.kafka_headers(PARENT)]
    assert tracing.header_value(headers) == PARENT.encode()
    assert tracing.kafka_headers(None) == [] and tracing.header_value(None) is None


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
    ],
)
def test_tracing_is_off_unless_the_environment_names_an_exporter(env: dict[str, str], on: bool) -> None:
    assert tracing.enabled_by(env) is on


def test_log_ids_take_the_callers_trace_id_else_a_fresh_one() -> None:
    trace_id, span_id = tracing.log_ids(PARENT.encode())
    assert trace_id == PARENT.split("-")[1] and len(span_id) == 16 and span_id != PARENT.split("-")[2]
    fresh = tracing.log_ids(None)
    assert len(fresh[0]) == 32 and len(fresh[1]) == 16 and fresh != tracing.log_ids(None)
    assert tracing.log_ids(b"garbage")[0] != "garbage"


def test_batch_spans_continue_each_commands_trace_and_nest(spans: InMemorySpanExporter) -> None:
    other = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    events = [recorded(PARENT), recorded(other), recorded(PARENT), recorded(None)]
    with (
        tracing.of_events(tracing.PROJECTOR, "project", events),
        tracing.of_events(tracing.PROJECTOR, "store.apply chat", events[:2]),
    ):
        pass
    finished = spans.get_finished_spans()
    by_trace = {(s.name, f"{s.context.trace_id:032x}"): s for s in finished}
    assert len(finished) == 4  # one span per trace and step; the untraced event adds none
    for traceparent in (PARENT, other):
        _, trace_id, parent_id, _ = traceparent.split("-")
        outer, inner = by_trace[("project", trace_id)], by_trace[("store.apply chat", trace_id)]
        assert outer.parent is not None and f"{outer.parent.span_id:016x}" == parent_id
        assert inner.parent is not None and inner.parent.span_id == outer.context.span_id
        assert outer.attributes is not None and outer.attributes["caas.events"] == 4


def test_a_decider_continues_the_header_trace_and_its_events_keep_the_decide_span(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.span(tracing.DECIDER, "decide PostMessage", parent=PARENT.encode()) as current:
        kept = tracing.traceparent(current)
    [decide] = spans.get_finished_spans()
    assert decide.parent is not None and f"{decide.parent.span_id:016x}" == PARENT.split("-")[2]
    assert kept == f"00-{decide.context.trace_id:032x}-{decide.context.span_id:016x}-01"


PROBE = """
import asyncio, pathlib, sys, tempfile
import httpx
from api.app import create_app
from api.settings import Settings

calls = []  # every call into OpenTelemetry's code while requests are served

def profile(frame, event, arg):
    if event == "call" and "opentelemetry" in frame.f_code.co_filename:
        calls.append(frame.f_code.co_qualname)

async def main() -> None:
    data = pathlib.Path(tempfile.mkdtemp())
    app = create_app(Settings.from_env({"CAAS_DATA_DIR": str(data), "CAAS_ADMIN_TOKEN": "admin"}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://caas") as c:
            r = await c.post("/v1/tenants", json={"name": "a"}, headers={"authorization": "Bearer admin"})
            key = {"authorization": "Bearer " + r.json()["api_key"]}
            await c.put("/v1/users/ann", json={"name": "ann"}, headers=key)
            r = await c.post("/v1/channels", json={"channel_id": "c1", "name": "c1", "members": ["ann"]}, headers=key)
            assert r.status_code == 201, r.text
            sys.setprofile(profile)
            threading.setprofile_all_threads(profile) if hasattr(threading, "setprofile_all_threads") else None
            for i in range(20):
                r = await c.post("/v1/channels/c1/messages", json={"text": str(i), "user_id": "ann"},
                                 headers={**key, "traceparent": "%s"})
                assert r.status_code == 201, r.text
            r = await c.get("/v1/channels/c1/messages", headers=key)
            assert len(r.json()["messages"]) == 20, r.text
            sys.setprofile(None)
    print(len(calls), "opentelemetry.sdk" in sys.modules, sorted(set(calls))[:5])

import threading
asyncio.run(main())
"""


def test_with_tracing_off_requests_run_no_opentelemetry_code_and_load_no_sdk(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE % PARENT], capture_output=True, text=True, timeout=120, cwd=Path.cwd(),
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0 False []", done.stdout  # no OpenTelemetry code ran at all


def serve_one(trust: bool, traceparent: str) -> str:
    """One request through the edge (api/edge.py) with a client's ``traceparent``: the
    ``trace_id`` its log lines carry."""
    seen: dict[str, str] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen["trace_id"] = structlog.contextvars.get_contextvars()["trace_id"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def sent(message: Message) -> None:
        pass

    async def nothing() -> Message:
        return {"type": "http.request", "body": b""}

    edge = Edge(app, refused=lambda: pytest.fail("no credential was sent"), trust_traceparent=trust)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/channels",
        "headers": [(b"traceparent", traceparent.encode())],
    }
    asyncio.run(edge(scope, nothing, sent))
    return seen["trace_id"]


def root_sampler_spans(ratio: float) -> InMemorySpanExporter:
    """The node traced as ``parentbased_traceidratio`` at ``ratio`` would, into memory."""
    exporter = InMemorySpanExporter()
    env = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": str(ratio)}
    provider = TracerProvider(sampler=tracing.sampler_of(env))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(tracing.NODE, provider)
    return exporter


def test_an_untrusted_client_traceparent_is_a_link_of_a_new_root_span_and_not_the_log_trace() -> None:
    _, client_trace, client_span, _ = PARENT.split("-")
    try:
        spans = root_sampler_spans(1.0)
        trace_id = serve_one(False, PARENT)
        (span,) = spans.get_finished_spans()
        assert span.parent is None and f"{span.context.trace_id:032x}" == trace_id != client_trace
        assert [(f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") for link in span.links] == [
            (client_trace, client_span)
        ]
        assert span.attributes is not None and span.attributes["caas.client_traceparent"] == PARENT
    finally:
        tracing.shutdown()
    assert serve_one(False, PARENT) != client_trace  # tracing off: the log ids are the server's too


def test_an_untrusted_sampled_flag_does_not_force_sampling_and_a_trusted_one_does() -> None:
    try:
        spans = root_sampler_spans(0.0)  # keeps no root
        serve_one(False, PARENT)
        assert spans.get_finished_spans() == ()
        assert serve_one(True, PARENT) == PARENT.split("-")[1]
        (span,) = spans.get_finished_spans()
        assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT.split("-")[2]
    finally:
        tracing.shutdown()
    assert serve_one(True, PARENT) == PARENT.split("-")[1]  # tracing off: the trusted caller's trace id


@pytest.mark.parametrize("access_log", [True, False])
def test_an_early_429_gets_an_access_line_with_its_request_id_when_access_lines_are_on(access_log: bool) -> None:
    refused = Refused()
    refused.note("Bearer k1", False, "tenant", time.monotonic() + 60, 10, time.monotonic() + 60)
    statuses: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        pytest.fail("an early refusal is answered before routing")

    async def sent(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def nothing() -> Message:
        return {"type": "http.request", "body": b""}

    edge = Edge(app, refused=lambda: refused, access_log=access_log)
    headers = [(b"authorization", b"Bearer k1"), (b"x-request-id", b"req-flood")]
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as lines:
        asyncio.run(edge({"type": "http", "method": "GET", "path": "/v1/channels", "headers": headers}, nothing, sent))
    assert statuses == [429]
    access = [line for line in lines if line["event"] == "request"]
    if not access_log:
        assert access == []
        return
    assert [(line["status"], line["route"], line["early"]) for line in access] == [(429, "unmatched", True)]
    (line,) = access
    assert line["request_id"] == "req-flood" and line["tenant_id"] is None and len(line["trace_id"]) == 32
