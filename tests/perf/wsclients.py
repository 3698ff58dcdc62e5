"""Websocket subscribers in a separate process: the ``websockets`` asyncio client, or (``"client":
"raw"``) a minimal RFC 6455 client on an asyncio protocol, cheap enough per frame that a
fan-out benchmark measures the server rather than its subscribers.

Reads a JSON spec on stdin, opens every socket (subscribing to a channel when asked),
prints ``READY <n>`` on stdout, then counts event frames until each socket has seen
``expect`` of them (or ``timeout``), and prints one JSON line of results:

- ``frames``, ``first_ns``/``last_ns`` (CLOCK_MONOTONIC, comparable across processes),
- ``in_order``: every socket saw seqs strictly increasing by one, nothing twice,
- with ``latency``: post → delivery latencies, from the send time the poster put in the text.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import sys
import time
import zlib
from typing import Any

import orjson
from websockets.asyncio.client import connect

from tests.perf.common import percentiles, raise_nofile, run_async


class RawSocket(asyncio.Protocol):
    """Just enough of a websocket client: upgrade, masked text frames out, unmasked frames in
    (text queued as ``bytes``; pings answered; close ends it). With ``deflate`` it offers
    permessage-deflate, as browsers do, and inflates compressed messages (RSV1 set)."""

    def __init__(self, deflate: bool = False) -> None:
        self.deflate = deflate
        self.inflater = zlib.decompressobj(-15) if deflate else None
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.frames: asyncio.Queue[bytes | None] = asyncio.Queue()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            del self.buffer[: end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(RuntimeError(head.split(b"\r\n")[0].decode()))
                return
            self.upgraded.set_result(None)
        buf = self.buffer
        while len(buf) >= 2:
            compressed, opcode, length, start = buf[0] & 0x40, buf[0] & 0x0F, buf[1] & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    return
                length, start = struct.unpack_from("!H", buf, 2)[0], 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, start = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < start + length:
                return
            payload = bytes(buf[start : start + length])
            del buf[: start + length]
            if opcode == 1:
                if compressed and self.inflater is not None:
                    payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
                self.frames.put_nowait(payload)
            elif opcode == 9:
                self.send(payload, opcode=10)
            elif opcode == 8:
                self.frames.put_nowait(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.frames.put_nowait(None)

    def send(self, data: bytes, opcode: int = 1) -> None:
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else struct.pack("!BH", 0x80 | 126, n))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        assert self.transport is not None
        self.transport.write(head + mask + masked)

    async def recv(self) -> bytes:
        frame = await self.frames.get()
        if frame is None:
            raise ConnectionError("closed")
        return frame

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def raw_connect(url: str, deflate: bool) -> RawSocket:
    rest = url.removeprefix("ws://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    _, sock = await asyncio.get_running_loop().create_connection(lambda: RawSocket(deflate), host, int(port or 80))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")  # fmt: skip
    if deflate:
        request += "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    request += "\r\n"
    assert sock.transport is not None
    sock.transport.write(request.encode())
    await asyncio.wait_for(sock.upgraded, 60)
    return sock


async def _open(url: str, subscribe: dict[str, Any] | None, compression: str | None, raw: bool) -> Any:
    ws: Any = (
        await raw_connect(url, compression == "deflate")
        if raw
        else await connect(url, open_timeout=60, ping_interval=None, max_queue=None, compression=compression)
    )
    if subscribe is not None:
        message = orjson.dumps({"type": "subscribe", **subscribe})
        if raw:
            ws.send(message)
        else:
            await ws.send(message.decode())
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

    async def opened(url: str) -> Any:
        async with gate:
            return await _open(url, spec.get("subscribe"), compression, spec.get("client") == "raw")

    sockets = await asyncio.gather(*(opened(url) for url in spec["urls"]))
    sys.stdout.write(f"READY {len(sockets)}\n")
    sys.stdout.flush()

    stats = {"frames": 0, "first_ns": 0, "last_ns": 0, "in_order": True, "closed": 0, "short": 0}
    lat: list[float] = []

    async def consume(ws: Any) -> None:
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
                kind = frame.get("type")
                if kind != "event" and kind != "ev":  # ev: a compact event frame (?frames=compact)
                    continue
                seen += 1
                stats["frames"] += 1
                seq = frame["seq"]
                if last_seq is not None and seq != last_seq + 1:
                    stats["in_order"] = False
                last_seq = seq
                if latency:
                    text = frame["d"]["text"] if kind == "ev" else frame["event"]["payload"]["text"]
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
