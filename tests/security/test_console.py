"""The tenant portal's server side (docs/console.md), on both backends: an API key exchanged for
an HttpOnly, SameSite=Strict session cookie; CSRF and origin checks on unsafe methods; the session
acting as its key on ``/console/api/v1/…`` and nowhere else; sign out (and a revoked key) ending it
on every node; the live tail over the websocket, inside the tenant."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.security.common import WAIT
from tests.support import ADMIN, Server, Tenant, bearer, new_tenant

CSRF = "x-caas-csrf"


def signed_in(server: Server, key: str) -> tuple[httpx.Client, dict[str, Any], httpx.Response]:
    """A browser-like client (its own cookie jar) signed in with ``key``, its session, the answer."""
    client = httpx.Client(base_url=server.url, timeout=30)
    r = client.post("/console/api/session", json={"api_key": key})
    assert r.status_code == 201, r.text
    return client, r.json(), r


def tail_of(server: Server, key: str) -> tuple[httpx.Client, dict[str, Any], str, dict[str, str]]:
    """A browser signed in with ``key``, its session, the live tail's URL, the headers it sends."""
    browser, session, _ = signed_in(server, key)
    url = server.url.replace("http://", "ws://") + f"/console/api/tail?csrf={session['csrf_token']}"
    return browser, session, url, {"cookie": f"caas_console={browser.cookies['caas_console']}", "origin": server.url}


def error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, f"{r.status_code} {r.text}"
    detail: dict[str, Any] = r.json()["error"]
    return detail


def test_sign_in_sets_an_httponly_strict_cookie_and_answers_the_csrf_token(server: Server, tenant: Tenant) -> None:
    browser, session, answer = signed_in(server, tenant.api_key)
    with contextlib.closing(browser):
        cookie = answer.headers["set-cookie"]
        parts = [p.strip().lower() for p in cookie.split(";")]
        assert parts[0].startswith("caas_console=caas_cs_")
        assert {"httponly", "samesite=strict", "path=/console"} <= set(parts), cookie
        assert "secure" not in parts, "plain http: a Secure cookie would never come back"
        assert tenant.api_key not in cookie, "the cookie is a session, not the key"
        assert session["tenant_id"] == tenant.tenant_id and session["tenant_name"] == "acme"
        assert len(session["csrf_token"]) == 64
        again = browser.get("/console/api/session")
        assert again.status_code == 200 and again.json()["csrf_token"] == session["csrf_token"]
        # the API key stays where it was: the session names its id, never its secret
        secret = tenant.api_key.split("_", 4)[4]  # caas_sk_<tenant>_<key id>_<secret> (the secret may hold "_")
        assert secret not in again.text


def test_sign_in_refuses_what_is_not_a_live_tenant_key(server: Server, tenant: Tenant, client: httpx.Client) -> None:
    url = f"{server.url}/console/api/session"
    assert error(client.post(url, json={"api_key": ADMIN}), 403)["details"]["rule"] == "wrong_credential"
    assert error(client.post(url, json={"api_key": tenant.api_key + "x"}), 401)["code"] == "unauthenticated"
    assert error(client.post(url, json={"api_key": ""}), 422)["code"] == "invalid_request"
    assert error(client.post(url, content=b"{not json"), 422)["code"] == "invalid_request"
    assert error(client.post(url, json={"api_key": tenant.api_key, "x": 1}), 422)["code"] == "invalid_request"
    assert error(client.get(url), 401)["code"] == "unauthenticated"
    cross = client.post(url, json={"api_key": tenant.api_key}, headers={"origin": "https://evil.example"})
    assert error(cross, 403)["details"]["rule"] == "cross_origin"


