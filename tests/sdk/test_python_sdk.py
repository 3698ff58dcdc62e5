"""The Python SDK against a real server (embedded and Kafka): send and receive, resume across a
restart and a forced 1013 with no gap and no duplicate, an outbox through a cut connection,
token refresh on 1008, presence and typing, and the blocking client."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from caas_client import (
    Ack,
    AsyncClient,
    Backoff,
    CaasError,
    Channel,
    Client,
    CompactEvent,
    EventFrame,
    FrameTooBig,
    Outbox,
    Presence,
    Realtime,
    SqliteStore,
    SubscriptionRefused,
    SyncOutbox,
    Typing,
)
from pydantic import BaseModel

from tests.cluster import serving
from tests.sdk.helpers import WAIT, admin_for, assert_exactly_once, eventually, read_until, room
from tests.sdk.proxy import Cut, Proxy
from tests.support import Server, new_tenant

BACKENDS = ["embedded", "kafka"]
FAT = [{"type": "file", "url": f"https://files.example/{i}/" + "y" * 2000} for i in range(10)]


async def test_messages_sent_through_the_outbox_arrive_on_the_others_channel_in_order(server: Server) -> None:
    admin = await admin_for(server)
    tokens = await room(admin, "room", "alice", "bob")
    head = (await admin.get_channel("room")).head_seq
    acked: list[Ack] = []
    async with AsyncClient(server.url, tokens["alice"]) as alice, Realtime(server.url, tokens["bob"]) as bob:
        channel = bob.channel("room", since_seq=0)
        outbox = Outbox(alice, on_acked=acked.append)
        # alice's own socket reconciles her messages too: whichever of the HTTP answer and the
        # event comes first acknowledges each, once
        async with outbox, Realtime(server.url, tokens["alice"], outbox=outbox) as alice_rt:
            alice_rt.channel("room")
            sent = [outbox.send("room", f"hello {i}") for i in range(5)]
            acks = [await asyncio.wait_for(outbox.acknowledged(p.client_msg_id), WAIT) for p in sent]
        assert sorted(a.client_msg_id for a in acked) == sorted(p.client_msg_id for p in sent)
        assert [a.seq for a in acks] == list(range(head + 1, head + 6))
        got = await read_until(channel, head + 5, [])
        assert_exactly_once(got, 1, head + 5)
        posted = [f.event.payload for f in got if f.event.type == "MessagePosted"]
        assert [p["text"] for p in posted] == [f"hello {i}" for i in range(5)]
        assert [p["client_msg_id"] for p in posted] == [p.client_msg_id for p in sent]
        # read your writes: alice's next query waits for her last write's position
        assert alice.position >= max(a.position or 0 for a in acks) > 0
        newest = (await alice.messages("room", limit=5)).messages
        assert [m.text for m in newest] == [f"hello {i}" for i in range(4, -1, -1)]
        # read markers and unread counts
        async with AsyncClient(server.url, tokens["bob"]) as bob_http:
            bob_http.observe_position(alice.position)  # bob reads what alice wrote
            assert await bob_http.unread_count("room") == 5
            await bob_http.mark_read("room", acks[2].seq)
            assert await bob_http.unread_count("room") == 2
    await admin.aclose()


async def test_compact_frames_give_the_same_timeline_and_acknowledge_the_outbox(server: Server) -> None:
    """``frames="compact"``: the channel yields ``ev`` frames with the seqs, order and payloads an
    ``event`` socket yields, and the outbox is acknowledged from them (without a position)."""
    admin = await admin_for(server)
    tokens = await room(admin, "room", "alice", "bob")
    head = (await admin.get_channel("room")).head_seq
    async with (
        Realtime(server.url, tokens["bob"], frames="compact") as compact,
        Realtime(server.url, tokens["bob"]) as full,
        AsyncClient(server.url, tokens["alice"]) as alice,
    ):
        short, long = compact.channel("room", since_seq=0), full.channel("room", since_seq=0)
        outbox = Outbox(alice)
        async with outbox, Realtime(server.url, tokens["alice"], outbox=outbox, frames="compact") as alice_rt:
            alice_rt.channel("room")
            sent = [outbox.send("room", f"hello {i}") for i in range(3)]
            acks = [await asyncio.wait_for(outbox.acknowledged(p.client_msg_id), WAIT) for p in sent]
        assert [a.seq for a in acks] == list(range(head + 1, head + 4))
        got_short, got_long = await read_until(short, head + 3, []), await read_until(long, head + 3, [])
        assert_exactly_once(got_short, 1, head + 3)
        assert all(isinstance(f, CompactEvent) for f in got_short)
        assert all(isinstance(f, EventFrame) for f in got_long)
        assert [(f.ch, f.seq, f.ev) for f in got_short if isinstance(f, CompactEvent)] == [
            (f.channel_id, f.seq, f.event.type) for f in got_long if isinstance(f, EventFrame)
        ]
        texts = [f.d["text"] for f in got_short if isinstance(f, CompactEvent) and f.ev == "MessagePosted"]
        assert texts == [f"hello {i}" for i in range(3)]
    await admin.aclose()


async def test_history_iterators_page_through_every_message_both_ways(server: Server) -> None:
    admin = await admin_for(server)
    await room(admin, "big", "alice")
    for i in range(23):
        await admin.post_message("big", f"m{i}", user_id="alice")
    oldest_first = [m.text async for m in admin.history("big", limit=5)]
    assert oldest_first == [f"m{i}" for i in range(23)]
    newest_first = [m.text async for m in admin.history_backwards("big")]
    assert newest_first == oldest_first[::-1]
    assert [c.channel_id async for c in admin.channels()] == ["big"]
    kinds = [e.type async for e in admin.events(types=["MessagePosted"])]
    assert kinds == ["MessagePosted"] * 23
    await admin.aclose()


def test_blocking_client_administers_a_tenant_and_pages_history(server: Server) -> None:
    with httpx.Client(timeout=30) as http:
        tenant = new_tenant(http, server.url)
    with Client(server.url, tenant.api_key) as admin:
        assert admin.put_user("alice", "Alice").user_id == "alice"
        token = admin.create_token("alice", ttl_seconds=600).token
        key = admin.create_api_key("second")
        assert key.api_key is not None and admin.revoke_api_key(key.key_id).position > 0
        admin.create_channel(["alice"], channel_id="c1")
        with Client(server.url, token) as alice:
            for i in range(12):
                alice.post_message("c1", f"s{i}", client_msg_id=f"cm-{i}")
            again = alice.post_message("c1", "s0", client_msg_id="cm-0")  # a retry: the first answer
            assert again.seq == alice.messages("c1", limit=1).messages[0].seq - 11
            assert [m.text for m in alice.history("c1", limit=5)] == [f"s{i}" for i in range(12)]
            assert alice.presence(["alice"])["alice"].status in ("online", "away", "offline")
            with pytest.raises(CaasError) as missing:
                alice.get_channel("nope")
            assert missing.value.status == 404 and missing.value.code == "not_found"


def test_blocking_outbox_retries_through_a_cut_connection_and_posts_once(server: Server, tmp_path: Path) -> None:
    with httpx.Client(timeout=30) as http:
        tenant = new_tenant(http, server.url)
    loop = asyncio.new_event_loop()  # the proxy runs on its own loop: this test blocks
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    proxy = asyncio.run_coroutine_threadsafe(Proxy(server.port, plan=[Cut.BEFORE_ANSWER]).start(), loop).result(WAIT)
    try:
        with Client(server.url, tenant.api_key) as admin, Client(proxy.url, tenant.api_key) as flaky:
            admin.put_user("alice", "Alice")
            admin.create_channel(["alice"], channel_id="room")
            store = SqliteStore(tmp_path / "outbox.sqlite")
            outbox = SyncOutbox(flaky, store, backoff=Backoff(base=0.01))
            item = outbox.send("room", "once, from the backend", user_id="alice")
            outbox.send("room", "second", user_id="alice")
            outbox.flush()
            ack = outbox.acknowledged(item.client_msg_id)
            # the cut answer is retried; a brief 503 from the server would add an attempt
            assert ack is not None and outbox.pending == [] and outbox.attempts >= 3 and store.load() == []
            store.close()
            admin.observe_position(flaky.position)
            texts = [m.text for m in admin.history("room")]
        assert texts == ["once, from the backend", "second"]
    finally:
        asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(WAIT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        loop.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_channel_resumes_across_a_server_restart_with_no_gap_and_no_duplicate(
    backend: str, tmp_path: Path
) -> None:
    with serving(backend, tmp_path, {}) as srv:
        admin = await admin_for(srv)
        tokens = await room(admin, "room", "alice", "bob")
        async with Realtime(srv.url, tokens["bob"]) as bob:
            bob.backoff.cap = 1.0
            channel = bob.channel("room", since_seq=0)
            for i in range(10):
                await admin.post_message("room", f"before {i}", user_id="alice")
            head = (await admin.get_channel("room")).head_seq
            got = await read_until(channel, head, [])
            srv.kill()  # kill -9: the socket goes away without a close frame
            srv.start(timeout=60)
            if backend == "kafka":
                from tests.cluster import Cluster

                Cluster.wait_ready(srv.url)
            admin = AsyncClient(srv.url, admin.token)
            for i in range(10):
                await admin.post_message("room", f"after {i}", user_id="alice")
            head = (await admin.get_channel("room")).head_seq
            await read_until(channel, head, got)
            assert bob.stats.connects >= 2
        assert_exactly_once(got, 1, head)
        assert channel.drain() == []
        await admin.aclose()


@pytest.fixture
def small_queue_env() -> dict[str, str]:
    # a 50-frame outbox; the stall reset must not fire first (the test holds the socket back)
    return {"CAAS_WS_QUEUE_FRAMES": "50", "CAAS_WS_STALL_SECONDS": "120"}


@pytest.mark.parametrize("frames", ["full", "compact"])
@pytest.mark.parametrize("backend", BACKENDS)
async def test_channel_closed_1013_for_falling_behind_resumes_at_once_with_no_gap(
    backend: str, frames: Literal["full", "compact"], tmp_path: Path, small_queue_env: dict[str, str]
) -> None:
    with serving(backend, tmp_path, small_queue_env) as srv:
        admin = await admin_for(srv)
        tokens = await room(admin, "room", "alice", "bob")
        proxy = await Proxy(srv.port, small_buffer=True).start()
        try:
            async with Realtime(proxy.url, tokens["bob"], frames=frames) as bob:
                channel = bob.channel("room", since_seq=0)
                await asyncio.wait_for(channel.caught_up(), WAIT)
                proxy.flowing.clear()  # bob stops reading: the server's outbox for him overflows
                for i in range(200):  # ~25 KB each: far more than the socket buffers and 50 frames hold
                    await admin.post_message("room", f"{i} " + "x" * 4000, attachments=FAT, user_id="alice")
                head = (await admin.get_channel("room")).head_seq
                proxy.flowing.set()
                got = await read_until(channel, head, [])
                assert bob.stats.closes.get(1013, 0) >= 1, bob.stats
                await admin.post_message("room", "live after the resume", user_id="alice")
                await read_until(channel, head + 1, got)
            assert_exactly_once(got, 1, head + 1)
        finally:
            await proxy.stop()
            await admin.aclose()


async def test_a_frame_over_the_servers_limit_ends_the_channels_with_frame_too_big(tmp_path: Path) -> None:
    with serving("embedded", tmp_path, {"CAAS_WS_MAX_FRAME_BYTES": "300"}) as srv:
        admin = await admin_for(srv)
        tokens = await room(admin, "room", "alice", "bob")
        async with Realtime(srv.url, tokens["bob"]) as bob:
            channel = bob.channel("room", since_seq=0)
            await asyncio.wait_for(channel.caught_up(), WAIT)
            await bob.watch_presence([f"user-{i}" for i in range(40)])  # one frame of ~500 bytes
            with pytest.raises(FrameTooBig):
                await asyncio.wait_for(read_until(channel, 10**9, []), WAIT)
            assert bob.stats.closes == {1009: 1}
        await admin.aclose()


async def test_outbox_retries_through_cut_connections_and_the_message_is_recorded_once(
    server: Server, tmp_path: Path
) -> None:
    admin = await admin_for(server)
    tokens = await room(admin, "room", "alice")
    # the first attempt reaches the server and its answer is lost; the second is cut mid-request
    proxy = await Proxy(server.port, plan=[Cut.BEFORE_ANSWER, Cut.MID_REQUEST]).start()
    store = SqliteStore(tmp_path / "outbox.sqlite")
    try:
        async with AsyncClient(proxy.url, tokens["alice"]) as alice:
            outbox = Outbox(alice, store)
            outbox.backoff.base = 0.01
            item = outbox.send("room", "exactly once")
            assert [p.client_msg_id for p in store.load()] == [item.client_msg_id]  # stored before sending
            await asyncio.wait_for(outbox.flush(), WAIT)
            ack = await outbox.acknowledged(item.client_msg_id)
            assert outbox.attempts >= 3 and proxy.connections >= 3  # more if the server was briefly unavailable
            assert store.load() == []
        admin.observe_position(ack.position)  # read alice's write back
        texts = [(m.text, m.seq) async for m in admin.history("room")]
        assert texts == [("exactly once", ack.seq)]
    finally:
        store.close()
        await proxy.stop()
        await admin.aclose()


async def test_socket_refused_with_1008_calls_the_token_refresh_and_resumes(server: Server) -> None:
    admin = await admin_for(server)
    tokens = await room(admin, "room", "alice", "bob")
    refreshed: list[str] = []

    async def refresh() -> str:
        token = (await admin.create_token("bob")).token
        refreshed.append(token)
        return token

    async with Realtime(server.url, tokens["bob"], refresh_token=refresh) as bob:
        channel = bob.channel("room", since_seq=0)
        await admin.post_message("room", "one", user_id="alice")
        head = (await admin.get_channel("room")).head_seq
        got = await read_until(channel, head, [])
        # two rotations retire the key that signed bob's token: the server closes his socket 1008
        await admin.rotate_signing_key()
        await admin.rotate_signing_key()
        await eventually(lambda: _true(refreshed), "the refresh callback")
        await admin.post_message("room", "two", user_id="alice")
        head = (await admin.get_channel("room")).head_seq
        await read_until(channel, head, got)
        assert bob.stats.closes.get(1008) == 1
        assert bob.token == refreshed[-1]
    assert_exactly_once(got, 1, head)
    await admin.aclose()


async def test_outbox_of_a_client_whose_token_was_retired_refreshes_it_and_posts_once(server: Server) -> None:
    admin = await admin_for(server)
    tokens = await room(admin, "room", "alice")
    await admin.rotate_signing_key()
    await admin.rotate_signing_key()  # alice's token is no longer accepted

    async def refresh() -> str:
        return (await admin.create_token("alice")).token

    async with AsyncClient(server.url, tokens["alice"], refresh_token=refresh) as alice:
        outbox = Outbox(alice)
        item = outbox.send("room", "after the rotation")
        await asyncio.wait_for(outbox.flush(), WAIT)
        ack = await outbox.acknowledged(item.client_msg_id)
        assert alice.refreshes == 1
        assert [(m.text, m.seq) for m in (await alice.messages("room")).messages] == [("after the rotation", ack.seq)]
    await admin.aclose()


def shape(schema: dict[str, Any], defs: dict[str, Any], lenient: bool, depth: int = 0) -> Any:
    """What a schema accepts, without titles, descriptions or constraints: a model's fields with
    their required-ness and types (references resolved). ``lenient``: the frame models take any
    string for an enum and anything for a null-typed field (see tools/generate_models.py)."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        return shape(target, defs, lenient, depth) if depth < 6 else "object"
    if "properties" in schema:
        required = set(schema.get("required", []))
        fields = [(k, k in required, shape(v, defs, lenient, depth + 1)) for k, v in schema["properties"].items()]
        return tuple(sorted((k, needed, kind if needed else optional(kind)) for k, needed, kind in fields))
    for union in ("anyOf", "oneOf"):
        if union in schema:
            kinds = {shape(s, defs, lenient, depth) for s in schema[union]}
            return kinds.pop() if len(kinds) == 1 else tuple(sorted(kinds, key=repr))
    if "enum" in schema or "const" in schema:
        values = schema.get("enum", [schema.get("const")])
        return "string" if lenient and all(isinstance(v, str) for v in values) else ("enum", tuple(sorted(values)))
    kind = schema.get("type")
    if kind == "array":
        return ("array", shape(schema.get("items", {}), defs, lenient, depth + 1))
    if kind == "null" and lenient:
        return "any"
    if isinstance(kind, list):
        return tuple(sorted(kind))
    return kind or "any"


