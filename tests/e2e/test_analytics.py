"""``GET /v1/analytics`` end to end, on both backends: a tenant's users post, reply in threads,
react and read; the analytics show exactly those users, posts, channels and conversations, and
agree with ``GET /v1/usage`` on the posts of the same days (docs/analytics.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster import serving
from tests.support import Tenant, bearer, new_tenant


def ok(r: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert r.status_code == status, f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}"
    data: dict[str, Any] = r.json()
    return data


def days() -> dict[str, str]:
    """Yesterday to tomorrow (UTC): today's figures whatever the hour the test runs at."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return {"from": (today - timedelta(days=1)).isoformat(), "to": (today + timedelta(days=2)).isoformat()}


def chat(client: httpx.Client, tenant: Tenant) -> tuple[dict[str, str], int]:
    """Two channels: in ``help`` ann asks, bob answers in the thread, ann thanks; in ``news`` cy
    posts alone; dee only reacts and reads. The tokens and the last write's position."""
    url, tokens = tenant.url, {u: tenant.user(client, u) for u in ("ann", "bob", "cy", "dee", "idle")}
    ok(client.post(f"{url}/v1/channels", json={"channel_id": "help", "name": "Help", "members": ["bob", "dee"]},
                   headers=bearer(tokens["ann"])), 201)  # fmt: skip
    ok(client.post(f"{url}/v1/channels", json={"channel_id": "news", "name": "News", "members": ["dee"]},
                   headers=bearer(tokens["cy"])), 201)  # fmt: skip
    post = f"{url}/v1/channels/help/messages"
    question = ok(client.post(post, json={"text": "how?"}, headers=bearer(tokens["ann"])), 201)["message_id"]
    ok(client.post(post, json={"text": "like this", "parent_id": question}, headers=bearer(tokens["bob"])), 201)
    ok(client.post(post, json={"text": "thanks"}, headers=bearer(tokens["ann"])), 201)
    for i in range(3):
        ok(
            client.post(f"{url}/v1/channels/news/messages", json={"text": f"news {i}"}, headers=bearer(tokens["cy"])),
            201,
        )
    ok(client.post(f"{post}/{question}/reactions", json={"emoji": "👍"}, headers=bearer(tokens["dee"])), 201)
    last = ok(client.post(f"{url}/v1/channels/news/read", json={"seq": 2}, headers=bearer(tokens["dee"])), 200)
    return tokens, int(last["position"])


def test_analytics_show_the_tenants_users_posts_channels_and_first_reply(
    server: Any, client: httpx.Client, tenant: Tenant
) -> None:
    _, head = chat(client, tenant)
    params = {**days(), "min_position": str(head)}
    report = ok(client.get(f"{tenant.url}/v1/analytics", params=params, headers=tenant.headers()))
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert report["buckets"][0]["start"][:10] < today  # every day listed, zeros included
    assert len(report["buckets"]) == 3 and report["granularity"] == "day"
    totals = report["totals"]
    # ann, bob and cy posted, dee reacted and read; idle only has a token
    assert (totals["active_users"], totals["messages"], totals["replies"], totals["active_channels"]) == (4, 5, 1, 2)
    # help: ann's question answered by bob's thread reply; news: cy alone, unanswered
    assert (totals["conversations"], totals["answered"]) == (2, 1)
    assert totals["median_first_reply_seconds"] is not None and totals["median_first_reply_seconds"] >= 0
    assert report["channels"] == [
        {"channel_id": "help", "messages": 2, "replies": 1},
        {"channel_id": "news", "messages": 3, "replies": 0},
    ] or report["channels"] == [
        {"channel_id": "news", "messages": 3, "replies": 0},
        {"channel_id": "help", "messages": 2, "replies": 1},
    ]
    busy = [b for b in report["buckets"] if b["messages"]]
    assert len(busy) in (1, 2)  # the posts' day (two if the test ran across midnight)
    assert sum(b["messages"] for b in report["buckets"]) == totals["messages"]

    # the month view counts the same users once
    monthly = ok(
        client.get(f"{tenant.url}/v1/analytics", params={**params, "granularity": "month"}, headers=tenant.headers())
    )
    assert monthly["totals"]["active_users"] == 4 and monthly["totals"]["messages"] == 5
    assert all(b["start"][8:10] == "01" for b in monthly["buckets"])

    # analytics and usage agree on the posts of the same days
    usage = ok(client.get(f"{tenant.url}/v1/usage", params={**params, "granularity": "day"}, headers=tenant.headers()))
    assert (usage["totals"]["messages"], usage["totals"]["replies"]) == (totals["messages"], totals["replies"])
    by_day = {b["start"][:10]: b["meters"]["messages"] for b in usage["buckets"]}
    assert {b["start"][:10]: b["messages"] for b in report["buckets"]} == by_day


