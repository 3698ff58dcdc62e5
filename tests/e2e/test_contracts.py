"""The contract documents against the real server and the real tools that consume them.

``/asyncapi.json`` is parsed by ``@asyncapi/parser`` and ``/openapi.json`` validated by Redocly
and turned into types by ``openapi-typescript`` (``tools/contracts``, installed from its
lockfile by ``make``); every kind of frame a live server sends is validated against the frame
models the AsyncAPI document is generated from, and every client frame of the document is
sent to the server.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from streams import frames as f
from tests.e2e.test_websocket import WAIT, recv, send, until_pong, ws_connect
from tests.support import Server, Tenant, bearer, new_tenant

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools" / "contracts"
SERVER_MODELS = {f.frame_type(model): model for model in f.SERVER_FRAMES}


@pytest.fixture(scope="session")
def validator() -> Path:
    """The Node validator, its dependencies installed from the lockfile (``make contracts``)."""
    subprocess.run(["make", "-s", "contracts"], cwd=ROOT, check=True, timeout=600)
    return TOOLS / "validate.mjs"


def node_validate(validator: Path, kind: str, document: dict[str, Any], tmp_path: Path) -> str:
    path = tmp_path / f"{kind}.json"
    path.write_text(json.dumps(document))
    done = subprocess.run(
        ["node", str(validator), kind, str(path)], cwd=TOOLS, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def checked(frame: dict[str, Any]) -> dict[str, Any]:
    """``frame``, once validated (strictly, no unknown field) by the model of its type."""
    SERVER_MODELS[frame["type"]].model_validate(frame, strict=True)
    return frame


async def frames_until_pong(ws: ClientConnection) -> list[dict[str, Any]]:
    return [checked(frame) for frame in await until_pong(ws)]


# --- AsyncAPI ----------------------------------------------------------------------------------
def test_asyncapi_document_passes_the_asyncapi_parser(
    server: Server, client: httpx.Client, validator: Path, tmp_path: Path
) -> None:
    r = client.get(f"{server.url}/asyncapi.json")
    assert r.status_code == 200
    document = r.json()
    assert document["asyncapi"].startswith("3.")
    assert document["channels"]["ws"]["address"] == "/v1/ws"
    assert set(document["channels"]["ws"]["x-close-codes"]) >= {"1008", "1009", "1013"}
    assert "since_seq" in document["info"]["description"]
    out = node_validate(validator, "asyncapi", document, tmp_path)
    assert '"ok":true' in out
    # one message per frame model, each frame type of each direction described
    titles = {m["title"] for m in document["components"]["messages"].values()}
    assert titles == {
        f"{f.frame_type(m)} ({'client' if m in f.CLIENT_FRAMES else 'server'})"
        for m in (*f.CLIENT_FRAMES, *f.SERVER_FRAMES)
    }


def test_asyncapi_document_is_generated_from_the_frame_models(server: Server, client: httpx.Client) -> None:
    document = client.get(f"{server.url}/asyncapi.json").json()
    schemas = document["components"]["schemas"]
    for model in (*f.CLIENT_FRAMES, *f.SERVER_FRAMES):
        expected = model.model_json_schema(ref_template="#/components/schemas/{model}")
        expected.pop("$defs", None)
        assert schemas[model.__name__] == expected


async def test_every_server_frame_kind_matches_its_model(server: Server, client: httpx.Client) -> None:
    tenant = new_tenant(client, server.url)
    alice, bob = tenant.user(client, "alice"), tenant.user(client, "bob")
    r = client.post(
        f"{server.url}/v1/channels",
        json={"channel_id": "c1", "members": ["alice", "bob"]},
        headers=tenant.headers(),
    )
    assert r.status_code == 201, r.text
    r = client.post(f"{server.url}/v1/channels/c1/messages", json={"text": "hello"}, headers=bearer(alice))
    assert r.status_code == 201, r.text
    head = r.json()["seq"]
    seen: set[str] = set()
    async with ws_connect(server.ws_url, bob) as b, ws_connect(server.ws_url, alice) as a:
        await send(b, {"type": "subscribe", "channel_id": "c1", "since_seq": 0})
        got = [checked(await recv(b))]
        while got[-1].get("seq") != head:
            got.append(checked(await recv(b)))
        assert got[0]["type"] == "subscribed" and got[-1]["event"]["type"] == "MessagePosted"
        seen |= {frame["type"] for frame in got}

        r = client.post(f"{server.url}/v1/channels/c1/messages", json={"text": "live"}, headers=bearer(alice))
        assert r.status_code == 201, r.text
        live = checked(await recv(b))
        assert live["type"] == "event" and live["seq"] == head + 1

        await send(a, {"type": "subscribe", "channel_id": "c1"})
        assert checked(await recv(a))["type"] == "subscribed"
        await send(b, {"type": "typing", "channel_id": "c1"})
        typing = checked(await recv(a))
        assert typing == {**typing, "type": "typing", "channel_id": "c1", "user_id": "bob"}

        await send(b, {"type": "subscribe_presence", "user_ids": ["alice"]})
        presence = checked(await recv(b))
        assert presence["type"] == "presence" and presence["user_id"] == "alice"

        await send(b, {"type": "subscribe", "channel_id": "nope"})
        await send(b, {"type": "launch"})
        await send(b, {"type": "unsubscribe", "channel_id": "c1"})
        frames = await frames_until_pong(b)
        assert [(x["type"], x.get("code")) for x in frames] == [
            ("error", "not_found"),
            ("error", "invalid_request"),
            ("unsubscribed", None),
        ]
        seen |= {"typing", "presence", "error", "unsubscribed", "pong"}
    assert seen == set(SERVER_MODELS)


async def test_every_client_frame_of_the_document_is_served(server: Server, client: httpx.Client) -> None:
    """The examples the document gives for the client's frames are accepted as documented."""
    document = client.get(f"{server.url}/asyncapi.json").json()
    tenant = new_tenant(client, server.url)
    token = tenant.user(client, "u1")
    tenant.user(client, "u2")
    r = client.post(f"{server.url}/v1/channels", json={"channel_id": "c1", "members": ["u1"]}, headers=tenant.headers())
    assert r.status_code == 201, r.text
    messages = document["components"]["messages"]
    sent = []
    async with ws_connect(server.ws_url, token) as ws:
        for name in document["channels"]["ws"]["messages"]:
            message = messages[name]
            if not message["title"].endswith("(client)"):
                continue
            for example in message["examples"]:
                await send(ws, example["payload"])
                sent.append(example["payload"]["type"])
        answers = await frames_until_pong(ws)
    assert sorted(set(sent)) == sorted(f.frame_type(m) for m in f.CLIENT_FRAMES)
    assert not [frame for frame in answers if frame["type"] == "error"], answers
    assert {frame["type"] for frame in answers} >= {"subscribed", "unsubscribed", "presence"}


