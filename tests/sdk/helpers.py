"""What the SDK's end-to-end tests share: a tenant's admin client, users, a room, waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from caas_client import AsyncClient, Channel, ChannelEvent, EventFrame

from tests.support import Server, new_tenant

WAIT = 60.0  # the bound on any one condition; never a sleep


async def admin_for(server: Server, name: str = "acme") -> AsyncClient:
    """A fresh tenant's API-key client (tenants isolate tests from each other)."""
    import httpx

    with httpx.Client(timeout=30) as http:
        tenant = new_tenant(http, server.url, name)
    return AsyncClient(server.url, tenant.api_key)


async def room(admin: AsyncClient, cid: str, *users: str) -> dict[str, str]:
    """Users registered, a group channel ``cid`` with all of them; returns their tokens."""
    tokens = {}
    for uid in users:
        await admin.put_user(uid, uid.title())
        tokens[uid] = (await admin.create_token(uid)).token
    await admin.create_channel(list(users), channel_id=cid, name=cid)
    return tokens


async def read_until(channel: Channel, seq: int, got: list[ChannelEvent]) -> list[ChannelEvent]:
    """Read ``channel`` into ``got`` until its frame of ``seq``; fails after :data:`WAIT`."""

    async def read() -> None:
        async for frame in channel:
            got.append(frame)
            if frame.seq >= seq:
                return

    if not got or got[-1].seq < seq:
        await asyncio.wait_for(read(), WAIT)
    return got


async def eventually(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll ``check`` until it returns something truthy, within :data:`WAIT`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        result = await check()
        if result:
            return result
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def assert_exactly_once(frames: list[ChannelEvent], first: int, last: int) -> None:
    seqs = [f.seq for f in frames]
    assert seqs == list(range(first, last + 1)), f"expected {first}..{last}, got {seqs[:5]}…{seqs[-5:]} ({len(seqs)})"
    full = [f for f in frames if isinstance(f, EventFrame)]  # a compact frame has no envelope
    assert all(f.event.seq == f.seq and f.event.position == f.position for f in full)