def test_analytics_of_another_tenant_are_its_own(server: Any, client: httpx.Client, tenant: Tenant) -> None:
    _, head = chat(client, tenant)
    other = new_tenant(client, server.url, "other")
    report = ok(
        client.get(f"{other.url}/v1/analytics", params={**days(), "min_position": str(head)}, headers=other.headers())
    )
    assert all(value in (0, None) for value in report["totals"].values()) and report["channels"] == []


def test_bad_analytics_requests_get_a_4xx_json_error_naming_the_problem(
    server: Any, client: httpx.Client, tenant: Tenant
) -> None:
    url = f"{tenant.url}/v1/analytics"
    cases: list[tuple[dict[str, str], str | None]] = [
        ({}, None),  # from is required
        ({"from": "2026-01-01T00:00:00Z"}, None),
        ({"from": "yesterday", "to": "2026-01-02T00:00:00Z"}, None),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "empty_range"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "granularity": "hour"}, "unknown_granularity"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-06-01T00:00:00Z"}, "range_too_large"),
        ({"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z", "granularity": "month"}, "range_too_large"),
        ({"from": "0001-01-01T00:00:00+01:00", "to": "2026-01-01T00:00:00Z"}, "out_of_range"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "meters": "messages"}, None),
    ]
    for params, rule in cases:
        r = client.get(url, params=params, headers=tenant.headers())
        assert r.status_code == 422, (params, r.status_code, r.text)
        error = r.json()["error"]
        assert error["code"] == "invalid_request" and error["message"], error
        if rule is not None:
            assert error["details"]["rule"] == rule, (params, error)
    # a user's token is not the tenant's key
    token = tenant.user(client, "eve")
    r = client.get(url, params=days(), headers=bearer(token))
    assert r.status_code in (401, 403) and r.json()["error"]["code"], r.text


@pytest.mark.parametrize("backend", ["embedded", "kafka"])
def test_a_range_holding_more_documents_than_a_report_reads_is_refused_with_a_hint(
    backend: str, tmp_path: Path
) -> None:
    """With ``CAAS_ANALYTICS_MAX_DOCS=3`` the chat's four active users (four user-day documents,
    four user-month ones) are more than a report reads: 422 ``range_too_large`` naming the cap,
    by day and by month; a range without them is still served."""
    with serving(backend, tmp_path, {"CAAS_ANALYTICS_MAX_DOCS": "3"}) as srv, httpx.Client(timeout=30) as client:
        tenant = new_tenant(client, srv.url, "big")
        _, head = chat(client, tenant)
        url, params = f"{tenant.url}/v1/analytics", {**days(), "min_position": str(head)}
        for granularity in ("day", "month"):
            r = client.get(url, params={**params, "granularity": granularity}, headers=tenant.headers())
            assert r.status_code == 422, (granularity, r.status_code, r.text)
            error = r.json()["error"]
            assert error["code"] == "invalid_request", error
            assert error["details"] == {"rule": "range_too_large", "max_documents": 3}, error
            assert "shorter range" in error["message"], error
        quiet = datetime.now(UTC) - timedelta(days=30)
        narrower = {"from": quiet.isoformat(), "to": (quiet + timedelta(days=2)).isoformat()}
        report = ok(client.get(url, params=narrower, headers=tenant.headers()))
        assert report["totals"]["messages"] == 0 and len(report["buckets"]) in (2, 3)
