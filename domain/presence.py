"""Presence: who is online, away or offline, derived from connections and node liveness.

The inputs are ephemeral facts (a socket opened or closed, a socket was active, an API
node is alive and holds these sockets); the output is each user's status. The rules:

- ``online`` while any of the user's sockets is held by a live node and one of them was
  active within ``away_after`` seconds; ``away`` if connected but idle longer than that.
- ``offline`` once the user has had no live socket for ``grace`` seconds, so a quick
  reconnect never flaps. A node is live while its heartbeat is younger than
  ``node_timeout``; the sockets of a dead node count as closed at its last heartbeat, so
  after a ``kill -9`` its users go offline within ``node_timeout + grace``.

Everything is a pure function of the facts and the time passed in; the caller samples
:func:`changes` on a tick, which also coalesces bursts (ten reconnects between two ticks
are no change at all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["online", "away", "offline"]
UserKey = tuple[str, str]  # (tenant_id, user_id)


@dataclass(frozen=True, slots=True)
class Timing:
    away_after: float = 300.0
    grace: float = 10.0
    node_timeout: float = 5.0


@dataclass(slots=True)
class Connection:
    tenant_id: str
    user_id: str
    node_id: str
    last_active: float


@dataclass(frozen=True, slots=True)
class Change:
    tenant_id: str
    user_id: str
    status: Status
    last_seen_at: float
    devices: int


@dataclass(slots=True)
class PresenceState:
    connections: dict[str, Connection] = field(default_factory=dict)
    by_user: dict[UserKey, set[str]] = field(default_factory=dict)
    gone_at: dict[UserKey, float] = field(default_factory=dict)  # when the last socket went
    nodes: dict[str, float] = field(default_factory=dict)  # node -> last heartbeat
    reported: dict[UserKey, Status] = field(default_factory=dict)
    last_seen: dict[UserKey, float] = field(default_factory=dict)
    dirty: set[UserKey] = field(default_factory=set)  # touched since the last sample


def opened(state: PresenceState, conn_id: str, tenant_id: str, user_id: str, node_id: str, at: float) -> None:
    if conn_id in state.connections:
        return
    state.connections[conn_id] = Connection(tenant_id, user_id, node_id, at)
    state.by_user.setdefault((tenant_id, user_id), set()).add(conn_id)
    state.gone_at.pop((tenant_id, user_id), None)  # back within the grace: nothing to expire
    state.dirty.add((tenant_id, user_id))
    state.nodes[node_id] = max(state.nodes.get(node_id, at), at)
    state.last_seen[(tenant_id, user_id)] = max(state.last_seen.get((tenant_id, user_id), at), at)


def active(state: PresenceState, conn_id: str, at: float) -> None:
    conn = state.connections.get(conn_id)
    if conn is not None and at > conn.last_active:
        conn.last_active = at
        key = (conn.tenant_id, conn.user_id)
        state.dirty.add(key)
        state.last_seen[key] = max(state.last_seen.get(key, at), at)


def closed(state: PresenceState, conn_id: str, at: float) -> None:
    conn = state.connections.pop(conn_id, None)
    if conn is None:
        return
    key = (conn.tenant_id, conn.user_id)
    state.dirty.add(key)
    conns = state.by_user.get(key)
    if conns is not None:
        conns.discard(conn_id)
        if not conns:
            del state.by_user[key]
            state.gone_at[key] = at
    state.last_seen[key] = max(state.last_seen.get(key, at), at)


def heartbeat(state: PresenceState, node_id: str, at: float, held: list[tuple[str, str, str, float]]) -> None:
    """A node is alive and holds these sockets ``(conn_id, tenant_id, user_id, last_active)``.

    Sockets it no longer lists are closed; sockets this view missed are opened. That makes
    every view converge even if it started late or lost an event.
    """
    state.nodes[node_id] = max(state.nodes.get(node_id, at), at)
    listed = {conn_id for conn_id, _, _, _ in held}
    for conn_id in [c for c, conn in state.connections.items() if conn.node_id == node_id and c not in listed]:
        closed(state, conn_id, at)
    for conn_id, tenant_id, user_id, last_active in held:
        opened(state, conn_id, tenant_id, user_id, node_id, last_active)
        active(state, conn_id, last_active)


def expire_nodes(state: PresenceState, now: float, timing: Timing) -> None:
    """Close the sockets of nodes whose heartbeat stopped, as of their last heartbeat."""
    for node_id, beat in list(state.nodes.items()):
        if now - beat > timing.node_timeout:
            for conn_id in [c for c, conn in state.connections.items() if conn.node_id == node_id]:
                closed(state, conn_id, beat)
            del state.nodes[node_id]


def status(state: PresenceState, key: UserKey, now: float, timing: Timing) -> Status:
    conns = state.by_user.get(key)
    if conns:
        newest = max(state.connections[c].last_active for c in conns)
        return "online" if now - newest <= timing.away_after else "away"
    gone = state.gone_at.get(key)
    if gone is not None and now - gone < timing.grace:
        previous = state.reported.get(key, "online")
        return previous if previous != "offline" else "online"
    return "offline"


def devices(state: PresenceState, key: UserKey) -> int:
    return len(state.by_user.get(key, ()))


def changes(state: PresenceState, now: float, timing: Timing, *, sweep: bool = False) -> list[Change]:
    """Statuses that differ from what was last reported; marks them reported.

    Looks at the users touched since the last call and those within their grace period;
    ``sweep`` looks at every connected user too (for online → away, which no event causes).
    """
    expire_nodes(state, now, timing)
    keys = state.dirty | set(state.gone_at)
    if sweep:
        keys |= set(state.by_user)
    state.dirty = set()
    out = []
    for key in keys:
        current = status(state, key, now, timing)
        if current != state.reported.get(key, "offline"):
            state.reported[key] = current
            out.append(Change(key[0], key[1], current, state.last_seen.get(key, now), devices(state, key)))
        if current == "offline":
            state.gone_at.pop(key, None)
    return out
