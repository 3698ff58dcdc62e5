"""Usage stays exact through the faults of the distributed backend (docs/meters.md):

- the worker (whose Faust agent builds the usage read model) is killed with ``kill -9`` in the
  middle of a stream of posts and restarted: every message is counted exactly once;
- an API node is killed with ``kill -9``: its unrecorded counts are lost (an undercount, never an
  overcount), at most its last interval; the loss is measured and printed.
"""

from __future__ import annotations

import concurrent.futures
import json
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster import Cluster
from tests.support import ADMIN, Tenant, bearer, new_tenant

pytestmark = pytest.mark.kafka

FLUSH_SECONDS = 1.0
WAIT = 120.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, env={"CAAS_USAGE_FLUSH_SECONDS": str(FLUSH_SECONDS)}).start()
    yield c
    c.stop()


def totals(client: httpx.Client, url: str, tenant_id: str) -> dict[str, int]:
    now = datetime.now(UTC)
    params = {"from": (now - timedelta(hours=2)).isoformat(), "to": (now + timedelta(hours=2)).isoformat()}
    r = client.get(f"{url}/v1/tenants/{tenant_id}/usage", params=params, headers=bearer(ADMIN))
    assert r.status_code == 200, r.text
    found: dict[str, int] = r.json()["totals"]
    return found


def wait_for(client: httpx.Client, url: str, tenant_id: str, check: Any, what: str) -> dict[str, int]:
    deadline = time.monotonic() + WAIT
    while True:
        try:
            got = totals(client, url, tenant_id)
            if check(got):
                return got
        except (httpx.HTTPError, AssertionError):
            got = {}
        assert time.monotonic() < deadline, f"timed out waiting until {what}: {got}"
        time.sleep(0.25)


def post_all(url: str, tenant: Tenant, count: int, channels: int) -> set[str]:
    """Post ``count`` messages over ``channels`` channels, retrying each (same ``client_msg_id``)
    until it is acknowledged; the acknowledged message ids."""
    acked: set[str] = set()
    lock = threading.Lock()

    def one(i: int) -> None:
        body = {"text": f"m{i}", "client_msg_id": f"m{i}", "user_id": "alice"}
        with httpx.Client(timeout=15) as client:
            while True:
                try:
                    r = client.post(f"{url}/v1/channels/c{i % channels}/messages", json=body, headers=tenant.headers())
                    if r.status_code in (200, 201):
                        with lock:
                            acked.add(r.json()["message_id"])
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(count)))
    return acked


def test_usage_is_exact_after_the_usage_agent_is_killed_mid_stream(cluster: Cluster) -> None:
    url = cluster.nodes[0].url
    total, channels = 300, 6
    with httpx.Client(timeout=15) as client:
        tenant = new_tenant(client, url)
        tenant.user(client, "alice")
        for c in range(channels):
            body = {"channel_id": f"c{c}", "name": f"c{c}", "members": ["alice"]}
            assert client.post(f"{url}/v1/channels", json=body, headers=tenant.headers()).status_code == 201
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            posting = pool.submit(post_all, url, tenant, total, channels)
            wait_for(client, url, tenant.tenant_id, lambda t: t["messages"] >= total // 4, "a quarter is counted")
            cluster.kill_worker(0)  # the Faust agent dies mid-stream, before it has committed everything
            cluster.start_worker()
            acked = posting.result(timeout=WAIT)
        assert len(acked) == total
        got = wait_for(client, url, tenant.tenant_id, lambda t: t["messages"] >= total, "every message is counted")
        time.sleep(3 * FLUSH_SECONDS)  # anything counted twice would have arrived by now
        again = totals(client, url, tenant.tenant_id)
        assert got["messages"] == again["messages"] == total
        assert again["mau"] == 1 and again["stored_bytes"] == sum(len(f"m{i}") for i in range(total))


def test_a_node_killed_loses_at_most_its_last_interval_and_never_overcounts(cluster: Cluster) -> None:
    node = cluster.nodes[0]
    with httpx.Client(timeout=15) as client:
        tenant = new_tenant(client, node.url)
        made: list[float] = []
        deadline = time.monotonic() + 5 * FLUSH_SECONDS
        while time.monotonic() < deadline:  # reads for a few intervals, then kill -9 mid-interval
            r = client.get(f"{node.url}/v1/channels", headers=tenant.headers())
            assert r.status_code == 200, r.text
            made.append(time.monotonic())
        killed = time.monotonic()
        node.kill()
        node.start(timeout=60)
        recorded = wait_for(client, node.url, tenant.tenant_id, lambda t: t["api_reads"] > 0, "reads are counted")
        time.sleep(3 * FLUSH_SECONDS)
        recorded = totals(client, node.url, tenant.tenant_id)
    lost = len(made) - recorded["api_reads"]
    in_last_interval = sum(1 for t in made if t > killed - FLUSH_SECONDS - 0.5)  # 0.5 s: clock and scheduling slack
    print(json.dumps({"reads": len(made), "recorded": recorded["api_reads"], "lost": lost,
                      "reads_in_last_interval": in_last_interval, "flush_seconds": FLUSH_SECONDS}),
          file=sys.stderr)  # fmt: skip
    assert lost >= 0, "a killed node's reads were counted twice"
    assert lost <= in_last_interval, "a killed node lost more than its last interval"
