"""A websocket server that plays a script, for what a correct CAAS server never does on demand:
a frame of a newer server, a gap, a close with a chosen code. Each connection runs
``script(ws, n)`` (``n``: the connection's number, from 0) on a real loopback socket."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve

Script = Callable[[ServerConnection, int], Awaitable[None]]


class Scripted:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.received: list[dict[str, Any]] = []  # every frame the clients sent, in order
        self._server: Server | None = None

    async def __aenter__(self) -> Scripted:
        self._server = await serve(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _handle(self, ws: ServerConnection) -> None:
        n = self.connections
        self.connections += 1
        await self.script(ws, n)

    async def receive(self, ws: ServerConnection) -> dict[str, Any]:
        """The client's next frame (recorded in :attr:`received`)."""
        frame: dict[str, Any] = json.loads(await ws.recv())
        self.received.append(frame)
        return frame


def event(channel_id: str, seq: int, **envelope: Any) -> str:
    """An event frame as the server sends it; ``envelope`` overrides fields of the event."""
    body = {
        "event_id": f"e{seq}", "tenant_id": "t", "stream": f"channel:{channel_id}", "seq": seq,
        "position": 100 + seq, "type": "MessagePosted", "schema_version": 1,
        "occurred_at": "2026-01-01T00:00:00Z", "actor": "alice", "command_id": None,
        "causation_id": None, "correlation_id": None, "payload": {"text": f"m{seq}"},
    }  # fmt: skip
    body.update(envelope)
    return json.dumps({"type": "event", "channel_id": channel_id, "seq": seq, "position": 100 + seq, "event": body})


def subscribed(channel_id: str, head_seq: int) -> str:
    return json.dumps({"type": "subscribed", "channel_id": channel_id, "head_seq": head_seq})