def optional(kind: Any) -> Any:
    """An optional field's type without ``null`` (the generator makes every optional one nullable)."""
    if kind == "any" or not isinstance(kind, tuple) or "null" not in kind:
        return kind
    rest = tuple(k for k in kind if k != "null")
    return rest[0] if len(rest) == 1 else rest


async def _true(value: object) -> bool:
    return bool(value)


async def test_presence_and_throttled_typing_reach_the_other_member(server: Server) -> None:
    admin = await admin_for(server)
    tokens = await room(admin, "room", "alice", "bob")
    seen: list[Presence] = []
    typing: list[Typing] = []
    async with (
        Realtime(server.url, tokens["bob"], on_presence=seen.append) as bob,
        Realtime(server.url, tokens["alice"]) as alice,
    ):
        bob_room = bob.channel("room")
        bob_room.on_typing = typing.append
        alice_room = alice.channel("room")
        await asyncio.wait_for(bob_room.caught_up(), WAIT)
        await asyncio.wait_for(alice_room.caught_up(), WAIT)
        await bob.watch_presence(["alice"])
        await eventually(lambda: _true([p for p in seen if p.user_id == "alice" and p.status == "online"]), "presence")
        assert await alice_room.typing() is True
        assert await alice_room.typing() is False  # inside the throttle window: nothing sent
        await eventually(lambda: _true(typing), "the typing frame")
        assert [(t.user_id, t.channel_id) for t in typing] == [("alice", "room")]
    await admin.aclose()


