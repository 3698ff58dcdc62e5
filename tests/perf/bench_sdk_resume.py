"""Benchmark: the Python SDK's resume after a server restart, for a channel 10k events behind.

A channel holds 10,000 messages the reader has not seen (it last saw the channel's creation).
The server is restarted (a clean stop and start on the same data dir: cold caches), then the
reader resumes with ``since_seq`` and the clock runs until it has received the head event. The
same run measures a bare ``websockets`` client that sends the same subscribe frame and reads
the same frames (``json.loads`` each, check the seq), so the SDK's cost is what it adds:
parsing frames into models, the timeline's checks, the channel's queue. Rounds alternate
between the two, a restart before each.

    .venv/bin/python -m tests.perf.bench_sdk_resume [--events 10000] [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from tests.perf.common import Workdir, log, machine, start_caas
from tests.support import Server, new_tenant

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "python"))
from caas_client import AsyncClient, Realtime

CID = "backlog"


async def fill(server: Server, events: int) -> tuple[str, int, int]:
    """A tenant, a reader and a writer, a channel with ``events`` messages: (reader's token,
    the seq the reader resumes from, the head)."""
    with httpx.Client(timeout=30) as http:
        tenant = new_tenant(http, server.url, "bench-sdk")
    async with AsyncClient(server.url, tenant.api_key) as admin:
        for uid in ("reader", "writer"):
            await admin.put_user(uid, uid)
        token = (await admin.create_token("reader", ttl_seconds=86400)).token
        since = (await admin.create_channel(["reader", "writer"], channel_id=CID)).seq
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(events):
            queue.put_nowait(i)

        async def poster() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                await admin.post_message(CID, f"message {i} " + "x" * 100, user_id="writer")

        await asyncio.gather(*(poster() for _ in range(16)))
        head = (await admin.get_channel(CID)).head_seq
    return token, since, head


async def with_sdk(server: Server, token: str, since: int, head: int) -> float:
    start = time.perf_counter()
    async with Realtime(server.url, token) as rt:
        channel = rt.channel(CID, since_seq=since)
        async for frame in channel:
            if frame.seq >= head:
                break
    return time.perf_counter() - start


async def with_raw_websockets(server: Server, token: str, since: int, head: int) -> float:
    start = time.perf_counter()
    async with connect(f"{server.ws_url}?token={token}", max_size=2**24, compression=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channel_id": CID, "since_seq": since}))
        last = since
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "event":
                assert frame["seq"] == last + 1, "a gap or a duplicate"
                last = frame["seq"]
                if last >= head:
                    break
    return time.perf_counter() - start


async def main(events: int, rounds: int) -> dict[str, Any]:
    load_before = os.getloadavg()
    with Workdir() as work:
        server = start_caas(work)
        try:
            log(f"posting {events} messages")
            token, since, head = await fill(server, events)
            times: dict[str, list[float]] = {"sdk": [], "raw_websockets": []}
            for r in range(rounds):
                order = [("sdk", with_sdk), ("raw_websockets", with_raw_websockets)]
                for name, run in order if r % 2 == 0 else order[::-1]:
                    server.stop()
                    server.start(timeout=60)
                    seconds = await run(server, token, since, head)
                    times[name].append(seconds)
                    log(f"round {r} {name}: {seconds:.3f} s")
        finally:
            server.stop()
    behind = head - since

    def summary(samples: list[float]) -> dict[str, Any]:
        median = statistics.median(samples)
        return {
            "seconds": [round(s, 3) for s in samples],
            "median_seconds": round(median, 3),
            "events_per_second": round(behind / median),
        }

    sdk, raw = summary(times["sdk"]), summary(times["raw_websockets"])
    return {
        "benchmark": "sdk_resume_after_restart",
        "what": "time from connect to the head event for a channel this many events behind, after a server restart",
        "events_behind": behind,
        "rounds": rounds,
        "backend": "embedded",
        "python_sdk": sdk,
        "raw_websockets": raw,
        "sdk_over_raw": round(sdk["median_seconds"] / raw["median_seconds"], 2),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(main(args.events, args.rounds))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
