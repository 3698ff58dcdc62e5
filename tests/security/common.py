"""Shared helpers of the security suite: websocket frames, forged tokens, tenants with colliding ids."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from websockets.asyncio.client import ClientConnection, connect

from tests.support import ADMIN, Server, Tenant, bearer, new_tenant

WAIT = 20.0  # generous bound for any single expected frame or condition


# --- websocket -----------------------------------------------------------------------------
def ws_connect(url: str, token: str | None, **kwargs: Any) -> Any:
    target = url if token is None else f"{url}?token={token}"
    return connect(target, proxy=None, open_timeout=WAIT, close_timeout=5, **kwargs)


async def recv(ws: ClientConnection, timeout: float = WAIT) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    frame: dict[str, Any] = json.loads(raw)
    return frame


async def send(ws: ClientConnection, frame: Any) -> None:
    await ws.send(json.dumps(frame))


async def until_pong(ws: ClientConnection) -> list[dict[str, Any]]:
    """Send a ping and return every frame that arrives before its pong (frames are ordered)."""
    await send(ws, {"type": "ping"})
    frames = []
    while (frame := await recv(ws))["type"] != "pong":
        frames.append(frame)
    return frames


async def subscribe(ws: ClientConnection, cid: str, since: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "subscribe", "channel_id": cid}
    if since is not None:
        frame["since_seq"] = since
    await send(ws, frame)
    reply = await recv(ws)
    assert reply["type"] == "subscribed", reply
    return reply


async def frames_until(
    ws: ClientConnection, done: Callable[[dict[str, Any]], bool], timeout: float = WAIT
) -> list[dict[str, Any]]:
    """Every frame up to and including the first for which ``done`` is true."""
    frames: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"no matching frame within {timeout} s; got {frames[-5:]}"
        frame = await recv(ws, left)
        frames.append(frame)
        if done(frame):
            return frames


# --- polling (waiting for a condition, never asserting by sleeping) --------------------------
def eventually(check: Callable[[], Any], timeout: float = WAIT, interval: float = 0.02) -> Any:
    """``check()``'s first truthy result; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        time.sleep(interval)


# --- tokens --------------------------------------------------------------------------------
def server_secret(server: Server) -> str:
    """The secret key a test server derives its tenants' token signing keys from."""
    given = server.env.get("CAAS_SECRET_KEY")
    if given:
        return given
    return (server.data_dir / "secret_key").read_text().strip()


def signing_key(secret: str, tenant_id: str, kid: str) -> bytes:
    """The derivation of ``commands.auth.Authenticator._signing_key``."""
    return hmac.new(secret.encode(), f"caas-jwt/{tenant_id}/{kid}".encode(), hashlib.sha256).digest()


