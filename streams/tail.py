"""Live feeds of one tenant's committed events: the tenant portal's event tail (docs/console.md).

Every committed event reaches :meth:`TenantTails.publish` (a log listener, like the channel
fanout); each feed is a callback a websocket registered for its tenant. Events of other tenants
never reach it. A feed that cannot keep up is the caller's to close.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from domain.events import Event

Feed = Callable[[Sequence[Event]], None]


class TenantTails:
    def __init__(self) -> None:
        self._feeds: dict[str, set[Feed]] = {}

    def add(self, tenant_id: str, feed: Feed) -> None:
        self._feeds.setdefault(tenant_id, set()).add(feed)

    def remove(self, tenant_id: str, feed: Feed) -> None:
        feeds = self._feeds.get(tenant_id)
        if feeds is not None:
            feeds.discard(feed)
            if not feeds:
                del self._feeds[tenant_id]

    def publish(self, events: Sequence[Event]) -> None:
        if not self._feeds:
            return
        by_tenant: dict[str, list[Event]] = {}
        for event in events:
            if event.tenant_id in self._feeds:
                by_tenant.setdefault(event.tenant_id, []).append(event)
        for tenant_id, mine in by_tenant.items():
            for feed in list(self._feeds.get(tenant_id, ())):
                feed(mine)
