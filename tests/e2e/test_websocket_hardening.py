"""``WS /v1/ws`` against hostile or stuck clients: memory per socket, frame caps, ranges, credentials.

Every test runs on a real server (both backends where the path exists on both) with real
clients: the ``websockets`` client, and for sockets that must never read, a raw TCP socket
with a tiny receive buffer that does the handshake by hand.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.e2e.test_websocket import post, room
from tests.security.common import WAIT, claims, forge, recv, server_secret, subscribe, until_pong, ws_connect
from tests.support import Server, Tenant, bearer

MiB = 1024 * 1024


# --- helpers -------------------------------------------------------------------------------
async def error_then_close(ws: ClientConnection, timeout: float = WAIT) -> tuple[dict[str, Any], int | None]:
    """The one frame the server sends before it closes the socket (an error), and the close code."""
    frames: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            left = deadline - asyncio.get_running_loop().time()
            assert left > 0, f"the socket was not closed within {timeout} s; got {frames[-3:]}"
            frames.append(await recv(ws, left))
    assert len(frames) == 1 and frames[0]["type"] == "error", frames
    received = closed.value.rcvd
    return frames[0], None if received is None else received.code


# --- sockets that never read ---------------------------------------------------------------
def masked_text_frame(text: str) -> bytes:
    """A client-to-server text frame (clients must mask; a zero mask keeps the payload as is)."""
    payload = text.encode()
    if len(payload) < 126:
        header = struct.pack("!BB", 0x81, 0x80 | len(payload))
    else:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
    return header + b"\0\0\0\0" + payload


def stuck_socket(port: int, token: str, cid: str) -> socket.socket:
    """A websocket that subscribes to ``cid`` from the start and then never reads again.

    Its kernel receive buffer is tiny, so the server's frames pile up on the server's side.
    The handshake is read byte by byte so that no frame after it is consumed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(WAIT)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /v1/ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while not response.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, f"the server closed during the handshake: {response!r}"
        response += byte
    assert response.startswith(b"HTTP/1.1 101"), response
    sock.sendall(masked_text_frame(json.dumps({"type": "subscribe", "channel_id": cid, "since_seq": 0})))
    return sock


TCP_ESTABLISHED = 1


def still_open(sock: socket.socket) -> bool:
    """Whether the server has not closed or reset the connection, read from the kernel's TCP
    state (reading the socket would drain it and let the server make progress)."""
    state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    return state == TCP_ESTABLISHED


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def fat_body(i: int) -> dict[str, Any]:
    """A message of ~40 KB of JSON whose frame is ~90 KB in the server's memory: emoji make the
    frame's Python string four bytes per character."""
    return {
        "text": f"m{i} " + "😀" * 4000,
        "attachments": [{"type": "file", "url": f"https://files.example/{os.urandom(900).hex()}"} for _ in range(10)],
    }


async def post_fat(url: str, token: str, cid: str, n: int) -> int:
    async with httpx.AsyncClient(timeout=60) as ac:

        async def one(i: int) -> int:
            r = await ac.post(f"{url}/v1/channels/{cid}/messages", json=fat_body(i), headers=bearer(token))
            assert r.status_code == 201, r.text
            return int(r.json()["seq"])

        seqs: list[int] = []
        for start in range(0, n, 8):
            seqs += await asyncio.gather(*(one(i) for i in range(start, min(n, start + 8))))
    return max(seqs)


FAT_MESSAGES = 300
STUCK_SOCKETS = 20  # 10 sockets each of two users: under the per-user cap
GROWTH_BOUND = 150 * MiB  # unpaced, every socket held its whole replay (~26 MiB each, >500 MiB in all)


