"""End-to-end tests of presence, typing and read state (issue 5), and their shared harness.

Both test modules run against the same two backends, started once per session with short
presence timings: a dedicated embedded ``caas serve``, and a Kafka cluster of one worker and
three API nodes (``a``, ``b`` and ``victim``, the one the node-death test kills). On the
embedded backend ``a`` and ``b`` are the same server, so every two-node scenario also runs
on one node.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.cluster import Cluster
from tests.support import ADMIN, Server, Tenant, bearer, free_port

GRACE = 1.0  # CAAS_PRESENCE_GRACE_SECONDS
NODE_TIMEOUT = 2.0  # CAAS_PRESENCE_NODE_TIMEOUT_SECONDS
HEARTBEAT = 0.5  # CAAS_PRESENCE_HEARTBEAT_SECONDS
TICK = 0.25  # how often a node samples presence (PresenceService.tick)
TYPING_TTL = 3.0
TYPING_THROTTLE = 1.0
TYPING_MAX_WATCHERS = 2
MARGIN = 5.0  # slack on top of a presence deadline for a loaded two-core machine
WAIT = 20.0  # bound for any single expected frame or replica catch-up

ENV = {
    "CAAS_PRESENCE_GRACE_SECONDS": str(GRACE),
    "CAAS_PRESENCE_NODE_TIMEOUT_SECONDS": str(NODE_TIMEOUT),
    "CAAS_PRESENCE_HEARTBEAT_SECONDS": str(HEARTBEAT),
    "CAAS_TYPING_TTL_SECONDS": str(TYPING_TTL),
    "CAAS_TYPING_THROTTLE_SECONDS": str(TYPING_THROTTLE),
    "CAAS_TYPING_MAX_WATCHERS": str(TYPING_MAX_WATCHERS),
}

T = TypeVar("T")


# --- backends ------------------------------------------------------------------------------
@dataclass
class Backend:
    name: str
    a: Server
    b: Server
    cluster: Cluster | None = None

    @property
    def victim(self) -> Server:
        assert self.cluster is not None
        return self.cluster.nodes[2]

    def __str__(self) -> str:
        return self.name


_BACKENDS: dict[str, Backend] = {}


def start_all(servers: Iterable[Server], timeout: float = 60.0) -> None:
    """Start servers side by side (each takes seconds to connect to its backend)."""
    servers = list(servers)
    with ThreadPoolExecutor(len(servers)) as pool:
        for future in [pool.submit(s.start, timeout) for s in servers]:
            future.result()


def shared_backend(name: str, config: pytest.Config, tmp: pytest.TempPathFactory) -> Backend:
    """The session's backend ``name``, started on first use and stopped when pytest ends."""
    if name in _BACKENDS:
        return _BACKENDS[name]
    root = Path(tmp.mktemp(f"presence-{name}"))
    if name == "embedded":
        server = Server(root / "data", env=dict(ENV))
        server.start()
        config.add_cleanup(server.stop)
        backend = Backend(name, server, server)
    else:
        cluster = Cluster(root, partitions=2, env=dict(ENV))
        config.add_cleanup(cluster.stop)
        cluster.start_worker()
        nodes = [Server(root / f"node-{n}", port=free_port(), env=cluster.settings()) for n in range(3)]
        for node in nodes:
            node.data_dir.mkdir(parents=True, exist_ok=True)
        cluster.nodes.extend(nodes)
        start_all(nodes)
        with ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(Cluster.wait_ready, [n.url for n in nodes]))
        backend = Backend(name, nodes[0], nodes[1], cluster)
    _BACKENDS[name] = backend
    return backend


