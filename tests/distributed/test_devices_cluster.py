"""Bundles on a cluster of two API nodes and two deciders (two partitions): twenty clients
fetching one user's bundles at once through both nodes never get the same one-time prekey, and
the device frames reach sockets on the other node (docs/e2e.md)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.cluster import Cluster
from tests.distributed.test_cluster import user, ws_connect
from tests.e2e.test_devices import frame_of_type
from tests.e2e_keys import Device
from tests.support import ADMIN, Server, Tenant, bearer

pytestmark = pytest.mark.kafka


async def tenant_on(http: httpx.AsyncClient, node: Server) -> Tenant:
    r = await http.post(f"{node.url}/v1/tenants", json={"name": "devices"}, headers=bearer(ADMIN))
    assert r.status_code == 201, r.text
    return Tenant(node.url, r.json()["tenant_id"], r.json()["api_key"])


async def test_twenty_clients_on_two_nodes_never_get_the_same_one_time_prekey(cluster: Cluster) -> None:
    a, b = cluster.nodes[0], cluster.nodes[1]
    async with httpx.AsyncClient(timeout=60) as http:
        tenant = await tenant_on(http, a)
        await user(http, a, tenant, "alice")
        tokens = [await user(http, a, tenant, f"u{n}") for n in range(20)]
        for device_id in ("phone", "laptop"):
            r = await http.put(f"{a.url}/v1/users/alice/devices/{device_id}", json=Device().bundle(prekeys=15),
                               headers=tenant.headers())  # fmt: skip
            assert r.status_code == 201, r.text

        async def fetch(node: Server, token: str) -> list[dict[str, Any]]:
            r = await http.post(f"{node.url}/v1/users/alice/bundles", headers=bearer(token))
            assert r.status_code == 200, r.text
            bundles: list[dict[str, Any]] = r.json()["bundles"]
            return bundles

        answers = await asyncio.gather(*(fetch((a, b)[n % 2], token) for n, token in enumerate(tokens)))
        r = await http.get(f"{b.url}/v1/users/alice/devices", headers=tenant.headers())
        left = {d["device_id"]: d["one_time_prekeys_left"] for d in r.json()["devices"]}
    handed = Counter(
        (x["device_id"], x["one_time_prekey"]["key_id"]) for bundles in answers for x in bundles if x["one_time_prekey"]
    )
    assert all(n == 1 for n in handed.values()), [k for k, n in handed.items() if n > 1]
    for device_id in ("phone", "laptop"):
        got = [x for bundles in answers for x in bundles if x["device_id"] == device_id]
        assert len(got) == 20 and sum(x["one_time_prekey"] is not None for x in got) == 15
    assert left == {"phone": 0, "laptop": 0}


async def test_device_frames_reach_sockets_on_the_other_node(cluster: Cluster) -> None:
    a, b = cluster.nodes[0], cluster.nodes[1]
    async with httpx.AsyncClient(timeout=60) as http:
        tenant = await tenant_on(http, a)
        alice, bob = await user(http, a, tenant, "alice"), await user(http, a, tenant, "bob")
        r = await http.post(f"{a.url}/v1/channels", json={"channel_id": "ab", "members": ["alice", "bob"]},
                            headers=tenant.headers())  # fmt: skip
        assert r.status_code == 201, r.text
        r = await http.get(f"{b.url}/v1/channels/ab", params={"min_position": r.json()["position"]},
                           headers=tenant.headers())  # fmt: skip
        assert r.status_code == 200, r.text
        url = f"{a.url}/v1/users/alice/devices/phone"
        r = await http.put(url, json=Device().bundle(prekeys=10), headers=bearer(alice))
        assert r.status_code == 201, r.text
        async with ws_connect(b, alice) as alice_ws, ws_connect(b, bob) as bob_ws:
            for ws in (alice_ws, bob_ws):
                await ws.send('{"type":"ping"}')
                await frame_of_type(ws, "pong")
            r = await http.post(f"{a.url}/v1/users/alice/devices/phone/bundle", headers=bearer(bob))
            assert r.status_code == 200, r.text
            low = await frame_of_type(alice_ws, "prekeys_low")
            assert (low["device_id"], low["remaining"]) == ("phone", 9)
            fresh = Device()
            r = await http.put(url, json=fresh.bundle(), headers=bearer(alice))
            assert r.status_code == 200, r.text
            changed = await frame_of_type(bob_ws, "identity_key_changed")
            assert (changed["user_id"], changed["identity_key"]) == ("alice", fresh.identity_key)
