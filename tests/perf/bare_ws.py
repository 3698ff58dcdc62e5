"""The fan-out limit: the ``websockets`` library's own server broadcasting with ``websockets.broadcast``.

Sockets on ``/sub`` are subscribers; every text frame received on ``/pub`` is broadcast to all
of them. Runs on uvloop, like ``caas serve``. Run by bench_fanout.
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


async def main_async(port: int) -> None:
    # compression=None: like caas serve, which declines permessage-deflate (api/cli.py)
    async with serve(handler, "127.0.0.1", port, ping_interval=None, max_queue=None, compression=None):
        await asyncio.Future()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    raise_nofile()
    run_async(main_async(args.port))


if __name__ == "__main__":
    main()