async def test_sockets_that_never_read_stay_bounded_and_are_aborted(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    assert server.process is not None
    pid = server.process.pid
    tokens = room(client, tenant, "big", "bob", "carol")
    head = await post_fat(server.url, tokens["alice"], "big", FAT_MESSAGES)
    assert head == 4 + FAT_MESSAGES
    # the replayed history must be readable before the sockets subscribe (the event index on Kafka)
    async with ws_connect(server.ws_url, tokens["alice"]) as ws:
        await subscribe(ws, "big", since=head - 1)
        assert (await recv(ws, 60))["seq"] == head

    before = rss_bytes(pid)
    socks = [stuck_socket(server.port, tokens[("bob", "carol")[i % 2]], "big") for i in range(STUCK_SOCKETS)]
    try:
        peak = before
        deadline = time.monotonic() + 90
        while any(still_open(s) for s in socks) and time.monotonic() < deadline:
            peak = max(peak, rss_bytes(pid))
            await asyncio.sleep(0.1)
        peak = max(peak, rss_bytes(pid))
        open_left = sum(still_open(s) for s in socks)
        assert peak - before < GROWTH_BOUND, f"the server grew by {(peak - before) / MiB:.0f} MiB"
        assert open_left == 0, f"{open_left} of {STUCK_SOCKETS} stuck sockets were still open after 90 s"
    finally:
        for s in socks:
            s.close()
    # the server still serves a reader that reads
    async with ws_connect(server.ws_url, tokens["bob"]) as ws:
        await subscribe(ws, "big", since=head - 2)
        assert [(await recv(ws, 60))["seq"] for _ in range(2)] == [head - 1, head]


# --- frame caps ----------------------------------------------------------------------------
async def test_frame_cap_counts_utf8_bytes_not_characters(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    tokens = room(client, tenant, "room", "bob")
    async with ws_connect(server.ws_url, tokens["bob"]) as ws:
        # 16,000 characters fit a 16 KiB cap counted in characters; as UTF-8 they are 48,000 bytes
        await ws.send(json.dumps({"type": "ping", "padding": "€" * 16_000}, ensure_ascii=False))
        error, code = await error_then_close(ws)
        assert (error["code"], code) == ("payload_too_large", 1009), error


async def test_oversized_binary_frame_closes_1009(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    tokens = room(client, tenant, "room", "bob")
    async with ws_connect(server.ws_url, tokens["bob"]) as ws:
        await ws.send(b"\0" * 60_000)
        error, code = await error_then_close(ws)
        assert (error["code"], code) == ("payload_too_large", 1009), error


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
        written = post(client, tenant, tokens["alice"], "room", "still here")
        assert (await recv(ws))["seq"] == written["seq"]


# --- credentials that stop being valid while a socket is open -------------------------------
def refused_over_http(client: httpx.Client, url: str, token: str) -> bool:
    return client.get(f"{url}/v1/channels", headers=bearer(token)).status_code == 401


async def test_socket_closes_1008_when_its_signing_key_is_rotated_out(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    tokens = room(client, tenant, "room", "bob")
    async with ws_connect(server.ws_url, tokens["bob"]) as ws:
        await subscribe(ws, "room")
        r = client.post(f"{server.url}/v1/signing-keys", headers=tenant.headers())
        assert r.status_code == 201, r.text
        # one rotation logs nobody out: the socket keeps receiving
        written = post(client, tenant, tokens["alice"], "room", "after one rotation")
        assert (await recv(ws))["seq"] == written["seq"]
        assert await until_pong(ws) == []
        r = client.post(f"{server.url}/v1/signing-keys", headers=tenant.headers())
        assert r.status_code == 201, r.text
        error, code = await error_then_close(ws)
        assert (error["code"], code) == ("unauthenticated", 1008), error
        assert "rotated" in error["message"]
    assert refused_over_http(client, server.url, tokens["bob"])


async def test_socket_closes_1008_when_its_token_expires(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    room(client, tenant, "room", "bob")
    # a token past its exp, still inside the 30 s of clock skew that HTTP (and the socket) allow:
    # accepted now, refused in at most 15 s
    now = time.time()
    token = forge(
        server_secret(server), tenant.tenant_id, claims(tenant.tenant_id, "bob", now=now - 600, exp=int(now) - 15)
    )
    assert not refused_over_http(client, server.url, token)
    async with ws_connect(server.ws_url, token) as ws:
        await subscribe(ws, "room")
        error, code = await error_then_close(ws, timeout=WAIT + 15)
        assert (error["code"], code) == ("unauthenticated", 1008), error
        assert "expired" in error["message"]
    assert refused_over_http(client, server.url, token)
