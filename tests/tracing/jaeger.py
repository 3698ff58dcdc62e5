"""Jaeger for tests: the one ``infra/services up --with-jaeger`` started (``CAAS_JAEGER_OTLP``,
``CAAS_JAEGER_QUERY``), started here if the test command did not; and reading a trace back."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tests.cluster import SERVICES

NAMES = ("CAAS_JAEGER_OTLP", "CAAS_JAEGER_QUERY")


def jaeger_env() -> dict[str, str]:
    """Where Jaeger takes and serves traces; started (and built, the first time) if need be:
    the tracing tests never skip."""
    if not all(os.environ.get(name) for name in NAMES):
        out = subprocess.run(
            [str(SERVICES), "up", "jaeger"], check=True, capture_output=True, text=True, timeout=3600
        ).stdout
        for line in out.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            if name in NAMES:
                os.environ[name] = value.strip().strip("'\"")
    return {name: os.environ[name] for name in NAMES}


def traced_env(prefix: str) -> dict[str, str]:
    """A server's settings that turn tracing on, to the test Jaeger, under service names of
    ``prefix`` (so a test's services are its own), exporting every 100 ms."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger_env()["CAAS_JAEGER_OTLP"],
        "OTEL_SERVICE_NAME": prefix,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "CAAS_TRACE_TRUST_INCOMING": "true",  # the tests' client is the caller whose trace a command continues
    }


def new_prefix() -> str:
    return "caas" + uuid.uuid4().hex[:8]


@dataclass
class Span:
    span_id: str
    parent_id: str | None
    name: str
    service: str
    instance: str  # the process (its service.instance.id)
    tags: dict[str, Any]


def read_trace(trace_id: str) -> list[Span]:
    """The spans Jaeger holds for ``trace_id`` (none yet: an empty list)."""
    r = httpx.get(f"{jaeger_env()['CAAS_JAEGER_QUERY']}/api/traces/{trace_id}", timeout=10)
    if r.status_code == 404:
        return []
    r.raise_for_status()
    traces = r.json()["data"] or []
    assert len(traces) <= 1, traces
    if not traces:
        return []
    [trace] = traces
    processes = trace["processes"]
    spans = []
    for raw in trace["spans"]:
        parents = [ref["spanID"] for ref in raw.get("references", []) if ref["refType"] == "CHILD_OF"]
        process = processes[raw["processID"]]
        instance = next((t["value"] for t in process.get("tags", []) if t["key"] == "service.instance.id"), "")
        spans.append(
            Span(
                raw["spanID"],
                parents[0] if parents else None,
                raw["operationName"],
                process["serviceName"],
                str(instance),
                {t["key"]: t["value"] for t in raw.get("tags", [])},
            )
        )
    return spans


def wait_for_trace(trace_id: str, complete: Callable[[list[Span]], bool], timeout: float = 90.0) -> list[Span]:
    """The trace once ``complete`` says all its spans arrived (processes export in batches)."""
    deadline = time.monotonic() + timeout
    spans: list[Span] = []
    while time.monotonic() < deadline:
        spans = read_trace(trace_id)
        if complete(spans):
            return spans
        time.sleep(0.3)
    names = sorted(f"{s.service}:{s.name}" for s in spans)
    raise AssertionError(f"trace {trace_id} incomplete after {timeout:.0f}s: {names}")


def one(spans: list[Span], name: str) -> Span:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def traceparent() -> tuple[str, str, str]:
    """``(header, trace_id, span_id)``: a caller's W3C trace context, sampled."""
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id
