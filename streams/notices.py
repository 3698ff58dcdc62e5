"""Notices to users' own sockets about end-to-end encryption's devices (docs/e2e.md).

Every committed event reaches :meth:`UserNotices.publish` on every node (a log listener, like
the channel hub). Two events of the user stream become frames on this node's sockets:

- ``OneTimePrekeyClaimed`` leaving fewer than ``domain.devices.LOW_PREKEYS`` one-time prekeys in
  the device's pool: a ``prekeys_low`` frame to the user's own sockets (their device uploads
  more);
- ``IdentityKeyChanged``: an ``identity_key_changed`` frame (a safety-number change) to the
  sockets of every user who shares a channel with the user, and to the user's own. Who shares a
  channel is read from the chat read model (``contacts``), so a membership only just recorded
  may be missed.

Frames are offered without waiting: a socket whose outbox is full is closed by its session
(``send`` returns ``False``), as for presence frames.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import orjson
import structlog

from domain.devices import LOW_PREKEYS
from domain.events import Event

log = structlog.get_logger("caas.notices")

Send = Callable[[str], bool]
Contacts = Callable[[str, str], Awaitable[set[str]]]
"""``(tenant_id, user_id) -> user ids`` sharing a channel with the user."""


def prekeys_low_frame(event: Event) -> str:
    p = event.payload
    frame = {
        "type": "prekeys_low",
        "user_id": event.stream_id,
        "device_id": p["device_id"],
        "remaining": p["remaining"],
        "threshold": LOW_PREKEYS,
    }
    return orjson.dumps(frame).decode()


def identity_changed_frame(event: Event) -> str:
    p = event.payload
    frame = {
        "type": "identity_key_changed",
        "user_id": event.stream_id,
        "device_id": p["device_id"],
        "identity_key": p["identity_key"],
        "previous_identity_key": p["previous_identity_key"],
        "occurred_at": event.occurred_at,
    }
    return orjson.dumps(frame).decode()


class UserNotices:
    """This node's sockets by user, and the device notices that go to them."""

    def __init__(self, contacts: Contacts | None = None) -> None:
        self.contacts = contacts
        self._sockets: dict[tuple[str, str], set[Send]] = {}
        self._tenants: dict[str, int] = {}  # sockets per tenant: no contact lookup for a tenant with none here
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, tenant_id: str, user_id: str, send: Send) -> None:
        self._sockets.setdefault((tenant_id, user_id), set()).add(send)
        self._tenants[tenant_id] = self._tenants.get(tenant_id, 0) + 1

    def remove(self, tenant_id: str, user_id: str, send: Send) -> None:
        sends = self._sockets.get((tenant_id, user_id))
        if sends is None or send not in sends:
            return
        sends.discard(send)
        if not sends:
            del self._sockets[(tenant_id, user_id)]
        left = self._tenants[tenant_id] - 1
        if left:
            self._tenants[tenant_id] = left
        else:
            del self._tenants[tenant_id]

    def publish(self, events: Sequence[Event]) -> None:
        for event in events:
            if event.type == "OneTimePrekeyClaimed" and event.payload["remaining"] < LOW_PREKEYS:
                self._send(event.tenant_id, [event.stream_id], prekeys_low_frame(event))
            elif event.type == "IdentityKeyChanged" and event.tenant_id in self._tenants:
                task = asyncio.ensure_future(self._tell_contacts(event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _tell_contacts(self, event: Event) -> None:
        user_id = event.stream_id
        try:
            found = set() if self.contacts is None else await self.contacts(event.tenant_id, user_id)
        except Exception as exc:  # the read store is down: the contacts learn it on their next bundle fetch
            log.warning("identity_change_not_pushed", tenant_id=event.tenant_id, error=repr(exc))
            return
        self._send(event.tenant_id, sorted(found | {user_id}), identity_changed_frame(event))

    def _send(self, tenant_id: str, user_ids: list[str], frame: str) -> None:
        for user_id in user_ids:
            for send in list(self._sockets.get((tenant_id, user_id), ())):
                send(frame)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
