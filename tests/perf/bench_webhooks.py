"""Benchmark: outbound webhook deliveries per second, and the lag from commit to delivery.

One embedded ``caas serve`` delivers to a receiver process on loopback (uvicorn, answering
204; ``tests/perf/webhook_receiver.py``). ``--endpoints`` tenants each register one endpoint.

- **Throughput.** Every endpoint is paused (``PATCH enabled: false``), ``--messages`` messages
  are posted, and the endpoints are re-enabled: the processor drains the backlog. The figure is
  deliveries per second from the first arrival to the last. The limit, in the same run: a bare
  httpx sender loop in this process sending the same number of signed bodies of the same size to
  the same receiver, one sequential loop per endpoint (as the processor sends one event at a
  time per endpoint).
- **Lag.** With the endpoints enabled, messages are posted at ``--rate`` per second for
  ``--lag-seconds``; the lag of each is its arrival time at the receiver minus the event's
  ``occurred_at`` (the commit's timestamp, same machine clock), p50 and p99.

Prints one JSON document; ``--out`` also writes it.

    .venv/bin/python -m tests.perf.bench_webhooks [--endpoints 8] [--messages 4000] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import hmac
import os
import time
from typing import Any

import httpx
import orjson

from tests.perf.common import Process, Workdir, figure, log, machine, percentiles, start_caas
from tests.support import Tenant, new_tenant

TARGET_DELIVERIES_PER_SECOND = 500.0
TARGET_LAG_P50_MS = 250.0
TARGET_LAG_P99_MS = 1000.0
TEXT = "hello from the benchmark: a chat message of a fairly typical length, ~70 chars"


def setup(url: str, receiver: int, endpoints: int) -> list[tuple[Tenant, str]]:
    found = []
    with httpx.Client(timeout=60) as client:
        for i in range(endpoints):
            tenant = new_tenant(client, url, f"bench{i}")
            tenant.user(client, "u0")
            r = client.post(
                f"{url}/v1/channels",
                json={"channel_id": "c0", "name": "c0", "members": ["u0"]},
                headers=tenant.headers(),
            )
            assert r.status_code == 201, r.text
            r = client.post(
                f"{url}/v1/webhooks",
                json={"url": f"http://127.0.0.1:{receiver}/hook/{i}", "event_types": ["MessagePosted"]},
                headers=tenant.headers(),
            )
            assert r.status_code == 201, r.text
            found.append((tenant, r.json()["webhook_id"]))
    return found


def set_enabled(hooks: list[tuple[Tenant, str]], enabled: bool) -> None:
    with httpx.Client(timeout=60) as client:
        for tenant, hook in hooks:
            r = client.patch(f"{tenant.url}/v1/webhooks/{hook}", json={"enabled": enabled}, headers=tenant.headers())
            assert r.status_code == 200, r.text


async def post_all(hooks: list[tuple[Tenant, str]], count: int, rate: float | None) -> None:
    """``count`` messages spread over the tenants: as fast as 64 in flight allow, or at ``rate``/s."""
    body = orjson.dumps({"text": TEXT, "user_id": "u0"})
    slots = asyncio.Semaphore(64)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:

        async def one(i: int) -> None:
            tenant, _ = hooks[i % len(hooks)]
            async with slots:
                r = await client.post(
                    f"{tenant.url}/v1/channels/c0/messages",
                    content=body,
                    headers={**tenant.headers(), "content-type": "application/json"},
                )
                assert r.status_code == 201, r.text

        tasks = []
        started = time.perf_counter()
        for i in range(count):
            if rate is not None:
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.gather(*tasks)


def records(receiver: int) -> list[list[Any]]:
    found: list[list[Any]] = httpx.get(f"http://127.0.0.1:{receiver}/stats", timeout=60).json()
    return found


def wait_for(receiver: int, count: int, timeout: float) -> list[list[Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = records(receiver)
        if len({r[1] for r in got}) >= count:
            return got
        time.sleep(0.2)
    raise RuntimeError(f"only {len({r[1] for r in records(receiver)})} of {count} deliveries arrived")


async def bare_loop(receiver: int, endpoints: int, count: int) -> float:
    """Deliveries per second of a bare sender: ``endpoints`` sequential loops of signed POSTs."""
    body = orjson.dumps(
        {"id": "0" * 36, "type": "MessagePosted", "webhook_id": "w" * 17, "tenant_id": "t" * 17, "stream": "channel:c0",
         "channel_id": "c0", "seq": 1, "position": 1, "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
         "data": {"message_id": "0" * 36, "author_id": "u0", "text": TEXT, "parent_id": None, "attachments": [],
                  "client_msg_id": None}}
    )  # fmt: skip
    per = count // endpoints
    async with httpx.AsyncClient(timeout=30) as client:

        async def loop(n: int) -> None:
            for _ in range(per):
                stamp = int(time.time())
                signature = hmac.new(b"whsec_bench", f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
                r = await client.post(
                    f"http://127.0.0.1:{receiver}/hook/bare{n}",
                    content=body,
                    headers={"content-type": "application/json", "CAAS-Signature": f"t={stamp},v1={signature}"},
                )
                assert r.status_code == 204

        started = time.perf_counter()
        await asyncio.gather(*(loop(n) for n in range(endpoints)))
        return per * endpoints / (time.perf_counter() - started)


def occurred(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--endpoints", type=int, default=8)
    p.add_argument("--messages", type=int, default=4000)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--lag-seconds", type=float, default=10.0)
    p.add_argument("--out")
    args = p.parse_args()
    load_before = os.getloadavg()
    work = Workdir()
    receiver = Process("tests.perf.webhook_receiver")
    caas = start_caas(work.path, CAAS_WEBHOOK_ALLOW_PRIVATE="true", CAAS_QUOTAS="off", CAAS_WEBHOOK_POLL_SECONDS="2")
    try:
        hooks = setup(caas.url, receiver.port, args.endpoints)
        log("throughput: posting", args.messages, "messages to paused endpoints")
        set_enabled(hooks, False)
        asyncio.run(post_all(hooks, args.messages, None))
        httpx.delete(f"http://127.0.0.1:{receiver.port}/stats")
        set_enabled(hooks, True)
        log("draining the backlog")
        got = wait_for(receiver.port, args.messages, 600)
        arrivals = sorted(r[3] for r in got)
        unique = len({r[1] for r in got})
        rate = unique / max(arrivals[-1] - arrivals[0], 1e-9)
        duplicates = len(got) - unique
        log("throughput:", round(rate), "deliveries/s; bare sender loop…")
        httpx.delete(f"http://127.0.0.1:{receiver.port}/stats")
        bare = asyncio.run(bare_loop(receiver.port, args.endpoints, args.messages))
        log("bare:", round(bare), "deliveries/s; lag at", args.rate, "messages/s")
        httpx.delete(f"http://127.0.0.1:{receiver.port}/stats")
        lag_count = int(args.rate * args.lag_seconds)
        asyncio.run(post_all(hooks, lag_count, args.rate))
        got = wait_for(receiver.port, lag_count, 600)
        first: dict[str, list[Any]] = {}
        for record in got:
            first.setdefault(record[1], record)
        lags = [(r[3] - occurred(r[2])) * 1000 for r in first.values()]
        lag = percentiles(lags, (50, 99))
        result = {
            "benchmark": "webhooks",
            "machine": machine(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "settings": {
                "backend": "embedded",
                "endpoints": args.endpoints,
                "messages": args.messages,
                "lag_rate_per_second": args.rate,
                "lag_messages": lag_count,
                "receiver": "uvicorn (uvloop, httptools) on loopback answering 204",
            },
            "figures": [
                figure(
                    "deliveries_per_second",
                    round(rate, 1),
                    "deliveries/s",
                    target=TARGET_DELIVERIES_PER_SECOND,
                    limit="a bare httpx sender loop (signed POSTs, one sequential loop per endpoint), same receiver",
                    limit_value=round(bare, 1),
                    ratio_to=bare,
                ),
                *(
                    figure(
                        f"commit_to_delivery_lag_{point}",
                        round(lag[point], 1),
                        "ms",
                        target=target,
                        limit="none",
                        higher_is_better=False,
                    )
                    for point, target in (("p50", TARGET_LAG_P50_MS), ("p99", TARGET_LAG_P99_MS))
                ),
            ],
            "duplicates_in_throughput_phase": duplicates,
        }
        text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
        print(text)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text + "\n")
    finally:
        caas.stop()
        receiver.stop()


if __name__ == "__main__":
    main()
