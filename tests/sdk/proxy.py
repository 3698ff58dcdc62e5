"""A TCP proxy for the SDK's tests: it can cut a connection mid-request, cut it once the server
has answered but before the answer reaches the client, or hold back what the server sends."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from enum import Enum


class Cut(Enum):
    PASS = "pass"
    MID_REQUEST = "mid_request"  # forward half of the first bytes the client sends, then cut
    BEFORE_ANSWER = "before_answer"  # forward the request, wait for the server's answer, cut instead


@dataclass
class Proxy:
    """``plan[i]`` is what happens to the i-th connection (then :attr:`Cut.PASS`). While
    :attr:`flowing` is clear, nothing the server sends is read (with a small receive buffer, so
    the server's socket backs up quickly)."""

    upstream_port: int
    plan: list[Cut] = field(default_factory=list)
    small_buffer: bool = False
    port: int = 0
    connections: int = 0
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> Proxy:
        self.flowing.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        if me is not None:
            self._tasks.add(me)
            me.add_done_callback(self._tasks.discard)
        cut = self.plan[self.connections] if self.connections < len(self.plan) else Cut.PASS
        self.connections += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.small_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.upstream_port))
        up_reader, up_writer = await asyncio.open_connection(sock=sock, limit=4096)
        try:
            if cut is Cut.MID_REQUEST:
                first = await reader.read(65536)
                up_writer.write(first[: max(1, len(first) // 2)])
                await up_writer.drain()
            elif cut is Cut.BEFORE_ANSWER:
                self._spawn(self._pipe(reader, up_writer, gated=False))
                await up_reader.read(1)  # the server has answered: the write was applied
            else:
                self._spawn(self._pipe(reader, up_writer, gated=False))
                await self._pipe(up_reader, writer, gated=True)
        finally:
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.transport.abort()

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, gated: bool) -> None:
        try:
            while True:
                if gated:
                    await self.flowing.wait()
                data = await src.read(4096)
                if not data:
                    break
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()