async def test_closing_error_frames_match_the_model(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    async with ws_connect(server.ws_url, "not-a-token") as ws:
        assert checked(await recv(ws))["code"] == "unauthenticated"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == f.POLICY_VIOLATION
    token = tenant.user(client, "carol")
    async with ws_connect(server.ws_url, token, max_size=None) as ws:
        await ws.send(json.dumps({"type": "ping", "pad": "x" * 20_000}))
        assert checked(await recv(ws))["code"] == "payload_too_large"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == f.TOO_BIG


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with low rate limits, to see 429s, rate-limited frames and the rate headers."""
    root = Path(tmp_path_factory.mktemp("caas-limited"))
    srv = Server(
        root / "data",
        env={
            "CAAS_WS_FRAMES_PER_SECOND": "0.5",
            "CAAS_WS_FRAMES_BURST": "2",
            "CAAS_RATE_USER_WRITES_PER_SECOND": "0.5",
            "CAAS_RATE_USER_WRITES_BURST": "2",
        },
    ).start()
    yield srv
    srv.stop()


async def test_rate_limited_frame_matches_the_model(limited: Server, client: httpx.Client) -> None:
    tenant = new_tenant(client, limited.url)
    token = tenant.user(client, "dave")
    async with ws_connect(limited.ws_url, token) as ws:
        for _ in range(3):
            await send(ws, {"type": "ping"})
        got = [checked(await recv(ws)) for _ in range(3)]
    refused = [frame for frame in got if frame["type"] == "error"]
    assert refused and refused[0]["code"] == "rate_limited" and refused[0]["retry_after"] > 0
