"""``WS /v1/ws`` through the real server: live tail, gapless resume, fan-out, bad frames, slow consumers."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support import Server, Tenant, bearer, new_tenant

WAIT = 20.0  # generous bound for any single expected frame


# --- helpers -------------------------------------------------------------------------------
def ws_connect(url: str, token: str | None, **kwargs: Any) -> Any:
    target = url if token is None else f"{url}?token={token}"
    return connect(target, proxy=None, open_timeout=WAIT, close_timeout=5, **kwargs)


async def recv(ws: ClientConnection, timeout: float = WAIT) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    frame: dict[str, Any] = json.loads(raw)
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
    assert reply["channel_id"] == cid
    return reply


async def until_pong(ws: ClientConnection) -> list[dict[str, Any]]:
    """Send a ping and return every frame that arrives before its pong (a barrier: frames are ordered)."""
    await send(ws, {"type": "ping"})
    frames = []
    while (frame := await recv(ws))["type"] != "pong":
        frames.append(frame)
    return frames


async def read_events_until(ws: ClientConnection, cid: str, head: asyncio.Future[int]) -> list[dict[str, Any]]:
    """Event frames of ``cid`` until the one at ``head`` (known once the posters are done)."""
    events: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not (head.done() and events and events[-1]["seq"] >= head.result()):
        assert loop.time() < deadline, f"stalled at seq {events[-1]['seq'] if events else None}"
        try:
            frame = await recv(ws, timeout=0.25)
        except TimeoutError:
            continue
        assert frame["type"] == "event", frame
        assert frame["channel_id"] == cid
        events.append(frame)
    return events


def room(client: httpx.Client, tenant: Tenant, cid: str = "room", *others: str) -> dict[str, str]:
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


def post(client: httpx.Client, tenant: Tenant, token: str, cid: str, text: str) -> dict[str, Any]:
    r = client.post(f"{tenant.url}/v1/channels/{cid}/messages", json={"text": text}, headers=bearer(token))
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def poster(
    ac: httpx.AsyncClient, url: str, token: str, cid: str, n: int, tag: str, acked: list[int], fat: bool = False
) -> None:
    """Post ``n`` messages; ``fat`` ones (~25 KB each, incompressible) fill socket buffers quickly."""
    for i in range(n):
        body: dict[str, Any] = {"text": f"{tag}-{i}"}
        if fat:
            body["text"] += " " + os.urandom(2480).hex()
            body["attachments"] = [
                {"type": "file", "url": f"https://files.example/{os.urandom(1000).hex()}"} for _ in range(10)
            ]
        r = await ac.post(f"{url}/v1/channels/{cid}/messages", json=body, headers=bearer(token))
        assert r.status_code == 201, r.text
        acked.append(r.json()["seq"])


def assert_gapless(events: list[dict[str, Any]], first: int, last: int) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(first, last + 1)), f"expected {first}..{last}, got {len(seqs)} frames"
    assert all(e["event"]["seq"] == e["seq"] and e["event"]["position"] == e["position"] for e in events)
    positions = [e["position"] for e in events]
    assert positions == sorted(positions)


@pytest.fixture
async def aclient() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=16)) as ac:
        yield ac


# --- live tail -----------------------------------------------------------------------------
async def test_live_subscription_delivers_new_events(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    tokens = room(client, tenant, "room", "bob")
    async with ws_connect(server.ws_url, tokens["bob"]) as ws:
        sub = await subscribe(ws, "room")
        assert sub["head_seq"] == 3  # ChannelCreated, MemberAdded alice, MemberAdded bob
        written = post(client, tenant, tokens["alice"], "room", "hello bob")
        frame = await recv(ws)
        assert frame["type"] == "event"
        assert (frame["channel_id"], frame["seq"], frame["position"]) == ("room", 4, written["position"])
        event = frame["event"]
        assert event["event_id"] == written["event_id"]
        assert event["type"] == "MessagePosted"
        assert event["tenant_id"] == tenant.tenant_id
        assert event["stream"] == "channel:room"
        assert event["payload"]["text"] == "hello bob"
        assert event["payload"]["author_id"] == "alice"
        for key in ("occurred_at", "schema_version", "actor", "command_id", "correlation_id", "causation_id"):
            assert key in event
        assert await until_pong(ws) == []


async def test_ping_gets_pong(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    tokens = room(client, tenant)
    async with ws_connect(server.ws_url, tokens["alice"]) as ws:
        for _ in range(3):
            await send(ws, {"type": "ping"})
            assert await recv(ws) == {"type": "pong"}


async def test_since_seq_while_others_post_concurrently_is_gapless(
    server: Server, client: httpx.Client, tenant: Tenant, aclient: httpx.AsyncClient
) -> None:
    tokens = room(client, tenant, "busy", "bob", "carol", "dave")
    for i in range(20):
        post(client, tenant, tokens["alice"], "busy", f"before-{i}")
    acked: list[int] = []
    posters = [
        asyncio.create_task(poster(aclient, tenant.url, tokens[u], "busy", 80, u, acked))
        for u in ("alice", "bob", "carol", "dave")
    ]
    head: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def finish() -> None:
        await asyncio.gather(*posters)
        head.set_result(max(acked))

    finisher = asyncio.create_task(finish())
    while len(acked) < 40:  # subscribe while the posters are in full flow
        await asyncio.sleep(0.01)
    since = 10
    async with ws_connect(server.ws_url, tokens["bob"]) as ws:
        await subscribe(ws, "busy", since=since)
        events = await read_events_until(ws, "busy", head)
        await finisher
        assert head.result() == 1 + 4 + 20 + 320  # created, four members, 20 + 320 messages
        assert_gapless(events, since + 1, head.result())
        assert await until_pong(ws) == []
    r = client.get(
        f"{tenant.url}/v1/events", params={"types": "MessagePosted", "limit": 1000}, headers=tenant.headers()
    )
    by_seq = {e["seq"]: e["event_id"] for e in r.json()["events"]}
    assert all(by_seq[e["seq"]] == e["event"]["event_id"] for e in events if e["event"]["type"] == "MessagePosted")


async def test_resubscribe_after_disconnect_resumes_gaplessly(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    tokens = room(client, tenant, "room", "bob")
    async with ws_connect(server.ws_url, tokens["bob"]) as ws:
        await subscribe(ws, "room")
        for i in range(5):
            post(client, tenant, tokens["alice"], "room", f"first-{i}")
        seen = [await recv(ws) for _ in range(5)]
    assert_gapless(seen, 4, 8)
    for i in range(7):  # missed while disconnected
        post(client, tenant, tokens["alice"], "room", f"missed-{i}")
    async with ws_connect(server.ws_url, tokens["bob"]) as ws:
        sub = await subscribe(ws, "room", since=seen[-1]["seq"])
        assert sub["head_seq"] == 15
        resumed = [await recv(ws) for _ in range(7)]
        post(client, tenant, tokens["alice"], "room", "live again")
        resumed.append(await recv(ws))
        assert await until_pong(ws) == []
    assert_gapless(seen + resumed, 4, 16)
    texts = [e["event"]["payload"]["text"] for e in resumed]
    assert texts == [f"missed-{i}" for i in range(7)] + ["live again"]


async def test_since_zero_replays_the_whole_channel(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    tokens = room(client, tenant, "room", "bob")
    for i in range(3):
        post(client, tenant, tokens["alice"], "room", f"m{i}")
    async with ws_connect(server.ws_url, tokens["bob"]) as ws:
        await subscribe(ws, "room", since=0)
        history = [await recv(ws) for _ in range(6)]
        assert await until_pong(ws) == []
    assert_gapless(history, 1, 6)
    types = [e["event"]["type"] for e in history]
    assert types == ["ChannelCreated", "MemberAdded", "MemberAdded"] + ["MessagePosted"] * 3


async def test_two_subscribers_see_the_same_order(
    server: Server, client: httpx.Client, tenant: Tenant, aclient: httpx.AsyncClient
) -> None:
    tokens = room(client, tenant, "room", "bob", "carol")
    async with ws_connect(server.ws_url, tokens["bob"]) as ws_bob, ws_connect(server.ws_url, tokens["carol"]) as ws_c:
        await subscribe(ws_bob, "room")
        await subscribe(ws_c, "room")
        acked: list[int] = []
        head: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def run() -> None:
            await asyncio.gather(
                *(poster(aclient, tenant.url, tokens[u], "room", 40, u, acked) for u in ("alice", "bob", "carol"))
            )
            head.set_result(max(acked))

        runner = asyncio.create_task(run())
        seen_bob, seen_carol = await asyncio.gather(
            read_events_until(ws_bob, "room", head), read_events_until(ws_c, "room", head)
        )
        await runner
    assert_gapless(seen_bob, 5, 4 + 120)
    assert [(e["seq"], e["event"]["event_id"]) for e in seen_bob] == [
        (e["seq"], e["event"]["event_id"]) for e in seen_carol
    ]


async def test_unsubscribe_stops_delivery(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    tokens = room(client, tenant, "room", "bob")
    async with ws_connect(server.ws_url, tokens["bob"]) as ws:
        await subscribe(ws, "room")
        post(client, tenant, tokens["alice"], "room", "one")
        assert (await recv(ws))["seq"] == 4
        await send(ws, {"type": "unsubscribe", "channel_id": "room"})
        assert await recv(ws) == {"type": "unsubscribed", "channel_id": "room"}
        post(client, tenant, tokens["alice"], "room", "two")
        post(client, tenant, tokens["alice"], "room", "three")
        assert await until_pong(ws) == []


# --- authorisation -------------------------------------------------------------------------
async def test_non_member_gets_an_error_and_nothing(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    tokens = room(client, tenant, "room", "bob")
    mallory = tenant.user(client, "mallory")
    async with ws_connect(server.ws_url, mallory) as ws:
        await send(ws, {"type": "subscribe", "channel_id": "room", "since_seq": 0})
        error = await recv(ws)
        assert error["type"] == "error" and error["code"] == "forbidden", error
        assert error["message"]
        post(client, tenant, tokens["alice"], "room", "secret")
        await send(ws, {"type": "subscribe", "channel_id": "nowhere"})
        missing = await recv(ws)
        assert missing["type"] == "error" and missing["code"] == "not_found", missing
        await send(ws, {"type": "typing", "channel_id": "room"})
        assert (await recv(ws))["code"] == "forbidden"
        assert await until_pong(ws) == []


async def test_other_tenants_channel_is_invisible(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    tokens = room(client, tenant, "room", "bob")
    other = new_tenant(client, server.url, "other")
    outsider = other.user(client, "bob")  # same user id, other tenant
    async with ws_connect(server.ws_url, outsider) as ws:
        await send(ws, {"type": "subscribe", "channel_id": "room", "since_seq": 0})
        error = await recv(ws)
        assert error["type"] == "error" and error["code"] == "not_found", error
        post(client, tenant, tokens["alice"], "room", "for acme only")
        assert await until_pong(ws) == []


@pytest.mark.parametrize("how", ["removed", "banned", "left"])
async def test_member_removed_mid_subscription_gets_removal_then_forbidden(
    server: Server, client: httpx.Client, tenant: Tenant, how: str
) -> None:
    tokens = room(client, tenant, "room", "bob", "carol")
    async with ws_connect(server.ws_url, tokens["bob"]) as ws, ws_connect(server.ws_url, tokens["carol"]) as ws_c:
        await subscribe(ws, "room")
        await subscribe(ws_c, "room")
        post(client, tenant, tokens["alice"], "room", "before")
        assert (await recv(ws))["event"]["payload"]["text"] == "before"
        if how == "removed":
            r = client.delete(f"{tenant.url}/v1/channels/room/members/bob", headers=bearer(tokens["alice"]))
        elif how == "banned":
            r = client.post(f"{tenant.url}/v1/channels/room/bans", json={"user_id": "bob"}, headers=tenant.headers())
        else:
            r = client.delete(f"{tenant.url}/v1/channels/room/members/bob", headers=bearer(tokens["bob"]))
        assert r.status_code == (201 if how == "banned" else 200), r.text  # a ban is created
        removal = await recv(ws)
        assert removal["type"] == "event" and removal["seq"] == r.json()["seq"]
        assert removal["event"]["type"] == ("MemberBanned" if how == "banned" else "MemberRemoved")
        assert removal["event"]["payload"]["user_id"] == "bob"
        error = await recv(ws)
        assert error["type"] == "error" and error["code"] == "forbidden", error
        assert error.get("channel_id") == "room"
        post(client, tenant, tokens["alice"], "room", "after")
        assert await until_pong(ws) == []
        # carol, still a member, saw everything
        carol = [await recv(ws_c) for _ in range(3)]
        assert [f["event"]["type"] for f in carol][1:] == [removal["event"]["type"], "MessagePosted"]
        # and bob cannot subscribe again
        await send(ws, {"type": "subscribe", "channel_id": "room", "since_seq": 0})
        assert (await recv(ws))["code"] == "forbidden"
        assert await until_pong(ws) == []


async def test_member_removed_during_history_replay_gets_nothing_after_removal(
    small_queue_server: Server, client: httpx.Client, aclient: httpx.AsyncClient
) -> None:
    """The removal lands while bob's resume is still replaying history (a small socket queue makes it slow)."""
    srv = small_queue_server
    tenant = new_tenant(client, srv.url)
    tokens = room(client, tenant, "room", "bob")
    acked: list[int] = []
    await asyncio.gather(*(poster(aclient, srv.url, tokens["alice"], "room", 40, f"p{i}", acked) for i in range(6)))
    async with ws_connect(srv.ws_url, tokens["bob"]) as ws:
        await send(ws, {"type": "subscribe", "channel_id": "room", "since_seq": 0})
        removed = await aclient.delete(f"{srv.url}/v1/channels/room/members/bob", headers=tenant.headers())
        assert removed.status_code == 200, removed.text
        removal_seq = removed.json()["seq"]
        after = await aclient.post(
            f"{srv.url}/v1/channels/room/messages", json={"text": "after"}, headers=bearer(tokens["alice"])
        )
        assert after.status_code == 201
        frames = await until_pong(ws)
    assert frames[0]["type"] == "subscribed"
    events = [f for f in frames if f["type"] == "event"]
    assert_gapless(events, 1, removal_seq)
    assert events[-1]["event"]["type"] == "MemberRemoved"
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "forbidden", frames[-1]
    assert [f for f in frames if f["type"] == "error"] == [frames[-1]]


