"""The presence and typing processor of an API node.

Local sockets report to it; it publishes those facts on the ephemeral bus and a heartbeat
(with the sockets it holds) every ``heartbeat`` seconds; every node folds every node's
facts into the same :class:`domain.presence.PresenceState`. A tick samples the state:
changes go as ``presence`` frames to this node's watchers, and the leader (the live node
with the smallest id) records them as durable ``PresenceChanged`` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import structlog

from commands.ports import EphemeralBus
from commands.service import CommandEnvelope, Commands
from domain import presence as p
from domain.base import format_time
from domain.events import stream_name
from domain.user import RecordPresence
from streams.fanout import Hub

log = structlog.get_logger("caas.presence")
Send = Callable[[str], bool]


def iso(moment: float) -> str:
    return format_time(datetime.fromtimestamp(moment, UTC))


class PresenceService:
    def __init__(
        self,
        bus: EphemeralBus,
        hub: Hub,
        commands: Commands,
        node_id: str,
        *,
        timing: p.Timing,
        heartbeat: float = 1.0,
        tick: float = 0.25,
        sweep_every: float = 5.0,
        typing_ttl: float = 5.0,
        typing_throttle: float = 2.0,
        typing_max_watchers: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bus = bus
        self.hub = hub
        self.commands = commands
        self.node_id = node_id
        self.timing = timing
        self.heartbeat_every = heartbeat
        self.tick = tick
        self.sweep_every = sweep_every
        self.typing_ttl = typing_ttl
        self.typing_throttle = typing_throttle
        self.typing_max_watchers = typing_max_watchers
        self.clock = clock
        self.state = p.PresenceState()
        self.local: dict[str, tuple[str, str, float]] = {}  # conn -> (tenant, user, last_active)
        self.watchers: dict[p.UserKey, dict[Send, str]] = {}  # -> the status each was last sent
        self._typing_sent: dict[tuple[str, str, str], float] = {}
        self._typing_delivered: dict[tuple[str, str, str], float] = {}  # -> ``at`` of the last one let through
        self._tasks: list[asyncio.Task[None]] = []
        self.frames_sent = 0
        self.raw_events = 0

    async def start(self, durable: dict[p.UserKey, str] | None = None) -> None:
        """Start; ``durable`` statuses from before this node started are reconciled:
        a user recorded online with no socket anywhere goes offline after the grace."""
        now = self.clock()
        for key, status in (durable or {}).items():
            if status != "offline":
                self.state.reported[key] = cast(p.Status, status)  # a recorded PresenceChanged status
                self.state.gone_at[key] = now
        self.bus.listen(self._on_message)
        self._tasks = [asyncio.create_task(self._heartbeats()), asyncio.create_task(self._ticks())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- local sockets -------------------------------------------------------------------
    def opened(self, conn_id: str, tenant_id: str, user_id: str) -> None:
        now = self.clock()
        self.local[conn_id] = (tenant_id, user_id, now)
        self.bus.publish({"kind": "opened", "conn": conn_id, "tenant": tenant_id, "user": user_id,
                          "node": self.node_id, "at": now})  # fmt: skip

    def open_sockets(self, tenant_id: str) -> int:
        """The tenant's sockets open in the cluster as this node knows it: its own now, the other
        nodes' as their published facts and heartbeats say (late by the bus's delivery). One pass
        over the sockets this node knows of."""
        mine = sum(1 for tenant, _, _ in self.local.values() if tenant == tenant_id)
        others = sum(
            1 for c in self.state.connections.values() if c.tenant_id == tenant_id and c.node_id != self.node_id
        )
        return mine + others

    def active(self, conn_id: str) -> None:
        held = self.local.get(conn_id)
        if held is not None:
            self.local[conn_id] = (held[0], held[1], self.clock())

    def closed(self, conn_id: str) -> None:
        if self.local.pop(conn_id, None) is not None:
            self.bus.publish({"kind": "closed", "conn": conn_id, "node": self.node_id, "at": self.clock()})

    def typing(self, tenant_id: str, channel_id: str, user_id: str) -> bool:
        """Announce typing, at most once per ``typing_throttle`` per user and channel."""
        now = self.clock()
        key = (tenant_id, channel_id, user_id)
        if now - self._typing_sent.get(key, 0.0) < self.typing_throttle:
            return False
        self._typing_sent[key] = now
        if len(self._typing_sent) > 100_000:
            self._typing_sent = {k: t for k, t in self._typing_sent.items() if now - t < self.typing_throttle}
        self.bus.publish({"kind": "typing", "tenant": tenant_id, "channel": channel_id, "user": user_id, "at": now})
        return True

    # --- watchers ------------------------------------------------------------------------
    def watch(self, tenant_id: str, user_ids: list[str], send: Send) -> None:
        now = self.clock()
        p.expire_nodes(self.state, now, self.timing)  # a dead node's sockets count as closed now, not next tick
        for user_id in user_ids:
            key = (tenant_id, user_id)
            status = p.status(self.state, key, now, self.timing)
            self.watchers.setdefault(key, {})[send] = status
            send(self._frame(key, status, now))

    def unwatch(self, send: Send) -> None:
        for key in [k for k, sends in self.watchers.items() if send in sends]:
            del self.watchers[key][send]
            if not self.watchers[key]:
                del self.watchers[key]

    def snapshot(self, tenant_id: str, user_id: str) -> dict[str, Any]:
        key = (tenant_id, user_id)
        now = self.clock()
        p.expire_nodes(self.state, now, self.timing)
        seen = self.state.last_seen.get(key)
        return {
            "status": p.status(self.state, key, now, self.timing),
            "last_seen_at": iso(seen) if seen is not None else None,
            "devices": p.devices(self.state, key),
        }

    def _frame(self, key: p.UserKey, status: str, now: float) -> str:
        seen = self.state.last_seen.get(key)
        return orjson.dumps({"type": "presence", "user_id": key[1], "status": status,
                             "last_seen_at": iso(seen) if seen is not None else None,
                             "devices": p.devices(self.state, key)}).decode()  # fmt: skip

    # --- the shared view -----------------------------------------------------------------
    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("kind")
        self.raw_events += 1
        if kind == "opened":
            p.opened(self.state, message["conn"], message["tenant"], message["user"], message["node"], message["at"])
        elif kind == "closed":
            p.closed(self.state, message["conn"], message["at"])
        elif kind == "heartbeat":
            p.heartbeat(self.state, message["node"], message["at"], [tuple(h) for h in message["held"]])
        elif kind == "typing":
            self._deliver_typing(message)

    def _deliver_typing(self, message: dict[str, Any]) -> None:
        tenant_id, channel_id, user_id = message["tenant"], message["channel"], message["user"]
        # the throttle again, cluster-wide: the user's other devices may announce it from other nodes
        key, at = (tenant_id, channel_id, user_id), message["at"]
        if at - self._typing_delivered.get(key, float("-inf")) < self.typing_throttle:
            return
        self._typing_delivered[key] = at
        if len(self._typing_delivered) > 100_000:
            self._typing_delivered = {k: t for k, t in self._typing_delivered.items() if at - t < self.typing_throttle}
        if self.hub.subscribers(tenant_id, channel_id) > self.typing_max_watchers:
            return  # too many watchers: typing in a huge channel is noise (as Stream does)
        self.hub.typing(tenant_id, channel_id, user_id, expires_in_ms=int(self.typing_ttl * 1000))

    async def _heartbeats(self) -> None:
        while True:
            held = [[conn, t, u, active] for conn, (t, u, active) in self.local.items()]
            self.bus.publish({"kind": "heartbeat", "node": self.node_id, "at": self.clock(), "held": held})
            await asyncio.sleep(self.heartbeat_every)

    def is_leader(self) -> bool:
        return min([*self.state.nodes, self.node_id]) == self.node_id

    async def _ticks(self) -> None:
        last_sweep = 0.0
        while True:
            await asyncio.sleep(self.tick)
            now = self.clock()
            sweep = now - last_sweep >= self.sweep_every
            if sweep:
                last_sweep = now
            try:
                await self._publish_changes(p.changes(self.state, now, self.timing, sweep=sweep), now)
            except Exception as exc:  # never let one failed record stop presence
                log.warning("presence_tick_failed", error=str(exc))

    async def _publish_changes(self, changes: list[p.Change], now: float) -> None:
        leader = self.is_leader()
        records = []
        for change in changes:
            key = (change.tenant_id, change.user_id)
            sends = self.watchers.get(key)
            if sends:
                frame = self._frame(key, change.status, now)
                for send, told in list(sends.items()):
                    if told == change.status:
                        continue  # it subscribed between the change and this sample: already told
                    sends[send] = change.status
                    send(frame)
                    self.frames_sent += 1
            if leader:
                command = RecordPresence(status=change.status, last_seen_at=iso(change.last_seen_at))
                stream = stream_name("user", change.user_id)
                records.append(
                    self.commands.execute(CommandEnvelope(change.tenant_id, stream, command, actor="system:presence"))
                )
        for result in await asyncio.gather(*records, return_exceptions=True):
            if isinstance(result, Exception):
                log.warning("presence_record_failed", error=str(result))
