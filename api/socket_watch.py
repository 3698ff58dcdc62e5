"""The node's open websockets, watched for peers that stopped reading.

One sweep a second walks the node's sockets (an attribute read or two each, nothing per
frame): a socket that has had frames to send but drained nothing for
``CAAS_WS_STALL_SECONDS`` is aborted, which frees its buffers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from api.ws import Session


class SocketWatch:
    def __init__(self, stall_seconds: float) -> None:
        self.stall_seconds = stall_seconds
        self.interval = min(1.0, stall_seconds / 4)
        self._by_tenant: dict[str, set[Session]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def add(self, session: Session) -> None:
        self._by_tenant.setdefault(session.who.tenant_id, set()).add(session)
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep())

    def remove(self, session: Session) -> None:
        sessions = self._by_tenant.get(session.who.tenant_id)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._by_tenant[session.who.tenant_id]

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while self._by_tenant:
            await asyncio.sleep(self.interval)
            now = loop.time()
            for sessions in list(self._by_tenant.values()):
                for session in list(sessions):
                    if session.stalled(now, self.stall_seconds):
                        session.abort()
        self._sweeper = None

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