def test_the_session_acts_as_its_key_on_the_console_api_only(server: Server, tenant: Tenant) -> None:
    browser, session, _ = signed_in(server, tenant.api_key)
    with contextlib.closing(browser):
        keys = browser.get("/console/api/v1/api-keys")
        assert keys.status_code == 200, keys.text
        assert [k["key_id"] for k in keys.json()["api_keys"]] == [session["key_id"]]
        # the cookie authenticates nothing on /v1 (Path=/console; and sent anyway, it is ignored)
        cookie = {"cookie": f"caas_console={browser.cookies['caas_console']}"}
        assert error(httpx.get(f"{server.url}/v1/api-keys", headers=cookie), 401)["code"] == "unauthenticated"
        # only the routes a tenant API key may call are there
        admin_route = browser.post("/console/api/v1/tenants", json={"name": "x"}, headers={CSRF: session["csrf_token"]})
        assert error(admin_route, 404)["code"] == "not_found"
        # no mixing of credentials: the console's API takes the cookie alone
        both = browser.get("/console/api/v1/api-keys", headers=bearer(tenant.api_key))
        assert error(both, 422)["code"] == "invalid_request"
        # writes are the tenant's, recorded as done by the key the session signed in with
        r = browser.put("/console/api/v1/users/zoe", json={"name": "Zoe"}, headers={CSRF: session["csrf_token"]})
        assert r.status_code == 201, r.text
        events = httpx.get(
            f"{server.url}/v1/events", params={"types": "UserRegistered"}, headers=tenant.headers(), timeout=30
        ).json()["events"]
        assert [e["actor"] for e in events] == [f"tenant:{session['key_id']}"]
    assert error(httpx.get(f"{server.url}/console/api/v1/api-keys"), 401)["code"] == "unauthenticated"


def test_head_on_the_console_api_answers_as_get_does_without_a_body(server: Server, tenant: Tenant) -> None:
    browser, _, _ = signed_in(server, tenant.api_key)
    with contextlib.closing(browser):
        for path in ("/console/api/v1/api-keys", "/console/api/session"):
            got, head = browser.get(path), browser.head(path)
            assert (head.status_code, got.status_code) == (200, 200), (path, head.status_code)
            assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"]
        # HEAD is GET's: a route without GET still answers 404, and without a session 401
        assert browser.head("/console/api/v1/tenants").status_code == 404
    assert httpx.head(f"{server.url}/console/api/v1/api-keys").status_code == 401


def test_unsafe_methods_need_the_csrf_token_and_the_own_origin(server: Server, tenant: Tenant) -> None:
    browser, session, _ = signed_in(server, tenant.api_key)
    token = session["csrf_token"]
    with contextlib.closing(browser):
        missing = browser.post("/console/api/v1/api-keys", json={"name": "ci"})
        assert error(missing, 403)["details"]["rule"] == "csrf"
        wrong = browser.post("/console/api/v1/api-keys", json={"name": "ci"}, headers={CSRF: "0" * 64})
        assert error(wrong, 403)["details"]["rule"] == "csrf"
        evil = {CSRF: token, "origin": "https://evil.example"}
        assert error(browser.post("/console/api/v1/api-keys", json={}, headers=evil), 403)["details"]["rule"] == (
            "cross_origin"
        )
        cross_site = {CSRF: token, "sec-fetch-site": "cross-site"}
        cross = browser.post("/console/api/v1/api-keys", json={}, headers=cross_site)
        assert error(cross, 403)["details"]["rule"] == "cross_origin"
        keys = httpx.get(f"{server.url}/v1/api-keys", headers=tenant.headers(), timeout=30).json()["api_keys"]
        assert len(keys) == 1, "no refused request issued a key"
        own = {CSRF: token, "origin": server.url}
        issued = browser.post("/console/api/v1/api-keys", json={"name": "ci"}, headers=own)
        assert issued.status_code == 201 and issued.json()["api_key"].startswith("caas_sk_"), issued.text
        # the new key works, and revoking it from the console makes it fail (401)
        new_key = bearer(issued.json()["api_key"])
        assert httpx.get(f"{server.url}/v1/api-keys", headers=new_key, timeout=30).status_code == 200
        revoked = browser.delete(f"/console/api/v1/api-keys/{issued.json()['key_id']}", headers=own)
        assert revoked.status_code == 200, revoked.text
        assert error(httpx.get(f"{server.url}/v1/api-keys", headers=new_key, timeout=30), 401)["code"] == (
            "unauthenticated"
        )


