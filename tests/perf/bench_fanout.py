"""Benchmark 3: fan-out of one channel to 1,000 websocket subscribers, beside a bare
``websockets`` server that broadcasts the same frames (``websockets.broadcast``).

1,000 users of one channel subscribe from two client processes, through a minimal asyncio
websocket client (``tests.perf.wsclients.RawSocket``): with the ``websockets`` client the two
client processes, not the server, were the ceiling (~5k frames/s each on this machine).
Four times: with clients that offer permessage-deflate, as browsers do (both servers accept it;
the bare server compresses every frame once per socket, CAAS once per event), then with clients
that do not; each with ``event`` frames and with compact ``ev`` frames (``?frames=compact``). Server RSS is
read from /proc/<pid>/status before and after they connect (a fresh server each time). Then
messages are posted as fast as a few keep-alive connections allow; deliveries/s = frames
received by all subscribers / (last frame received - first post sent). The bare server gets
the very frames CAAS sent (same bytes, ``streams.fanout.event_frame`` or ``compact_event_frame``)
over one websocket. Every figure is printed beside its issue-12 target and the same-run limit:
deliveries/s at least the bare server's, server memory at most 30 KiB per socket, and the frame
of a 150-byte message at most twice its text.

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
from streams.fanout import Wire, compact_event_frame, event_frame
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

TARGET_RATIO = 1.0  # issue 12: fan-out deliveries/s >= 1.0x a bare websockets.broadcast of the same frames
TARGET_KIB_PER_SUB = 30.0  # issue 12: server memory per socket
TARGET_FRAME_RATIO = 2.0  # issue 12: the frame of a 150-byte message <= 2x its text
MODES = (  # (what clients offer, which event frames, figure suffix)
    ("deflate", "full", ""),
    ("none", "full", "_uncompressed"),
    ("deflate", "compact", "_compact"),
    ("none", "compact", "_compact_uncompressed"),
)
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


def caas_fan_out(
    subscribers: int, messages: int, compression: str, frames: str = "full", **env: str
) -> tuple[dict[str, Any], list[Event]]:
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
            kind = "&frames=compact" if frames == "compact" else ""
            urls = [f"{server.ws_url}?token={token}{kind}" for token in chat.tokens.values()]
            log(f"fan-out: caas, {subscribers} subscribers ({compression}, {frames}), {messages} messages")
            result = fan_out(pid, urls, {"channel_id": "c0"}, messages,
                             lambda: run_async(post_burst(server.port, chat.tokens["u0"], "c0", messages)),
                             compression)  # fmt: skip
            r = httpx.get(f"{server.url}/v1/events", params={"limit": 1000, "types": "MessagePosted"},
                          headers=chat.tenant.headers(), timeout=30)  # fmt: skip
            events = [Event(**e) for e in r.json()["events"]][-messages:]
        finally:
            server.stop()
    log(f"fan-out: caas {result['deliveries_per_s']:.0f} deliveries/s, {result['kib_per_subscriber']} KiB/sub")
    return result, events


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


def wire_bytes(text: str, compression: str) -> int:
    """Bytes of one frame on a socket: the websocket frame CAAS writes (deflated once, or plain)."""
    wire = Wire(text)
    return len(wire.deflated() if compression == "deflate" else wire.plain())


def frame_sizes(event: Event) -> dict[str, int]:
    """The frames of a 150-byte message, like the run's own (the same ids, channel and time)."""
    sample = event.model_copy(update={"payload": {**event.payload, "text": "x" * 150}})
    full, compact = event_frame(sample), compact_event_frame(sample)
    return {
        "text": 150,
        "event_frame": len(full.encode()),
        "ev_frame": len(compact.encode()),
        "event_frame_deflated": wire_bytes(full, "deflate"),
        "ev_frame_deflated": wire_bytes(compact, "deflate"),
    }


def run(subscribers: int = 1000, messages: int = 300) -> dict[str, Any]:
    modes: dict[str, dict[str, Any]] = {}
    figures = []
    sizes: dict[str, int] = {}
    for compression, frames, suffix in MODES:
        caas, events = caas_fan_out(subscribers, messages, compression, frames)
        encode = compact_event_frame if frames == "compact" else event_frame
        texts = [encode(e) for e in events]
        bare = bare_fan_out(subscribers, texts, compression)
        caas["bytes_per_delivery"] = bare["bytes_per_delivery"] = wire_bytes(texts[0], compression) if texts else 0
        modes[f"{compression}_{frames}"] = {"caas": caas, "bare_websockets": bare}
        if events and not sizes:
            sizes = frame_sizes(events[0])
        ratio_limit = f"target {TARGET_RATIO:g}x bare websockets.broadcast of the same frames, same run"
        figures += [
            figure(f"fanout_deliveries{suffix}", caas["deliveries_per_s"], "deliveries/s",
                   target=TARGET_RATIO * bare["deliveries_per_s"],
                   limit=f"{ratio_limit} ({bare['deliveries_per_s']}/s)", ratio_to=bare["deliveries_per_s"]),
            figure(f"fanout_server_cpu_us_per_delivery{suffix}", caas["server_cpu_us_per_delivery"], "us",
                   target=bare["server_cpu_us_per_delivery"], higher_is_better=False,
                   limit=f"bare websockets.broadcast ({bare['server_cpu_us_per_delivery']} us/delivery)",
                   ratio_to=bare["server_cpu_us_per_delivery"]),
            figure(f"fanout_bytes_per_delivery{suffix}", caas["bytes_per_delivery"], "bytes",
                   target=caas["bytes_per_delivery"], higher_is_better=False,
                   limit="the same frames as the bare server (wire bytes of one frame)"),
            figure(f"fanout_server_memory_per_subscriber{suffix}", caas["kib_per_subscriber"], "KiB",
                   target=TARGET_KIB_PER_SUB, higher_is_better=False,
                   limit=f"bare websockets server ({bare['kib_per_subscriber']} KiB/subscriber)",
                   ratio_to=bare["kib_per_subscriber"]),
        ]  # fmt: skip
    if sizes:
        text = sizes["text"]
        for name, key in (
            ("fanout_frame_bytes_150", "ev_frame"),
            ("fanout_frame_bytes_150_deflated", "ev_frame_deflated"),
            ("fanout_frame_bytes_150_event_frame", "event_frame"),
        ):
            limit = f"{TARGET_FRAME_RATIO:g}x a 150-byte text; the event frame is {sizes['event_frame']} bytes"
            figures.append(
                figure(
                    name,
                    sizes[key],
                    "bytes",
                    target=TARGET_FRAME_RATIO * text,
                    higher_is_better=False,
                    limit=limit,
                    ratio_to=text,
                )
            )
    return {
        "setup": {"subscribers": subscribers, "messages": messages, "client_processes": PROCESSES,
                  "frame_bytes": sizes, "text": TEXT,
                  "client": "minimal RFC 6455 asyncio client (wsclients.RawSocket)",
                  "modes": "deflate: clients offer permessage-deflate as browsers do (both servers accept it, "
                           "12-bit windows, memLevel 5); none: clients that do not offer it; full: event frames; "
                           "compact: ev frames (?frames=compact)"},
        **modes,
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
