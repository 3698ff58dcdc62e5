"""A bounded flood on loopback: tenant X hammers the API far over its limits from several
concurrent clients while tenant Y does steady light traffic. X is refused (429) and every
request of Y succeeds; Y's p99 during the flood against its unloaded p99 (issue 4's target:
within 2x) is measured and printed rather than asserted, since timed assertions flake on a
shared machine.

The flooding clients stand for other machines: they are pinned to a CPU of their own, and
the server and Y's client to another, so the measurement is of the server under the flood
rather than of the load generator taking the server's CPU away on a small machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Server, Tenant, bearer, new_tenant

WRITES, READS = 30, 60  # per tenant per second; a small share of what one node serves
LIMITS = {
    "CAAS_RATE_USER_WRITES_PER_SECOND": str(WRITES),
    "CAAS_RATE_USER_WRITES_BURST": str(WRITES),
    "CAAS_RATE_TENANT_WRITES_PER_SECOND": str(WRITES),
    "CAAS_RATE_TENANT_WRITES_BURST": str(WRITES),
    "CAAS_RATE_TENANT_READS_PER_SECOND": str(READS),
    "CAAS_RATE_TENANT_READS_BURST": str(READS),
}
SAMPLES = 400  # per phase: p99 is the 4th worst
PACE = 0.02  # Y's think time between requests: ~20 writes/s and ~20 reads/s, within its limits
FLOODERS = 4
FLOOD_SECONDS = 60.0  # hard bound on the flood, whatever happens to the test (it normally ends in ~8 s)
CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPUS, FLOOD_CPUS = ({CPUS[0]}, set(CPUS[1:])) if len(CPUS) > 1 else (set(CPUS), set(CPUS))

# One flooding client: a keep-alive connection in a closed loop, as fast as the server answers.
FLOODER = r"""
import http.client, json, os, sys, time
host, port, token, key, seconds, stop = sys.argv[1:7]
port, seconds = int(port), float(seconds)
conn = http.client.HTTPConnection(host, port, timeout=10)
post = json.dumps({"text": "flood"}).encode()
counts = {}
started = time.monotonic()
deadline = started + seconds
i = 0
while time.monotonic() < deadline and not (i % 64 == 0 and os.path.exists(stop)):
    if i % 2:
        conn.request("POST", "/v1/channels/room/messages", body=post,
                     headers={"authorization": "Bearer " + token, "content-type": "application/json"})
    else:
        conn.request("GET", "/v1/channels", headers={"authorization": "Bearer " + key})
    r = conn.getresponse()
    r.read()
    counts[r.status] = counts.get(r.status, 0) + 1
    if i == 0:
        print("ready", flush=True)
    i += 1
counts["seconds"] = time.monotonic() - started
print(json.dumps(counts), flush=True)
"""


@pytest.fixture(scope="module")
def flood_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(Path(tmp_path_factory.mktemp("flood")) / "data")
    yield srv
    srv.stop()


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(len(ordered) * 0.99) - 1] if len(ordered) >= 100 else ordered[-1]


def steady(client: httpx.Client, y: Tenant, token: str, n: int) -> list[float]:
    """Y's light traffic: alternate a post and a history read; the latency of each."""
    latencies = []
    for i in range(n):
        started = time.perf_counter()
        if i % 2:
            r = client.post(f"{y.url}/v1/channels/room/messages", json={"text": f"y{i}"}, headers=bearer(token))
            assert r.status_code == 201, r.text
        else:
            r = client.get(f"{y.url}/v1/channels/room/messages", params={"limit": 20}, headers=bearer(token))
            assert r.status_code == 200, r.text
        latencies.append(time.perf_counter() - started)
        time.sleep(PACE)  # pacing Y's load, not an assertion
    return latencies


