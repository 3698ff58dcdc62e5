"""The SDK's Realtime against a scripted websocket server: what it does with frames and closes a
correct server sends only rarely (a newer server's values, a gap, a close code)."""

from __future__ import annotations

import asyncio
import json

import pytest
from caas_client import Backoff, Channel, ErrorFrame, FrameTooBig, FrameUnreadable, Presence, Realtime, SocketRefused
from websockets.asyncio.server import ServerConnection

from tests.sdk.helpers import WAIT, eventually, read_until
from tests.sdk.scripted import Scripted, event, subscribed


async def _true(value: object) -> bool:
    return bool(value)


async def test_a_newer_servers_ids_status_and_code_are_read_not_skipped() -> None:
    async def script(ws: ServerConnection, n: int) -> None:
        await server.receive(ws)  # subscribe
        await ws.send(subscribed("room", 2))
        for seq in (1, 2):
            await ws.send(event("room", seq))
        await ws.send(event("room", 3, correlation_id="req-1", command_id="cmd-1"))
        await ws.send(event("room", 4))
        await ws.send(json.dumps({"type": "presence", "user_id": "bob", "status": "busy",
                                  "last_seen_at": None, "devices": 1}))  # fmt: skip
        await ws.send(json.dumps({"type": "error", "code": "brand_new", "message": "a newer code"}))
        await ws.wait_closed()

    presences: list[Presence] = []
    errors: list[ErrorFrame] = []
    async with (
        Scripted(script) as server,
        Realtime(server.url, "t", on_presence=presences.append, on_error=errors.append) as rt,
    ):
        channel = rt.channel("room", since_seq=0)
        got = await read_until(channel, 4, [])
        assert [f.seq for f in got] == [1, 2, 3, 4]
        assert got[2].event.correlation_id == "req-1"
        await eventually(lambda: _true(errors), "the error frame")
        assert [p.status for p in presences] == ["busy"]
        assert [e.code for e in errors] == ["brand_new"]
        assert server.connections == 1
        assert [f["type"] for f in server.received] == ["subscribe"]  # no resubscribe storm


async def test_an_event_that_cannot_be_read_ends_its_channel_instead_of_resubscribing_forever() -> None:
    async def script(ws: ServerConnection, n: int) -> None:
        while True:
            frame = await server.receive(ws)
            if frame["type"] != "subscribe":
                continue
            since = frame.get("since_seq") or 0
            await ws.send(subscribed("room", 3))
            for seq in range(since + 1, 4):
                await ws.send(event("room", seq, schema_version="one") if seq == 2 else event("room", seq))

    async with Scripted(script) as server, Realtime(server.url, "t") as rt:
        channel = rt.channel("room", since_seq=0)
        got: list[object] = []
        with pytest.raises(FrameUnreadable):
            async for frame in channel:
                got.append(frame.seq)
        assert got == [1]
        await eventually(lambda: _true([f for f in server.received if f["type"] == "unsubscribe"]), "unsubscribe")
        assert [f["type"] for f in server.received] == ["subscribe", "unsubscribe"]


async def test_a_gap_resubscribes_once_from_the_last_seq_and_the_replay_fills_it() -> None:
    async def script(ws: ServerConnection, n: int) -> None:
        while True:
            frame = await server.receive(ws)
            since = frame.get("since_seq") or 0
            await ws.send(subscribed("room", 6))
            if since == 0:  # the first answer skips seq 3, then keeps sending
                for seq in (1, 2, 4, 5, 6):
                    await ws.send(event("room", seq))
            else:
                for seq in range(since + 1, 7):
                    await ws.send(event("room", seq))

    async with Scripted(script) as server, Realtime(server.url, "t") as rt:
        channel = rt.channel("room", since_seq=0)
        got = await asyncio.wait_for(read_until(channel, 6, []), WAIT)
        assert [f.seq for f in got] == [1, 2, 3, 4, 5, 6]
        assert [(f["type"], f.get("since_seq")) for f in server.received] == [("subscribe", 0), ("subscribe", 2)]


@pytest.mark.parametrize("code", [1013, 1011, 1012])
async def test_a_server_that_confirms_then_closes_is_reconnected_to_with_a_growing_backoff(code: int) -> None:
    async def script(ws: ServerConnection, n: int) -> None:
        await server.receive(ws)
        await ws.send(subscribed("room", 0))  # the server confirms, then sheds the socket
        await ws.close(code)

    async with Scripted(script) as server, Realtime(server.url, "t", backoff=Backoff(base=0.001, cap=0.01)) as rt:
        rt.channel("room", since_seq=0)
        await eventually(lambda: _true(server.connections >= 8), "eight connections")
        # at most one reconnect at once, then every attempt backs off further
        assert rt.backoff.attempt >= 6, rt.stats


