"""The demo chat's server side (api/ui.py): the session route that only ``--demo`` turns on, and the
built app's files with their own Content-Security-Policy."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from api.errors import ApiError
from api.ui import DEMO_DIST, UI_CSP, BuiltApp, _answer
from tests.support import ADMIN, Server, bearer

ROOT = Path(__file__).resolve().parents[2]
SESSION = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(Path(tmp_path_factory.mktemp("demo-on")) / "data", env={"CAAS_DEMO": "on"}).start()
    yield server
    server.stop()


def session(server: Server, user: str) -> httpx.Response:
    return httpx.post(f"{server.url}/demo/session", json={"user_id": user}, timeout=30)


def test_a_demo_session_is_a_demo_user_token_and_nothing_more(demo: Server) -> None:
    r = session(demo, "alice")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] == "alice" and [u["user_id"] for u in body["users"]] == ["alice", "bob", "carol"]
    assert "api_key" not in r.text and ADMIN not in r.text and "caas_sk_" not in r.text
    token = body["token"]
    # the token is alice's: she posts in the demo channel, and it reaches bob's view
    r = httpx.post(f"{demo.url}/v1/channels/general/messages", json={"text": "hi"}, headers=bearer(token))
    assert r.status_code == 201, r.text
    bob = session(demo, "bob").json()["token"]
    r = httpx.get(f"{demo.url}/v1/channels/general/messages", headers=bearer(bob))
    assert [m["text"] for m in r.json()["messages"]] == ["hi"]
    # and nothing a tenant key could do: no API keys, no other tenant
    assert httpx.post(f"{demo.url}/v1/api-keys", json={}, headers=bearer(token)).status_code == 403
    # the demo tenant's key stays in the data dir, readable by its owner only
    stored = demo.data_dir / "demo_tenant.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert json.loads(stored.read_text())["api_key"].startswith("caas_sk_")


def test_the_demo_tenant_survives_a_restart(demo: Server) -> None:
    before = session(demo, "carol").json()
    demo.kill()
    demo.start()
    after = session(demo, "carol").json()
    channels = httpx.get(f"{demo.url}/v1/channels", headers=bearer(after["token"])).json()["channels"]
    assert sorted(c["channel_id"] for c in channels) == ["general", "random"]
    assert before["channels"] == after["channels"]


@pytest.mark.parametrize(
    ("body", "headers", "rule"),
    [
        ({"user_id": "mallory"}, SESSION, "not_a_demo_user"),
        ({"user_id": "alice", "role": "admin"}, SESSION, None),
        ({"user_id": 7}, SESSION, None),
    ],
)
def test_a_bad_session_request_is_a_422(demo: Server, body: object, headers: dict[str, str], rule: str | None) -> None:
    r = httpx.post(f"{demo.url}/demo/session", content=json.dumps(body), headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_request"
    if rule:
        assert r.json()["error"]["details"]["rule"] == rule


def test_a_session_request_must_be_json(demo: Server) -> None:
    r = httpx.post(f"{demo.url}/demo/session", data={"user_id": "alice"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text


def test_without_demo_mode_there_is_no_session(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    try:
        r = session(server, "alice")
        assert r.status_code == 404, r.text
        assert "--demo" in r.json()["error"]["message"]
        assert not (tmp_path / "data" / "demo_tenant.json").exists()
    finally:
        server.stop()


def test_the_built_demo_is_served_with_its_own_csp(demo: Server) -> None:
    subprocess.run(["make", "-s", "demo"], cwd=ROOT, check=True, capture_output=True, timeout=900)
    r = httpx.get(f"{demo.url}/demo", follow_redirects=True)
    assert r.status_code == 200 and '<div id="root">' in r.text
    assert r.headers["content-security-policy"] == UI_CSP
    assert r.headers.get_list("content-security-policy") == [UI_CSP]  # not the API's too
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    asset = next((DEMO_DIST / "assets").glob("*.js")).name
    r = httpx.get(f"{demo.url}/demo/assets/{asset}")
    assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
    # the API keeps its own
    assert "default-src 'none'" in httpx.get(f"{demo.url}/healthz").headers["content-security-policy"]
    r = httpx.get(f"{demo.url}/demo/nope.js")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_an_app_not_built_answers_404_saying_how_to_build_it(tmp_path: Path) -> None:
    app = Starlette(routes=[Mount("/demo", BuiltApp(tmp_path / "dist", "demo chat", "run `make demo`"))])

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.get("/demo/")

    r = asyncio.run(get())
    assert r.status_code == 404
    assert r.json()["error"] == {"code": "not_found", "message": "the demo chat is not built here: run `make demo`",
                                 "details": {}}  # fmt: skip


def test_the_demos_setup_failure_never_forwards_an_internal_body() -> None:
    """An unexpected status of an in-process call: the browser gets a fixed message, not the body
    (which may carry the demo tenant's API key)."""
    secret = "caas_sk_t1_k1_" + "s" * 40
    answer = httpx.Response(200, json={"api_key": secret}, request=httpx.Request("POST", "http://in/v1/tenants"))
    with pytest.raises(ApiError) as refused:
        _answer(answer, 201)
    assert secret not in str(refused.value) and "api_key" not in str(refused.value), refused.value
