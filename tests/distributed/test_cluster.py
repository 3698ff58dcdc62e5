"""Two API nodes and two workers on one Kafka topic set (two partitions): whatever node a
client talks to, it sees the same system."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.cluster import Cluster
from tests.support import ADMIN, Server, Tenant, bearer

pytestmark = pytest.mark.kafka

WAIT = 20.0  # bound for any single expected frame or replica catch-up


@pytest.fixture(scope="module")
def nodes(cluster: Cluster) -> tuple[Server, Server]:
    return cluster.nodes[0], cluster.nodes[1]


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient(timeout=15) as client:
        yield client


# --- helpers -------------------------------------------------------------------------------
async def user(http: httpx.AsyncClient, node: Server, tenant: Tenant, user_id: str) -> str:
    """Register ``user_id`` through ``node`` and mint a token for them there."""
    r = await http.put(f"{node.url}/v1/users/{user_id}", json={"name": user_id}, headers=tenant.headers())
    assert r.status_code in (200, 201), r.text
    r = await http.post(f"{node.url}/v1/users/{user_id}/tokens", json={}, headers=tenant.headers())
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


async def channel(http: httpx.AsyncClient, node: Server, token: str, members: list[str]) -> str:
    cid = f"c-{uuid.uuid4().hex[:10]}"
    r = await http.post(
        f"{node.url}/v1/channels", json={"channel_id": cid, "name": cid, "members": members}, headers=bearer(token)
    )
    assert r.status_code == 201, r.text
    return cid


async def post(http: httpx.AsyncClient, node: Server, token: str, cid: str, text: str) -> dict[str, Any]:
    r = await http.post(f"{node.url}/v1/channels/{cid}/messages", json={"text": text}, headers=bearer(token))
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def recv(ws: ClientConnection, timeout: float = WAIT) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


def ws_connect(node: Server, token: str) -> Any:
    return connect(f"{node.ws_url}?token={token}", proxy=None, open_timeout=WAIT, close_timeout=5)


async def subscribe(ws: ClientConnection, cid: str, since: int | None = None) -> dict[str, Any]:
    """Subscribe, retrying while this node's replica has not seen the channel yet (bounded)."""
    frame: dict[str, Any] = {"type": "subscribe", "channel_id": cid}
    if since is not None:
        frame["since_seq"] = since
    deadline = time.monotonic() + WAIT
    while True:
        await ws.send(json.dumps(frame))
        reply = await recv(ws)
        if reply["type"] == "subscribed":
            assert reply["channel_id"] == cid
            return reply
        assert reply["type"] == "error" and reply["code"] in ("not_found", "forbidden"), reply
        assert time.monotonic() < deadline, f"the node never learned about channel {cid}: {reply}"
        await asyncio.sleep(0.05)


async def events_until(ws: ClientConnection, cid: str, head_seq: int) -> list[dict[str, Any]]:
    """Event frames of ``cid`` until the one with ``head_seq``."""
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["seq"] < head_seq:
        frame = await recv(ws)
        if frame["type"] == "event" and frame["channel_id"] == cid:
            frames.append(frame)
    return frames


async def fresh_tenant(http: httpx.AsyncClient, node: Server) -> Tenant:
    r = await http.post(f"{node.url}/v1/tenants", json={"name": "acme"}, headers=bearer(ADMIN))
    assert r.status_code == 201, r.text
    return Tenant(node.url, r.json()["tenant_id"], r.json()["api_key"])


async def until_each_node_has_heard_both(http: httpx.AsyncClient, tenant: Tenant, a: Server, b: Server) -> None:
    """Wait until each node counts both nodes as live, which it does once it has heard them on
    the ephemeral bus: a socket on each node shows as online on both. (Websocket frames spend
    no tenant read budget.)"""
    tokens = {"on-a": await user(http, a, tenant, "on-a"), "on-b": await user(http, b, tenant, "on-b")}
    deadline = time.monotonic() + WAIT
    async with ws_connect(a, tokens["on-a"]) as ws_a, ws_connect(b, tokens["on-b"]) as ws_b:
        for ws in (ws_a, ws_b):
            await ws.send(json.dumps({"type": "subscribe_presence", "user_ids": list(tokens)}))
        for ws in (ws_a, ws_b):
            online: set[str] = set()
            while online != set(tokens):
                assert time.monotonic() < deadline, f"the nodes never heard each other: {online} online"
                frame = await recv(ws)
                if frame["type"] == "presence" and frame["status"] == "online":
                    online.add(frame["user_id"])


