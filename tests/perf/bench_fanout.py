"""Benchmark 3: fan-out of one channel to 1,000 websocket subscribers, beside a bare
``websockets`` server that broadcasts the same frames (``websockets.broadcast``).

1,000 users of one channel subscribe from two client processes, through a minimal asyncio
websocket client (``tests.perf.wsclients.RawSocket``): with the ``websockets`` client the two
client processes, not the server, were the ceiling (~5k frames/s each on this machine).
Twice: with clients that offer permessage-deflate, as browsers do (both servers accept it,
so every frame is compressed once per socket), then with clients that do not. Server RSS is
read from /proc/<pid>/status before and after they connect (a fresh server each time). Then
messages are posted as fast as a few keep-alive connections allow; deliveries/s = frames
received by all subscribers / (last frame received - first post sent). The bare server gets
the very frames CAAS sent (same bytes, ``streams.fanout.event_frame``) over one websocket.

    .venv/bin/python -m tests.perf.bench_fanout [--subscribers 1000] [--messages 300]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect

from domain.events import Event
from streams.fanout import event_frame
from tests.perf.common import (
    HttpConn,
    Process,
    Subscribers,
    Workdir,
    cpu_seconds,
    figure,
    log,
    machine,
    make_chat,
    rss_kib,
    run_async,
    start_caas,
)

TARGET_DELIVERIES = 50_000.0
TARGET_KIB_PER_SUB = 50.0
PROCESSES = 2
CLIENT = "raw"  # tests.perf.wsclients.RawSocket: the websockets client costs more per frame than the server
TEXT = "fan-out benchmark message, a chat line of a fairly typical length: lorem ipsum"


async def post_burst(port: int, token: str, cid: str, count: int, connections: int = 4) -> int:
    conns = [await HttpConn("127.0.0.1", port).connect() for _ in range(connections)]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    path = f"/v1/channels/{cid}/messages"
    body = orjson.dumps({"text": TEXT})
    numbers = iter(range(count))
    errors = 0

    async def worker(conn: HttpConn) -> None:
        nonlocal errors
        for _ in numbers:
            status, _ = await conn.request("POST", path, headers, body)
            errors += status != 201

    await asyncio.gather(*(worker(c) for c in conns))
    for c in conns:
        c.close()
    return errors


async def publish(port: int, frames: list[str]) -> None:
    async with connect(f"ws://127.0.0.1:{port}/pub", ping_interval=None) as ws:
        for frame in frames:
            await ws.send(frame)
        await ws.send("")  # nothing more; wait for the server to read everything
        await asyncio.sleep(0)


def fan_out(
    pid: int, urls: list[str], subscribe: dict[str, Any] | None, expect: int, go: Any, compression: str
) -> dict[str, Any]:
    """Connect subscribers, measure RSS, run ``go()`` (which sends ``expect`` frames), collect."""
    rss_before = rss_kib(pid)
    share = (len(urls) + PROCESSES - 1) // PROCESSES
    procs = [
        Subscribers(
            {
                "urls": urls[i : i + share],
                "subscribe": subscribe,
                "expect": expect,
                "timeout": 300,
                "client": CLIENT,
                "compression": compression,
            }
        )
        for i in range(0, len(urls), share)
    ]
    t_connect = time.monotonic()
    connected = sum(p.ready() for p in procs)
    connect_s = time.monotonic() - t_connect
    time.sleep(1.0)  # let the server settle (handshakes finished, buffers released)
    rss_after = rss_kib(pid)
    cpu0 = cpu_seconds(pid)
    t0 = time.monotonic_ns()
    errors = go()
    results = [p.result() for p in procs]
    cpu = cpu_seconds(pid) - cpu0
    rss_end = rss_kib(pid)
    frames = sum(r["frames"] for r in results)
    last = max(r["last_ns"] for r in results)
    seconds = (last - t0) / 1e9
    return {
        "subscribers": connected,
        "connect_seconds": round(connect_s, 2),
        "rss_kib_before": rss_before,
        "rss_kib_after_connect": rss_after,
        "rss_kib_after_deliveries": rss_end,
        "kib_per_subscriber": round((rss_after - rss_before) / max(1, connected), 1),
        "frames_expected": expect * connected,
        "frames_received": frames,
        "seconds": round(seconds, 3),
        "deliveries_per_s": round(frames / seconds, 1),
        "server_cpu_seconds": round(cpu, 2),
        "server_cpu_us_per_delivery": round(cpu / max(1, frames) * 1e6, 1),
        "all_in_order": all(r["in_order"] for r in results),
        "sockets_closed_early": sum(r["closed"] for r in results),
        "publish_errors": errors,
    }


def caas_fan_out(subscribers: int, messages: int, compression: str, **env: str) -> tuple[dict[str, Any], list[str]]:
    """A fresh ``caas serve`` (so the RSS delta is the subscribers' alone; ``env`` adds settings);
    returns its figures and the frames it sent."""
    with Workdir() as work:
        server = start_caas(work, **env)
        try:
            log(f"fan-out: registering {subscribers} users")
            chat = make_chat(server, users=subscribers, channels=1)
            assert server.process is not None
            pid = server.process.pid
            run_async(post_burst(server.port, chat.tokens["u0"], "c0", 20))  # warm up
            urls = [f"{server.ws_url}?token={token}" for token in chat.tokens.values()]
            log(f"fan-out: caas, {subscribers} subscribers ({compression}), {messages} messages")
            result = fan_out(pid, urls, {"channel_id": "c0"}, messages,
                             lambda: run_async(post_burst(server.port, chat.tokens["u0"], "c0", messages)),
                             compression)  # fmt: skip
            r = httpx.get(f"{server.url}/v1/events", params={"limit": 1000, "types": "MessagePosted"},
                          headers=chat.tenant.headers(), timeout=30)  # fmt: skip
            events = [Event(**e) for e in r.json()["events"]][-messages:]
        finally:
            server.stop()
    log(f"fan-out: caas {result['deliveries_per_s']:.0f} deliveries/s, {result['kib_per_subscriber']} KiB/sub")
    return result, [event_frame(e) for e in events]


def bare_fan_out(subscribers: int, frames: list[str], compression: str) -> dict[str, Any]:
    server = Process("tests.perf.bare_ws")
    try:
        urls = [f"ws://127.0.0.1:{server.port}/sub"] * subscribers
        result = fan_out(server.pid, urls, None, len(frames), lambda: run_async(publish(server.port, frames)),
                         compression)  # fmt: skip
    finally:
        server.stop()
    log(f"fan-out: bare {result['deliveries_per_s']:.0f} deliveries/s, {result['kib_per_subscriber']} KiB/sub")
    return result


def run(subscribers: int = 1000, messages: int = 300) -> dict[str, Any]:
    modes: dict[str, dict[str, Any]] = {}
    figures = []
    for compression, suffix in (("deflate", ""), ("none", "_uncompressed")):
        caas, frames = caas_fan_out(subscribers, messages, compression)
        bare = bare_fan_out(subscribers, frames, compression)
        modes[compression] = {"caas": caas, "bare_websockets": bare}
        figures += [
            figure(f"fanout_deliveries{suffix}", caas["deliveries_per_s"], "deliveries/s", target=TARGET_DELIVERIES,
                   limit=f"bare websockets.broadcast ({bare['deliveries_per_s']}/s)",
                   ratio_to=bare["deliveries_per_s"]),
            figure(f"fanout_server_memory_per_subscriber{suffix}", caas["kib_per_subscriber"], "KiB",
                   target=TARGET_KIB_PER_SUB, higher_is_better=False,
                   limit=f"bare websockets server ({bare['kib_per_subscriber']} KiB/subscriber)",
                   ratio_to=bare["kib_per_subscriber"]),
        ]  # fmt: skip
    return {
        "setup": {"subscribers": subscribers, "messages": messages, "client_processes": PROCESSES,
                  "frame_bytes": len(frames[0].encode()) if frames else 0,
                  "client": "minimal RFC 6455 asyncio client (wsclients.RawSocket)",
                  "modes": "deflate: clients offer permessage-deflate as browsers do (both servers accept it, "
                           "12-bit windows, memLevel 5); none: clients that do not offer it"},
        "deflate": modes["deflate"],
        "none": modes["none"],
        "figures": figures,
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--messages", type=int, default=300)
    args = p.parse_args()
    out = {"machine": machine(), "fanout": run(args.subscribers, args.messages)}
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
