"""Property: random command sequences from users of several tenants with colliding ids (the
same user ids, the same channel ids) never leak an event, a document or a websocket frame
across tenants, on the real server of each backend."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.security.common import frames_until, until_pong, ws_connect
from tests.support import ADMIN, Server, bearer

TENANTS = 3
USERS = ("u1", "u2", "u3")
CHANNELS = ("c1", "c2")
EXAMPLES = {"embedded": 8, "kafka": 4}

tenant_ix = st.integers(0, TENANTS - 1)
user = st.sampled_from(USERS)
channel = st.sampled_from(CHANNELS)
COMMAND = st.one_of(
    st.tuples(st.just("post"), tenant_ix, user, channel),
    st.tuples(st.just("post_as_tenant"), tenant_ix, user, channel),
    st.tuples(st.just("edit"), tenant_ix, user, channel),
    st.tuples(st.just("delete"), tenant_ix, user, channel),
    st.tuples(st.just("react"), tenant_ix, user, channel),
    st.tuples(st.just("read"), tenant_ix, user, channel),
    st.tuples(st.just("typing"), tenant_ix, user, st.just("c1")),
    st.tuples(st.just("create_c2"), tenant_ix, user, st.just("c2")),
    st.tuples(st.just("add_to_c2"), tenant_ix, user, user),
    st.tuples(st.just("remove_from_c2"), tenant_ix, user, user),
)


@dataclass
class Side:
    """One tenant in the scenario."""

    tenant_id: str
    api_key: str
    marker: str
    tokens: dict[str, str] = field(default_factory=dict)
    last_message: dict[str, str] = field(default_factory=dict)
    typers: list[str] = field(default_factory=list)  # users whose typing on c1 was announced
    position: int = 0  # of the side's last write: reads wait for it (read models may lag)

    def key(self) -> dict[str, str]:
        return bearer(self.api_key)


async def make_side(http: httpx.AsyncClient, url: str) -> Side:
    marker = f"mk{uuid.uuid4().hex}"
    r = await http.post(f"{url}/v1/tenants", json={"name": marker}, headers=bearer(ADMIN))
    assert r.status_code == 201, r.text
    side = Side(r.json()["tenant_id"], r.json()["api_key"], marker)
    for uid in USERS:
        r = await http.put(f"{url}/v1/users/{uid}", json={"name": f"{uid} {marker}"}, headers=side.key())
        assert r.status_code == 201, r.text
        r = await http.post(f"{url}/v1/users/{uid}/tokens", json={}, headers=side.key())
        assert r.status_code == 201, r.text
        side.tokens[uid] = r.json()["token"]
    c1 = {"channel_id": "c1", "name": f"c1 {marker}", "members": ["u2", "u3"]}
    r = await http.post(f"{url}/v1/channels", json=c1, headers=bearer(side.tokens["u1"]))
    assert r.status_code == 201, r.text
    side.position = r.json()["position"]
    return side


async def settle(http: httpx.AsyncClient, url: str, side: Side) -> None:
    """Until the side's writes are in the read models (and the event index replays read)."""
    for _ in range(12):
        r = await http.get(f"{url}/v1/events", params={"min_position": side.position, "limit": 1}, headers=side.key())
        if r.status_code == 200:
            return
        assert r.status_code == 503, r.text
    raise AssertionError(f"position {side.position} not applied within a minute")


async def apply(http: httpx.AsyncClient, url: str, side: Side, n: int, command: tuple[Any, ...]) -> None:
    kind, _, uid, arg = command
    as_user = bearer(side.tokens[uid])
    base = f"{url}/v1/channels/{arg}"
    text = f"{side.marker} #{n}"
    mid = side.last_message.get(arg, "none")
    if kind == "post":
        r = await http.post(f"{base}/messages", json={"text": text}, headers=as_user)
    elif kind == "post_as_tenant":
        r = await http.post(f"{base}/messages", json={"text": text, "user_id": uid}, headers=side.key())
    elif kind == "edit":
        r = await http.patch(f"{base}/messages/{mid}", json={"text": text}, headers=as_user)
    elif kind == "delete":
        r = await http.delete(f"{base}/messages/{mid}", headers=as_user)
    elif kind == "react":
        r = await http.post(f"{base}/messages/{mid}/reactions", json={"emoji": "👍"}, headers=as_user)
    elif kind == "read":
        r = await http.post(f"{base}/read", json={"seq": 1}, headers=as_user)
    elif kind == "typing":
        r = await http.post(f"{base}/typing", json={}, headers=as_user)
        if r.status_code == 202 and r.json()["sent"]:
            side.typers.append(uid)
    elif kind == "create_c2":
        r = await http.post(f"{url}/v1/channels", json={"channel_id": "c2", "name": f"c2 {side.marker}"},
                            headers=as_user)  # fmt: skip
    elif kind == "add_to_c2":
        r = await http.post(f"{url}/v1/channels/c2/members", json={"user_id": arg}, headers=as_user)
    else:
        r = await http.delete(f"{url}/v1/channels/c2/members/{arg}", headers=as_user)
    assert r.status_code < 500, f"{command}: {r.status_code} {r.text}"
    if r.status_code in (200, 201) and "position" in r.json():
        side.position = max(side.position, r.json()["position"])
    if kind.startswith("post") and r.status_code == 201:
        side.last_message[arg] = r.json()["message_id"]