async def test_the_committed_models_have_the_fields_types_and_required_ness_of_the_live_servers_schemas(
    server: Server,
) -> None:
    # structure, not bytes: a docstring or a formatter release changes nothing here, a field that
    # is added, removed, retyped or made required does (then run sdk/python/tools/generate_models.py)
    from caas_client import frame_models, models

    for module, document, lenient in ((models, "/openapi.json", False), (frame_models, "/asyncapi.json", True)):
        async with httpx.AsyncClient(timeout=30) as http:
            schemas = (await http.get(f"{server.url}{document}")).json()["components"]["schemas"]
        compared = 0
        for name, schema in schemas.items():
            model = getattr(module, name, None)
            if not (isinstance(model, type) and issubclass(model, BaseModel)) or "properties" not in schema:
                continue
            ours = model.model_json_schema()
            assert shape(ours, ours.get("$defs", {}), lenient) == shape(schema, schemas, lenient), f"{document} {name}"
            compared += 1
        assert compared >= 5, f"{document}: too few models compared"


async def test_outbox_goes_on_delivering_when_the_apps_on_acked_raises(server: Server) -> None:
    admin = await admin_for(server)
    tokens = await room(admin, "room", "alice")
    calls: list[Ack] = []

    def on_acked(ack: Ack) -> None:
        calls.append(ack)
        if len(calls) == 1:
            raise RuntimeError("the app's bug")

    async with AsyncClient(server.url, tokens["alice"]) as alice, Outbox(alice, on_acked=on_acked) as outbox:
        sent = [outbox.send("room", f"m{i}") for i in range(3)]
        acks = [await asyncio.wait_for(outbox.acknowledged(p.client_msg_id), WAIT) for p in sent]
        assert [a.client_msg_id for a in acks] == [p.client_msg_id for p in sent]
        assert len(calls) == 3 and [type(e) for e in outbox.errors] == [RuntimeError]
    await admin.aclose()


