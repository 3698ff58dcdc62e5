"""``caas rebuild --backend kafka``: the read models of a stopped cluster, damaged in MongoDB,
come back identical from the event topic, bulk-loaded in windows small enough that documents
(channels, reacted and edited messages) are written by one window and replaced by later ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from adapters.kafka.codec import decode_position
from tests.cluster import Cluster
from tests.support import ADMIN, Tenant, bearer

pytestmark = pytest.mark.kafka


def ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code in (200, 201), r.text
    data: dict[str, Any] = r.json()
    return data


def views(
    client: httpx.Client, url: str, tenant: Tenant, tokens: dict[str, str], acks: list[dict[str, Any]]
) -> dict[str, Any]:
    """Everything a tenant and its users can read, once the read models applied every ack.

    ``min_position`` waits for one partition (positions of two partitions do not compare), so
    first wait for the last position of each partition the acks landed on."""
    last: dict[int, int] = {}
    for ack in acks:
        partition = decode_position(ack["position"])[0]
        last[partition] = max(last.get(partition, 0), ack["position"])
    for position in last.values():
        ok(client.get(f"{url}/v1/events", params={"min_position": position, "limit": 1}, headers=tenant.headers()))
    wait = {"min_position": max(last.values())}
    found: dict[str, Any] = {}
    for user_id, token in tokens.items():
        found[f"channels/{user_id}"] = ok(client.get(f"{url}/v1/channels", params=wait, headers=bearer(token)))
    channels = ok(client.get(f"{url}/v1/channels", params=wait, headers=tenant.headers()))
    found["channels"] = channels
    for channel in channels["channels"]:
        cid = channel["channel_id"]
        found[cid] = ok(client.get(f"{url}/v1/channels/{cid}/messages", params={**wait, "after_seq": 0, "limit": 200},
                                   headers=tenant.headers()))  # fmt: skip
    events = ok(client.get(f"{url}/v1/events", params={**wait, "limit": 1000}, headers=tenant.headers()))
    # the nodes' own usage records go on (these very reads are metered): the chat's events only
    found["events"] = [e for e in events["events"] if not e["stream"].startswith("usage:")]
    # the usage model's meters that follow from chat events alone (bulk-loaded by the rebuild,
    # stored bytes through their running counters)
    params = {**wait, "from": "2024-01-01T00:00:00Z", "to": "2028-01-01T00:00:00Z", "granularity": "month",
              "meters": "messages,replies,edits,stored_bytes"}  # fmt: skip
    found["usage"] = ok(client.get(f"{url}/v1/tenants/{tenant.tenant_id}/usage", params=params, headers=bearer(ADMIN)))
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    span = {**wait, "from": (today - timedelta(days=1)).isoformat(), "to": (today + timedelta(days=2)).isoformat()}
    found["analytics"] = ok(client.get(f"{url}/v1/analytics", params=span, headers=tenant.headers()))
    found["audit"] = ok(client.get(f"{url}/v1/audit", params={**wait, "limit": 1000}, headers=tenant.headers()))
    return found


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path / "cluster", partitions=2)
    try:
        yield cluster.start(workers=1, nodes=1)
    finally:
        cluster.stop()


def test_rebuild_from_kafka_restores_identical_read_models(cluster: Cluster, tmp_path: Path) -> None:
    url = cluster.nodes[0].url
    with httpx.Client(timeout=30) as client:
        created = ok(client.post(f"{url}/v1/tenants", json={"name": "rebuilt"}, headers=bearer(ADMIN)))
        tenant = Tenant(url, created["tenant_id"], created["api_key"])
        tokens = {uid: tenant.user(client, uid) for uid in ("alice", "bob", "carol")}
        acks = []
        for n in range(4):  # channels on both partitions, most likely
            cid = f"room-{n}"
            ok(client.post(f"{url}/v1/channels", json={"channel_id": cid, "name": cid, "members": ["bob", "carol"]},
                           headers=bearer(tokens["alice"])))  # fmt: skip
            for i in range(6):
                author = ("alice", "bob", "carol")[i % 3]
                acks.append(ok(client.post(f"{url}/v1/channels/{cid}/messages", json={"text": f"{cid} #{i}"},
                                           headers=bearer(tokens[author]))))  # fmt: skip
            first = acks[-6]["message_id"]
            acks.append(ok(client.patch(f"{url}/v1/channels/{cid}/messages/{first}", json={"text": "edited"},
                                        headers=bearer(tokens["alice"]))))  # fmt: skip
            for who in ("bob", "carol"):
                acks.append(ok(client.post(f"{url}/v1/channels/{cid}/messages/{first}/reactions", json={"emoji": "👍"},
                                           headers=bearer(tokens[who]))))  # fmt: skip
            acks.append(ok(client.delete(f"{url}/v1/channels/{cid}/messages/{acks[-8]['message_id']}",
                                         headers=bearer(tokens["bob"]))))  # fmt: skip
            read = client.post(f"{url}/v1/channels/{cid}/read", json={"seq": 4}, headers=bearer(tokens["bob"]))
            acks.append(ok(read))
        before = views(client, url, tenant, tokens, acks)
    assert len(before["events"]) > 60
    assert before["usage"]["totals"]["messages"] == 24 and before["usage"]["totals"]["stored_bytes"] > 0
    # analytics and usage of the same events agree; every user wrote, in every channel
    assert before["analytics"]["totals"]["messages"] == 24
    assert (before["analytics"]["totals"]["active_users"], before["analytics"]["totals"]["active_channels"]) == (3, 4)

    settings = cluster.settings()
    cluster.stop()
    with MongoClient(settings["CAAS_MONGO_URL"]) as mongo:  # damage the read models; the topic is intact
        db = mongo[settings["CAAS_MONGO_DATABASE"]]
        db["messages"].delete_many({})
        db["channels"].update_many({}, {"$set": {"head_seq": 0}})
        db["events"].delete_many({})
        db["analytics_channels"].delete_many({})
        db["analytics_users"].delete_many({})

    env = {**os.environ, **settings, "CAAS_DATA_DIR": str(tmp_path / "rebuild")}
    done = subprocess.run([sys.executable, "-m", "api.cli", "rebuild", "--backend", "kafka", "--window", "7"],
                          env=env, capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    reports = {r["projection"]: r for r in (json.loads(x) for x in done.stdout.splitlines() if x.startswith("{"))}
    assert set(reports) == {"chat", "events", "usage", "billing", "webhooks", "analytics", "audit"}
    assert reports["chat"]["events"] >= len(before["events"])

    cluster.start(workers=1, nodes=1)
    url = cluster.nodes[-1].url
    with httpx.Client(timeout=30) as client:
        tenant = Tenant(url, tenant.tenant_id, tenant.api_key)
        assert views(client, url, tenant, tokens, acks) == before