def leaks(text: str, me: Side, sides: list[Side]) -> list[str]:
    return [s.marker for s in sides if s is not me and (s.marker in text or s.tenant_id in text)]


async def documents(http: httpx.AsyncClient, url: str, side: Side) -> list[str]:
    """Every answer the side can read: its events, channel lists, channels, histories."""
    texts = []
    after: Any = 0
    while after is not None:
        params = {"after_position": after, "limit": 1000, "min_position": side.position}
        r = await http.get(f"{url}/v1/events", params=params, headers=side.key())
        assert r.status_code == 200, r.text
        assert {e["tenant_id"] for e in r.json()["events"]} <= {side.tenant_id}
        texts.append(r.text)
        after = r.json()["next_after_position"]
    for headers in (side.key(), *[bearer(t) for t in side.tokens.values()]):
        wait = {"min_position": side.position}
        r = await http.get(f"{url}/v1/channels", params=wait, headers=headers)
        assert r.status_code == 200, r.text
        texts.append(r.text)
        for cid in CHANNELS:
            for path in (f"/v1/channels/{cid}", f"/v1/channels/{cid}/messages"):
                r = await http.get(url + path, params=wait, headers=headers)
                assert r.status_code in (200, 403, 404), r.text
                texts.append(r.text)
    return texts


async def scenario(url: str, ws_url: str, commands: list[tuple[Any, ...]]) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        sides = [await make_side(http, url) for _ in range(TENANTS)]
        sockets = []
        for side in sides:  # u2 replays c1 from the start, u3 follows it live
            await settle(http, url, side)
            replay = await ws_connect(ws_url, side.tokens["u2"]).__aenter__()
            await replay.send('{"type": "subscribe", "channel_id": "c1", "since_seq": 0}')
            live = await ws_connect(ws_url, side.tokens["u3"]).__aenter__()
            await live.send('{"type": "subscribe", "channel_id": "c1"}')
            subscribed = (await frames_until(live, lambda f: f["type"] == "subscribed"))[-1]
            sockets.append((side, replay, live, subscribed["head_seq"]))
        try:
            for n, command in enumerate(commands):
                await apply(http, url, sides[command[1]], n, command)
            for side in sides:
                for text in await documents(http, url, side):
                    assert not leaks(text, side, sides), f"another tenant's data in {side.tenant_id}'s {text[:300]}"
            for side, replay, live, live_from in sockets:
                r = await http.get(f"{url}/v1/channels/c1", params={"min_position": side.position}, headers=side.key())
                head = r.json()["head_seq"]
                for ws, since in ((replay, 0), (live, live_from)):
                    frames = []
                    if head > since:
                        frames = await frames_until(ws, lambda f, h=head: f["type"] == "event" and f["seq"] >= h)
                    frames += await until_pong(ws)
                    for frame in frames:
                        assert not leaks(str(frame), side, sides), frame
                        if frame["type"] == "event":
                            assert frame["event"]["tenant_id"] == side.tenant_id, frame
                typing = [f["user_id"] for f in frames if f["type"] == "typing"]  # the live socket's (u3)
                expected = [u for u in side.typers if u != "u3"]
                assert len(typing) <= len(expected) and set(typing) <= set(expected), (typing, side.typers)
        finally:
            for _, replay, live, _ in sockets:
                await replay.close()
                await live.close()


def test_random_commands_of_tenants_with_colliding_ids_never_cross_tenants(
    server: Server, request: pytest.FixtureRequest
) -> None:
    backend = request.node.callspec.params["server"]

    @settings(max_examples=EXAMPLES[backend], deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(commands=st.lists(COMMAND, min_size=5, max_size=30))
    def run(commands: list[tuple[Any, ...]]) -> None:
        asyncio.run(scenario(server.url, server.ws_url, commands))

    run()
