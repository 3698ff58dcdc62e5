"""Messages waiting for the server's acknowledgement: state, storage and reconciliation.

A message is stored before the first attempt and removed only once the server has answered it
(or refused it for good). Every attempt carries the same ``client_msg_id``, which the server
deduplicates, so a message whose answer was lost in a broken connection is sent again and
recorded once: the network can drop and repeat, the channel still holds it exactly once.
The state here is pure; :class:`caas_client.realtime_outbox.Outbox` drives it over HTTP.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol


def new_client_msg_id() -> str:
    return "cm-" + uuid.uuid4().hex


@dataclass(frozen=True)
class Pending:
    """A message to deliver. ``attachments`` are dicts as ``POST …/messages`` takes them."""

    client_msg_id: str
    channel_id: str
    text: str
    parent_id: str | None = None
    attachments: tuple[dict[str, Any], ...] = ()
    user_id: str | None = None  # the author, when a tenant's API key posts for a user

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"text": self.text, "client_msg_id": self.client_msg_id}
        if self.user_id is not None:
            body["user_id"] = self.user_id
        if self.parent_id is not None:
            body["parent_id"] = self.parent_id
        if self.attachments:
            body["attachments"] = list(self.attachments)
        return body


@dataclass(frozen=True)
class Ack:
    """The server's acknowledgement: where the message landed."""

    client_msg_id: str
    channel_id: str
    message_id: str
    seq: int
    position: int | None  # what min_position takes to read the message back


class OutboxStore(Protocol):
    """Where pending messages survive: memory, a file (SQLite), or the app's own."""

    def load(self) -> list[Pending]:
        """The pending messages, oldest first."""
        ...

    def add(self, pending: Pending) -> None: ...

    def remove(self, client_msg_id: str) -> None: ...


@dataclass
class MemoryStore:
    """Pending messages in memory: they survive reconnects, not a restart of the process."""

    items: dict[str, Pending] = field(default_factory=dict)

    def load(self) -> list[Pending]:
        return list(self.items.values())

    def add(self, pending: Pending) -> None:
        self.items.setdefault(pending.client_msg_id, pending)

    def remove(self, client_msg_id: str) -> None:
        self.items.pop(client_msg_id, None)


class SqliteStore:
    """Pending messages in a SQLite file: they survive a crash or a restart of the app."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (n INTEGER PRIMARY KEY AUTOINCREMENT,"
            " client_msg_id TEXT UNIQUE NOT NULL, pending TEXT NOT NULL)"
        )

    def load(self) -> list[Pending]:
        with self._lock:
            rows = self._db.execute("SELECT pending FROM outbox ORDER BY n").fetchall()
        out = []
        for (text,) in rows:
            data = json.loads(text)
            data["attachments"] = tuple(data["attachments"])
            out.append(Pending(**data))
        return out

    def add(self, pending: Pending) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO outbox (client_msg_id, pending) VALUES (?, ?)",
                (pending.client_msg_id, json.dumps(asdict(pending))),
            )

    def remove(self, client_msg_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE client_msg_id = ?", (client_msg_id,))

    def close(self) -> None:
        self._db.close()


@dataclass
class OutboxState:
    """Pending messages in order and what became of the others; each message is acknowledged
    (or rejected) once, whichever of the HTTP answer and the socket's event frame comes first."""

    store: OutboxStore = field(default_factory=MemoryStore)
    pending: dict[str, Pending] = field(default_factory=dict)
    # the latest ``remember`` outcomes only: a long-running sender must not grow without bound
    acked: OrderedDict[str, Ack] = field(default_factory=OrderedDict)
    rejected: OrderedDict[str, str] = field(default_factory=OrderedDict)  # client_msg_id -> error code
    remember: int = 1000

    def __post_init__(self) -> None:
        for item in self.store.load():
            self.pending[item.client_msg_id] = item

    def enqueue(self, pending: Pending) -> bool:
        """Add a message; ``False`` if its ``client_msg_id`` is known already (nothing changes)."""
        cid = pending.client_msg_id
        if cid in self.pending or cid in self.acked or cid in self.rejected:
            return False
        self.store.add(pending)
        self.pending[cid] = pending
        return True

    def next(self) -> Pending | None:
        """The oldest message still waiting."""
        return next(iter(self.pending.values()), None)

    def defer(self, client_msg_id: str) -> None:
        """Put the message, and the later ones of its channel, behind the other channels'
        messages: one that keeps failing does not hold up the rest; a channel keeps its order."""
        item = self.pending.get(client_msg_id)
        if item is None:
            return
        moved = [p for p in self.pending.values() if p.channel_id == item.channel_id]
        for p in moved:
            del self.pending[p.client_msg_id]
            self.pending[p.client_msg_id] = p

    def acknowledge(self, ack: Ack) -> bool:
        """Record the server's acknowledgement; ``True`` the first time only."""
        if self.pending.pop(ack.client_msg_id, None) is None:
            return False
        self.store.remove(ack.client_msg_id)
        self.acked[ack.client_msg_id] = ack
        _forget_oldest(self.acked, self.remember)
        return True

    def reject(self, client_msg_id: str, code: str) -> bool:
        """The server refused the message for good (not retryable); ``True`` the first time."""
        if self.pending.pop(client_msg_id, None) is None:
            return False
        self.store.remove(client_msg_id)
        self.rejected[client_msg_id] = code
        _forget_oldest(self.rejected, self.remember)
        return True

    def observe(self, event: dict[str, Any]) -> Ack | None:
        """Reconcile with an event seen on the socket: a ``MessagePosted`` carrying one of our
        ``client_msg_id``s acknowledges it even if the HTTP answer never arrives."""
        if event.get("type") != "MessagePosted":
            return None
        payload = event.get("payload") or {}
        cmid = payload.get("client_msg_id")
        if not isinstance(cmid, str) or cmid not in self.pending:
            return None
        position = event.get("position")
        ack = Ack(
            cmid,
            self.pending[cmid].channel_id,
            str(payload.get("message_id")),
            int(event["seq"]),
            position if isinstance(position, int) else None,
        )
        return ack if self.acknowledge(ack) else None


def _forget_oldest(items: OrderedDict[str, Any], keep: int) -> None:
    while len(items) > keep:
        items.popitem(last=False)
