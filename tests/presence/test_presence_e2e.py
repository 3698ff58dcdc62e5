"""Presence through real servers: churn converges to the truth of the sockets, watchers get
the status then only changes (coalesced, never a spurious offline), and a dead node's users
go offline within node timeout + grace, seen by another node."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection

from tests.presence import (
    ENV,
    GRACE,
    HEARTBEAT,
    MARGIN,
    NODE_TIMEOUT,
    TICK,
    Backend,
    abort,
    durable_statuses,
    frames_until,
    is_presence,
    new_tenant,
    presence,
    presence_events,
    recv,
    shared_backend,
    until,
    users,
    wait_durable,
    wait_statuses,
    watch,
    ws_open,
)
from tests.support import Server, Tenant


@pytest.fixture(scope="session", params=["embedded", "kafka"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    return shared_backend(request.param, request.config, tmp_path_factory)


@pytest.fixture(scope="session")
def kafka(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    return shared_backend("kafka", request.config, tmp_path_factory)


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


# --- churn ---------------------------------------------------------------------------------
USERS = [f"u{n:02d}" for n in range(50)]  # the last two never connect
FATES = ("stay", "close", "abort")  # how a socket ends: still open, closing handshake, TCP dropped
Socket = tuple[int, str, int]  # (user index, fate, node index)


@st.composite
def churn(draw: st.DrawFn) -> tuple[list[Socket], list[tuple[str, int]]]:
    """192–288 sockets of 48 users (4 to 6 each, under the per-user cap of 20), each opened
    and, unless it stays, closed or dropped, in an order hypothesis chooses: a permutation
    in which a socket's first appearance opens it and its second ends it."""
    counts = draw(st.lists(st.integers(4, 6), min_size=48, max_size=48))
    owners = [user for user, count in enumerate(counts) for _ in range(count)]
    size = len(owners)
    fates = draw(st.lists(st.integers(0, 2), min_size=size, max_size=size))
    nodes = draw(st.lists(st.integers(0, 1), min_size=size, max_size=size))
    # offset by the socket's index, so that even hypothesis's simplest example mixes fates and nodes
    sockets = [
        (user, FATES[(f + i) % 3], (n + i) % 2) for i, (user, f, n) in enumerate(zip(owners, fates, nodes, strict=True))
    ]
    tokens = list(range(size)) + [i for i, (_, fate, _) in enumerate(sockets) if fate != "stay"]
    order = draw(st.permutations(tokens))
    seen: set[int] = set()
    steps = []
    for i in order:
        steps.append(("end" if i in seen else "open", i))
        seen.add(i)
    return sockets, steps


async def play(
    nodes: list[Server], tokens: dict[str, str], sockets: list[Socket], steps: list[tuple[str, int]]
) -> list[ClientConnection]:
    """Run the schedule with a few steps in flight at once; returns the sockets left open."""
    loop = asyncio.get_running_loop()
    conns: dict[int, asyncio.Future[ClientConnection]] = {}
    pending = iter(steps)

    async def worker() -> None:
        for action, i in pending:  # shared: each worker takes the next step in order
            user, fate, node = sockets[i]
            if action == "open":
                conns[i] = future = loop.create_future()
                try:
                    future.set_result(await ws_open(nodes[node], tokens[USERS[user]]))
                except BaseException as exc:
                    future.set_exception(exc)
                    raise
            else:
                ws = await conns[i]
                if fate == "close":
                    await ws.close()
                else:
                    abort(ws)

    await asyncio.gather(*(worker() for _ in range(8)))
    return [conns[i].result() for i, (_, fate, _) in enumerate(sockets) if fate == "stay"]


def mismatches(view: dict[str, Any], devices: Counter[str]) -> dict[str, Any]:
    out = {}
    for uid in USERS:
        want = ("online" if devices[uid] else "offline", devices[uid])
        got = (view[uid]["status"], view[uid]["devices"])
        if got != want:
            out[uid] = {"want": want, "got": got}
    return out


