"""ABAC on a cluster (docs/abac.md, Propagation): a policy set through one API node refuses on
the other once that node's replica of the tenant has the PolicySet event, and deleting it
lifts it there too. The delay itself is measured by ``tests/perf/bench_abac.py``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.cluster import Cluster
from tests.support import ADMIN, Server, Tenant, bearer

pytestmark = pytest.mark.kafka

WAIT = 20.0  # a generous bound for the other node to see an event (the 1 s target is benchmarked)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    cluster = Cluster(Path(tmp_path_factory.mktemp("caas-abac-cluster")))
    try:
        cluster.start(workers=1, nodes=2)
        for node in cluster.nodes:
            Cluster.wait_ready(node.url)
        yield cluster.nodes[0], cluster.nodes[1]
    finally:
        cluster.stop()


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient(timeout=15) as client:
        yield client


async def tenant_with_user(http: httpx.AsyncClient, node: Server) -> tuple[Tenant, str]:
    r = await http.post(f"{node.url}/v1/tenants", json={"name": "abac"}, headers=bearer(ADMIN))
    assert r.status_code == 201, r.text
    tenant = Tenant(node.url, r.json()["tenant_id"], r.json()["api_key"])
    r = await http.put(f"{node.url}/v1/users/ann", json={"name": "ann"}, headers=tenant.headers())
    assert r.status_code == 201, r.text
    r = await http.post(f"{node.url}/v1/users/ann/tokens", json={}, headers=tenant.headers())
    token = str(r.json()["token"])
    r = await http.post(
        f"{node.url}/v1/channels",
        json={"channel_id": "c1", "name": "c1", "kind": "group", "members": ["ann"]},
        headers=tenant.headers(),
    )
    assert r.status_code == 201, r.text
    return tenant, token


async def until_status(http: httpx.AsyncClient, send: Any, wanted: int) -> httpx.Response:
    deadline = time.monotonic() + WAIT
    while (r := await send()).status_code != wanted:
        assert time.monotonic() < deadline, f"still {r.status_code} after {WAIT} s: {r.text}"
        await asyncio.sleep(0.02)
    return r


async def test_a_policy_set_on_one_node_denies_on_the_other_and_its_deletion_lifts_it(
    http: httpx.AsyncClient, nodes: tuple[Server, Server]
) -> None:
    a, b = nodes
    tenant, token = await tenant_with_user(http, a)

    async def post_on_b() -> httpx.Response:
        return await http.post(f"{b.url}/v1/channels/c1/messages", json={"text": "hi"}, headers=bearer(token))

    await until_status(http, post_on_b, 201)  # node B has the tenant, user and channel
    r = await http.put(
        f"{a.url}/v1/policies/no-posts", json={"actions": ["post_message", "read_messages"]}, headers=tenant.headers()
    )
    assert r.status_code == 200, r.text
    denied = await until_status(http, post_on_b, 403)
    error = denied.json()["error"]
    assert (error["code"], error["policy_id"]) == ("policy_denied", "no-posts")
    r = await http.get(f"{b.url}/v1/channels/c1/messages", headers=bearer(token))
    assert r.status_code == 403 and r.json()["error"]["policy_id"] == "no-posts"  # queries too, on node B

    r = await http.delete(f"{a.url}/v1/policies/no-posts", headers=tenant.headers())
    assert r.status_code == 200, r.text
    await until_status(http, post_on_b, 201)


async def test_a_policy_set_on_one_node_ends_a_subscription_on_the_other(
    http: httpx.AsyncClient, nodes: tuple[Server, Server]
) -> None:
    a, b = nodes
    tenant, token = await tenant_with_user(http, a)
    await until_status(http, lambda: http.get(f"{b.url}/v1/channels/c1", headers=bearer(token)), 200)
    async with connect(f"{b.ws_url}?token={token}", proxy=None, open_timeout=WAIT) as ws:
        await ws.send('{"type": "subscribe", "channel_id": "c1"}')
        assert '"subscribed"' in str(await asyncio.wait_for(ws.recv(), WAIT))
        r = await http.put(f"{a.url}/v1/policies/no-live", json={"actions": ["subscribe"]}, headers=tenant.headers())
        assert r.status_code == 200, r.text
        frame = str(await asyncio.wait_for(ws.recv(), WAIT))
        assert '"policy_denied"' in frame and '"no-live"' in frame and '"c1"' in frame
