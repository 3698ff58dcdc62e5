"""Typing indicators (TTL, throttle, large-channel drop, across nodes) and read state
(unread counts under concurrent posting and marking, markers never move backwards, read
receipts) through real servers."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.presence import (
    TYPING_MAX_WATCHERS,
    TYPING_THROTTLE,
    TYPING_TTL,
    Backend,
    channel,
    frames_until,
    new_tenant,
    pong,
    recv,
    send,
    shared_backend,
    subscribe,
    users,
    ws_open,
)
from tests.support import Server, Tenant, bearer

TTL_MS = int(TYPING_TTL * 1000)


@pytest.fixture(scope="session", params=["embedded", "kafka"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    return shared_backend(request.param, request.config, tmp_path_factory)


@pytest.fixture(scope="session")
def embedded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    return shared_backend("embedded", request.config, tmp_path_factory)


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


# --- typing --------------------------------------------------------------------------------
async def type_over_http(http: httpx.AsyncClient, node: Server, token: str, cid: str) -> dict[str, Any]:
    r = await http.post(f"{node.url}/v1/channels/{cid}/typing", json={}, headers=bearer(token))
    assert r.status_code == 202, r.text
    data: dict[str, Any] = r.json()
    assert data["expires_in_ms"] == TTL_MS
    return data


def is_typing(user_id: str, cid: str) -> Any:
    return lambda f: f["type"] == "typing" and f["user_id"] == user_id and f["channel_id"] == cid


def typings(frames: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f["user_id"], f["channel_id"]) for f in frames if f["type"] == "typing"]


async def typing_until(ws: ClientConnection, wanted: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """Typing frames, as (user, channel), until each of ``wanted`` has arrived (bounded)."""
    got: list[tuple[str, str]] = []
    while not wanted <= set(got):
        got += typings([await recv(ws)])
    return got


async def test_typing_reaches_other_subscribers_on_any_node_with_its_ttl_but_not_the_typer(
    backend: Backend, http: httpx.AsyncClient
) -> None:
    a, b = backend.a, backend.b  # on Kafka the typer is on node A, the other subscriber on node B
    tenant = await new_tenant(http, a)
    tokens = await users(http, a, tenant, ["alice", "bob"])
    cid = (await channel(http, a, tenant, ["alice", "bob"]))["channel_id"]
    alice = await ws_open(a, tokens["alice"])
    bob = await ws_open(b, tokens["bob"])
    await subscribe(alice, cid)
    await subscribe(bob, cid)

    await send(alice, {"type": "typing", "channel_id": cid})
    [frame] = await frames_until(bob, is_typing("alice", cid))
    assert frame == {"type": "typing", "channel_id": cid, "user_id": "alice", "expires_in_ms": TTL_MS}

    reply = await type_over_http(http, a, tokens["bob"], cid)
    assert (reply["sent"], reply["user_id"], reply["channel_id"]) == (True, "bob", cid)
    frames = await frames_until(alice, is_typing("bob", cid))
    assert typings(frames) == [("bob", cid)], "the typer got its own typing frame back"
    assert frames[-1]["expires_in_ms"] == TTL_MS
    for ws in (alice, bob):
        await ws.close()


async def test_typing_is_throttled_per_user_per_channel_and_delivered_again_after_the_window(
    backend: Backend, http: httpx.AsyncClient
) -> None:
    a, b = backend.a, backend.b
    tenant = await new_tenant(http, a)
    tokens = await users(http, a, tenant, ["alice", "bob", "carol"])
    c1 = (await channel(http, a, tenant, ["alice", "bob", "carol"]))["channel_id"]
    c2 = (await channel(http, a, tenant, ["alice", "bob"]))["channel_id"]
    bob = await ws_open(b, tokens["bob"])
    await subscribe(bob, c1)
    await subscribe(bob, c2)
    alice = await ws_open(a, tokens["alice"])

    began = time.monotonic()
    first = await type_over_http(http, a, tokens["alice"], c1)
    announced = time.monotonic()  # the first one was announced between began and this
    again = await type_over_http(http, a, tokens["alice"], c1)
    await send(alice, {"type": "typing", "channel_id": c1})  # and from her socket too
    assert await pong(alice) == []  # handled, not refused
    within = time.monotonic() - began < TYPING_THROTTLE  # the premise: all inside one window
    assert first["sent"]
    assert not again["sent"] or not within, "a second typing within the throttle window was sent"
    # the throttle is per user and per channel: these go through
    assert (await type_over_http(http, a, tokens["alice"], c2))["sent"]
    assert (await type_over_http(http, a, tokens["carol"], c1))["sent"]

    delivered = await typing_until(bob, {("alice", c2), ("carol", c1)})
    if within:
        assert delivered.count(("alice", c1)) == 1, delivered
    assert sorted(set(delivered)) == sorted({("alice", c1), ("alice", c2), ("carol", c1)})

    await asyncio.sleep(max(0.0, announced + TYPING_THROTTLE + 0.05 - time.monotonic()))
    assert (await type_over_http(http, a, tokens["alice"], c1))["sent"]
    frames = await frames_until(bob, is_typing("alice", c1))
    assert typings(frames) == [("alice", c1)]
    for ws in (alice, bob):
        await ws.close()


async def test_typing_from_two_devices_of_one_user_on_different_nodes_is_throttled_as_one(
    backend: Backend, http: httpx.AsyncClient
) -> None:
    a, b = backend.a, backend.b
    tenant = await new_tenant(http, a)
    tokens = await users(http, a, tenant, ["alice", "bob"])
    cid = (await channel(http, a, tenant, ["alice", "bob"]))["channel_id"]
    bob = await ws_open(b, tokens["bob"])
    await subscribe(bob, cid)
    phone, laptop = await ws_open(a, tokens["alice"]), await ws_open(b, tokens["alice"])
    await subscribe(laptop, cid)  # laptop's node knows the channel, so its typing passes the member check

    began = time.monotonic()
    await send(phone, {"type": "typing", "channel_id": cid})
    await send(laptop, {"type": "typing", "channel_id": cid})
    assert await pong(phone) == [] and await pong(laptop) == []  # both handled, neither refused
    within = time.monotonic() - began < TYPING_THROTTLE  # the premise: both inside one window
    assert await typing_until(bob, {("alice", cid)}) == [("alice", cid)]
    if within:  # the other device's announcement would follow within milliseconds: nothing comes
        with contextlib.suppress(TimeoutError):
            extra = await recv(bob, 0.5)
            raise AssertionError(f"a second device's typing got through the throttle: {extra}")
    for ws in (phone, laptop, bob):
        await ws.close()


async def test_typing_is_dropped_in_channels_with_more_subscribers_than_the_watcher_limit(
    embedded: Backend, http: httpx.AsyncClient
) -> None:
    node = embedded.a  # CAAS_TYPING_MAX_WATCHERS=2 there
    tenant = await new_tenant(http, node)
    people = ["alice", "bob", "carol", "dave", "erin"]
    tokens = await users(http, node, tenant, people)
    cid = (await channel(http, node, tenant, people))["channel_id"]
    watching: dict[str, ClientConnection] = {}
    for uid in ("alice", "bob", "carol"):
        watching[uid] = await ws_open(node, tokens[uid])
        await subscribe(watching[uid], cid)
    assert len(watching) == TYPING_MAX_WATCHERS + 1

    await type_over_http(http, node, tokens["dave"], cid)  # three watchers: dropped
    await send(watching["carol"], {"type": "unsubscribe", "channel_id": cid})
    assert (await recv(watching["carol"])) == {"type": "unsubscribed", "channel_id": cid}
    await type_over_http(http, node, tokens["erin"], cid)  # two watchers, the limit: delivered
    for uid in ("alice", "bob"):
        frames = await frames_until(watching[uid], is_typing("erin", cid))
        assert typings(frames) == [("erin", cid)], f"{uid} got typing from a channel over the limit"
    for ws in watching.values():
        await ws.close()


# --- read state ----------------------------------------------------------------------------
async def mark(http: httpx.AsyncClient, node: Server, token: str, cid: str, seq: int) -> httpx.Response:
    r = await http.post(f"{node.url}/v1/channels/{cid}/read", json={"seq": seq}, headers=bearer(token))
    assert r.status_code in (200, 201), r.text
    return r


async def post(http: httpx.AsyncClient, node: Server, token: str, cid: str, text: str) -> dict[str, Any]:
    r = await http.post(f"{node.url}/v1/channels/{cid}/messages", json={"text": text}, headers=bearer(token))
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def unread(http: httpx.AsyncClient, node: Server, token: str, cid: str, min_position: int) -> int:
    r = await http.get(f"{node.url}/v1/channels", params={"min_position": min_position}, headers=bearer(token))
    assert r.status_code == 200, r.text
    [found] = [c for c in r.json()["channels"] if c["channel_id"] == cid]
    return int(found["unread_count"])


async def messages(http: httpx.AsyncClient, node: Server, tenant: Tenant, cid: str, min_position: int) -> list[Any]:
    r = await http.get(
        f"{node.url}/v1/channels/{cid}/messages",
        params={"after_seq": 0, "limit": 200, "min_position": min_position},
        headers=tenant.headers(),
    )
    assert r.status_code == 200, r.text
    found: list[Any] = r.json()["messages"]
    return found


async def test_unread_counts_are_exact_under_concurrent_posting_and_marking(
    backend: Backend, http: httpx.AsyncClient
) -> None:
    a, b = backend.a, backend.b
    tenant = await new_tenant(http, a)
    posters = ["p1", "p2", "p3", "reader"]
    tokens = await users(http, a, tenant, posters)
    created = await channel(http, a, tenant, posters)
    cid = created["channel_id"]
    posted: list[tuple[str, int, int]] = []  # (author, seq, position)
    marks: list[tuple[int, httpx.Response]] = []  # (seq marked, response)
    done = asyncio.Event()
    rnd = random.Random(5)

    async def poster(uid: str, count: int) -> None:
        for n in range(count):
            ack = await post(http, [a, b][n % 2], tokens[uid], cid, f"{uid}-{n}")
            posted.append((uid, ack["seq"], ack["position"]))

    async def reader() -> None:
        """Moves its marker to messages posted so far, several requests in flight at once."""
        while not done.is_set() or len(marks) < 12:
            if posted:
                seqs = [rnd.choice(posted)[1] for _ in range(4)]
                node = rnd.choice([a, b])
                replies = await asyncio.gather(*(mark(http, node, tokens["reader"], cid, s) for s in seqs))
                marks.extend(zip(seqs, replies, strict=True))
            await asyncio.sleep(0.01)

    marking = asyncio.create_task(reader())
    await asyncio.gather(poster("p1", 10), poster("p2", 10), poster("p3", 10), poster("reader", 4))
    done.set()
    await marking

    marker = max(seq for seq, _ in marks)  # markers only move forward, whatever order requests land in
    assert {r.status_code for _, r in marks} <= {200, 201}
    last = max([position for _, _, position in posted] + [r.json()["position"] for _, r in marks])
    expected = sum(1 for author, seq, _ in posted if author != "reader" and seq > marker)
    assert await unread(http, a, tokens["reader"], cid, last) == expected
    for uid in ("p1", "p2", "p3"):  # they never marked: everything by the others is unread
        assert await unread(http, b, tokens[uid], cid, last) == sum(1 for author, _, _ in posted if author != uid)
    seen = {m["seq"]: m["seen_by"] for m in await messages(http, b, tenant, cid, last)}
    assert {seq for seq, by in seen.items() if "reader" in by} == {
        seq for author, seq, _ in posted if author != "reader" and seq <= marker
    }

    # markers never move backwards: an older seq is accepted (200) and changes nothing
    oldest = min(seq for _, seq, _ in posted)
    r = await mark(http, b, tokens["reader"], cid, oldest)
    assert r.status_code == 200, r.text
    assert await unread(http, a, tokens["reader"], cid, max(last, r.json()["position"])) == expected
    assert (await mark(http, a, tokens["reader"], cid, marker)).status_code == 200


async def test_read_receipts_list_exactly_the_members_whose_marker_passed_the_message(
    backend: Backend, http: httpx.AsyncClient
) -> None:
    a, b = backend.a, backend.b
    tenant = await new_tenant(http, a)
    members = ["alice", "bob", "carol", "dave"]
    tokens = await users(http, a, tenant, members)
    cid = (await channel(http, a, tenant, members))["channel_id"]
    m1 = await post(http, a, tokens["alice"], cid, "one")
    m2 = await post(http, b, tokens["alice"], cid, "two")
    m3 = await post(http, a, tokens["bob"], cid, "three")
    m4 = await post(http, b, tokens["carol"], cid, "four")
    markers = {"alice": m3["seq"], "bob": m2["seq"], "carol": m4["seq"]}  # dave never reads
    acks = [await mark(http, a, tokens[uid], cid, seq) for uid, seq in markers.items()]
    assert [r.status_code for r in acks] == [200, 200, 200]
    behind = await mark(http, b, tokens["carol"], cid, m1["seq"])  # backwards: ignored
    assert behind.status_code == 200
    last = max(r.json()["position"] for r in [*acks, behind])

    found = {m["seq"]: m for m in await messages(http, b, tenant, cid, last)}
    assert sorted(found) == [m1["seq"], m2["seq"], m3["seq"], m4["seq"]]
    for seq, message in found.items():
        want = sorted(u for u, at in markers.items() if at >= seq and u != message["author_id"])
        assert message["seen_by"] == want, (seq, message["author_id"], message["seen_by"])
    assert found[m1["seq"]]["seen_by"] == ["bob", "carol"]  # alice wrote it: never in her own receipts
    assert found[m4["seq"]]["seen_by"] == []


async def test_read_receipts_are_left_out_in_channels_of_more_than_100_members(
    embedded: Backend, http: httpx.AsyncClient
) -> None:
    a = embedded.a  # the cut-off is in the backend-neutral queries; registering 101 users via Kafka is slow
    tenant = await new_tenant(http, a)
    members = [f"m{n:03d}" for n in range(101)]
    tokens = await users(http, a, tenant, members[:2])
    gate = asyncio.Semaphore(16)

    async def register(uid: str) -> None:
        async with gate:
            r = await http.put(f"{a.url}/v1/users/{uid}", json={"name": uid}, headers=tenant.headers())
            assert r.status_code in (200, 201), r.text

    await asyncio.gather(*(register(u) for u in members[2:]))
    cid = (await channel(http, a, tenant, members))["channel_id"]
    sent = await post(http, a, tokens["m000"], cid, "hello everyone")
    read = await mark(http, a, tokens["m001"], cid, sent["seq"])
    [message] = await messages(http, a, tenant, cid, read.json()["position"])
    assert "seen_by" not in message
