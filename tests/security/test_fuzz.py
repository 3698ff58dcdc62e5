"""Hostile input. Schemathesis fuzzes every operation of the served ``/openapi.json`` with
valid credentials (valid and invalid data, random and real resource ids): never a 5xx, every
status documented, every JSON body as its schema says. Hypothesis throws random frames at a
websocket: error frames or a 1008/1009 close, never a crash, and a bystander's socket on the
same channel keeps receiving."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from websockets.exceptions import ConnectionClosed

from api.routes import ROUTES
from tests.security.common import WAIT, frames_until, recv, send, subscribe, until_pong, ws_connect
from tests.support import ADMIN, Server, Tenant, bearer, new_tenant

CASES_PER_OPERATION = {"embedded": 60, "kafka": 20}  # x 28 operations: ~2200 cases, each run under 2 minutes
POSITIVE_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
NEGATIVE_CHECKS = [*POSITIVE_CHECKS, negative_data_rejection]
FRAME_LIMIT = 16 * 1024  # CAAS_WS_MAX_FRAME_BYTES
SERVER_FRAMES = {"error", "pong", "subscribed", "unsubscribed", "event", "typing", "presence"}


class Target:
    """A tenant with real resources, so fuzzed requests reach past 'not found'."""

    def __init__(self, client: httpx.Client, url: str) -> None:
        self.client = client
        self.tenant: Tenant = new_tenant(client, url, "fuzz")
        self.alice = self.tenant.user(client, "alice")
        self.tenant.user(client, "bob")
        r = client.post(f"{url}/v1/api-keys", json={"name": "spare"}, headers=self.tenant.headers())
        assert r.status_code == 201, r.text
        spare = r.json()["key_id"]
        r = client.post(
            f"{url}/v1/channels", json={"channel_id": "room", "members": ["bob"]}, headers=bearer(self.alice)
        )
        assert r.status_code == 201, r.text
        r = client.post(f"{url}/v1/channels/room/messages", json={"text": "hi"}, headers=bearer(self.alice))
        assert r.status_code == 201, r.text
        self.known = {"cid": "room", "mid": r.json()["message_id"], "uid": "bob", "user_id": "bob",
                      "key_id": spare, "emoji": "👍"}  # fmt: skip

    def credential(self, kind: str) -> dict[str, str]:
        return {"admin": bearer(ADMIN), "tenant": self.tenant.headers(), "user": bearer(self.alice)}[kind]

    def remint(self) -> None:
        """After a signing-key rotation, a fresh token (two rotations retire the old one)."""
        self.alice = self.tenant.user(self.client, "alice")


def test_every_operation_answers_within_its_schema_and_never_with_a_5xx(
    server: Server, client: httpx.Client, request: pytest.FixtureRequest
) -> None:
    backend = request.node.callspec.params["server"]
    doc = client.get(f"{server.url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    operations = [result.ok() for result in schema.get_all_operations()]
    routes = {api.endpoint.__name__: api for api in ROUTES}
    assert sorted(op.definition.raw["operationId"] for op in operations) == sorted(routes)
    target = Target(client, server.url)
    failures: list[str] = []
    cases = 0
    started = time.monotonic()

    def make_fuzzer(api: Any, kinds: list[str], positive: Any, negative: Any) -> Any:
        @settings(max_examples=CASES_PER_OPERATION[backend], deadline=None, database=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(data=st.data())
        def fuzz(data: st.DataObject) -> None:
            nonlocal cases
            mode = data.draw(st.sampled_from(["positive", "positive", "negative"]))
            case = data.draw(positive if mode == "positive" else negative)
            kind = data.draw(st.sampled_from(kinds))
            cases += 1
            try:
                # The credential goes into the case itself, so schemathesis judges the request as
                # sent (a negative case that only dropped Authorization is no longer negative).
                headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
                case.headers = {**headers, **target.credential(kind)}
                response = case.call(base_url=server.url, timeout=30)
            except Exception as exc:  # the server dropped the connection or never answered
                failures.append(f"{api.method} {api.path} [{mode}, {kind}]: {exc!r}\n{case.as_curl_command()}")
                return
            # 413 refuses a body by its size, which schemathesis does not count as a rejection
            rejecting = mode == "negative" and response.status_code != 413
            try:
                case.validate_response(response, checks=NEGATIVE_CHECKS if rejecting else POSITIVE_CHECKS)
            except BaseExceptionGroup as exc:  # schemathesis' FailureGroup: every failed check
                failures.append(f"{api.method} {api.path} [{mode}, {kind}] -> {response.status_code}: "
                                f"{str(exc)[:600]}\n{case.as_curl_command()}")  # fmt: skip
            if api.path == "/v1/signing-keys" and response.status_code == 201:
                target.remint()

        return fuzz

    for op in operations:
        api = routes[op.definition.raw["operationId"]]
        kinds = list(api.who) or ["tenant"]
        if api.path in ("/healthz", "/readyz"):
            continue
        # min_position beyond the head rightly waits 5 s and answers 503: keep it reachable
        query = {"min_position": 0} if "min_position" in api.query else None
        positive = st.one_of(
            op.as_strategy(GenerationMode.POSITIVE, query=query),
            op.as_strategy(GenerationMode.POSITIVE, query=query, path_parameters={
                k: v for k, v in target.known.items() if "{" + k + "}" in api.path}),
        )  # fmt: skip
        negative = op.as_strategy(GenerationMode.NEGATIVE, query=query)

        make_fuzzer(api, kinds, positive, negative)()
    elapsed = time.monotonic() - started
    print(f"fuzzed {cases} cases over {len(operations)} operations in {elapsed:.1f} s on {backend}")
    assert not failures, f"{len(failures)} of {cases} cases failed:\n\n" + "\n\n".join(failures[:15])
    assert cases >= 10 * len(operations)  # hypothesis may stop short of max_examples; half the budget is the floor


# --- websocket frames ------------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FRAME_TYPES = st.sampled_from(["subscribe", "unsubscribe", "typing", "ping", "subscribe_presence", "Subscribe", ""])
FIELDS = st.fixed_dictionaries(
    {"type": FRAME_TYPES | st.text(max_size=20) | JSON},
    optional={
        "channel_id": st.sampled_from(["room", "nope", "", "../room", "room\x00"]) | JSON,
        "since_seq": st.integers(min_value=-(2**70), max_value=2**70) | JSON,
        "user_ids": st.lists(st.text(max_size=12) | JSON, max_size=120) | JSON,
        "extra": JSON,
    },
)
FRAME = st.one_of(
    FIELDS.map(lambda f: ("text", json.dumps(f))),
    JSON.map(lambda v: ("text", json.dumps(v))),
    st.text(max_size=200).map(lambda t: ("text", t)),  # mostly not JSON at all
    st.binary(max_size=200).map(lambda b: ("bytes", b)),
    st.sampled_from(
        [
            ("text", "x" * 20_000),
            ("text", json.dumps({"type": "ping", "pad": "y" * 20_000})),
            ("bytes", b"\0" * 70_000),
            ("text", "[" * 10_000),
            ("text", '{"type":' * 3000),
        ]
    ),
)


async def test_random_websocket_frames_get_error_frames_or_a_policy_close_and_bystanders_keep_receiving(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    alice, bob = tenant.user(client, "alice"), tenant.user(client, "bob")
    r = client.post(f"{server.url}/v1/channels", json={"channel_id": "room", "members": ["bob"]}, headers=bearer(alice))
    assert r.status_code == 201, r.text
    loop = asyncio.get_running_loop()
    bystander_cm = ws_connect(server.ws_url, bob)
    bystander = await bystander_cm.__aenter__()
    await subscribe(bystander, "room")
    unexpected: list[str] = []
    examples = 0

    async def attack(frames: list[tuple[str, Any]]) -> None:
        async with ws_connect(server.ws_url, alice, max_size=None) as ws:
            oversized = False
            for _kind, payload in frames:
                try:
                    await ws.send(payload)
                except ConnectionClosed:
                    break
                if len(payload) > FRAME_LIMIT:
                    oversized = True  # the server closes now; more sends would race its close
                    break
            try:
                if oversized:
                    replies = []
                    while True:
                        replies.append(await recv(ws))
                replies = await until_pong(ws)
            except ConnectionClosed:
                await ws.wait_closed()
                if ws.close_code not in ((1009,) if oversized else (1008, 1009)):
                    unexpected.append(f"closed {ws.close_code} after {frames!r:.300}")
                return
            for reply in replies:
                if reply.get("type") not in SERVER_FRAMES:
                    unexpected.append(f"unexpected reply {reply!r:.300} to {frames!r:.300}")

    @settings(max_examples=60, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(frames=st.lists(FRAME, min_size=1, max_size=6))
    def run(frames: list[tuple[str, Any]]) -> None:
        nonlocal examples
        examples += 1
        future = asyncio.run_coroutine_threadsafe(attack(frames), loop)
        future.result(WAIT * 2)

    try:
        await asyncio.to_thread(run)
        assert examples == 60 and not unexpected, "\n".join(unexpected[:10])
        # the server is alive and the bystander on the same channel still gets every event
        assert client.get(f"{server.url}/healthz").status_code == 200
        r = client.post(f"{server.url}/v1/channels/room/messages", json={"text": "still here"}, headers=bearer(alice))
        assert r.status_code == 201, r.text
        seq = r.json()["seq"]
        frames = await frames_until(bystander, lambda f: f["type"] == "event" and f["seq"] == seq)
        assert frames[-1]["event"]["payload"]["text"] == "still here"
        assert await until_pong(bystander) is not None
    finally:
        await bystander_cm.__aexit__(None, None, None)


async def test_oversized_and_binary_frames_are_answered_without_disturbing_the_channel(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    alice = tenant.user(client, "alice")
    r = client.post(f"{server.url}/v1/channels", json={"channel_id": "room"}, headers=bearer(alice))
    assert r.status_code == 201, r.text
    async with ws_connect(server.ws_url, alice, max_size=None) as ws:
        await ws.send(b"\x00\x01binary")
        frame = await recv(ws)
        assert frame["type"] == "error" and frame["code"] == "invalid_request", frame
        await send(ws, {"type": "ping", "pad": "x" * 20_000})
        frame = await recv(ws)
        assert frame["type"] == "error" and frame["code"] == "payload_too_large", frame
        await ws.wait_closed()
        assert ws.close_code == 1009
    async with ws_connect(server.ws_url, alice) as ws:
        assert await until_pong(ws) == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "a", "metadata": {"x": 1e999}}',
        b'{"name": "a", "metadata": {"x": [NaN]}}',
        b'{"name": "a", "metadata": {"x": -Infinity}}',
        b'{"name": "a", "metadata": {"x": 99999999999999999999}}',
        b'{"name": "a", "metadata": ' + b'{"x": ' * 40 + b"1" + b"}" * 40 + b"}",
    ],
)
def test_values_no_read_store_can_hold_are_refused_and_projections_keep_going(
    server: Server, client: httpx.Client, tenant: Tenant, body: bytes
) -> None:
    """Found by the fuzzer: an infinite float or a 65-bit integer in a user's metadata stalled
    the MongoDB projection for good (FerretDB refuses the document; pymongo cannot encode it)."""
    headers = {**tenant.headers(), "content-type": "application/json"}
    r = client.put(f"{server.url}/v1/users/alice", content=body, headers=headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text
    r = client.put(f"{server.url}/v1/users/bob", json={"name": "b", "metadata": {"x": 1.5, "y": [2**63 - 1]}},
                   headers=tenant.headers())  # fmt: skip
    assert r.status_code == 201, r.text
    room = {"channel_id": "room", "members": ["bob"]}
    r = client.post(f"{server.url}/v1/channels", json=room, headers=tenant.headers())
    assert r.status_code == 201, r.text
    r = client.get(f"{server.url}/v1/channels/room", params={"min_position": r.json()["position"]},
                   headers=tenant.headers())  # fmt: skip
    assert r.status_code == 200, r.text
