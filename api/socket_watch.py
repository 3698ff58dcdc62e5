"""The node's open websockets, watched: stuck peers and credentials that stopped being valid.

One sweep a second walks the node's sockets (an attribute read or two each, nothing per
frame): a socket whose token has passed its ``exp`` (plus the clock skew HTTP allows) is
closed with 1008, and one that has had frames to send but drained nothing for
``CAAS_WS_STALL_SECONDS`` is aborted, which frees its buffers at once. A signing-key
rotation, seen on the node's live event path, re-checks the tenant's sockets at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from commands.auth import Authenticator, Unauthenticated, erased_user
from domain.errors import UserIsErased
from domain.events import Event

if TYPE_CHECKING:
    from api.ws import Session

EXPIRED = "the token expired; reconnect with a new token"


class SocketWatch:
    def __init__(self, auth: Authenticator, stall_seconds: float, clock: Callable[[], datetime]) -> None:
        self.auth = auth
        self.clock = clock
        self.stall_seconds = stall_seconds
        self.interval = min(1.0, stall_seconds / 4)
        self._by_tenant: dict[str, set[Session]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()

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

    def tenants(self) -> list[str]:
        """The tenants with open sockets on this node."""
        return list(self._by_tenant)

    def sessions(self, tenant_id: str) -> list[Session]:
        """The tenant's open sockets on this node."""
        return list(self._by_tenant.get(tenant_id, ()))

    def on_events(self, events: Sequence[Event]) -> None:
        """Log listener: after a rotation, the tenant's sockets whose key was rotated out close;
        an erased user's sockets close at once (docs/erasure.md)."""
        for event in events:
            if event.type == "UserErased":
                for session in list(self._by_tenant.get(event.tenant_id, ())):
                    if session.who.user_id == event.stream_id:
                        session.refuse(str(erased_user(event.stream_id)))
            if event.type == "SigningKeyRotated" and event.tenant_id in self._by_tenant:
                task = asyncio.get_running_loop().create_task(self._recheck(event.tenant_id))
                self._checks.add(task)
                task.add_done_callback(self._checks.discard)

    async def _recheck(self, tenant_id: str) -> None:
        for session in list(self._by_tenant.get(tenant_id, ())):
            try:
                await self.auth.authenticate(session.token, self.clock())
            except (Unauthenticated, UserIsErased) as exc:
                session.refuse(str(exc))

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while self._by_tenant:
            await asyncio.sleep(self.interval)
            now, wall = loop.time(), time.time()
            for sessions in list(self._by_tenant.values()):
                for session in list(sessions):
                    if wall >= session.until:
                        session.refuse(EXPIRED)
                    elif session.stalled(now, self.stall_seconds):
                        session.abort()
        self._sweeper = None

    async def close(self) -> None:
        for task in [*self._checks, *([self._sweeper] if self._sweeper else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
