"""A request's log lines, as an operator's log shipper reads them from a real ``caas serve``'s
stderr (tracing off): each carries the request's tenant, trace and span ids, there is one access
line per request, and no credential appears in any line (docs/operations-tracing.md, "Logs")."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.cluster import SECRET, serving
from tests.support import ADMIN, Server, bearer, new_tenant
from tests.tracing.jaeger import traceparent

HEX32, HEX16 = re.compile(r"^[0-9a-f]{32}$"), re.compile(r"^[0-9a-f]{16}$")


def log_lines(server: Server) -> tuple[str, list[dict[str, Any]]]:
    text = (server.data_dir.parent / f"server-{server.port}.log").read_text()
    return text, [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("backend", ["embedded", "kafka"])
def test_each_request_logs_one_line_with_its_tenant_and_trace_and_no_credential(backend: str, tmp_path: Path) -> None:
    header, trace_id, _ = traceparent()
    with serving(backend, tmp_path, {"CAAS_ACCESS_LOG": "true", "CAAS_LOG_LEVEL": "info"}) as server:
        with httpx.Client(timeout=30) as client:
            tenant = new_tenant(client, server.url)
            token = tenant.user(client, "ann")
            channel = {"channel_id": "c1", "name": "c1", "members": ["ann"]}
            r = client.post(f"{server.url}/v1/channels", json=channel, headers=tenant.headers())
            assert r.status_code == 201, r.text
            asks = {
                "post": client.post(
                    f"{server.url}/v1/channels/c1/messages",
                    json={"text": "hi"},
                    headers={**bearer(token), "traceparent": header, "x-request-id": "req-post"},
                ),
                "read": client.get(
                    f"{server.url}/v1/channels/c1/messages", headers={**bearer(token), "x-request-id": "req-read"}
                ),
                "refused": client.get(
                    f"{server.url}/v1/channels", headers={**bearer("not-a-token"), "x-request-id": "req-refused"}
                ),
            }
            assert [r.status_code for r in asks.values()] == [201, 200, 401]
        # a socket's URL carries its token: the servers' own lines about it must not
        with connect(f"{server.ws_url}?token={token}", proxy=None, open_timeout=20) as ws:
            ws.send(json.dumps({"type": "ping"}))
            ws.recv(timeout=20)
        server.stop()  # every line is written
        text, lines = log_lines(server)
    by_request: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        if line.get("request_id"):
            by_request.setdefault(line["request_id"], []).append(line)
    for name in ("post", "read", "refused"):
        mine = by_request[f"req-{name}"]
        assert [line["event"] for line in mine].count("request") == 1, mine  # one access line
        assert len({(line["trace_id"], line["span_id"]) for line in mine}) == 1, mine
        for line in mine:
            assert HEX32.match(line["trace_id"]) and HEX16.match(line["span_id"]), line
            assert line["tenant_id"] == (None if name == "refused" else tenant.tenant_id), line
    # a client's traceparent is not trusted by default (CAAS_TRACE_TRUST_INCOMING): the server's own ids
    assert by_request["req-post"][0]["trace_id"] != trace_id
    assert by_request["req-read"][0]["trace_id"] != trace_id
    # every request line has the same labels, whoever logged it; uvicorn's own access line is off
    for line in (line for lines in by_request.values() for line in lines):
        assert {"tenant_id", "trace_id", "span_id", "request_id", "level", "logger", "timestamp"} <= set(line)
    assert not [line for line in lines if line.get("logger") == "uvicorn.access"]
    for secret in (tenant.api_key, token, ADMIN, SECRET):
        assert secret not in text