_CHURNERS: dict[str, tuple[Tenant, dict[str, str]]] = {}  # per backend, shared by the examples


async def churn_converges(backend: Backend, sockets: list[Socket], steps: list[tuple[str, int]]) -> None:
    """Play the schedule, then presence on every node matches the open sockets within grace + margin.

    Examples share one tenant: what an earlier example left open was closed before this one
    began, so by the end of this one's grace it is offline unless this schedule reopened it."""
    nodes = [backend.a, backend.b]
    async with httpx.AsyncClient(timeout=30) as http:
        if backend.name not in _CHURNERS:
            tenant = await new_tenant(http, backend.a)
            _CHURNERS[backend.name] = tenant, await users(http, backend.a, tenant, USERS)
        tenant, tokens = _CHURNERS[backend.name]
        left_open = await play(nodes, tokens, sockets, steps)
        try:
            devices = Counter(USERS[user] for user, fate, _ in sockets if fate == "stay")
            note(f"open at the end: {dict(devices)}")
            views = list({n.url: n for n in nodes}.values())

            async def converged() -> bool | None:
                for node in views:
                    if mismatches(await presence(http, node, tenant, USERS), devices):
                        return None
                return True

            try:
                await until(converged, GRACE + MARGIN, "presence to match the open sockets", every=0.1)
            except AssertionError:
                wrong = {n.url: mismatches(await presence(http, n, tenant, USERS), devices) for n in views}
                raise AssertionError(f"presence never matched the open sockets: {wrong}") from None
            # and it stays right: no late event or heartbeat brings a closed socket back
            await asyncio.sleep(2 * HEARTBEAT)
            for node in views:
                assert mismatches(await presence(http, node, tenant, USERS), devices) == {}
        finally:
            await asyncio.gather(*(ws.close() for ws in left_open), return_exceptions=True)