async def test_concurrent_requests_refused_with_an_expired_token_refresh_it_once(server: Server) -> None:
    admin = await admin_for(server)
    tokens = await room(admin, "room", "alice")
    await admin.rotate_signing_key()
    await admin.rotate_signing_key()  # alice's token is no longer accepted
    refreshed: list[str] = []

    async def refresh() -> str:
        token = (await admin.create_token("alice")).token
        refreshed.append(token)
        return token

    async with AsyncClient(server.url, tokens["alice"], refresh_token=refresh) as alice:
        channels = await asyncio.gather(*(alice.get_channel("room") for _ in range(20)))
        assert {c.channel_id for c in channels} == {"room"}
        assert len(refreshed) == 1 and alice.token == refreshed[0]
    await admin.aclose()


def test_blocking_outbox_with_a_revoked_key_gives_up_after_max_attempts_and_flush_returns(server: Server) -> None:
    with httpx.Client(timeout=30) as http:
        tenant = new_tenant(http, server.url)
    with Client(server.url, tenant.api_key) as admin:
        admin.put_user("alice", "Alice")
        admin.create_channel(["alice"], channel_id="room")
        key = admin.create_api_key("doomed")
        assert key.api_key is not None
        admin.revoke_api_key(key.key_id)
        retries: list[tuple[str, int]] = []
        rejected: list[tuple[str, str]] = []
        with Client(server.url, key.api_key) as revoked:
            outbox = SyncOutbox(
                revoked,
                backoff=Backoff(base=0.01),
                max_attempts=3,
                on_retry=lambda p, e, n: retries.append((p.text, n)),
                on_rejected=lambda p, e: rejected.append((p.text, e.code)),
            )
            outbox.send("room", "never", user_id="alice")
            outbox.flush()
            assert retries == [("never", 1), ("never", 2)]
            assert rejected == [("never", "unauthenticated")] and outbox.pending == []
            # without max_attempts, flush(timeout) still returns; the message stays pending
            patient = SyncOutbox(revoked, backoff=Backoff(base=0.01, cap=0.05))
            item = patient.send("room", "later", user_id="alice")
            patient.flush(timeout=0.5)
            assert [p.client_msg_id for p in patient.pending] == [item.client_msg_id]