# --- HTTP ----------------------------------------------------------------------------------
async def until(check: Callable[[], Awaitable[T | None]], timeout: float, what: str, every: float = 0.05) -> T:
    """Poll ``check`` until it returns something other than ``None`` (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.1f} s"
        await asyncio.sleep(every)


async def new_tenant(http: httpx.AsyncClient, node: Server) -> Tenant:
    r = await http.post(f"{node.url}/v1/tenants", json={"name": "presence"}, headers=bearer(ADMIN))
    assert r.status_code == 201, r.text
    return Tenant(node.url, r.json()["tenant_id"], r.json()["api_key"])


async def users(http: httpx.AsyncClient, node: Server, tenant: Tenant, user_ids: Iterable[str]) -> dict[str, str]:
    """Register the users and return a token for each."""
    gate = asyncio.Semaphore(16)

    async def one(uid: str) -> tuple[str, str]:
        async with gate:
            r = await http.put(f"{node.url}/v1/users/{uid}", json={"name": uid}, headers=tenant.headers())
            assert r.status_code in (200, 201), r.text
            r = await http.post(f"{node.url}/v1/users/{uid}/tokens", json={}, headers=tenant.headers())
            assert r.status_code == 201, r.text
            return uid, str(r.json()["token"])

    return dict(await asyncio.gather(*(one(u) for u in user_ids)))


async def channel(http: httpx.AsyncClient, node: Server, tenant: Tenant, members: list[str]) -> dict[str, Any]:
    """A group channel created by the tenant with ``members``; returns the ack."""
    cid = f"c-{uuid.uuid4().hex[:10]}"
    body = {"channel_id": cid, "name": cid, "kind": "group", "members": members}
    r = await http.post(f"{node.url}/v1/channels", json=body, headers=tenant.headers())
    assert r.status_code == 201, r.text
    return {**r.json(), "channel_id": cid}


async def presence(http: httpx.AsyncClient, node: Server, tenant: Tenant, user_ids: list[str]) -> dict[str, Any]:
    r = await http.get(f"{node.url}/v1/presence", params={"user_ids": ",".join(user_ids)}, headers=tenant.headers())
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


async def wait_statuses(
    http: httpx.AsyncClient, node: Server, tenant: Tenant, want: dict[str, str], timeout: float = WAIT
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        seen = await presence(http, node, tenant, list(want))
        return seen if {u: seen[u]["status"] for u in want} == want else None

    return await until(check, timeout, f"presence on {node.url} to be {want}")


async def presence_events(http: httpx.AsyncClient, node: Server, tenant: Tenant) -> list[dict[str, Any]]:
    """Every durable ``PresenceChanged`` of the tenant, in log order."""
    found: list[dict[str, Any]] = []
    after = 0
    while True:
        r = await http.get(
            f"{node.url}/v1/events",
            params={"types": "PresenceChanged", "after_position": after, "limit": 1000},
            headers=tenant.headers(),
        )
        assert r.status_code == 200, r.text
        page = r.json()
        found += page["events"]
        if page["next_after_position"] is None:
            return found
        after = page["next_after_position"]


def durable_statuses(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each user's recorded statuses, in order."""
    out: dict[str, list[str]] = {}
    for event in events:
        assert event["type"] == "PresenceChanged"
        out.setdefault(event["stream"].removeprefix("user:"), []).append(event["payload"]["status"])
    return out


async def wait_durable(
    http: httpx.AsyncClient, node: Server, tenant: Tenant, want: dict[str, str], timeout: float = WAIT
) -> dict[str, list[str]]:
    """Until the last recorded ``PresenceChanged`` of each user in ``want`` has that status."""

    async def check() -> dict[str, list[str]] | None:
        recorded = durable_statuses(await presence_events(http, node, tenant))
        return recorded if all(recorded.get(u, [None])[-1] == s for u, s in want.items()) else None

    return await until(check, timeout, f"durable PresenceChanged {want}", every=0.1)


# --- websockets ----------------------------------------------------------------------------
async def ws_open(node: Server, token: str) -> ClientConnection:
    return await connect(f"{node.ws_url}?token={token}", proxy=None, open_timeout=WAIT, close_timeout=5)


async def recv(ws: ClientConnection, timeout: float = WAIT) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


async def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await ws.send(json.dumps(frame))


def abort(ws: ClientConnection) -> None:
    """Drop the TCP connection without a closing handshake (a phone losing its network)."""
    ws.transport.abort()


async def watch(ws: ClientConnection, user_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Subscribe to presence; returns the first frame for each user (their status now)."""
    await send(ws, {"type": "subscribe_presence", "user_ids": user_ids})
    first = [await recv(ws) for _ in user_ids]
    assert [f["type"] for f in first] == ["presence"] * len(user_ids), first
    assert [f["user_id"] for f in first] == user_ids, first
    return {f["user_id"]: f for f in first}


async def frames_until(
    ws: ClientConnection, stop: Callable[[dict[str, Any]], bool], timeout: float = WAIT
) -> list[dict[str, Any]]:
    """Every frame up to and including the first that satisfies ``stop`` (bounded)."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not frames or not stop(frames[-1]):
        left = deadline - time.monotonic()
        assert left > 0, f"no matching frame within {timeout:.1f} s; got {frames}"
        frames.append(await recv(ws, left))
    return frames


def is_presence(user_id: str, status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f["type"] == "presence" and f["user_id"] == user_id and f["status"] == status


async def subscribe(ws: ClientConnection, cid: str) -> dict[str, Any]:
    """Subscribe to a channel live, retrying while this node's replica has not seen it (bounded)."""
    deadline = time.monotonic() + WAIT
    while True:
        await send(ws, {"type": "subscribe", "channel_id": cid})
        reply = await recv(ws)
        if reply["type"] == "subscribed":
            return reply
        assert reply["type"] == "error" and reply["code"] in ("not_found", "forbidden"), reply
        assert time.monotonic() < deadline, f"the node never learned about channel {cid}: {reply}"
        await asyncio.sleep(0.05)


async def pong(ws: ClientConnection) -> list[dict[str, Any]]:
    """Send a ping; return the frames that arrived before its pong."""
    await send(ws, {"type": "ping"})
    return (await frames_until(ws, lambda f: f["type"] == "pong"))[:-1]