@settings(
    max_examples=3,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each example is seconds of real sockets
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(schedule=churn())
def test_churn_of_hundreds_of_sockets_converges_to_who_has_a_socket_open(
    backend: Backend, schedule: tuple[list[Socket], list[tuple[str, int]]]
) -> None:
    sockets, steps = schedule
    asyncio.run(churn_converges(backend, sockets, steps))


# --- watchers ------------------------------------------------------------------------------
async def test_presence_watcher_gets_the_current_status_first_then_only_changes(
    backend: Backend, http: httpx.AsyncClient
) -> None:
    a, b = backend.a, backend.b
    tenant = await new_tenant(http, a)
    tokens = await users(http, a, tenant, ["watcher", "here", "later"])
    here = await ws_open(a, tokens["here"])
    try:
        await wait_statuses(http, b, tenant, {"here": "online", "later": "offline"})
        watcher = await ws_open(b, tokens["watcher"])
        first = await watch(watcher, ["here", "later"])
        assert {u: (f["status"], f["devices"]) for u, f in first.items()} == {
            "here": ("online", 1),
            "later": ("offline", 0),
        }
        assert first["here"]["last_seen_at"] is not None

        later = await ws_open(a, tokens["later"])
        frames = await frames_until(watcher, is_presence("later", "online"))
        assert [(f["user_id"], f["status"]) for f in frames] == [("later", "online")]

        # a second device changes no status: no frame. Then the only socket of "later"
        # closes; the next frame (after the grace) is its offline, nothing before it.
        second = await ws_open(a, tokens["here"])
        await later.close()
        frames = await frames_until(watcher, is_presence("later", "offline"), GRACE + MARGIN)
        assert [(f["user_id"], f["status"]) for f in frames] == [("later", "offline")]
        assert frames[0]["devices"] == 0
        await second.close()
        await watcher.close()
    finally:
        await here.close()


async def test_reconnecting_ten_times_within_a_second_sends_watchers_no_offline_and_at_most_one_frame(
    backend: Backend, http: httpx.AsyncClient
) -> None:
    nodes = [backend.a, backend.b]
    tenant = await new_tenant(http, backend.a)
    tokens = await users(http, backend.a, tenant, ["watcher", "flaky", "sentinel"])
    ws = await ws_open(backend.a, tokens["flaky"])
    await wait_statuses(http, backend.b, tenant, {"flaky": "online"})
    watcher = await ws_open(backend.b, tokens["watcher"])
    first = await watch(watcher, ["flaky", "sentinel"])
    assert (first["flaky"]["status"], first["sentinel"]["status"]) == ("online", "offline")

    polled: list[str] = []
    stop = asyncio.Event()

    async def poll() -> None:  # what GET /v1/presence says on every node meanwhile
        while not stop.is_set():
            for node in nodes:
                polled.append((await presence(http, node, tenant, ["flaky"]))["flaky"]["status"])
            await asyncio.sleep(0.02)

    poller = asyncio.create_task(poll())
    try:
        for n in range(10):  # each reconnect on the other node (on Kafka), a few ms apart
            if n % 2:
                await ws.close()
            else:
                abort(ws)
            ws = await ws_open(nodes[n % 2], tokens["flaky"])
        # long enough for a spurious offline (grace) and its sampling to happen, then a
        # sentinel: whatever the watcher got about "flaky" arrived before the sentinel's frame
        await asyncio.sleep(GRACE + 2 * HEARTBEAT + 2 * TICK)
        sentinel = await ws_open(backend.a, tokens["sentinel"])
        frames = await frames_until(watcher, is_presence("sentinel", "online"))
    finally:
        stop.set()
        await poller
    about_flaky = [(f["status"], f["devices"]) for f in frames if f["user_id"] == "flaky"]
    assert len(about_flaky) <= 1, about_flaky
    assert all(status == "online" for status, _ in about_flaky), about_flaky
    assert polled and set(polled) == {"online"}, Counter(polled)
    view = await presence(http, backend.b, tenant, ["flaky"])
    assert (view["flaky"]["status"], view["flaky"]["devices"]) == ("online", 1)
    assert "offline" not in durable_statuses(await presence_events(http, backend.a, tenant)).get("flaky", [])
    for conn in (ws, sentinel, watcher):
        await conn.close()


async def test_last_socket_closing_turns_the_user_offline_after_the_grace_and_records_it(
    backend: Backend, http: httpx.AsyncClient
) -> None:
    tenant = await new_tenant(http, backend.a)
    tokens = await users(http, backend.a, tenant, ["watcher", "leaving"])
    phone = await ws_open(backend.a, tokens["leaving"])
    laptop = await ws_open(backend.b, tokens["leaving"])
    await wait_durable(http, backend.a, tenant, {"leaving": "online"})
    view = await wait_statuses(http, backend.b, tenant, {"leaving": "online"})
    assert view["leaving"]["devices"] == 2
    watcher = await ws_open(backend.b, tokens["watcher"])
    assert (await watch(watcher, ["leaving"]))["leaving"]["status"] == "online"

    await phone.close()
    began = time.monotonic()
    await laptop.close()
    frames = await frames_until(watcher, is_presence("leaving", "offline"), GRACE + MARGIN)
    waited = time.monotonic() - began
    assert [f["status"] for f in frames] == ["offline"], frames
    assert waited >= GRACE - 0.05, f"offline after {waited:.2f} s, before the {GRACE} s grace"
    assert frames[0]["devices"] == 0 and frames[0]["last_seen_at"] is not None

    view = await presence(http, backend.b, tenant, ["leaving"])
    assert (view["leaving"]["status"], view["leaving"]["devices"]) == ("offline", 0)
    recorded = await wait_durable(http, backend.a, tenant, {"leaving": "offline"})
    assert recorded["leaving"] == ["online", "offline"]
    await watcher.close()


# --- node death ----------------------------------------------------------------------------
async def test_users_of_a_killed_api_node_go_offline_for_watchers_on_another_node(
    kafka: Backend, http: httpx.AsyncClient
) -> None:
    victim, b = kafka.victim, kafka.b
    tenant = await new_tenant(http, b)
    doomed = ["d1", "d2", "d3"]
    tokens = await users(http, b, tenant, [*doomed, "survivor", "watcher"])
    held = [await ws_open(victim, tokens[u]) for u in doomed for _ in range(2)]
    survivor = await ws_open(kafka.a, tokens["survivor"])
    everyone = {u: "online" for u in [*doomed, "survivor"]}
    await wait_statuses(http, b, tenant, everyone)
    await wait_durable(http, b, tenant, everyone)
    watcher = await ws_open(b, tokens["watcher"])
    first = await watch(watcher, [*doomed, "survivor"])
    assert {u: f["status"] for u, f in first.items()} == everyone

    victim.kill()
    for ws in held:
        abort(ws)
    frames: list[dict[str, Any]] = []
    gone: set[str] = set()
    deadline = time.monotonic() + NODE_TIMEOUT + GRACE + MARGIN
    while gone != set(doomed):
        left = deadline - time.monotonic()
        assert left > 0, f"offline within node timeout + grace for {sorted(gone)} only; frames {frames}"
        frame = await recv(watcher, left)
        frames.append(frame)
        if frame["type"] == "presence" and frame["status"] == "offline":
            gone.add(frame["user_id"])
    # one offline per user of the dead node, nothing about the survivor, no flapping
    assert sorted((f["type"], f["user_id"], f["status"]) for f in frames) == [
        ("presence", u, "offline") for u in doomed
    ]

    for node in (b, kafka.a):
        view = await presence(http, node, tenant, [*doomed, "survivor"])
        assert {u: (v["status"], v["devices"]) for u, v in view.items()} == {
            **{u: ("offline", 0) for u in doomed},
            "survivor": ("online", 1),
        }
    await wait_durable(http, b, tenant, {**{u: "offline" for u in doomed}, "survivor": "online"})
    await survivor.close()
    await watcher.close()


RESTART_GRACE = 3.0


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[Server]:
    """A dedicated embedded server to kill; a longer grace so a reconnect can beat it."""
    server = Server(tmp_path / "data", env={**ENV, "CAAS_PRESENCE_GRACE_SECONDS": str(RESTART_GRACE)})
    try:
        yield server.start()
    finally:
        server.stop()


async def test_embedded_restart_after_kill_turns_users_offline_after_the_grace_unless_they_reconnect(
    restartable: Server, http: httpx.AsyncClient
) -> None:
    server = restartable
    tenant = await new_tenant(http, server)
    tokens = await users(http, server, tenant, ["gone", "back", "watcher"])
    before = [await ws_open(server, tokens[u]) for u in ("gone", "back")]
    await wait_durable(http, server, tenant, {"gone": "online", "back": "online"})

    server.kill()
    for ws in before:
        abort(ws)
    server.start()
    back = await ws_open(server, tokens["back"])  # reconnects within the grace
    watcher = await ws_open(server, tokens["watcher"])
    first = await watch(watcher, ["gone", "back"])
    # the restart reconciled the durable statuses: both are within their grace, not offline yet
    assert {u: f["status"] for u, f in first.items()} == {"gone": "online", "back": "online"}

    frames = await frames_until(watcher, is_presence("gone", "offline"), RESTART_GRACE + MARGIN)
    assert [(f["user_id"], f["status"]) for f in frames] == [("gone", "offline")]
    view = await presence(http, server, tenant, ["gone", "back"])
    assert {u: (v["status"], v["devices"]) for u, v in view.items()} == {"gone": ("offline", 0), "back": ("online", 1)}
    recorded = await wait_durable(http, server, tenant, {"gone": "offline", "back": "online"})
    assert (recorded["gone"], recorded["back"]) == (["online", "offline"], ["online"])
    await back.close()
    await watcher.close()