def claims(tenant_id: str, user_id: str, *, now: float | None = None, **overrides: Any) -> dict[str, Any]:
    now = time.time() if now is None else now
    base: dict[str, Any] = {
        "iss": "caas",
        "aud": f"caas:{tenant_id}",
        "sub": user_id,
        "tid": tenant_id,
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + 600,
        "jti": uuid.uuid4().hex,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def forge(secret: str, tenant_id: str, payload: dict[str, Any], kid: str = "v1", key: bytes | None = None) -> str:
    """An HS256 token signed like the server signs them (or with ``key``)."""
    return jwt.encode(payload, key or signing_key(secret, tenant_id, kid), algorithm="HS256", headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A JWT built by hand: any header (``alg`` included), signed HMAC-SHA256 with ``key`` or unsigned."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


# --- two tenants with colliding ids ----------------------------------------------------------
@dataclass
class World:
    """One tenant's side of a collision: the same user and channel ids as the other side."""

    tenant: Tenant
    marker: str  # in every text and name this tenant writes; appears nowhere else
    tokens: dict[str, str] = field(default_factory=dict)
    messages: dict[str, list[str]] = field(default_factory=dict)  # channel -> message ids
    heads: dict[str, int] = field(default_factory=dict)  # channel -> last seq written
    position: int = 0  # of the last write: queries pass it as min_position (read models may lag)

    @property
    def url(self) -> str:
        return self.tenant.url

    def key(self) -> dict[str, str]:
        return self.tenant.headers()

    def user(self, uid: str) -> dict[str, str]:
        return bearer(self.tokens[uid])

    def wrote(self, r: httpx.Response) -> dict[str, Any]:
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        self.position = max(self.position, data["position"])
        return data

    @property
    def secrets(self) -> list[str]:
        """Strings that identify this tenant's data: none may show up in another tenant's answers."""
        return [self.marker, self.tenant.tenant_id, self.tenant.api_key]


COLLIDING_USERS = ("alice", "bob")
COLLIDING_CHANNEL = "shared"


def colliding_world(client: httpx.Client, url: str, label: str, *, only: tuple[str, ...] = ()) -> World:
    """A tenant with users alice and bob and channel ``shared`` (same ids in every world); the
    same message ``hello`` in it; plus a message with this world's marker; plus channels and
    users named in ``only`` that the other worlds do not have."""
    marker = f"{label}-{uuid.uuid4().hex}"
    world = World(new_tenant(client, url, name=f"tenant {marker}"), marker)
    for uid in (*COLLIDING_USERS, *only):
        world.tokens[uid] = world.tenant.user(client, uid, name=f"{uid} of {marker}")
    channels = [COLLIDING_CHANNEL, *[f"{label}-only"] * bool(only)]
    for cid in channels:
        members = ["bob", *only] if cid != COLLIDING_CHANNEL else ["bob"]
        r = client.post(
            f"{url}/v1/channels",
            json={"channel_id": cid, "name": f"{cid} of {marker}", "members": members},
            headers=world.user("alice"),
        )
        world.wrote(r)
        for text in ("hello", f"secret of {marker} in {cid}"):
            r = client.post(f"{url}/v1/channels/{cid}/messages", json={"text": text}, headers=world.user("alice"))
            world.messages.setdefault(cid, []).append(world.wrote(r)["message_id"])
            world.heads[cid] = r.json()["seq"]
        mid = world.messages[cid][-1]
        r = client.post(
            f"{url}/v1/channels/{cid}/messages",
            json={"text": f"reply of {marker}", "parent_id": mid},
            headers=world.user("bob"),
        )
        world.heads[cid] = world.wrote(r)["seq"]
        r = client.post(
            f"{url}/v1/channels/{cid}/messages/{mid}/reactions", json={"emoji": "👍"}, headers=world.user("bob")
        )
        world.heads[cid] = world.wrote(r)["seq"]
    settle(client, world)
    return world


def settle(client: httpx.Client, world: World) -> None:
    """Wait until the read models (and the event index websocket replays read) hold the
    world's writes: a bounded wait on the server's side, retried while it answers 503."""

    def applied() -> bool:
        r = client.get(f"{world.url}/v1/events", params={"min_position": world.position, "limit": 1},
                       headers=world.key())  # fmt: skip
        assert r.status_code in (200, 503), r.text
        return r.status_code == 200

    eventually(applied, timeout=60)


def events_of(client: httpx.Client, world: World) -> list[dict[str, Any]]:
    """Every event of the world's tenant, through ``GET /v1/events``."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        params = {"after_position": after, "limit": 1000, "min_position": world.position}
        r = client.get(f"{world.url}/v1/events", params=params, headers=world.key())
        assert r.status_code == 200, r.text
        page = r.json()
        events += page["events"]
        if page["next_after_position"] is None:
            return events
        after = page["next_after_position"]


def assert_no_leak(text: str, *others: World, where: str = "") -> None:
    for other in others:
        for secret in other.secrets:
            assert secret not in text, f"{where}: another tenant's data ({secret[:24]}…) in {text[:300]}"


def admin() -> dict[str, str]:
    return bearer(ADMIN)
