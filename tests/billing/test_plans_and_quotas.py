"""Plans, the invoice preview and quotas through HTTP, on both backends."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from websockets.asyncio.client import connect

from domain.plans import period_of
from tests.billing.conftest import Billed
from tests.support import ADMIN, Tenant, bearer, new_tenant


def put_plan(billed: Billed, tenant_id: str, plan: str, token: str = ADMIN) -> httpx.Response:
    return httpx.put(
        f"{billed.url}/v1/tenants/{tenant_id}/plan", json={"plan": plan}, headers=bearer(token), timeout=10
    )


def room(billed: Billed, client: httpx.Client, name: str = "acme") -> Tenant:
    tenant = new_tenant(client, billed.url, name)
    tenant.user(client, "alice")
    r = client.post(
        f"{billed.url}/v1/channels",
        json={"channel_id": "general", "kind": "group", "members": ["alice"]},
        headers=tenant.headers(),
    )
    assert r.status_code == 201, r.text
    return tenant


def post(
    client: httpx.Client, tenant: Tenant, text: str = "hi", key: str | None = None, user: str = "alice"
) -> httpx.Response:
    headers = tenant.headers() | ({"idempotency-key": key} if key else {})
    return client.post(
        f"{tenant.url}/v1/channels/general/messages", json={"text": text, "user_id": user}, headers=headers
    )


def refused_on(r: httpx.Response, meter: str, limit: int) -> dict[str, Any]:
    assert r.status_code == 402, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == "quota_exceeded" and error["details"]["meter"] == meter, error
    assert error["details"]["limit"] == limit and error["details"]["used"] >= limit
    assert error["details"]["resets_at"] == period_of(datetime.now(UTC)).end.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return error


def crossed(client: httpx.Client, tenant: Tenant, meter: str) -> set[int]:
    """The thresholds of ``meter`` recorded this period, once the 100 % one is (waited for)."""
    deadline = time.monotonic() + 30
    while True:
        found = {e["payload"]["threshold"] for e in events(client, tenant, "QuotaThresholdCrossed")
                 if e["payload"]["meter"] == meter}  # fmt: skip
        if 100 in found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def events(client: httpx.Client, tenant: Tenant, types: str) -> list[dict[str, Any]]:
    r = client.get(f"{tenant.url}/v1/events", params={"types": types, "limit": 1000}, headers=tenant.headers())
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["events"]
    return found


def test_the_admin_puts_a_tenant_on_a_plan_and_the_preview_prices_it(billed: Billed) -> None:
    with httpx.Client(timeout=10) as client:
        tenant = room(billed, client)
        assert client.get(f"{billed.url}/v1/billing/preview", headers=tenant.headers()).json()["plan"] == "free"
        r = put_plan(billed, tenant.tenant_id, "pro")
        assert r.status_code == 200, r.text
        assert r.json()["plan"] == "pro" and r.json()["tenant_id"] == tenant.tenant_id
        assert put_plan(billed, tenant.tenant_id, "pro").status_code == 200  # the same plan again: nothing new
        # the default plan the tenant was on is recorded (from its registration), then the change
        changes = events(client, tenant, "PlanChanged")
        assert [e["payload"]["plan"] for e in changes] == ["free", "pro"]
        assert changes[0]["payload"]["terms"]["meters"]["messages"] == {
            "included": 10_000,
            "mode": "cap",
            "per": 1,
            "tiers": [],
        }
        refused = put_plan(billed, tenant.tenant_id, "pro", token=tenant.api_key)
        assert refused.status_code == 403 and refused.json()["error"]["details"]["rule"] == "wrong_credential"
        unknown = put_plan(billed, tenant.tenant_id, "gold")
        assert unknown.status_code == 404 and unknown.json()["error"]["details"]["rule"] == "plan_not_found"
        assert put_plan(billed, "no-such-tenant", "pro").status_code == 404
        assert put_plan(billed, "bad id!", "pro").status_code == 422
        for _ in range(5):
            assert post(client, tenant).status_code == 201
        deadline = time.monotonic() + 30
        while True:  # the usage read model follows the log
            bill = client.get(f"{billed.url}/v1/billing/preview", headers=tenant.headers()).json()
            lines = [x for x in bill["lines"] if x["meter"] == "messages"]
            if sum(x["used"] for x in lines) >= 5 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert bill["plan"] == "pro" and bill["currency"] == "usd" and bill["plans"] == ["free", "pro"]
        assert bill["period"]["label"] == period_of(datetime.now(UTC)).label
        # a line per plan in force: free until the change, then pro; an hour is priced on the plan
        # in force at its start, so this hour's posts are on whichever plan it began on
        assert [(x["plan"], x["mode"]) for x in lines] == [("free", "cap"), ("pro", "overage")]
        assert sum(x["used"] for x in lines) == 5
        assert lines[0]["to"] == lines[1]["from"] == r.json()["effective_at"]
        assert bill["total"] == bill["base_fee"] + sum(x["amount"] for x in bill["lines"])
        assert all(isinstance(x["amount"], int) for x in bill["lines"])
        assert client.get(f"{billed.url}/v1/billing/preview", headers=bearer(ADMIN)).status_code == 403


def test_a_capped_tenant_gets_402_at_its_cap_and_other_tenants_are_unaffected(billed: Billed) -> None:
    with httpx.Client(timeout=10) as client:
        capped, other = room(billed, client, "capped"), room(billed, client, "other")
        assert put_plan(billed, capped.tenant_id, "tiny").status_code == 200
        admitted, refusal, first = 0, None, None
        for n in range(10):  # every post goes to one node: it stops exactly at the cap, whatever the lag
            r = post(client, capped, key=f"post-{n}")
            if r.status_code == 402:
                refusal = r.json()["error"]
                break
            assert r.status_code == 201, r.text
            first = first or r.json()
            admitted += 1
        assert refusal is not None and admitted == 3, f"{admitted} messages admitted at a cap of 3"
        assert refusal["code"] == "quota_exceeded"
        details = refusal["details"]
        assert details["meter"] == "messages" and details["limit"] == 3 and details["used"] >= 3
        assert details["resets_at"] == period_of(datetime.now(UTC)).end.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        assert post(client, capped).status_code == 402  # and it stays refused
        retried = post(client, capped, key="post-0")  # a retry of an admitted post: its first answer
        assert retried.status_code in (200, 201) and retried.json()["message_id"] == first["message_id"], retried.text
        # a capped messages meter refuses posts, nothing else: edits, reactions, deletes, credentials
        base = f"{billed.url}/v1/channels/general/messages/{first['message_id']}"
        r = client.patch(base, json={"text": "edited"}, headers=capped.headers())
        assert r.status_code == 200, r.text
        r = client.post(f"{base}/reactions", json={"emoji": "👍", "user_id": "alice"}, headers=capped.headers())
        assert r.status_code == 201, r.text
        spare = client.post(f"{billed.url}/v1/api-keys", json={}, headers=capped.headers())
        assert spare.status_code == 201, spare.text
        r = client.delete(f"{billed.url}/v1/api-keys/{spare.json()['key_id']}", headers=capped.headers())
        assert r.status_code == 200, r.text
        assert client.delete(base, headers=capped.headers()).status_code == 200
        for n in range(5):  # another tenant, on the default plan, writes on
            assert post(client, other, f"m{n}").status_code == 201
        # reads and billing keep working for the capped tenant
        assert client.get(f"{billed.url}/v1/channels/general/messages", headers=capped.headers()).status_code == 200
        assert client.get(f"{billed.url}/v1/billing/preview", headers=capped.headers()).status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            crossed = events(client, capped, "QuotaThresholdCrossed")
            if {e["payload"]["threshold"] for e in crossed} >= {80, 100}:
                break
            time.sleep(0.2)
        assert sorted((e["payload"]["meter"], e["payload"]["threshold"]) for e in crossed) == [
            ("messages", 80),
            ("messages", 100),
        ]
        assert post(client, capped).status_code == 402
        assert len(events(client, capped, "QuotaThresholdCrossed")) == 2  # once per period
        assert events(client, other, "QuotaThresholdCrossed") == []


def test_a_tenant_capped_on_stored_bytes_gets_402_at_its_level_and_deleting_makes_room(billed: Billed) -> None:
    with httpx.Client(timeout=10) as client:
        capped, other = room(billed, client, "store"), room(billed, client, "store-other")
        assert put_plan(billed, capped.tenant_id, "small_store").status_code == 200
        admitted, refusal = [], None
        for _ in range(10):  # 10 bytes each, capped at 30: refused once the level is at 30
            r = post(client, capped, "0123456789")
            if r.status_code == 402:
                refusal = r
                break
            assert r.status_code == 201, r.text
            admitted.append(r.json()["message_id"])
        assert refusal is not None, "posts were never refused at the stored-bytes cap"
        refused_on(refusal, "stored_bytes", 30)
        assert 3 <= len(admitted) <= 4  # one node: exact, give or take the usage projection's lag
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until the read model holds every admitted post
            level = client.get(f"{billed.url}/v1/billing/preview", headers=capped.headers()).json()
            lines = {x["meter"]: x for x in level["lines"]}
            if lines.get("stored_bytes", {}).get("used") == 10 * len(admitted):
                break
            time.sleep(0.2)
        line = lines["stored_bytes"]
        assert (line["mode"], line["included"], line["amount"]) == ("cap", 30, 0)  # never charged
        refused_on(post(client, capped, "x"), "stored_bytes", 30)
        base = f"{billed.url}/v1/channels/general/messages/{admitted[0]}"
        refused_on(client.patch(base, json={"text": "0123456789!"}, headers=capped.headers()), "stored_bytes", 30)
        r = client.patch(base, json={"text": "0123"}, headers=capped.headers())  # shrinking is allowed
        assert r.status_code == 200, r.text
        r = client.post(f"{base}/reactions", json={"emoji": "👍", "user_id": "alice"}, headers=capped.headers())
        assert r.status_code == 201, r.text  # a reaction stores nothing
        for message_id in admitted[1:]:  # deletes are never refused, and make room
            r = client.delete(f"{billed.url}/v1/channels/general/messages/{message_id}", headers=capped.headers())
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + 30
        while (r := post(client, capped, "back")).status_code == 402 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert r.status_code == 201, r.text
        for n in range(5):  # another tenant, on the default plan, writes on
            assert post(client, other, f"m{n} " * 10).status_code == 201
        assert crossed(client, capped, "stored_bytes") == {80, 100}
        assert events(client, other, "QuotaThresholdCrossed") == []


def test_a_tenant_capped_on_mau_refuses_a_new_user_and_its_active_users_write_on(billed: Billed) -> None:
    with httpx.Client(timeout=10) as client:
        capped, other = room(billed, client, "mau"), room(billed, client, "mau-other")
        assert put_plan(billed, capped.tenant_id, "two_users").status_code == 200
        for tenant in (capped, other):
            for user in ("bob", "carol"):
                tenant.user(client, user)
                r = client.post(
                    f"{billed.url}/v1/channels/general/members", json={"user_id": user}, headers=tenant.headers()
                )
                assert r.status_code in (200, 201), r.text
        assert post(client, capped, user="alice").status_code == 201
        assert post(client, capped, user="bob").status_code == 201
        error = refused_on(post(client, capped, user="carol"), "mau", 2)  # a third user this month
        assert error["details"]["used"] == 2
        for user in ("alice", "bob", "alice"):  # users already active keep working
            assert post(client, capped, f"again {user}", user=user).status_code == 201
        # carol cannot react or open a socket either; her token's writes are refused the same way
        first = post(client, capped, user="alice").json()["message_id"]
        r = client.post(
            f"{billed.url}/v1/channels/general/messages/{first}/reactions",
            json={"emoji": "👍", "user_id": "carol"},
            headers=capped.headers(),
        )
        refused_on(r, "mau", 2)
        carol = capped.user(client, "carol")
        ws_url = billed.url.replace("http", "ws", 1) + "/v1/ws"

        async def refused_socket() -> dict[str, Any]:
            async with connect(f"{ws_url}?token={carol}", proxy=None, open_timeout=30) as ws:
                frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
                await asyncio.wait_for(ws.wait_closed(), 30)
                assert ws.close_code == 1008
                return frame

        frame = asyncio.run(refused_socket())
        assert frame["code"] == "quota_exceeded" and frame["details"]["meter"] == "mau", frame
        for user in ("alice", "bob", "carol"):  # another tenant has no such cap
            assert post(client, other, user=user).status_code == 201
        assert crossed(client, capped, "mau") == {80, 100}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the preview prices the month's users: still 2
            lines = client.get(f"{billed.url}/v1/billing/preview", headers=capped.headers()).json()["lines"]
            mau = [x for x in lines if x["meter"] == "mau"]
            if mau and mau[0]["used"] == 2:
                break
            time.sleep(0.2)
        assert [(x["used"], x["included"], x["mode"]) for x in mau] == [(2, 2, "cap")]


def test_a_tenant_capped_on_peak_connections_gets_its_second_socket_refused(billed: Billed) -> None:
    with httpx.Client(timeout=10) as client:
        capped = room(billed, client, "sockets")
        assert put_plan(billed, capped.tenant_id, "one_socket").status_code == 200
        token = capped.user(client, "alice")
        ws_url = billed.url.replace("http", "ws", 1) + f"/v1/ws?token={token}"

        async def scenario() -> dict[str, Any]:
            async with connect(ws_url, proxy=None, open_timeout=30) as first:
                await first.send(json.dumps({"type": "ping"}))
                assert json.loads(await asyncio.wait_for(first.recv(), 30))["type"] == "pong"
                async with connect(ws_url, proxy=None, open_timeout=30) as second:
                    frame: dict[str, Any] = json.loads(await asyncio.wait_for(second.recv(), 30))
                    await asyncio.wait_for(second.wait_closed(), 30)
                    assert second.close_code == 1008
                await first.send(json.dumps({"type": "ping"}))  # the open socket is untouched
                assert json.loads(await asyncio.wait_for(first.recv(), 30))["type"] == "pong"
            deadline = time.monotonic() + 30
            while True:  # the first one closed: a new socket is admitted
                async with connect(ws_url, proxy=None, open_timeout=30) as again:
                    await again.send(json.dumps({"type": "ping"}))
                    reply = json.loads(await asyncio.wait_for(again.recv(), 30))
                    if reply["type"] == "pong" or time.monotonic() > deadline:
                        assert reply["type"] == "pong", reply
                        return frame
                await asyncio.sleep(0.2)

        frame = asyncio.run(scenario())
        assert frame["type"] == "error" and frame["code"] == "quota_exceeded", frame
        details = frame["details"]
        assert (details["meter"], details["limit"], details["used"]) == ("peak_connections", 1, 1)
