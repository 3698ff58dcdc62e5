"""Usage stays exact through the faults of the distributed backend (docs/meters.md):

- the worker (whose Faust agent builds the usage read model) is killed with ``kill -9`` in the
  middle of a stream of posts and restarted: every message is counted exactly once;
- an API node is killed with ``kill -9``: its unrecorded counts are lost (an undercount, never an
  overcount), at most its last interval; the loss is measured and printed.

Neither waits a fixed time: each waits until the usage model has applied a known position of
the log (the last acknowledged post; a command acknowledged after the restart), after which
nothing more can arrive, and then asserts exact figures.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.base import format_time
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


def totals(client: httpx.Client, url: str, tenant_id: str, min_position: int | None = None) -> dict[str, int]:
    now = datetime.now(UTC)
    params = {"from": (now - timedelta(hours=2)).isoformat(), "to": (now + timedelta(hours=2)).isoformat()}
    if min_position is not None:
        params["min_position"] = str(min_position)
    r = client.get(f"{url}/v1/tenants/{tenant_id}/usage", params=params, headers=bearer(ADMIN))
    assert r.status_code == 200, r.text
    found: dict[str, int] = r.json()["totals"]
    return found


def wait_for(
    client: httpx.Client, url: str, tenant_id: str, check: Any, what: str, min_position: int | None = None
) -> dict[str, int]:
    """Usage totals once ``check`` holds (with ``min_position``: once the usage model has
    applied that position; the node answers 503 until then)."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            got = totals(client, url, tenant_id, min_position)
            if check(got):
                return got
        except (httpx.HTTPError, AssertionError):
            got = {}
        assert time.monotonic() < deadline, f"timed out waiting until {what}: {got}"
        time.sleep(0.25)


def post_all(url: str, tenant: Tenant, count: int, channels: int) -> dict[str, int]:
    """Post ``count`` messages over ``channels`` channels, retrying each (same ``client_msg_id``)
    until it is acknowledged; the acknowledged message ids and their positions."""
    acked: dict[str, int] = {}
    lock = threading.Lock()

    def one(i: int) -> None:
        body = {"text": f"m{i}", "client_msg_id": f"m{i}", "user_id": "alice"}
        with httpx.Client(timeout=15) as client:
            while True:
                try:
                    r = client.post(f"{url}/v1/channels/c{i % channels}/messages", json=body, headers=tenant.headers())
                    if r.status_code in (200, 201):
                        with lock:
                            acked[r.json()["message_id"]] = int(r.json()["position"])
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
        # Every post's event is at or before the last acknowledged position: once the usage model
        # has applied that position (min_position), everything re-delivered after the kill has been
        # applied too, so a count made twice would show now. Exact, and nothing left to wait for.
        head = max(acked.values())
        got = wait_for(client, url, tenant.tenant_id, lambda t: True, "the usage model reached the head", head)
        assert got["messages"] == total
        assert got["mau"] == 1 and got["stored_bytes"] == sum(len(f"m{i}") for i in range(total))


def test_a_node_killed_loses_at_most_its_last_interval_and_never_overcounts(cluster: Cluster) -> None:
    node = cluster.nodes[0]
    with httpx.Client(timeout=15) as client:
        tenant = new_tenant(client, node.url)
        reads: list[tuple[float, float]] = []  # (sent, answered), wall clock as the node counts
        deadline = time.monotonic() + 5 * FLUSH_SECONDS
        while time.monotonic() < deadline:  # reads for a few intervals, then kill -9 mid-interval
            sent = time.time()
            r = client.get(f"{node.url}/v1/channels", headers=tenant.headers())
            assert r.status_code == 200, r.text
            reads.append((sent, time.time()))
        killed = time.time()
        node.kill()
        node.start(timeout=60)
        # One partition: a command acknowledged now was decided after every command the killed
        # node sent, so nothing of it can still arrive once the usage model has applied this one.
        r = client.put(f"{node.url}/v1/users/barrier", json={"name": "b"}, headers=tenant.headers())
        assert r.status_code in (200, 201), r.text
        head = int(r.json()["position"])
        wait_for(client, node.url, tenant.tenant_id, lambda t: True, "the usage model reached the barrier", head)
        r = client.get(
            f"{node.url}/v1/events",
            params={"types": "UsageRecorded", "limit": 1000, "min_position": head},
            headers=tenant.headers(),
        )
        assert r.status_code == 200, r.text
        ended = [(e["payload"], datetime.fromisoformat(e["payload"]["end"]).timestamp()) for e in r.json()["events"]]
        mine = [p for p, end in ended if end <= killed]  # the restarted node's intervals all end later
        assert len({p["node"] for p in mine}) == 1, "the killed node's intervals"
        recorded = sum(p["api_reads"] for p in mine)
        last = max(mine, key=lambda p: p["end"])["end"]  # RFC 3339 to the millisecond: text order is time order
    last_end = datetime.fromisoformat(last).timestamp()
    # Each read was counted by the interval it was authenticated in, between its sending and its
    # answer. The node cuts an interval at its wall clock (the same clock as time.time() here) but
    # records the cut truncated to the millisecond (domain.base.format_time): the real cut lies in
    # [last_end, last_end + 1 ms) (less the half microsecond datetime rounds a clock reading to,
    # far less than a read takes from being counted to being answered). So a read answered by
    # last_end was recorded, a read sent after last_end's millisecond was not, and a read sent
    # within that millisecond may be either: the cut may fall after it. The upper bound therefore
    # counts the reads sent in or before the recorded end's millisecond, mapped to milliseconds
    # exactly as the node maps its cut (a monotonic mapping: a read sent before the cut was sent
    # in or before the cut's millisecond).
    answered_before = sum(1 for _, answered in reads if answered <= last_end)
    sent_by = sum(1 for sent, _ in reads if format_time(datetime.fromtimestamp(sent, UTC)) <= last)
    lost = len(reads) - recorded
    boundary = math.floor(killed / FLUSH_SECONDS) * FLUSH_SECONDS  # the last flush due before the kill
    print(json.dumps({"reads": len(reads), "recorded": recorded, "lost": lost, "killed": killed,
                      "last_recorded_end": last, "answered_before": answered_before, "sent_by": sent_by,
                      "flush_seconds": FLUSH_SECONDS}),
          file=sys.stderr)  # fmt: skip
    assert answered_before <= recorded, "a read answered before the last recorded end was not recorded"
    assert recorded <= sent_by, "a read sent after the last recorded end was recorded (an overcount)"
    assert lost >= 0, "a killed node's reads were counted twice"
    # every flush before the kill was recorded, except one whose append the kill cut short
    assert last_end >= boundary - FLUSH_SECONDS, "a killed node lost more than its last interval"
