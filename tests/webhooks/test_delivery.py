"""Outbound webhooks end to end, on both backends: a real ``caas serve`` (and ``caas worker``
on Kafka) delivering to real HTTP receivers on loopback (docs/webhooks.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from streams.webhooks import verify
from tests.support import Server, Tenant, new_tenant
from tests.webhooks.receiver import Receiver, wait_until


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver().start()
    yield found
    found.stop()


def register(client: httpx.Client, tenant: Tenant, url: str, **extra: Any) -> dict[str, Any]:
    r = client.post(f"{tenant.url}/v1/webhooks", json={"url": url, **extra}, headers=tenant.headers())
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


def channel(client: httpx.Client, tenant: Tenant, cid: str, members: list[str]) -> None:
    for uid in members:
        tenant.user(client, uid)
    r = client.post(
        f"{tenant.url}/v1/channels",
        json={"channel_id": cid, "name": cid, "members": members},
        headers=tenant.headers(),
    )
    assert r.status_code == 201, r.text


def post(client: httpx.Client, tenant: Tenant, cid: str, text: str, user: str = "u1") -> dict[str, Any]:
    r = client.post(
        f"{tenant.url}/v1/channels/{cid}/messages", json={"text": text, "user_id": user}, headers=tenant.headers()
    )
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


def deliveries(client: httpx.Client, tenant: Tenant, webhook_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after = ""
    while True:
        r = client.get(
            f"{tenant.url}/v1/webhooks/{webhook_id}/deliveries",
            params={"limit": 50, **({"after": after} if after else {})},
            headers=tenant.headers(),
        )
        assert r.status_code == 200, r.text
        page = r.json()
        found += page["deliveries"]
        if page["next_after"] is None:
            return found
        after = page["next_after"]


def posted(receiver: Receiver) -> list[dict[str, Any]]:
    return [e for e in receiver.unique() if e["type"] == "MessagePosted"]


def test_events_arrive_signed_in_channel_order(
    server: Server, client: httpx.Client, tenant: Tenant, receiver: Receiver
) -> None:
    hook = register(client, tenant, receiver.url, event_types=["MessagePosted"])
    assert hook["secret"].startswith("whsec_")
    channel(client, tenant, "a", ["u1"])
    channel(client, tenant, "b", ["u1"])
    for i in range(12):
        post(client, tenant, "a" if i % 3 else "b", f"m{i}")
    wait_until(lambda: len(posted(receiver)) == 12, what="12 messages delivered")
    for cid in ("a", "b"):
        seqs = [e["seq"] for e in posted(receiver) if e["channel_id"] == cid]
        assert seqs == sorted(seqs), f"channel {cid} out of order: {seqs}"
    assert [e["data"]["text"] for e in posted(receiver)] == [f"m{i}" for i in range(12)]
    for got in receiver.received:
        assert verify(hook["secret"], got.headers["CAAS-Signature"], got.body)
        assert not verify(hook["secret"], got.headers["CAAS-Signature"], got.body + b" ")
        assert not verify("whsec_wrong", got.headers["CAAS-Signature"], got.body)
        assert got.headers["CAAS-Event-Id"] == got.json["id"]
    assert {e["type"] for e in receiver.events()} == {"MessagePosted"}  # only what it subscribed to


def test_a_failing_receiver_gets_the_event_on_a_retry(
    server: Server, client: httpx.Client, tenant: Tenant, receiver: Receiver
) -> None:
    receiver.fail_first = 3
    hook = register(client, tenant, receiver.url, event_types=["MessagePosted"])
    channel(client, tenant, "c", ["u1"])
    sent = post(client, tenant, "c", "hello")
    wait_until(lambda: receiver.answered >= 4, what="three failures and a delivery")
    assert {e["id"] for e in receiver.events()} == {sent["event_id"]}
    assert [r.headers["CAAS-Delivery-Attempt"] for r in receiver.received] == ["1", "2", "3", "4"]

    def logged() -> bool:
        return len(deliveries(client, tenant, hook["webhook_id"])) == 4

    wait_until(logged, what="four attempts in the delivery log")
    log = deliveries(client, tenant, hook["webhook_id"])
    assert [(d["attempt"], d["status_code"], d["ok"]) for d in log] == [
        (1, 500, False), (2, 500, False), (3, 500, False), (4, 200, True)
    ]  # fmt: skip
    assert all(d["event_id"] == sent["event_id"] and d["latency_ms"] >= 0 for d in log)
    assert log[0]["error"] == "HTTP 500"


def test_replay_redelivers_from_a_position(
    server: Server, client: httpx.Client, tenant: Tenant, receiver: Receiver
) -> None:
    hook = register(client, tenant, receiver.url, event_types=["MessagePosted"])
    channel(client, tenant, "r", ["u1"])
    first, second, third = (post(client, tenant, "r", text) for text in ("one", "two", "three"))
    wait_until(lambda: len(receiver.events()) >= 3, what="three deliveries")
    count = len(receiver.events())
    r = client.post(
        f"{tenant.url}/v1/webhooks/{hook['webhook_id']}/replay",
        json={"from_position": first["position"]},
        headers=tenant.headers(),
    )
    assert r.status_code == 200, r.text
    wait_until(lambda: len(receiver.events()) >= count + 2, what="the replayed deliveries")
    again = [e["id"] for e in receiver.events()[count:]]
    assert again[:2] == [second["event_id"], third["event_id"]]

    r = client.post(
        f"{tenant.url}/v1/webhooks/{hook['webhook_id']}/replay",
        json={"from_position": third["position"] + 10**12},
        headers=tenant.headers(),
    )
    assert r.status_code == 422 and r.json()["error"]["details"]["rule"] == "replay_past_head"


def test_a_hanging_endpoint_does_not_delay_another_tenant(server: Server, client: httpx.Client) -> None:
    dead, alive = Receiver(hang=True).start(), Receiver().start()
    try:
        slow, quick = new_tenant(client, server.url), new_tenant(client, server.url)
        register(client, slow, dead.url, event_types=["MessagePosted"])
        register(client, quick, alive.url, event_types=["MessagePosted"])
        channel(client, slow, "s", ["u1"])
        channel(client, quick, "q", ["u1"])
        post(client, slow, "s", "into the void")
        wait_until(lambda: len(dead.received) >= 1, what="the hanging endpoint's first request")
        for i in range(5):
            post(client, quick, "q", f"q{i}")
        wait_until(lambda: len(posted(alive)) == 5, what="the other tenant's deliveries")
        assert dead.answered == 0  # every delivery above arrived while the dead endpoint still held its request
    finally:
        dead.stop()
        alive.stop()


def test_redirects_are_not_followed(server: Server, client: httpx.Client, tenant: Tenant, receiver: Receiver) -> None:
    bouncer = Receiver(redirect_to=receiver.url).start()
    try:
        hook = register(client, tenant, bouncer.url, event_types=["MessagePosted"])
        channel(client, tenant, "x", ["u1"])
        post(client, tenant, "x", "bounce")
        wait_until(lambda: len(deliveries(client, tenant, hook["webhook_id"])) >= 2, what="two failed attempts")
        log = deliveries(client, tenant, hook["webhook_id"])
        assert log[0]["status_code"] == 302 and not log[0]["ok"]
        assert "redirects are not followed" in log[0]["error"]
        assert receiver.received == []
        r = client.delete(f"{tenant.url}/v1/webhooks/{hook['webhook_id']}", headers=tenant.headers())
        assert r.status_code == 200
    finally:
        bouncer.stop()


def test_register_list_update_delete(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    key = {"Idempotency-Key": "hook-1", **tenant.headers()}
    body = {"url": "http://127.0.0.1:9/hook", "event_types": ["MessagePosted", "ReactionAdded"]}
    first = client.post(f"{tenant.url}/v1/webhooks", json=body, headers=key)
    again = client.post(f"{tenant.url}/v1/webhooks", json=body, headers=key)
    assert first.status_code == 201 and again.status_code == 200, (first.text, again.text)
    assert again.json()["secret"] == first.json()["secret"] and again.json()["webhook_id"] == first.json()["webhook_id"]
    hook_id = first.json()["webhook_id"]
    listed = client.get(
        f"{tenant.url}/v1/webhooks", params={"min_position": first.json()["position"]}, headers=tenant.headers()
    ).json()["webhooks"]
    assert [(h["webhook_id"], h["event_types"], h["enabled"]) for h in listed] == [
        (hook_id, ["MessagePosted", "ReactionAdded"], True)
    ]
    assert "secret" not in listed[0]
    r = client.patch(
        f"{tenant.url}/v1/webhooks/{hook_id}", json={"enabled": False, "event_types": ["*"]}, headers=tenant.headers()
    )
    assert r.status_code == 200, r.text
    got = client.get(
        f"{tenant.url}/v1/webhooks/{hook_id}", params={"min_position": r.json()["position"]}, headers=tenant.headers()
    ).json()
    assert got["enabled"] is False and got["event_types"] == ["*"]
    r = client.delete(f"{tenant.url}/v1/webhooks/{hook_id}", headers=tenant.headers())
    assert r.status_code == 200
    r = client.get(
        f"{tenant.url}/v1/webhooks/{hook_id}", params={"min_position": r.json()["position"]}, headers=tenant.headers()
    )
    assert r.status_code == 404 and r.json()["error"]["details"]["rule"] == "webhook_not_found"
    other = new_tenant(client, server.url)
    r = client.patch(f"{tenant.url}/v1/webhooks/{hook_id}", json={"enabled": True}, headers=other.headers())
    assert r.status_code == 404  # another tenant's endpoint does not exist for it


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("not a url", "scheme"),
        ("ftp://example.com/hook", "scheme"),
        ("http:///nohost", "host"),
        ("https://user:pw@example.com/", "credentials"),
        ("http://example.com/" + "x" * 2100, "2048"),
        ("https://" + "a" * 64 + ".example.com/hook", "63"),
    ],
)
def test_invalid_urls_are_refused(client: httpx.Client, tenant: Tenant, url: str, why: str) -> None:
    r = client.post(f"{tenant.url}/v1/webhooks", json={"url": url}, headers=tenant.headers())
    assert r.status_code == 422, r.text
    assert why in r.json()["error"]["message"]


def test_unknown_event_types_are_refused(client: httpx.Client, tenant: Tenant) -> None:
    r = client.post(
        f"{tenant.url}/v1/webhooks",
        json={"url": "http://127.0.0.1:9/", "event_types": ["UsageRecorded"]},
        headers=tenant.headers(),
    )
    assert r.status_code == 422 and r.json()["error"]["details"]["rule"] == "invalid_event_type"


def test_a_tenant_has_at_most_20_endpoints(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    made = [register(client, tenant, f"http://127.0.0.1:9/hook{i}") for i in range(20)]
    # the cap is counted in the read model: wait until it holds all 20 (on Kafka the endpoints'
    # streams lie on several partitions, and a position names a point on one of them)
    for endpoint in made:
        listed = client.get(
            f"{tenant.url}/v1/webhooks", params={"min_position": endpoint["position"]}, headers=tenant.headers()
        )
        assert listed.status_code == 200, listed.text
    r = client.post(f"{tenant.url}/v1/webhooks", json={"url": "http://127.0.0.1:9/more"}, headers=tenant.headers())
    assert r.status_code == 409, r.text
    assert r.json()["error"]["details"]["rule"] == "webhook_limit" and r.json()["error"]["details"]["limit"] == 20
    gone = client.delete(f"{tenant.url}/v1/webhooks/{made[0]['webhook_id']}", headers=tenant.headers())
    client.get(f"{tenant.url}/v1/webhooks", params={"min_position": gone.json()["position"]}, headers=tenant.headers())
    register(client, tenant, "http://127.0.0.1:9/more")  # room again


def test_a_rotated_secret_signs_and_the_old_one_still_verifies_during_the_grace(
    server: Server, client: httpx.Client, tenant: Tenant, receiver: Receiver
) -> None:
    channel(client, tenant, "general", ["u1"])
    hook = register(client, tenant, receiver.url, event_types=["MessagePosted"])
    key = {"Idempotency-Key": "rotate-1", **tenant.headers()}
    rotated = client.post(f"{tenant.url}/v1/webhooks/{hook['webhook_id']}/rotate-secret", headers=key)
    again = client.post(f"{tenant.url}/v1/webhooks/{hook['webhook_id']}/rotate-secret", headers=key)
    assert rotated.status_code in (200, 201) and again.status_code in (200, 201), (rotated.text, again.text)
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != hook["secret"] and again.json()["secret"] == new
    client.get(
        f"{tenant.url}/v1/webhooks/{hook['webhook_id']}",
        params={"min_position": rotated.json()["position"]},
        headers=tenant.headers(),
    )
    post(client, tenant, "general", "after the rotation")
    wait_until(lambda: len(posted(receiver)) == 1, what="the delivery")
    [got] = [r for r in receiver.received if r.json["type"] == "MessagePosted"]
    header = got.headers["CAAS-Signature"]
    assert verify(new, header, got.body) and verify(hook["secret"], header, got.body)  # both, in the grace
    r = client.post(f"{tenant.url}/v1/webhooks/w-none/rotate-secret", headers=tenant.headers())
    assert r.status_code == 404