def start_server(root: Path) -> Server:
    """A server with the flood's limits, every thread pinned to the server's CPU."""
    srv = Server(root, env=LIMITS).start()
    assert srv.process is not None
    for thread in Path(f"/proc/{srv.process.pid}/task").iterdir():  # every thread of the server
        os.sched_setaffinity(int(thread.name), SERVER_CPUS)
    return srv


def measure_flood(server: Server, client: httpx.Client, work: Path, run: str = "") -> dict[str, Any]:
    """Y's latencies unloaded, then while X floods: the figures, and X's answers by status."""
    stop = work / f"stop{run}"
    x, y = new_tenant(client, server.url, f"x{run}"), new_tenant(client, server.url, f"y{run}")
    tokens = {}
    for tenant, name in ((x, "x"), (y, "y")):
        tokens[name] = tenant.user(client, "alice")
        r = client.post(f"{tenant.url}/v1/channels", json={"channel_id": "room"}, headers=bearer(tokens[name]))
        assert r.status_code == 201, r.text

    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, SERVER_CPUS)  # Y's client shares the server's CPU in both phases alike
    with httpx.Client(timeout=10) as yc:
        steady(yc, y, tokens["y"], 40)  # warm up connections and caches
        unloaded = steady(yc, y, tokens["y"], SAMPLES)
        flooders = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    FLOODER,
                    "127.0.0.1",
                    str(server.port),
                    tokens["x"],
                    x.api_key,
                    str(FLOOD_SECONDS),
                    str(stop),
                ],
                stdout=subprocess.PIPE,
                text=True,
                preexec_fn=lambda: os.sched_setaffinity(0, FLOOD_CPUS),
            )
            for _ in range(FLOODERS)
        ]
        try:
            for f in flooders:
                assert f.stdout is not None and f.stdout.readline().strip() == "ready"
            flood_started = time.monotonic()
            loaded = steady(yc, y, tokens["y"], SAMPLES)
            flood_window = time.monotonic() - flood_started
            stop.touch()
            counts: dict[str, float] = {}
            for f in flooders:
                out, _ = f.communicate(timeout=FLOOD_SECONDS + 10)
                for status, n in json.loads(out.strip().splitlines()[-1]).items():
                    counts[status] = counts.get(status, 0) + n
            flood_seconds = counts.pop("seconds") / FLOODERS
        finally:
            os.sched_setaffinity(0, mine)
            for f in flooders:
                if f.poll() is None:
                    f.kill()
                    f.wait()
    total = int(sum(counts.values()))

    def ms(value: float) -> float:
        return round(value * 1000, 2)

    return {
        "x_requests": total,
        "x_requests_per_s": round(total / flood_seconds),
        "x_statuses": {k: int(v) for k, v in counts.items()},
        "y_p50_ms": [ms(sorted(unloaded)[len(unloaded) // 2]), ms(sorted(loaded)[len(loaded) // 2])],
        "y_p99_ms": [ms(p99(unloaded)), ms(p99(loaded))],
        "y_read_p99_ms": [ms(p99(unloaded[0::2])), ms(p99(loaded[0::2]))],
        "y_write_p99_ms": [ms(p99(unloaded[1::2])), ms(p99(loaded[1::2]))],
        "y_p99_ratio": round(p99(loaded) / p99(unloaded), 2),
        "y_flood_phase_s": round(flood_window, 1),
    }


def test_flooding_tenant_is_refused_while_another_tenant_is_served(
    flood_server: Server, client: httpx.Client, tmp_path: Path
) -> None:
    """Every request of Y succeeds (``steady`` asserts each) while X floods far over its limits.
    Y's p99 during the flood against its unloaded p99 (issue 4's target: within 2x) is printed,
    not asserted: timed assertions flake on a shared 2-core machine, so ``tests/perf/bench_flood``
    measures it and BENCHMARKS.md records it."""
    found = measure_flood(flood_server, client, tmp_path)
    print(f"\nflood: {found}")
    # X really was over its limits, hard: most of its requests were refused.
    assert found["x_statuses"].get("429", 0) >= 0.8 * found["x_requests"], found
