"""``WS /v1/ws`` against hostile or stuck clients: memory per socket, frame caps, ranges, credentials.

Every test runs on a real server (both backends where the path exists on both) with real
clients: the ``websockets`` client, and for sockets that must never read, a raw TCP socket
with a tiny receive buffer that does the handshake by hand.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support import Server, Tenant, bearer

WAIT = 20.0  # generous bound for any single expected frame


# --- helpers -------------------------------------------------------------------------------
def ws_connect(url: str, token: str, **kwargs: Any) -> Any:
    return connect(f"{url}?token={token}", proxy=None, open_timeout=WAIT, close_timeout=5, **kwargs)


async def recv(ws: ClientConnection, timeout: float = WAIT) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


async def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await ws.send(json.dumps(frame))


async def subscribe(ws: ClientConnection, cid: str, since: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "subscribe", "channel_id": cid}
    if since is not None:
        frame["since_seq"] = since
    await send(ws, frame)
    reply = await recv(ws)
    assert reply["type"] == "subscribed", reply
    return reply


async def until_pong(ws: ClientConnection) -> list[dict[str, Any]]:
    """Send a ping and return every frame that arrives before its pong (frames are ordered)."""
    await send(ws, {"type": "ping"})
    frames = []
    while (frame := await recv(ws))["type"] != "pong":
        frames.append(frame)
    return frames


async def closed_with(ws: ClientConnection, timeout: float = WAIT) -> tuple[list[dict[str, Any]], int | None]:
    """Every frame until the server closes the socket, and the close code it sent."""
    frames: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            left = deadline - asyncio.get_running_loop().time()
            assert left > 0, f"the socket was not closed within {timeout} s; got {frames[-3:]}"
            frames.append(await recv(ws, left))
    received = closed.value.rcvd
    return frames, None if received is None else received.code


def room(client: httpx.Client, tenant: Tenant, cid: str, *others: str) -> dict[str, str]:
    """``alice`` owns group channel ``cid`` with ``others`` as members; returns everyone's tokens."""
    tokens = {"alice": tenant.user(client, "alice")}
    for uid in others:
        tokens[uid] = tenant.user(client, uid)
    r = client.post(
        f"{tenant.url}/v1/channels",
        json={"channel_id": cid, "name": cid, "members": list(others)},
        headers=bearer(tokens["alice"]),
    )
    assert r.status_code == 201, r.text
    return tokens


def post(client: httpx.Client, url: str, token: str, cid: str, text: str) -> dict[str, Any]:
    r = client.post(f"{url}/v1/channels/{cid}/messages", json={"text": text}, headers=bearer(token))
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


# --- frame caps ----------------------------------------------------------------------------
async def test_frame_cap_counts_utf8_bytes_not_characters(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    tokens = room(client, tenant, "room", "bob")
    async with ws_connect(server.ws_url, tokens["bob"]) as ws:
        # 16,000 characters fit a 16 KiB cap counted in characters; as UTF-8 they are 48,000 bytes
        await ws.send(json.dumps({"type": "ping", "padding": "€" * 16_000}, ensure_ascii=False))
        frames, code = await closed_with(ws)
        assert [(f["type"], f["code"]) for f in frames] == [("error", "payload_too_large")], frames
        assert code == 1009


async def test_oversized_binary_frame_closes_1009(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    tokens = room(client, tenant, "room", "bob")
    async with ws_connect(server.ws_url, tokens["bob"]) as ws:
        await ws.send(b"\0" * 60_000)
        frames, code = await closed_with(ws)
        assert [(f["type"], f["code"]) for f in frames] == [("error", "payload_too_large")], frames
        assert code == 1009


async def test_small_binary_frame_gets_an_error_and_the_socket_stays_open(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    tokens = room(client, tenant, "room", "bob")
    async with ws_connect(server.ws_url, tokens["bob"]) as ws:
        await ws.send(b'{"type": "ping"}')
        error = await recv(ws)
        assert (error["type"], error["code"]) == ("error", "invalid_request"), error
        assert "text" in error["message"]
        assert await until_pong(ws) == []


# --- since_seq range -----------------------------------------------------------------------
@pytest.mark.parametrize("since", [2**63, 2**64 - 1])
async def test_since_seq_beyond_int64_is_invalid_and_the_socket_stays_open(
    server: Server, client: httpx.Client, tenant: Tenant, since: int
) -> None:
    tokens = room(client, tenant, "room", "bob")
    async with ws_connect(server.ws_url, tokens["bob"]) as ws:
        await ws.send(f'{{"type": "subscribe", "channel_id": "room", "since_seq": {since}}}')
        error = await recv(ws)
        assert (error["type"], error["code"]) == ("error", "invalid_request"), error
        assert "since_seq" in error["message"]
        assert await until_pong(ws) == []
        # the largest valid since_seq subscribes (nothing to replay) and the socket goes live
        await subscribe(ws, "room", since=2**63 - 1)
        await subscribe(ws, "room", since=3)
        written = post(client, server.url, tokens["alice"], "room", "still here")
        assert (await recv(ws))["seq"] == written["seq"]
