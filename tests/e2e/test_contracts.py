"""The contract documents against the real server and the real tools that consume them.

``/asyncapi.json`` is parsed by ``@asyncapi/parser`` and ``/openapi.json`` validated by Redocly
and turned into types by ``openapi-typescript`` (``tests/e2e/contracts``, installed from its
lockfile by ``make``); every kind of frame a live server sends is validated against the frame
models the AsyncAPI document is generated from, and every client frame of the document is
sent to the server.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from api import examples, schemas
from api.asyncapi import asyncapi
from api.asyncapi import server as asyncapi_server
from api.errors import ERROR_CODES, STATUS
from api.routes import ROUTES, SCHEME_NAMES
from api.settings import Settings
from streams import frames as f
from tests.e2e.test_websocket import WAIT, recv, send, until_pong, ws_connect
from tests.e2e_keys import Device
from tests.support import ADMIN, Server, Tenant, bearer, new_tenant

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tests" / "e2e" / "contracts"
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


def shape(value: Any) -> Any:
    """``value`` with every leaf replaced by its JSON type: what a frame looks like, not its data."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


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


def test_the_served_asyncapi_document_is_the_generated_one_naming_the_reached_host(
    server: Server, client: httpx.Client
) -> None:
    """The node builds the document once; each answer only names the host the client reached,
    and the websocket scheme of the URL it was fetched with (plain http here: ws)."""
    for host in ("chat.example.com", "127.0.0.1:8443", "[::1]:8000"):
        document = client.get(f"{server.url}/asyncapi.json", headers={"host": host}).json()
        assert document == asyncapi(host)
        assert document["servers"]["caas"]["host"] == host
        assert document["servers"]["caas"]["protocol"] == "ws"
    for bad in ("evil.example:99999", "evil.example:0", "evil.example/x", "a@evil.example", "-evil"):
        document = client.get(f"{server.url}/asyncapi.json", headers={"host": bad}).json()
        assert document["servers"]["caas"]["host"] == "localhost", bad


def test_the_asyncapi_server_is_echoed_only_as_a_whole_valid_host() -> None:
    assert asyncapi_server("evil.com\n") == {"host": "localhost", "protocol": "ws"}  # a regex with $ let it through
    assert asyncapi_server("chat.example.com:65535", "https") == {"host": "chat.example.com:65535", "protocol": "wss"}
    assert asyncapi_server("chat.example.com:65536", "https")["host"] == "localhost"
    assert asyncapi_server("chat.example.com", "gopher")["protocol"] == "ws"


