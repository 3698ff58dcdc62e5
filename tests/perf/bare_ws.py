"""The fan-out limit: the ``websockets`` library's own server broadcasting with ``websockets.broadcast``.

Sockets on ``/sub`` are subscribers; every text frame received on ``/pub`` is broadcast to all
of them. Runs on uvloop, like ``caas serve``; accepts permessage-deflate like it (its default
settings match uvicorn's: 12-bit windows, memLevel 5) unless ``--compression none``.
Run by bench_fanout.
"""

from __future__ import annotations

import argparse
import asyncio

from websockets.asyncio.server import ServerConnection, broadcast, serve

from tests.perf.common import raise_nofile, run_async

SUBSCRIBERS: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    if ws.request is not None and ws.request.path.startswith("/pub"):
        async for message in ws:
            broadcast(SUBSCRIBERS, message)
        return
    SUBSCRIBERS.add(ws)
    try:
        await ws.wait_closed()
    finally:
        SUBSCRIBERS.discard(ws)


async def main_async(port: int, compression: str | None) -> None:
    async with serve(handler, "127.0.0.1", port, ping_interval=None, max_queue=None, compression=compression):
        await asyncio.Future()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--compression", choices=["deflate", "none"], default="deflate")
    args = p.parse_args()
    raise_nofile()
    run_async(main_async(args.port, None if args.compression == "none" else args.compression))


if __name__ == "__main__":
    main()