async def test_callbacks_that_raise_are_counted_and_the_connection_and_channel_go_on() -> None:
    async def script(ws: ServerConnection, n: int) -> None:
        await server.receive(ws)
        await ws.send(subscribed("room", 2))
        await ws.send(json.dumps({"type": "typing", "channel_id": "room", "user_id": "bob", "expires_in_ms": 1}))
        await ws.send(json.dumps({"type": "presence", "user_id": "bob", "status": "online",
                                  "last_seen_at": None, "devices": 1}))  # fmt: skip
        await ws.send(json.dumps({"type": "error", "code": "rate_limited", "message": "slow down"}))
        for seq in (1, 2):
            await ws.send(event("room", seq))
        await ws.wait_closed()

    def boom(_: object) -> None:
        raise OSError("the app's own bug")  # an OSError must not pass for a network drop

    async with (
        Scripted(script) as server,
        Realtime(server.url, "t", on_presence=boom, on_error=boom) as rt,
    ):
        channel = rt.channel("room", since_seq=0)
        channel.on_typing = boom
        got = await read_until(channel, 2, [])
        assert [f.seq for f in got] == [1, 2]
        assert rt.stats.callback_errors == 3 and rt.stats.connects == 1 and rt.stats.closes == {}


async def test_close_and_unsubscribe_end_the_readers_and_a_channel_after_a_failure_ends_at_once() -> None:
    async def script(ws: ServerConnection, n: int) -> None:
        while True:
            frame = await server.receive(ws)
            if frame["type"] == "subscribe":
                await ws.send(subscribed(frame["channel_id"], 1))
                await ws.send(event(frame["channel_id"], 1))

    async def read_all(channel: Channel) -> list[int]:
        return [frame.seq async for frame in channel]

    async with Scripted(script) as server:
        rt = Realtime(server.url, "t")
        rt.start()
        one, two = rt.channel("one", since_seq=0), rt.channel("two", since_seq=0)  # two channels, one socket
        readers = [asyncio.create_task(read_all(one)), asyncio.create_task(read_all(two))]
        await asyncio.wait_for(one.caught_up(), WAIT)
        await asyncio.wait_for(two.caught_up(), WAIT)
        await one.unsubscribe()
        assert await asyncio.wait_for(readers[0], WAIT) == [1]
        await rt.close()
        assert await asyncio.wait_for(readers[1], WAIT) == [1]
        assert server.connections == 1

    async def refuse(ws: ServerConnection, n: int) -> None:
        await ws.close(1009)

    async with Scripted(refuse) as server, Realtime(server.url, "t") as rt:
        first = rt.channel("one", since_seq=0)
        with pytest.raises(FrameTooBig):
            await asyncio.wait_for(read_all(first), WAIT)
        with pytest.raises(FrameTooBig):  # asked for after the failure: it ends at once
            await asyncio.wait_for(read_all(rt.channel("two", since_seq=0)), WAIT)


async def test_a_channel_buffers_at_most_channel_buffer_frames_the_app_has_not_read() -> None:
    sent: list[int] = []

    async def script(ws: ServerConnection, n: int) -> None:
        await server.receive(ws)
        await ws.send(subscribed("room", 40))
        for seq in range(1, 41):
            await ws.send(event("room", seq))
            sent.append(seq)
        await ws.wait_closed()

    async with Scripted(script) as server, Realtime(server.url, "t", channel_buffer=5) as rt:
        channel = rt.channel("room", since_seq=0)
        await eventually(lambda: _true(len(sent) == 40), "the server sent everything")  # into socket buffers
        await eventually(lambda: _true(channel.buffered == 5), "five frames buffered")
        got = await read_until(channel, 40, [])
        assert [f.seq for f in got] == list(range(1, 41))


async def test_a_refresh_callback_that_keeps_failing_ends_the_channels_with_socket_refused() -> None:
    async def script(ws: ServerConnection, n: int) -> None:
        await ws.close(1008)  # the token is refused, every time

    calls: list[int] = []

    def refresh() -> str:
        calls.append(1)
        raise RuntimeError("the app's token endpoint is down")

    async with (
        Scripted(script) as server,
        Realtime(server.url, "t", refresh_token=refresh, backoff=Backoff(base=0.001, cap=0.01)) as rt,
    ):
        channel = rt.channel("room", since_seq=0)
        with pytest.raises(SocketRefused):
            await asyncio.wait_for(read_until(channel, 1, []), WAIT)
        assert len(calls) == 5 and rt.stats.refreshes == 0


async def test_caught_up_waits_again_for_the_new_head_after_a_reconnect() -> None:
    release = asyncio.Event()

    async def script(ws: ServerConnection, n: int) -> None:
        frame = await server.receive(ws)
        if n == 0:
            await ws.send(subscribed("room", 1))
            await ws.send(event("room", 1))
            await ws.close(1011)
            return
        assert frame.get("since_seq") == 1
        await ws.send(subscribed("room", 3))
        await release.wait()
        for seq in (2, 3):
            await ws.send(event("room", seq))
        await ws.wait_closed()

    async with (
        Scripted(script) as server,
        Realtime(server.url, "t", backoff=Backoff(base=0.001, cap=0.01)) as rt,
    ):
        channel = rt.channel("room", since_seq=0)
        got = await read_until(channel, 1, [])
        await eventually(lambda: _true(channel.timeline.head_seq == 3), "the second subscription")
        caught_up_early = channel.is_caught_up
        release.set()
        assert not caught_up_early  # seq 1 of 3: the new head is not reached yet
        await asyncio.wait_for(channel.caught_up(), WAIT)
        assert [f.seq for f in await read_until(channel, 3, got)] == [1, 2, 3]