def test_a_public_url_names_the_asyncapi_server_whatever_host_the_client_sends(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", env={"CAAS_PUBLIC_URL": "https://chat.example.com/caas"}).start()
    try:
        document = httpx.get(f"{srv.url}/asyncapi.json", headers={"host": "evil.example:443"}).json()
    finally:
        srv.stop()
    assert document["servers"]["caas"] | {"description": ""} == {
        "host": "chat.example.com", "protocol": "wss", "pathname": "/caas", "description": ""}  # fmt: skip
    for bad in ("ftp://chat.example.com", "https://chat.example.com:99999", "https://u:p@chat.example.com", "chat"):
        with pytest.raises(ValueError, match="CAAS_PUBLIC_URL"):
            Settings.from_env({"CAAS_PUBLIC_URL": bad})


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
    seen: set[str] = set()  # the kinds of frame received and validated, and only those

    def check(frame: dict[str, Any]) -> dict[str, Any]:
        seen.add(checked(frame)["type"])
        return frame

    async def barrier(ws: ClientConnection) -> list[dict[str, Any]]:
        """Every frame before the pong of a ping, then the pong itself, each validated."""
        await send(ws, {"type": "ping"})
        frames = [check(await recv(ws))]
        while frames[-1]["type"] != "pong":
            frames.append(check(await recv(ws)))
        return frames[:-1]

    async with ws_connect(server.ws_url, bob) as b, ws_connect(server.ws_url, alice) as a:
        await send(b, {"type": "subscribe", "channel_id": "c1", "since_seq": 0})
        got = [check(await recv(b))]
        while got[-1].get("seq") != head:
            got.append(check(await recv(b)))
        assert got[0]["type"] == "subscribed" and got[-1]["event"]["type"] == "MessagePosted"

        r = client.post(f"{server.url}/v1/channels/c1/messages", json={"text": "live"}, headers=bearer(alice))
        assert r.status_code == 201, r.text
        live = check(await recv(b))
        assert live["type"] == "event" and live["seq"] == head + 1
        # the document's example is what the server sends: the same fields, of the same types
        assert shape(f.EVENT_EXAMPLE) == shape(live), (f.EVENT_EXAMPLE, live)
        for frame in (f.EVENT_EXAMPLE, live):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", frame["event"]["occurred_at"])

        async with ws_connect(server.ws_url, f"{bob}&frames=compact") as c:
            # the compact socket: the same events, seqs and order, each an ``ev`` frame
            await send(c, {"type": "subscribe", "channel_id": "c1", "since_seq": 0})
            compact = [check(await recv(c))]
            while compact[-1].get("seq") != head + 1:
                compact.append(check(await recv(c)))
            assert [x["type"] for x in compact] == ["subscribed"] + ["ev"] * len(got)
            assert shape(f.COMPACT_EXAMPLE) == shape(compact[-1]), (f.COMPACT_EXAMPLE, compact[-1])
            for full, short in zip([*got[1:], live], compact[1:], strict=True):
                envelope = full["event"]
                version = {"v": envelope["schema_version"]} if envelope["schema_version"] != 1 else {}
                assert short == {
                    "type": "ev",
                    "ch": full["channel_id"],
                    "seq": full["seq"],
                    "ev": envelope["type"],
                    "at": round(datetime.fromisoformat(envelope["occurred_at"]).timestamp() * 1000),
                    "d": {k: v for k, v in envelope["payload"].items() if v not in (None, [], {})},
                    **version,
                }

        await send(a, {"type": "subscribe", "channel_id": "c1"})
        assert check(await recv(a))["type"] == "subscribed"
        await send(b, {"type": "typing", "channel_id": "c1"})
        typing = check(await recv(a))
        assert typing == {**typing, "type": "typing", "channel_id": "c1", "user_id": "bob"}

        await send(b, {"type": "subscribe_presence", "user_ids": ["alice"]})
        presence = check(await recv(b))
        assert presence["type"] == "presence" and presence["user_id"] == "alice"

        await send(b, {"type": "subscribe", "channel_id": "nope"})
        await send(b, {"type": "launch"})
        await send(b, {"type": "unsubscribe", "channel_id": "c1"})
        frames = await barrier(b)
        assert [(x["type"], x.get("code")) for x in frames] == [
            ("error", "not_found"),
            ("error", "invalid_request"),
            ("unsubscribed", None),
        ]

        # device notices (docs/e2e.md): alice's pool runs low, then her identity key changes
        for device in (Device(), Device()):
            r = client.put(f"{server.url}/v1/users/alice/devices/phone", json=device.bundle(prekeys=1),
                           headers=bearer(alice))  # fmt: skip
            assert r.status_code in (200, 201), r.text
        r = client.post(f"{server.url}/v1/users/alice/devices/phone/bundle", headers=bearer(bob))
        assert r.status_code == 200, r.text
        while check(await recv(a))["type"] != "prekeys_low":
            pass
        while check(await recv(b))["type"] != "identity_key_changed":
            pass
        tenant.user(client, "carol")  # erased: every socket subscribed to a channel of the tenant is told
        r = client.delete(f"{server.url}/v1/users/carol", params={"erase": "true"}, headers=tenant.headers())
        assert r.status_code == 200, r.text
        while (frame := check(await recv(a)))["type"] != "user_erased":
            pass  # alice's own identity_key_changed may come first
        assert frame == {"type": "user_erased", "user_id": "carol"}
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


async def test_an_unknown_frames_value_is_refused_with_a_documented_error(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    token = tenant.user(client, "alice")
    async with ws_connect(server.ws_url, f"{token}&frames=tiny") as ws:
        frame = checked(await recv(ws))
        assert frame["type"] == "error" and frame["code"] == "invalid_request" and "compact" in frame["message"]
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == f.POLICY_VIOLATION


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
            "CAAS_WS_FRAMES_PER_SECOND": "0.05",
            "CAAS_WS_FRAMES_BURST": "2",
            "CAAS_RATE_USER_WRITES_PER_SECOND": "0.05",
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


# --- OpenAPI -------------------------------------------------------------------------------------
def test_openapi_document_passes_redocly_and_openapi_typescript(
    server: Server, client: httpx.Client, validator: Path, tmp_path: Path
) -> None:
    document = client.get(f"{server.url}/openapi.json").json()
    out = node_validate(validator, "openapi", document, tmp_path)
    assert '"ok":true' in out


def test_each_operation_declares_exactly_the_credentials_it_takes(server: Server, client: httpx.Client) -> None:
    """The document's ``security`` names the schemes the route accepts; every other credential
    is refused by the live server (403 wrong_credential)."""
    document = client.get(f"{server.url}/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert set(schemes) == set(SCHEME_NAMES.values())
    tenant = new_tenant(client, server.url)
    credentials = {"adminToken": bearer(ADMIN), "tenantApiKey": tenant.headers(),
                   "userToken": bearer(tenant.user(client, "alice"))}  # fmt: skip
    for api in ROUTES:
        op = document["paths"][api.path][api.method.lower()]
        declared = [name for requirement in op.get("security", []) for name in requirement]
        assert declared == [SCHEME_NAMES[kind] for kind in api.who], api.path
        path = api.path.replace("{", "").replace("}", "")  # any id: the credential is judged first
        for scheme in set(schemes) - set(declared) if declared else ():
            r = client.request(api.method, f"{server.url}{path}", headers=credentials[scheme])
            assert r.status_code == 403 and r.json()["error"]["details"]["rule"] == "wrong_credential", (api, r.text)


SOURCES = [*sorted((ROOT / "api").glob("*.py")), ROOT / "domain" / "errors.py"]
PRODUCED = [
    re.compile(r'ApiError\(\s*"([a-z_]+)"'),  # raised or returned by the API layer
    re.compile(r'category(?:: ClassVar\[Category\])? = "([a-z_]+)"'),  # a domain rule's category
    re.compile(r'"code": "([a-z_]+)"'),  # a body written without ApiError (api/limits.py's early 429)
    re.compile(r'RULE_CODES: dict\[str, ErrorCode\] = \{"[a-z0-9_]+": "([a-z0-9_]+)"'),  # a domain rule's own code
]


def test_error_code_enum_is_every_code_the_api_produces(server: Server, client: httpx.Client) -> None:
    document = client.get(f"{server.url}/openapi.json").json()
    enum = document["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"]
    produced = {code for source in SOURCES for rx in PRODUCED for code in rx.findall(source.read_text())}
    assert sorted(enum) == sorted(ERROR_CODES) == sorted(STATUS) == sorted(produced)


def test_examples_are_valid_instances_of_their_schemas() -> None:
    routes = {api.endpoint.__name__: api for api in ROUTES}
    for name, example in examples.REQUESTS.items():
        body = routes[name].body
        assert body is not None, name
        body.model_validate_json(json.dumps(example))
    for name, example in examples.RESPONSES.items():
        returns = routes[name].returns
        assert returns is not None, name
        returns.model_validate(example)
    for error in (examples.ERROR, examples.RATE_LIMITED, examples.UNAVAILABLE):
        schemas.ErrorBody.model_validate(error)


class World:
    """A tenant with users and channels, to send every write twice under one Idempotency-Key."""

    def __init__(self, client: httpx.Client, url: str) -> None:
        self.client, self.url = client, url
        self.tenant = new_tenant(client, url)
        self.alice = self.tenant.user(client, "alice")
        for uid in ("bob", "carol", "dave", "erin", "x1", "x2", "y1", "y2"):
            self.tenant.user(client, uid)
        self.write("POST", "/v1/channels", {"channel_id": "c", "members": ["alice", "bob", "x1", "x2", "y1", "y2"]})
        self.as_alice = bearer(self.alice)

    def write(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        r = self.client.request(method, f"{self.url}{path}", json=body, headers=headers or self.tenant.headers())
        assert r.status_code in (200, 201), (method, path, r.text)
        return r.json()

    def message(self) -> str:
        return str(self.write("POST", "/v1/channels/c/messages", {"text": "m", "user_id": "alice"})["message_id"])

    def key(self) -> str:
        return str(self.write("POST", "/v1/api-keys", {"name": "spare"})["key_id"])

    def webhook(self) -> str:  # an endpoint nothing listens at: only its registration matters here
        return str(self.write("POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/hook"})["webhook_id"])


Case = tuple[str, str, Any, Any, dict[str, str] | None]  # method, path, first body, another body, credential


def cases(w: World) -> dict[str, Case]:
    """For each write: a request, and another request to the same operation (never the same)."""
    m1, m2, m3 = w.message(), w.message(), w.message()
    w.write("POST", f"/v1/channels/c/messages/{m2}/reactions", {"emoji": "👍", "user_id": "alice"})
    w.write("POST", f"/v1/channels/c/messages/{m3}/reactions", {"emoji": "👍", "user_id": "alice"})
    for uid in ("y1", "y2"):
        w.write("POST", "/v1/channels/c/mutes", {"user_id": uid})
    w.write("POST", "/v1/channels/c/bans", {"user_id": "dave"})
    w.write("POST", "/v1/channels/c/bans", {"user_id": "carol"})
    admin = bearer(ADMIN)
    hook, gone1, gone2 = w.webhook(), w.webhook(), w.webhook()
    phone = Device()
    for device_id, device in (("phone", phone), ("old1", Device()), ("old2", Device())):
        w.write("PUT", f"/v1/users/alice/devices/{device_id}", device.bundle(prekeys=5))
    devices = "/v1/users/alice/devices"
    for policy_id in ("gone-a", "gone-b"):  # conditions that never hold: they refuse nothing
        w.write("PUT", f"/v1/policies/{policy_id}", {"actions": ["typing"], "condition": False})
    for held in ("h1", "h2"):  # legal holds to release (docs/retention.md)
        w.write("POST", "/v1/channels", {"channel_id": held, "members": ["alice"]})
        w.write("POST", f"/v1/channels/{held}/legal-hold", {"reason": "case"})
    for uid in ("dave", "erin"):
        w.write("POST", f"/v1/users/{uid}/legal-hold", {"reason": "case"})
    for uid in ("z1", "z2"):
        w.write("PUT", f"/v1/users/{uid}", {"name": uid})
    return {
        "create_tenant": ("POST", "/v1/tenants", {"name": "one"}, {"name": "two"}, admin),
        "create_api_key": ("POST", "/v1/api-keys", {"name": "one"}, {"name": "two"}, None),
        "revoke_api_key": ("DELETE", f"/v1/api-keys/{w.key()}", None, f"/v1/api-keys/{w.key()}", None),
        "rotate_signing_key": ("POST", "/v1/signing-keys", None, {}, None),
        "set_allowed_origins": ("PUT", "/v1/cors", {"origins": ["https://a.example"]},
                                {"origins": ["https://b.example"]}, None),
        "put_user": ("PUT", "/v1/users/newbie", {"name": "One"}, {"name": "Two"}, None),
        "create_token": ("POST", "/v1/users/alice/tokens", {}, {}, None),
        "create_channel": ("POST", "/v1/channels", {"channel_id": "i1", "members": ["alice"]},
                           {"channel_id": "i2", "members": ["alice"]}, None),
        "add_member": ("POST", "/v1/channels/c/members", {"user_id": "erin"}, {"user_id": "erin", "role": "admin"},
                       None),
        "remove_member": ("DELETE", "/v1/channels/c/members/x1", None, "/v1/channels/c/members/x2", None),
        "post_message": ("POST", "/v1/channels/c/messages", {"text": "one", "user_id": "alice"},
                         {"text": "two", "user_id": "alice"}, None),
        "edit_message": ("PATCH", f"/v1/channels/c/messages/{m1}", {"text": "one"}, {"text": "two"}, w.as_alice),
        "delete_message": ("DELETE", f"/v1/channels/c/messages/{m2}", None, f"/v1/channels/c/messages/{m3}",
                           w.as_alice),
        "add_reaction": ("POST", f"/v1/channels/c/messages/{m1}/reactions", {"emoji": "🎉", "user_id": "alice"},
                         {"emoji": "🚀", "user_id": "alice"}, None),
        "remove_reaction": ("DELETE", f"/v1/channels/c/messages/{m2}/reactions/👍?user_id=alice", None,
                            f"/v1/channels/c/messages/{m3}/reactions/👍?user_id=alice", None),
        "move_read_marker": ("POST", "/v1/channels/c/read", {"seq": 1, "user_id": "bob"},
                             {"seq": 2, "user_id": "bob"}, None),
        "typing": ("POST", "/v1/channels/c/typing", {"user_id": "alice"}, {"user_id": "bob"}, None),
        "mute": ("POST", "/v1/channels/c/mutes", {"user_id": "bob"},
                 {"user_id": "bob", "until": "2030-01-01T00:00:00Z"}, None),
        "unmute": ("DELETE", "/v1/channels/c/mutes/y1", None, "/v1/channels/c/mutes/y2", None),
        "ban": ("POST", "/v1/channels/c/bans", {"user_id": "erin"}, {"user_id": "erin", "reason": "spam"}, None),
        "unban": ("DELETE", "/v1/channels/c/bans/dave", None, "/v1/channels/c/bans/carol", None),
        "put_plan": ("PUT", f"/v1/tenants/{w.tenant.tenant_id}/plan", {"plan": "free"}, {"plan": "free"}, admin),
        "create_webhook": ("POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/a"}, {"url": "http://127.0.0.1:9/b"},
                           None),
        "update_webhook": ("PATCH", f"/v1/webhooks/{hook}", {"description": "one"}, {"description": "two"}, None),
        "delete_webhook": ("DELETE", f"/v1/webhooks/{gone1}", None, f"/v1/webhooks/{gone2}", None),
        "replay_webhook": ("POST", f"/v1/webhooks/{hook}/replay", {"from_position": 0}, {"from_position": 1}, None),
        "rotate_secret": ("POST", f"/v1/webhooks/{hook}/rotate-secret", None, {}, None),
        "put_device": ("PUT", f"{devices}/tablet", Device().bundle(prekeys=1), Device().bundle(), w.as_alice),
        "add_prekeys": ("POST", f"{devices}/phone/prekeys", {"one_time_prekeys": phone.prekeys(1)},
                        {"one_time_prekeys": phone.prekeys(1)}, w.as_alice),
        "rotate_signed_prekey": ("PUT", f"{devices}/phone/signed-prekey", phone.signed_prekey(2),
                                 phone.signed_prekey(3), w.as_alice),
        "remove_device": ("DELETE", f"{devices}/old1", None, f"{devices}/old2", w.as_alice),
        "claim_bundle": ("POST", f"{devices}/phone/bundle", None, "/v1/users/alice/bundles", None),
        "claim_bundles": ("POST", "/v1/users/alice/bundles", None, f"{devices}/phone/bundle", None),
        "put_policy": ("PUT", "/v1/policies/p1", {"actions": ["typing"], "condition": False},
                       {"actions": ["typing"], "condition": False, "description": "two"}, None),
        "delete_policy": ("DELETE", "/v1/policies/gone-a", None, "/v1/policies/gone-b", None),
        "put_retention": ("PUT", "/v1/retention", {"days": 30}, {"days": 31}, None),
        "put_channel_retention": ("PUT", "/v1/channels/c/retention", {"days": 7}, {"days": 8}, None),
        "place_channel_hold": ("POST", "/v1/channels/c/legal-hold", {"reason": "one"}, {"reason": "two"}, None),
        "release_channel_hold": ("DELETE", "/v1/channels/h1/legal-hold", None, "/v1/channels/h2/legal-hold", None),
        "place_user_hold": ("POST", "/v1/users/bob/legal-hold", {"reason": "one"}, {"reason": "two"}, None),
        "release_user_hold": ("DELETE", "/v1/users/dave/legal-hold", None, "/v1/users/erin/legal-hold", None),
        "erase_user": ("DELETE", "/v1/users/z1?erase=true", None, "/v1/users/z2?erase=true", None),
    }  # fmt: skip


def test_idempotency_key_is_documented_exactly_where_a_retry_gets_the_first_answer(
    server: Server, client: httpx.Client
) -> None:
    """Every write documenting ``Idempotency-Key`` answers a retry with its first answer (and
    another request under the same key with 409); every other write ignores the key."""
    document = client.get(f"{server.url}/openapi.json").json()
    w = World(client, server.url)
    table = cases(w)
    writes = {api.endpoint.__name__ for api in ROUTES if api.method != "GET" and api.who}
    assert set(table) == writes  # a new write needs its case here (the Stripe webhook has no credential)
    documented = set()
    for api in ROUTES:
        op = document["paths"][api.path][api.method.lower()]
        if any(p["name"] == "Idempotency-Key" for p in op["parameters"]):
            documented.add(api.endpoint.__name__)
    assert documented and documented < writes
    for name in sorted(table, key=lambda n: n == "rotate_signing_key"):  # the rotation last: it retires nothing
        method, path, first, other, credential = table[name]
        headers = {**(credential or w.tenant.headers()), "idempotency-key": f"key-{name}"}

        def call(target: str, body: Any, *, method: str = method, headers: dict[str, str] = headers) -> httpx.Response:
            return client.request(method, f"{server.url}{target}", json=body, headers=headers)

        answer = call(path, first)
        assert answer.status_code in (200, 201, 202), (name, answer.text)
        retry = call(path, first)
        another = call(other, None) if isinstance(other, str) else call(path, other)
        if name in documented:
            assert retry.status_code == 200, (name, retry.text)
            replayed = {k: v for k, v in retry.json().items() if k != "api_key"}  # a secret is shown once
            assert replayed == {k: v for k, v in answer.json().items() if k != "api_key"}, name
            assert another.status_code == 409, (name, another.text)
            assert another.json()["error"]["details"]["rule"] == "idempotency_key_reused"
        else:
            # the key was not recorded: another request under it is served (a removal repeated
            # is a no-op answering with its last event, idempotent by nature, not by the key)
            assert another.status_code in (200, 201, 202), (name, another.text)
            if name == "create_token":
                assert retry.json()["token"] != answer.json()["token"]


def test_every_rate_limited_answer_carries_the_ratelimit_headers(limited: Server, client: httpx.Client) -> None:
    document = client.get(f"{limited.url}/openapi.json").json()
    post = document["paths"]["/v1/channels/{cid}/messages"]["post"]
    assert set(post["responses"]["201"]["headers"]) == {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"}
    assert set(post["responses"]["429"]["headers"]) == {
        "Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"}  # fmt: skip
    tenant = new_tenant(client, limited.url)
    token = tenant.user(client, "alice")
    r = client.post(f"{limited.url}/v1/channels", json={"channel_id": "c", "members": ["alice"]},
                    headers=tenant.headers())  # fmt: skip
    assert r.status_code == 201 and int(r.headers["ratelimit-limit"]) >= 1, r.headers
    url = f"{limited.url}/v1/channels/c/messages"
    answers = [client.post(url, json={"text": "hi"}, headers=bearer(token)) for _ in range(4)]
    assert [a.status_code for a in answers] == [201, 201, 429, 429]
    for answer in answers:  # the user's bucket: 2 at once, then one per 20 s
        assert answer.headers["ratelimit-limit"] == "2"
        assert 0 <= int(answer.headers["ratelimit-reset"]) <= 40
    assert [int(a.headers["ratelimit-remaining"]) for a in answers] == [1, 0, 0, 0]
    assert all(int(a.headers["retry-after"]) >= 1 for a in answers[2:])
    # reads, and an error answered after the credential was judged, carry them too
    r = client.get(f"{limited.url}/v1/channels/nope", headers=tenant.headers())
    assert r.status_code == 404 and int(r.headers["ratelimit-remaining"]) >= 0
    # but a user's reads draw only on the tenant's shared bucket: nothing of it is shown to users
    r = client.get(f"{limited.url}/v1/channels/nope", headers=bearer(token))
    assert r.status_code == 404 and "ratelimit-remaining" not in r.headers, r.headers
    # the admin token draws on no rate limit: no headers to state
    r = client.get(f"{limited.url}/v1/tenants/{tenant.tenant_id}/usage", headers=bearer(ADMIN),
                   params={"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"})  # fmt: skip
    assert r.status_code == 200 and "ratelimit-limit" not in r.headers


def test_protocol_page_covers_every_frame_and_close_code() -> None:
    page = (ROOT / "docs" / "websocket-protocol.md").read_text()
    for model in (*f.CLIENT_FRAMES, *f.SERVER_FRAMES):
        assert f"| `{f.frame_type(model)}` |" in page, model
    guide = (ROOT / "docs" / "websockets.md").read_text()
    for code in f.CLOSE_CODES:  # the guide and the protocol page list the same codes
        assert f"| {code} |" in page, code
        assert f"| {code} |" in guide or f"| **{code}** |" in guide, code
    for code in get_args(f.ErrorCode):
        assert f"`{code}`" in page, code


async def test_a_stopping_server_closes_open_sockets_with_a_documented_code(tmp_path: Path) -> None:
    """``caas serve`` stopped (SIGTERM, a deploy) with a socket open closes it with 1012, and the
    contract tells the client to come back with backoff and resume."""
    srv = Server(tmp_path / "data").start()
    try:
        with httpx.Client(timeout=30) as client:
            token = new_tenant(client, srv.url).user(client, "alice")
        async with ws_connect(srv.ws_url, token) as ws:
            await until_pong(ws)
            stopping = asyncio.create_task(asyncio.to_thread(srv.stop))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), WAIT)
            await stopping
    finally:
        srv.stop()
    assert closed.value.rcvd is not None
    code = closed.value.rcvd.code
    assert code == f.SERVICE_RESTART, code
    why, todo = f.CLOSE_CODES[code]
    assert "shutting down" in why and "backoff" in todo and "since_seq" in todo
