"""Websocket subscribers in a separate process (the ``websockets`` asyncio client).

Reads a JSON spec on stdin, opens every socket (subscribing to a channel when asked),
prints ``READY <n>`` on stdout, then counts event frames until each socket has seen
``expect`` of them (or ``timeout``), and prints one JSON line of results:

- ``frames``, ``first_ns``/``last_ns`` (CLOCK_MONOTONIC, comparable across processes),
- ``in_order``: every socket saw seqs strictly increasing by one, nothing twice,
- with ``latency``: post → delivery latencies, from the send time the poster put in the text.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from tests.perf.common import percentiles, raise_nofile, run_async


async def _open(url: str, subscribe: dict[str, Any] | None, compression: str | None) -> ClientConnection:
    ws = await connect(url, open_timeout=60, ping_interval=None, max_queue=None, compression=compression)
    if subscribe is not None:
        await ws.send(orjson.dumps({"type": "subscribe", **subscribe}).decode())
        while True:
            frame = orjson.loads(await ws.recv())
            if frame.get("type") == "subscribed":
                break
            if frame.get("type") == "error":
                raise RuntimeError(f"subscribe failed: {frame}")
    return ws


async def _main(spec: dict[str, Any]) -> dict[str, Any]:
    raise_nofile()
    expect: int = spec["expect"]
    latency: bool = spec.get("latency", False)
    warmup: int = spec.get("warmup", 0)
    compression = spec.get("compression", "deflate")
    gate = asyncio.Semaphore(spec.get("connect_concurrency", 50))

    async def opened(url: str) -> ClientConnection:
        async with gate:
            return await _open(url, spec.get("subscribe"), compression)

    sockets = await asyncio.gather(*(opened(url) for url in spec["urls"]))
    sys.stdout.write(f"READY {len(sockets)}\n")
    sys.stdout.flush()

    stats = {"frames": 0, "first_ns": 0, "last_ns": 0, "in_order": True, "closed": 0, "short": 0}
    lat: list[float] = []

    async def consume(ws: ClientConnection) -> None:
        seen = 0
        last_seq = None
        try:
            while seen < expect:
                raw = await ws.recv()
                now = time.monotonic_ns()
                if stats["first_ns"] == 0:
                    stats["first_ns"] = now
                stats["last_ns"] = max(stats["last_ns"], now)
                frame = orjson.loads(raw)
                if frame.get("type") != "event":
                    continue
                seen += 1
                stats["frames"] += 1
                seq = frame["seq"]
                if last_seq is not None and seq != last_seq + 1:
                    stats["in_order"] = False
                last_seq = seq
                if latency:
                    text = frame["event"]["payload"]["text"]
                    _, i, sent = text.split(" ", 2)
                    if int(i) >= warmup:
                        lat.append((now - int(sent)) / 1e6)
        except Exception:
            stats["closed"] += 1
        if seen < expect:
            stats["short"] += 1

    tasks = [asyncio.create_task(consume(ws)) for ws in sockets]
    _, pending = await asyncio.wait(tasks, timeout=spec.get("timeout", 120))
    for task in pending:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    result: dict[str, Any] = {**stats, "sockets": len(sockets), "timed_out": len(pending)}
    if latency:
        result["latency_ms"] = percentiles(lat)
        result["latency_samples"] = len(lat)
    return result


def main() -> None:
    spec = orjson.loads(sys.stdin.buffer.readline())
    result = run_async(_main(spec))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
