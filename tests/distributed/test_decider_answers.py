"""What a decider answers is what happened: a command refused stays refused after the decider
is killed."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.cluster import Cluster
from tests.distributed.test_cluster import fresh_tenant, user
from tests.support import Server, bearer

pytestmark = pytest.mark.kafka

TAKEOVER = 90.0  # bound for a new worker to take a killed one's partition over (its session expires first)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def post_until_answered(http: httpx.AsyncClient, node: Server, token: str, cid: str, text: str) -> httpx.Response:
    """Post ``text``, retried under one Idempotency-Key while no decider answers (503)."""
    headers = {**bearer(token), "idempotency-key": f"k-{uuid.uuid4().hex}"}
    deadline = time.monotonic() + TAKEOVER
    while True:
        r = await http.post(f"{node.url}/v1/channels/{cid}/messages", json={"text": text}, headers=headers)
        if r.status_code != 503 or time.monotonic() > deadline:
            return r


async def test_a_refused_post_stays_refused_when_its_decider_is_killed_before_committing(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    # The decider commits its offsets once an hour: every command after the first batch is
    # delivered again to the next decider, unless a refusal had its batch committed at once.
    cluster = Cluster(tmp_path / "cluster", env={"CAAS_DECIDER_COMMIT_SECONDS": "3600"}).start()
    try:
        node = cluster.nodes[0]
        tenant = await fresh_tenant(http, node)
        token = await user(http, node, tenant, "alice")
        cid = f"c-{uuid.uuid4().hex[:10]}"
        r = await http.post(f"{node.url}/v1/channels/{cid}/messages", json={"text": "early"}, headers=bearer(token))
        assert r.status_code == 404 and r.json()["error"]["details"]["rule"] == "channel_not_found", r.text
        created = {"channel_id": cid, "name": cid, "members": ["alice"]}
        r = await http.post(f"{node.url}/v1/channels", json=created, headers=bearer(token))
        assert r.status_code == 201, r.text
        cluster.kill_worker(0)
        cluster.start_worker()
        after = await post_until_answered(http, node, token, cid, "after")
        assert after.status_code == 201, after.text
        r = await http.get(
            f"{node.url}/v1/channels/{cid}/messages",
            params={"min_position": after.json()["position"]},
            headers=bearer(token),
        )
        assert r.status_code == 200, r.text
        assert [m["text"] for m in r.json()["messages"]] == ["after"]  # the refused post was never recorded
    finally:
        cluster.stop()
