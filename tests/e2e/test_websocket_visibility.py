"""What a websocket subscriber is shown of a channel's events: never another client's request
metadata, and, when replaying history, messages as they are now (deleted ones as deleted,
edited ones with their current text), the same as ``GET …/messages`` shows them."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection

from tests.security.common import WAIT, subscribe, until_pong, ws_connect
from tests.support import Server, Tenant, bearer


def room(client: httpx.Client, tenant: Tenant) -> dict[str, str]:
    """alice owns group channel ``room`` with bob; returns both tokens."""
    tokens = {uid: tenant.user(client, uid) for uid in ("alice", "bob")}
    r = client.post(
        f"{tenant.url}/v1/channels",
        json={"channel_id": "room", "name": "room", "members": ["bob"]},
        headers=bearer(tokens["alice"]),
    )
    assert r.status_code == 201, r.text
    return tokens


def written(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code in (200, 201), r.text
    data: dict[str, Any] = r.json()
    return data


async def event_frames(ws: ClientConnection, last_seq: int) -> list[str]:
    """The raw event frames the socket receives up to and including ``last_seq``."""
    frames: list[str] = []
    deadline = asyncio.get_running_loop().time() + 60
    while not frames or json.loads(frames[-1])["seq"] < last_seq:
        raw = await asyncio.wait_for(ws.recv(), max(deadline - asyncio.get_running_loop().time(), 0.01))
        assert isinstance(raw, str)
        frame = json.loads(raw)
        assert frame["type"] == "event", frame
        frames.append(raw)
    return frames


def assert_hidden(frames: list[str], secrets: list[str], where: str) -> None:
    for raw in frames:
        for secret in secrets:
            assert secret not in raw, f"{where}: {secret!r} shown to a subscriber in {raw[:400]}"


# --- request metadata (issue 8, defect 4) --------------------------------------------------
async def test_subscribers_never_see_the_senders_idempotency_keys_or_request_ids(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    tokens = room(client, tenant)
    tag = uuid.uuid4().hex
    keys = [f"alice-key-{i}-{tag}" for i in range(3)]
    request_id = f"alice-request-{tag}"

    def alice(key: str) -> dict[str, str]:
        return {**bearer(tokens["alice"]), "idempotency-key": key, "x-request-id": request_id}

    url = f"{tenant.url}/v1/channels/room/messages"
    async with ws_connect(server.ws_url, tokens["bob"]) as live:
        await subscribe(live, "room")
        mid = written(client.post(url, json={"text": "hello bob"}, headers=alice(keys[0])))["message_id"]
        written(client.patch(f"{url}/{mid}", json={"text": "hello, bob"}, headers=alice(keys[1])))
        head = written(client.post(f"{url}/{mid}/reactions", json={"emoji": "👋"}, headers=alice(keys[2])))["seq"]
        shown_live = await event_frames(live, head)
    async with ws_connect(server.ws_url, tokens["bob"]) as replaying:
        await subscribe(replaying, "room", since=0)
        shown_replayed = await event_frames(replaying, head)
        assert await until_pong(replaying) == []

    assert [json.loads(f)["event"]["type"] for f in shown_live] == ["MessagePosted", "MessageEdited", "ReactionAdded"]
    assert [json.loads(f)["seq"] for f in shown_replayed] == list(range(1, head + 1))
    for where, frames in (("live", shown_live), ("replay", shown_replayed)):
        assert_hidden(frames, [*keys, request_id], where)
        for raw in frames:
            event = json.loads(raw)["event"]
            # the envelope keeps its shape; the request's own metadata is withheld
            assert event["command_id"] is None and event["correlation_id"] is None and event["causation_id"] is None
            assert event["event_id"] and event["occurred_at"]


# --- deleted and edited text (issue 8, defect 8) -------------------------------------------
async def test_replay_shows_deleted_and_edited_messages_as_history_does(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    tokens = room(client, tenant)
    tag = uuid.uuid4().hex
    gone = [f"first-original-{tag}", f"first-edited-{tag}", f"first-attachment-{tag}"]
    superseded = [f"second-original-{tag}", f"second-middle-{tag}"]
    current = f"second-current-{tag}"
    url = f"{tenant.url}/v1/channels/room/messages"
    alice = bearer(tokens["alice"])
    attachment = {"type": "file", "url": f"https://files.example/{gone[2]}", "name": gone[2]}
    first = written(client.post(url, json={"text": gone[0], "attachments": [attachment]}, headers=alice))
    written(client.patch(f"{url}/{first['message_id']}", json={"text": gone[1]}, headers=alice))
    second = written(client.post(url, json={"text": superseded[0]}, headers=alice))
    written(client.patch(f"{url}/{second['message_id']}", json={"text": superseded[1]}, headers=alice))
    written(client.patch(f"{url}/{second['message_id']}", json={"text": current}, headers=alice))
    async with ws_connect(server.ws_url, tokens["bob"]) as live:
        await subscribe(live, "room")
        deleted = written(client.delete(f"{url}/{first['message_id']}", headers=alice))
        head = deleted["seq"]
        shown_live = await event_frames(live, head)
    assert_hidden(shown_live, gone, "the live MessageDeleted frame")

    async with ws_connect(server.ws_url, tokens["bob"]) as ws:
        await subscribe(ws, "room", since=0)
        replayed = await event_frames(ws, head)
        assert await until_pong(ws) == []
        # a resume from the middle of the history is redacted the same way
        await subscribe(ws, "room", since=first["seq"])
        resumed = await event_frames(ws, head)
        assert await until_pong(ws) == []

    # every seq exactly once, as recorded: only payloads are what a subscriber is shown
    assert [json.loads(f)["seq"] for f in replayed] == list(range(1, head + 1))
    assert [json.loads(f)["seq"] for f in resumed] == list(range(first["seq"] + 1, head + 1))
    for where, frames in (("replay", replayed), ("resume", resumed)):
        assert_hidden(frames, [*gone, *superseded], where)
    events = {json.loads(f)["seq"]: json.loads(f)["event"] for f in replayed}
    posted_first, posted_second = events[first["seq"]]["payload"], events[second["seq"]]["payload"]
    assert posted_first["message_id"] == first["message_id"]
    assert posted_first["text"] == "" and posted_first["attachments"] == []
    assert posted_first["redacted"] == "deleted"
    assert posted_second["text"] == current and posted_second["redacted"] == "edited"
    assert events[head]["type"] == "MessageDeleted" and events[head]["payload"]["message_id"] == first["message_id"]
    edits = [e["payload"] for e in events.values() if e["type"] == "MessageEdited"]
    assert [e["text"] for e in edits] == ["", current, current]

    # the same as history shows
    r = client.get(url, params={"min_position": deleted["position"]}, headers=bearer(tokens["bob"]), timeout=WAIT)
    history = {m["message_id"]: m for m in written(r)["messages"]}
    assert history[first["message_id"]]["deleted"] is True
    assert history[second["message_id"]]["text"] == current


async def test_replay_shows_the_current_text_of_a_message_edited_pages_later(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    """The latest edit is read from the log when it lies beyond the page being replayed."""
    tokens = room(client, tenant)
    tag = uuid.uuid4().hex
    url = f"{tenant.url}/v1/channels/room/messages"
    alice = bearer(tokens["alice"])
    first = written(client.post(url, json={"text": f"original-{tag}"}, headers=alice))
    async with httpx.AsyncClient(timeout=30) as ac:
        for batch in range(0, 520, 40):  # more than one history page (api.ws.HISTORY_PAGE) between post and edit
            replies = await asyncio.gather(
                *[ac.post(url, json={"text": f"filler {i}"}, headers=alice) for i in range(batch, batch + 40)]
            )
            assert all(r.status_code == 201 for r in replies), [r.text for r in replies if r.status_code != 201]
    head = written(client.patch(f"{url}/{first['message_id']}", json={"text": f"current-{tag}"}, headers=alice))["seq"]
    async with ws_connect(server.ws_url, tokens["bob"]) as ws:
        await subscribe(ws, "room", since=0)
        replayed = await event_frames(ws, head)
    assert [json.loads(f)["seq"] for f in replayed] == list(range(1, head + 1))
    assert_hidden(replayed, [f"original-{tag}"], "replay")
    posted = json.loads(replayed[first["seq"] - 1])["event"]["payload"]
    assert posted["text"] == f"current-{tag}" and posted["redacted"] == "edited"