# --- tests ---------------------------------------------------------------------------------
async def test_message_posted_on_one_node_reaches_a_websocket_subscriber_on_the_other(
    http: httpx.AsyncClient, nodes: tuple[Server, Server]
) -> None:
    a, b = nodes
    tenant = await fresh_tenant(http, a)
    alice = await user(http, a, tenant, "alice")
    bob = await user(http, a, tenant, "bob")
    cid = await channel(http, a, alice, ["bob"])
    async with ws_connect(b, bob) as ws:
        await subscribe(ws, cid)
        sent = await post(http, a, alice, cid, "hello from node A")
        [frame] = await events_until(ws, cid, sent["seq"])
    assert frame["seq"] == sent["seq"]
    assert frame["position"] == sent["position"]
    assert frame["event"]["event_id"] == sent["event_id"]
    assert frame["event"]["type"] == "MessagePosted"
    assert frame["event"]["payload"]["text"] == "hello from node A"
    assert frame["event"]["tenant_id"] == tenant.tenant_id


async def test_channel_order_is_the_same_for_subscribers_on_both_nodes(
    http: httpx.AsyncClient, nodes: tuple[Server, Server]
) -> None:
    a, b = nodes
    tenant = await fresh_tenant(http, a)
    alice = await user(http, a, tenant, "alice")
    bob = await user(http, b, tenant, "bob")
    cid = await channel(http, a, alice, ["bob"])
    per_poster = 25
    async with ws_connect(a, alice) as on_a, ws_connect(b, bob) as on_b:
        head = (await subscribe(on_a, cid, since=0))["head_seq"]
        await subscribe(on_b, cid, since=0)

        async def poster(node: Server, token: str, name: str) -> list[dict[str, Any]]:
            return [await post(http, node, token, cid, f"{name}-{n}") for n in range(per_poster)]

        who = [(a, alice, "alice@A"), (b, bob, "bob@B"), (a, bob, "bob@A"), (b, alice, "alice@B")]
        posters = [poster(*w) for w in who]
        acks = [ack for acks in await asyncio.gather(*posters) for ack in acks]
        head = max(head, *(ack["seq"] for ack in acks))
        seen_a, seen_b = await asyncio.gather(events_until(on_a, cid, head), events_until(on_b, cid, head))
    order_a = [(f["seq"], f["position"], f["event"]["event_id"]) for f in seen_a]
    order_b = [(f["seq"], f["position"], f["event"]["event_id"]) for f in seen_b]
    assert order_a == order_b
    assert [seq for seq, _, _ in order_a] == list(range(1, head + 1))
    acked = {(ack["seq"], ack["position"], ack["event_id"]) for ack in acks}
    assert acked <= set(order_a)
    assert len(acked) == 4 * per_poster


async def test_api_key_revoked_on_one_node_stops_working_on_the_other_within_a_second(
    http: httpx.AsyncClient, nodes: tuple[Server, Server]
) -> None:
    a, b = nodes
    tenant = await fresh_tenant(http, a)
    r = await http.post(f"{a.url}/v1/api-keys", json={"name": "ci"}, headers=tenant.headers())
    assert r.status_code == 201, r.text
    key_id, key = r.json()["key_id"], r.json()["api_key"]
    deadline = time.monotonic() + WAIT
    while (r := await http.get(f"{b.url}/v1/channels", headers=bearer(key))).status_code != 200:
        assert r.status_code == 401, r.text  # node B has not seen the key yet
        assert time.monotonic() < deadline, "node B never accepted the new key"
        await asyncio.sleep(0.05)

    r = await http.delete(f"{a.url}/v1/api-keys/{key_id}", headers=tenant.headers())
    assert r.status_code in (200, 201), r.text
    assert (await http.get(f"{a.url}/v1/channels", headers=bearer(key))).status_code == 401
    deadline = time.monotonic() + 1.0
    statuses = []
    while True:
        statuses.append((await http.get(f"{b.url}/v1/channels", headers=bearer(key))).status_code)
        if statuses[-1] == 401 or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.02)
    assert statuses[-1] == 401, f"node B still accepted the revoked key after a second: {statuses}"
    assert set(statuses) <= {200, 401}
    assert (await http.get(f"{b.url}/v1/channels", headers=tenant.headers())).status_code == 200


async def test_min_position_from_a_command_on_one_node_is_honoured_by_a_query_on_the_other(
    http: httpx.AsyncClient, nodes: tuple[Server, Server]
) -> None:
    a, b = nodes
    tenant = await fresh_tenant(http, a)
    alice = await user(http, a, tenant, "alice")
    for round in range(10):  # channels land on both partitions
        cid = await channel(http, a, alice, [])
        texts = [f"m{round}-{n}" for n in range(3)]
        acks = [await post(http, a, alice, cid, text) for text in texts]
        r = await http.get(
            f"{b.url}/v1/channels/{cid}/messages",
            params={"min_position": acks[-1]["position"], "after_seq": 0},
            headers=tenant.headers(),
        )
        assert r.status_code == 200, r.text
        got = r.json()["messages"]
        assert [m["text"] for m in got] == texts
        assert [m["seq"] for m in got] == [ack["seq"] for ack in acks]
        r = await http.get(
            f"{b.url}/v1/channels/{cid}", params={"min_position": acks[-1]["position"]}, headers=bearer(alice)
        )
        assert r.status_code == 200, r.text
        assert r.json()["head_seq"] == acks[-1]["seq"]
        r = await http.get(
            f"{b.url}/v1/events",
            params={"min_position": acks[-1]["position"], "types": "MessagePosted"},
            headers=tenant.headers(),
        )
        assert r.status_code == 200, r.text
        assert texts[-1] in [e["payload"]["text"] for e in r.json()["events"]]


