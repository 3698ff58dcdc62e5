"""One trace per command, read back from a real Jaeger: a message posted through a real
``caas serve`` (embedded), or through an API node of a real cluster (a ``caas worker`` and two
``caas serve --backend kafka`` nodes), is one trace whose spans come from every process that
handled it, each a child of the step that caused it (docs/operations-tracing.md)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.cluster import Cluster
from tests.support import Server, new_tenant
from tests.tracing.jaeger import Span, new_prefix, one, traced_env, traceparent, wait_for_trace

ROUTE = "HTTP POST /v1/channels/{cid}/messages"


def post_traced(url: str, client: httpx.Client) -> tuple[str, str, str]:
    """Post a message with a caller's ``traceparent``: ``(trace_id, caller's span_id, request id)``."""
    tenant = new_tenant(client, url)
    token = tenant.user(client, "ann")
    channel = {"channel_id": "c1", "name": "c1", "members": ["ann"]}
    r = client.post(f"{url}/v1/channels", json=channel, headers=tenant.headers())
    assert r.status_code == 201, r.text
    header, trace_id, caller = traceparent()
    request_id = f"traced-{trace_id[:8]}"
    r = client.post(
        f"{url}/v1/channels/c1/messages",
        json={"text": "hello, traced"},
        headers={"authorization": f"Bearer {token}", "traceparent": header, "x-request-id": request_id},
    )
    assert r.status_code == 201, r.text
    return trace_id, caller, request_id


def names(spans: list[Span]) -> list[str]:
    return [s.name for s in spans]


def test_an_embedded_post_is_one_trace_from_the_request_to_the_commit_the_read_models_and_the_sockets(
    tmp_path: Path,
) -> None:
    prefix = new_prefix()
    env = {**traced_env(prefix), "CAAS_ACCESS_LOG": "true", "CAAS_LOG_LEVEL": "info"}
    server = Server(tmp_path / "data", env=env).start()
    try:
        with httpx.Client(timeout=30) as client:
            trace_id, caller, request_id = post_traced(server.url, client)

        def complete(spans: list[Span]) -> bool:
            return {ROUTE, "command PostMessage", "sqlite.commit", "project", "store.apply", "ws.deliver"} <= set(
                names(spans)
            )

        spans = wait_for_trace(trace_id, complete)
    finally:
        server.stop()
    http, command = one(spans, ROUTE), one(spans, "command PostMessage")
    commit, project, store = one(spans, "sqlite.commit"), one(spans, "project"), one(spans, "store.apply")
    deliver = one(spans, "ws.deliver")
    assert http.parent_id == caller  # the caller's trace continues
    assert command.parent_id == http.span_id
    assert commit.parent_id == command.span_id
    assert project.parent_id == command.span_id and store.parent_id == project.span_id
    assert deliver.parent_id == command.span_id
    assert {http.service, command.service, commit.service, deliver.service} == {f"{prefix}-node"}
    assert {project.service, store.service} == {f"{prefix}-projector"}
    assert http.tags["http.response.status_code"] == 201
    # the request's access line names the same trace and span as Jaeger does
    log = (server.data_dir.parent / f"server-{server.port}.log").read_text()
    [access] = [
        line
        for line in map(json.loads, filter(lambda text: text.startswith("{"), log.splitlines()))
        if line.get("request_id") == request_id and line["event"] == "request"
    ]
    assert (access["trace_id"], access["span_id"]) == (trace_id, http.span_id)


def test_a_kafka_post_is_one_trace_across_the_node_the_decider_the_projector_and_every_node(
    tmp_path: Path,
) -> None:
    prefix = new_prefix()
    cluster = Cluster(tmp_path / "cluster", env=traced_env(prefix))
    cluster.start(workers=1, nodes=2)
    try:
        with httpx.Client(timeout=30) as client:
            trace_id, caller, _ = post_traced(cluster.nodes[0].url, client)
        topic = f"{cluster.name}."

        def complete(spans: list[Span]) -> bool:
            found = names(spans)
            return (
                {ROUTE, "command PostMessage", f"kafka.produce {topic}commands", "decide PostMessage"} <= set(found)
                and {f"kafka.produce {topic}events", "project", "store.apply events"} <= set(found)
                and found.count("ws.deliver") == 2
            )

        spans = wait_for_trace(trace_id, complete)
    finally:
        cluster.stop()
    http, command = one(spans, ROUTE), one(spans, "command PostMessage")
    send = one(spans, f"kafka.produce {topic}commands")
    decide, record = one(spans, "decide PostMessage"), one(spans, f"kafka.produce {topic}events")
    project = one(spans, "project")
    stores = [s for s in spans if s.name.startswith("store.apply ")]
    delivered = [s for s in spans if s.name == "ws.deliver"]
    # parented along the command's path, across three processes
    assert http.parent_id == caller
    assert command.parent_id == http.span_id and send.parent_id == command.span_id
    assert decide.parent_id == send.span_id and record.parent_id == decide.span_id
    assert project.parent_id == decide.span_id
    assert {"store.apply chat", "store.apply events"} <= set(names(stores))
    assert {s.parent_id for s in stores} == {project.span_id}
    assert {s.parent_id for s in delivered} == {decide.span_id}
    # which process did what: the API node, the worker's decider and projector, and both nodes' sockets
    assert {http.service, command.service, send.service} == {f"{prefix}-node"}
    assert {decide.service, record.service} == {f"{prefix}-decider"}
    assert {project.service, *(s.service for s in stores)} == {f"{prefix}-projector"}
    assert {s.service for s in delivered} == {f"{prefix}-node"}
    assert len({s.instance for s in delivered}) == 2  # one delivery span on each node
    assert http.instance in {s.instance for s in delivered}
    assert decide.instance == project.instance != http.instance  # the worker's process