def test_sign_out_ends_the_session_for_good(server: Server, tenant: Tenant) -> None:
    browser, session, _ = signed_in(server, tenant.api_key)
    stolen = browser.cookies["caas_console"]
    with contextlib.closing(browser):
        assert error(browser.delete("/console/api/session"), 403)["details"]["rule"] == "csrf"
        out = browser.delete("/console/api/session", headers={CSRF: session["csrf_token"]})
        assert out.status_code == 200 and out.json() == {"signed_out": True}, out.text
        assert "max-age=0" in out.headers["set-cookie"].lower()
    # a copy of the cookie kept from before is refused: the session is closed in the tenant's log
    replay = {"cookie": f"caas_console={stolen}"}
    for path in ("/console/api/session", "/console/api/v1/api-keys"):
        r = httpx.get(f"{server.url}{path}", headers=replay, timeout=30)
        assert error(r, 401)["code"] == "unauthenticated", path
    again = httpx.delete(f"{server.url}/console/api/session", headers={**replay, CSRF: session["csrf_token"]})
    assert error(again, 401)["code"] == "unauthenticated"
    events = httpx.get(f"{server.url}/v1/events", headers=tenant.headers(), timeout=30).json()["events"]
    types = [e["type"] for e in events]
    assert "ConsoleSessionOpened" in types and "ConsoleSessionClosed" in types
    assert stolen.split("_", 4)[4] not in json.dumps(events), "the log holds only the secret's hash"


def test_revoking_the_sessions_key_ends_the_session(server: Server, tenant: Tenant) -> None:
    other = httpx.post(f"{server.url}/v1/api-keys", json={"name": "portal"}, headers=tenant.headers(), timeout=30)
    assert other.status_code == 201, other.text
    browser, _, _ = signed_in(server, other.json()["api_key"])
    with contextlib.closing(browser):
        assert browser.get("/console/api/v1/api-keys").status_code == 200
        r = httpx.delete(f"{server.url}/v1/api-keys/{other.json()['key_id']}", headers=tenant.headers(), timeout=30)
        assert r.status_code == 200, r.text
        assert error(browser.get("/console/api/v1/api-keys"), 401)["code"] == "unauthenticated"


def test_a_session_sees_only_its_own_tenant(server: Server, tenant: Tenant, client: httpx.Client) -> None:
    other = new_tenant(client, server.url, name="other")
    other.user(client, "secret-user")
    r = client.post(
        f"{server.url}/v1/channels",
        json={"channel_id": "b-only", "name": "B only", "members": ["secret-user"]},
        headers=other.headers(),
    )
    assert r.status_code == 201, r.text
    browser, _, _ = signed_in(server, tenant.api_key)
    with contextlib.closing(browser):
        users = browser.get("/console/api/v1/users", params={"min_position": r.json()["position"]})
        assert users.status_code == 200 and users.json()["users"] == [], users.text
        assert error(browser.get("/console/api/v1/channels/b-only/members"), 404)["code"] == "not_found"
        assert error(browser.get("/console/api/v1/channels/b-only"), 404)["code"] == "not_found"
        assert "secret-user" not in browser.get("/console/api/v1/channels").text
        keys = browser.get("/console/api/v1/api-keys").json()["api_keys"]
        assert other.api_key.split("_")[3] not in {k["key_id"] for k in keys}


async def tail_frames(ws: Any, want: int) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while len(frames) < want:
        frames.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT)))
    return frames


async def test_the_live_tail_streams_the_tenants_events_and_nothing_else(
    server: Server, tenant: Tenant, client: httpx.Client
) -> None:
    other = new_tenant(client, server.url, name="other")
    browser, session, url, headers = tail_of(server, tenant.api_key)
    with contextlib.closing(browser):
        async with connect(url, additional_headers=headers, proxy=None, open_timeout=WAIT) as ws:
            assert (await tail_frames(ws, 1)) == [{"type": "ready"}]
            other.user(client, "not-mine")  # another tenant's event: never on this tail
            r = client.put(f"{server.url}/v1/users/mine", json={"name": "Mine"}, headers=tenant.headers())
            assert r.status_code == 201, r.text
            seen: list[dict[str, Any]] = []
            while not any(f["event"]["type"] == "UserRegistered" for f in seen):
                seen += await tail_frames(ws, 1)
            assert {f["event"]["tenant_id"] for f in seen} == {tenant.tenant_id}
            registered = next(f["event"] for f in seen if f["event"]["type"] == "UserRegistered")
            assert registered["stream"] == "user:mine" and registered["position"] == r.json()["position"]
            # signing out closes the tail (checked at the next event or recheck)
            out = browser.delete("/console/api/session", headers={CSRF: session["csrf_token"]})
            assert out.status_code == 200
            client.put(f"{server.url}/v1/users/after", json={"name": "After"}, headers=tenant.headers())
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), WAIT)
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 1008, closed