# --- typing --------------------------------------------------------------------------------
async def test_typing_reaches_other_subscribers_but_not_the_typer(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    tokens = room(client, tenant, "room", "bob", "carol")
    async with (
        ws_connect(server.ws_url, tokens["alice"]) as ws_a,
        ws_connect(server.ws_url, tokens["bob"]) as ws_b,
        ws_connect(server.ws_url, tokens["carol"]) as ws_c,
    ):
        for ws in (ws_a, ws_b, ws_c):
            await subscribe(ws, "room")
        await send(ws_a, {"type": "typing", "channel_id": "room"})
        expected = {"type": "typing", "channel_id": "room", "user_id": "alice", "expires_in_ms": 5000}
        assert await recv(ws_b) == expected
        assert await recv(ws_c) == expected
        assert await until_pong(ws_a) == []
        # over HTTP as well
        r = client.post(f"{tenant.url}/v1/channels/room/typing", json={}, headers=bearer(tokens["bob"]))
        assert r.status_code == 202, r.text
        assert r.json()["sent"] is True
        bob_typing = {"type": "typing", "channel_id": "room", "user_id": "bob", "expires_in_ms": 5000}
        assert await recv(ws_a) == bob_typing
        assert await recv(ws_c) == bob_typing
        assert await until_pong(ws_b) == []
        # typing is ephemeral: nothing in the channel's history
        r = client.get(f"{tenant.url}/v1/events", headers=tenant.headers())
        assert not [e for e in r.json()["events"] if "Typing" in e["type"]]


# --- bad frames ----------------------------------------------------------------------------
BAD_FRAMES: list[tuple[str, str | bytes]] = [
    ("not json", "{not json"),
    ("json array", "[1, 2]"),
    ("no type", '{"channel_id": "room"}'),
    ("type not a string", '{"type": 5}'),
    ("unknown type", '{"type": "dance"}'),
    ("binary", b'{"type": "ping"}'),
    ("since_seq negative", '{"type": "subscribe", "channel_id": "room", "since_seq": -1}'),
    ("since_seq string", '{"type": "subscribe", "channel_id": "room", "since_seq": "3"}'),
    ("since_seq float", '{"type": "subscribe", "channel_id": "room", "since_seq": 1.5}'),
    ("since_seq bool", '{"type": "subscribe", "channel_id": "room", "since_seq": true}'),
    ("channel_id missing", '{"type": "subscribe"}'),
    ("channel_id number", '{"type": "subscribe", "channel_id": 7}'),
    ("channel_id control char", '{"type": "subscribe", "channel_id": "ro\\u0001om"}'),
    ("channel_id trailing newline", '{"type": "subscribe", "channel_id": "room\\n"}'),
    ("unsubscribe bad id", '{"type": "unsubscribe", "channel_id": ""}'),
    ("typing bad id", '{"type": "typing", "channel_id": null}'),
]


async def test_bad_frames_get_errors_and_the_socket_stays_usable(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    tokens = room(client, tenant, "room", "bob")
    async with ws_connect(server.ws_url, tokens["bob"]) as ws:
        for name, frame in BAD_FRAMES:
            await ws.send(frame)
            error = await recv(ws)
            assert error["type"] == "error", (name, error)
            assert error["code"] == "invalid_request", (name, error)
            assert isinstance(error["message"], str) and error["message"], name
        assert await until_pong(ws) == []
        # still subscribed to nothing (every bad subscribe was refused), but can subscribe now
        post(client, tenant, tokens["alice"], "room", "unseen")
        assert await until_pong(ws) == []
        await subscribe(ws, "room")
        post(client, tenant, tokens["alice"], "room", "seen")
        assert (await recv(ws))["event"]["payload"]["text"] == "seen"


async def test_oversized_frame_closes_1009_and_others_keep_receiving(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    tokens = room(client, tenant, "room", "bob")
    async with ws_connect(server.ws_url, tokens["alice"]) as ws_a, ws_connect(server.ws_url, tokens["bob"]) as ws_b:
        await subscribe(ws_a, "room")
        await subscribe(ws_b, "room")
        await send(ws_b, {"type": "ping", "padding": "x" * 20_000})
        error = await recv(ws_b)
        assert error["type"] == "error" and error["code"] == "payload_too_large", error
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws_b)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        written = post(client, tenant, tokens["alice"], "room", "still here")
        frame = await recv(ws_a)
        assert frame["seq"] == written["seq"]
        assert await until_pong(ws_a) == []


async def test_bad_frames_on_one_socket_do_not_disturb_another(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    tokens = room(client, tenant, "room", "bob")
    async with ws_connect(server.ws_url, tokens["alice"]) as ws_a, ws_connect(server.ws_url, tokens["bob"]) as ws_b:
        await subscribe(ws_a, "room")
        await subscribe(ws_b, "room")
        for i, (_, frame) in enumerate(BAD_FRAMES):
            await ws_b.send(frame)
            post(client, tenant, tokens["alice"], "room", f"m{i}")
        received = [await recv(ws_a) for _ in BAD_FRAMES]
        assert_gapless(received, 4, 3 + len(BAD_FRAMES))
        assert await until_pong(ws_a) == []
        bob = await until_pong(ws_b)
        assert [f["seq"] for f in bob if f["type"] == "event"] == list(range(4, 4 + len(BAD_FRAMES)))
        assert len([f for f in bob if f["type"] == "error"]) == len(BAD_FRAMES)


@pytest.mark.parametrize("credential", ["missing", "garbage", "api_key", "admin", "tampered"])
async def test_bad_or_missing_token_is_refused_with_1008(
    server: Server, client: httpx.Client, tenant: Tenant, credential: str
) -> None:
    token = tenant.user(client, "alice")
    header, payload, signature = token.split(".")
    tokens: dict[str, str | None] = {
        "missing": None,
        "garbage": "not-a-token",
        "api_key": tenant.api_key,
        "admin": "test-admin-token",
        "tampered": f"{header}.{payload}.{signature[:-4]}AAAA",
    }
    async with ws_connect(server.ws_url, tokens[credential]) as ws:
        error = await recv(ws)
        assert error["type"] == "error" and error["code"] == "unauthenticated", error
        assert error["message"]
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


# --- slow consumers ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_queue_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # a socket that stops reading is reset after CAAS_WS_STALL_SECONDS; this one must outlast the posting
    env = {"CAAS_WS_QUEUE_FRAMES": "50", "CAAS_WS_STALL_SECONDS": "60"}
    srv = Server(Path(tmp_path_factory.mktemp("caas-slow")) / "data", env=env).start()
    yield srv
    srv.stop()


def tiny_receive_buffer_socket(port: int) -> socket.socket:
    """A client socket whose kernel buffer cannot absorb the backlog, so a client that stops reading is slow."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def test_slow_consumer_is_closed_1013_and_resumes_with_since_seq(
    small_queue_server: Server, client: httpx.Client
) -> None:
    srv = small_queue_server
    tenant = new_tenant(client, srv.url)
    tokens = room(client, tenant, "room", "bob", "carol")
    posts = 320  # ~8 MB of frames: far more than the socket buffers hold
    async with httpx.AsyncClient(timeout=30) as ac:
        sock = tiny_receive_buffer_socket(srv.port)
        async with ws_connect(srv.ws_url, tokens["bob"], sock=sock, max_queue=1, compression=None) as slow:
            await subscribe(slow, "room")
            acked: list[int] = []
            # bob stops reading while thousands of events are posted
            await asyncio.gather(
                *(
                    poster(ac, srv.url, tokens[u], "room", posts // 4, f"{u}{k}", acked, fat=True)
                    for k, u in enumerate(["alice", "carol", "alice", "carol"])
                )
            )
            head = max(acked)
            assert head == 4 + posts
            got: list[dict[str, Any]] = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    frame = await recv(slow)
                    assert frame["type"] == "event", frame
                    got.append(frame)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        assert got, "the slow consumer received nothing before being closed"
        assert len(got) < posts, "the slow consumer was never cut off"
        assert_gapless(got, 5, got[-1]["seq"])
        # it resumes from the last seq it saw and gets everything
        async with ws_connect(srv.ws_url, tokens["bob"]) as ws:
            await subscribe(ws, "room", since=got[-1]["seq"])
            done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            done.set_result(head)
            rest = await read_events_until(ws, "room", done)
            post(client, tenant, tokens["alice"], "room", "live after resume")
            rest.append(await recv(ws))
            assert await until_pong(ws) == []
        assert_gapless(got + rest, 5, head + 1)