async def test_user_metadata_keys_mongodb_reserves_do_not_stall_the_read_model(
    http: httpx.AsyncClient, nodes: tuple[Server, Server]
) -> None:
    a, b = nodes
    tenant = await fresh_tenant(http, a)
    metadata = {"a.b": 1, "$where": "x", "k": {"x.y": [{"$z": 1, "%2E": "literal"}]}, "nul\u0000key": True}
    r = await http.put(f"{a.url}/v1/users/odd", json={"name": "Odd", "metadata": metadata}, headers=tenant.headers())
    assert r.status_code == 201, r.text
    position = r.json()["position"]
    for node in (a, b):  # the projection of that event, and everything after it, is applied
        r = await http.get(f"{node.url}/v1/channels", params={"min_position": position}, headers=tenant.headers())
        assert r.status_code == 200, r.text
    alice = await user(http, a, tenant, "alice")
    cid = await channel(http, a, alice, [])
    ack = await post(http, a, alice, cid, "after the odd user")
    r = await http.get(
        f"{b.url}/v1/channels/{cid}/messages", params={"min_position": ack["position"]}, headers=tenant.headers()
    )
    assert r.status_code == 200, r.text
    assert [m["text"] for m in r.json()["messages"]] == ["after the odd user"]


async def test_a_worker_joining_mid_load_takes_its_partitions_over_without_losing_a_command(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A second worker joins while four clients post: the group rebalances, partitions move
    between workers, and every command still gets its answer (no 503, nothing appended twice)."""
    cluster = Cluster(tmp_path / "joining", partitions=2)
    try:
        cluster.start(workers=1, nodes=1)
        node = cluster.nodes[0]
        tenant = await fresh_tenant(http, node)
        alice = await user(http, node, tenant, "alice")
        cids = [await channel(http, node, alice, []) for _ in range(4)]  # most likely on both partitions
        per_poster = 40
        joined = asyncio.Event()

        async def poster(cid: str) -> list[dict[str, Any]]:
            acks = []
            for n in range(per_poster):
                acks.append(await post(http, node, alice, cid, f"{cid}-{n}"))
                if n == per_poster // 4:
                    joined.set()
            return acks

        async def join() -> None:
            await joined.wait()
            cluster.start_worker()

        *acked, _ = await asyncio.gather(*(poster(cid) for cid in cids), join())
        for cid, acks in zip(cids, acked, strict=True):
            assert [ack["seq"] for ack in acks] == list(range(acks[0]["seq"], acks[0]["seq"] + per_poster))
            r = await http.get(
                f"{node.url}/v1/channels/{cid}/messages",
                params={"min_position": acks[-1]["position"], "after_seq": 0, "limit": 200},
                headers=tenant.headers(),
            )
            assert r.status_code == 200, r.text
            assert [m["text"] for m in r.json()["messages"]] == [f"{cid}-{n}" for n in range(per_poster)]
    finally:
        cluster.stop()


async def test_a_tenant_rate_is_shared_out_between_the_live_api_nodes(http: httpx.AsyncClient, tmp_path: Path) -> None:
    """With two live nodes each enforces half the tenant's burst, so the cluster as a whole
    allows what the setting says, not twice it (``CAAS_RATE_LIMIT_SCOPE=cluster``)."""
    burst = 40
    cluster = Cluster(
        tmp_path / "limits",
        env={"CAAS_RATE_TENANT_READS_PER_SECOND": "0.001", "CAAS_RATE_TENANT_READS_BURST": str(burst)},
    )
    try:
        a, b = cluster.start(workers=1, nodes=2).nodes
        Cluster.wait_ready(b.url)
        tenant = await fresh_tenant(http, a)
        await until_each_node_has_heard_both(http, tenant, a, b)

        async def reads_allowed(node: Server) -> int:
            allowed = 0
            while (r := await http.get(f"{node.url}/v1/channels", headers=tenant.headers())).status_code == 200:
                allowed += 1
                assert allowed <= burst, "a node allowed more than the whole cluster's burst"
            assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited", r.text
            return allowed

        assert [await reads_allowed(a), await reads_allowed(b)] == [burst // 2, burst // 2]
    finally:
        cluster.stop()