async def test_subscriptions_the_rate_limiter_dropped_are_sent_again_and_refused_ones_end(tmp_path: Path) -> None:
    env = {"CAAS_WS_FRAMES_BURST": "4", "CAAS_WS_FRAMES_PER_SECOND": "20", "CAAS_WS_MAX_SUBSCRIPTIONS": "10"}
    with serving("embedded", tmp_path, env) as srv:
        admin = await admin_for(srv)
        tokens = await room(admin, "c0", "alice", "bob")
        for i in range(1, 12):
            await admin.create_channel(["alice", "bob"], channel_id=f"c{i}")
        await admin.post_message("c0", "hi", user_id="alice")
        async with Realtime(srv.url, tokens["bob"]) as bob:
            channels = [bob.channel(f"c{i}", since_seq=0) for i in range(12)]

            async def ended(channel: Channel) -> None:
                async for _ in channel:
                    pass

            async def outcome(channel: Channel) -> bool:
                done, pending = await asyncio.wait(
                    [asyncio.ensure_future(channel.caught_up()), asyncio.ensure_future(ended(channel))],
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for task in pending:
                    task.cancel()
                errors = [t.exception() for t in done if t.exception() is not None]
                assert all(isinstance(e, SubscriptionRefused) for e in errors), errors
                return not errors

            results = await asyncio.wait_for(asyncio.gather(*(outcome(c) for c in channels)), WAIT)
            assert sorted(results) == [False] * 2 + [True] * 10  # 10 subscriptions per socket here
        await admin.aclose()


async def test_outbox_remembers_a_bounded_number_of_outcomes_and_keeps_no_future_nobody_waits_for(
    server: Server,
) -> None:
    admin = await admin_for(server)
    tokens = await room(admin, "room", "alice")
    async with AsyncClient(server.url, tokens["alice"]) as alice:
        outbox = Outbox(alice)
        outbox.state.remember = 10
        sent = [outbox.send("room", f"m{i}") for i in range(30)]
        await asyncio.wait_for(outbox.flush(), WAIT)
        assert outbox.pending == [] and list(outbox.state.acked) == [p.client_msg_id for p in sent[-10:]]
        assert (await outbox.acknowledged(sent[-1].client_msg_id)).client_msg_id == sent[-1].client_msg_id
        assert outbox._settled == {}  # no future was made for a message nobody waited for
    await admin.aclose()


async def test_write_helpers_retried_with_one_idempotency_key_apply_once(server: Server) -> None:
    admin = await admin_for(server)
    await room(admin, "room", "alice")
    first = await admin.create_channel(["alice"], name="no id", idempotency_key="create-1")
    again = await admin.create_channel(["alice"], name="no id", idempotency_key="create-1")  # a lost answer's retry
    assert again.channel_id == first.channel_id
    posted = await admin.post_message("room", "once", user_id="alice", idempotency_key="post-1")
    repeat = await admin.post_message("room", "once", user_id="alice", idempotency_key="post-1")
    assert repeat.message_id == posted.message_id
    admin.observe_position(repeat.position)
    assert [m.text async for m in admin.history("room")] == ["once"]
    assert [c.channel_id async for c in admin.channels()].count(first.channel_id) == 1
    await admin.aclose()


async def test_presence_of_more_users_than_one_request_takes_is_asked_in_parts(server: Server) -> None:
    admin = await admin_for(server)
    tokens = await room(admin, "room", "alice")
    ids = ["alice"] + [f"ghost-{i}" for i in range(249)]
    async with AsyncClient(server.url, tokens["alice"]) as alice:
        found = await alice.presence(ids)
    assert set(found) == set(ids) and found["ghost-7"].status == "offline"
    await admin.aclose()