async def test_the_live_tail_refuses_other_origins_and_missing_tokens(server: Server, tenant: Tenant) -> None:
    browser, session, _ = signed_in(server, tenant.api_key)
    base = server.url.replace("http://", "ws://") + "/console/api/tail"
    cookie = f"caas_console={browser.cookies['caas_console']}"
    cases = [
        (f"{base}?csrf={session['csrf_token']}", {"cookie": cookie, "origin": "https://evil.example"}),
        (base, {"cookie": cookie, "origin": server.url}),
        (f"{base}?csrf={session['csrf_token']}", {"origin": server.url}),
    ]
    with contextlib.closing(browser):
        for url, headers in cases:
            async with connect(url, additional_headers=headers, proxy=None, open_timeout=WAIT) as ws:
                try:
                    await asyncio.wait_for(ws.recv(), WAIT)
                    raise AssertionError(f"the tail answered {headers}")
                except ConnectionClosed as closed:
                    assert closed.rcvd is not None and closed.rcvd.code == 1008, (headers, closed)


async def test_the_live_tail_closes_after_sign_out_while_events_keep_flowing(
    server: Server, tenant: Tenant, client: httpx.Client
) -> None:
    """A busy tenant's tail must not outlive its session: steady traffic never lets it go idle."""
    browser, session, url, headers = tail_of(server, tenant.api_key)
    stop = asyncio.Event()

    def write(n: int) -> None:
        r = client.put(f"{server.url}/v1/users/busy{n}", json={"name": "Busy"}, headers=tenant.headers())
        assert r.status_code == 201, r.text

    async def traffic() -> None:
        n = 0
        while not stop.is_set():
            await asyncio.to_thread(write, n)
            n += 1

    with contextlib.closing(browser):
        async with connect(url, additional_headers=headers, proxy=None, open_timeout=WAIT) as ws:
            assert (await tail_frames(ws, 1)) == [{"type": "ready"}]
            writer = asyncio.ensure_future(traffic())
            try:
                await tail_frames(ws, 1)  # traffic is flowing
                out = browser.delete("/console/api/session", headers={CSRF: session["csrf_token"]})
                assert out.status_code == 200
                deadline = asyncio.get_running_loop().time() + WAIT
                try:
                    while asyncio.get_running_loop().time() < deadline:
                        await asyncio.wait_for(ws.recv(), WAIT)
                    raise AssertionError("the tail kept streaming after sign-out")
                except ConnectionClosed as closed:
                    assert closed.rcvd is not None and closed.rcvd.code == 1008, closed
            finally:
                stop.set()
                await writer


def test_the_tails_csrf_token_never_reaches_the_log() -> None:
    """uvicorn logs a websocket's path with its query: the tail's ``csrf=`` is redacted like ``token=``."""
    import logging

    from api.cli import RedactTokens

    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5000", "/console/api/tail?csrf=abcdef0123&x=1"), None,
    )  # fmt: skip
    RedactTokens().filter(record)
    line = record.getMessage()
    assert "abcdef0123" not in line and "csrf=[redacted]&x=1" in line, line


async def test_the_live_tail_is_judged_as_read_events_by_the_tenants_policies(
    server: Server, tenant: Tenant, client: httpx.Client
) -> None:
    """The tail is a live GET /v1/events: a policy refusing read_events refuses it, and ends an open one."""
    browser, _, url, headers = tail_of(server, tenant.api_key)
    policy = {"actions": ["read_events"], "condition": {"eq": ["principal.kind", "tenant"]}}
    with contextlib.closing(browser):
        async with connect(url, additional_headers=headers, proxy=None, open_timeout=WAIT) as ws:
            assert (await tail_frames(ws, 1)) == [{"type": "ready"}]
            r = client.put(f"{server.url}/v1/policies/no-exports", json=policy, headers=tenant.headers())
            assert r.status_code == 200, r.text
            try:
                while True:  # the policy's own event may come first
                    await asyncio.wait_for(ws.recv(), WAIT)
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 1008, closed
                assert "no-exports" in closed.rcvd.reason
        async with connect(url, additional_headers=headers, proxy=None, open_timeout=WAIT) as ws:
            try:
                await asyncio.wait_for(ws.recv(), WAIT)
                raise AssertionError("the tail answered under a policy refusing read_events")
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 1008 and "no-exports" in closed.rcvd.reason
