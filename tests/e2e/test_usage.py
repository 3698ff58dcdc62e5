"""Usage metering end to end, on both backends: a tenant posts, subscribes and reads, and
``GET /v1/usage`` shows exactly those counts (docs/meters.md).

The servers here record their node counters every 0.3 s (``CAAS_USAGE_FLUSH_SECONDS``) so the
test waits on the counts, not on a fixed delay. The admin's view polls (its requests are not
the tenant's), so the tenant's own reads are exactly the ones the test made.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from tests.cluster import serving
from tests.support import ADMIN, Server, Tenant, bearer, new_tenant

FLUSH = {"CAAS_USAGE_FLUSH_SECONDS": "0.3", "CAAS_USAGE_SAMPLE_SECONDS": "1"}
WAIT = 30.0
DAY = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}


@pytest.fixture(scope="module", params=["embedded", "kafka"])
def metered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = Path(tmp_path_factory.mktemp(f"caas-usage-{request.param}"))
    with serving(request.param, root, FLUSH) as server:
        yield server


class Counted:
    """An HTTP client for one tenant that counts the requests it makes, as the node meters them."""

    def __init__(self, client: httpx.Client, tenant: Tenant) -> None:
        self.client, self.tenant = client, tenant
        self.reads = self.writes = 0

    def call(self, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> dict[str, Any]:
        r = self.client.request(method, f"{self.tenant.url}{path}", headers=headers, **kwargs)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        if method == "GET":
            self.reads += 1
        else:
            self.writes += 1
        data: dict[str, Any] = r.json()
        return data


def window() -> dict[str, str]:
    now = datetime.now(UTC)
    return {"from": (now - timedelta(hours=2)).isoformat(), "to": (now + timedelta(hours=2)).isoformat()}


def admin_usage(client: httpx.Client, url: str, tenant_id: str, **params: str) -> dict[str, Any]:
    r = client.get(f"{url}/v1/tenants/{tenant_id}/usage", params={**window(), **params}, headers=bearer(ADMIN))
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def watch(url: str, token: str, since: int, stop_at: int, hold: Callable[[], None] | None = None) -> int:
    """Subscribe to ``c`` from ``since`` and read event frames up to seq ``stop_at``; how many
    came. ``hold`` runs (in a thread) before the socket closes."""
    frames = 0
    async with connect(f"{url.replace('http', 'ws')}/v1/ws?token={token}", proxy=None, open_timeout=WAIT) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channel_id": "c", "since_seq": since}))
        while since < stop_at:  # from stop_at itself nothing is replayed: no frame to wait for
            frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            if frame["type"] == "event":
                frames += 1
                if frame["seq"] >= stop_at:
                    break
        if hold is not None:
            await asyncio.to_thread(hold)
    return frames


def until_sampled(client: httpx.Client, url: str, tenant_id: str) -> Callable[[], None]:
    """Wait until a sample instant (every second here) has seen the socket open: the peak is 1."""

    def wait() -> None:
        deadline = time.monotonic() + WAIT
        while admin_usage(client, url, tenant_id, meters="peak_connections")["totals"]["peak_connections"] < 1:
            assert time.monotonic() < deadline, "no sample saw the open socket"
            time.sleep(0.1)

    return wait


def test_usage_shows_exactly_what_the_tenant_did(metered: Server) -> None:
    with httpx.Client(timeout=10) as client:
        tenant = new_tenant(client, metered.url)
        api = Counted(client, tenant)
        key = tenant.headers()
        for uid in ("alice", "bob"):
            api.call("PUT", f"/v1/users/{uid}", key, json={"name": uid})
        alice = bearer(api.call("POST", "/v1/users/alice/tokens", key, json={})["token"])
        bob_token = api.call("POST", "/v1/users/bob/tokens", key, json={})["token"]
        api.call("POST", "/v1/channels", alice, json={"channel_id": "c", "name": "C", "members": ["bob"]})
        texts = ["hello", "wörld", "third"]
        mids = [api.call("POST", "/v1/channels/c/messages", alice, json={"text": t})["message_id"] for t in texts]
        api.call("POST", "/v1/channels/c/messages", key, json={"text": "re", "parent_id": mids[0], "user_id": "bob"})
        edited = api.call("PATCH", f"/v1/channels/c/messages/{mids[1]}", alice, json={"text": "world!"})
        # bob reads the channel from the start, goes away, and resumes from the last seq he saw
        deliveries = asyncio.run(watch(metered.url, bob_token, 0, edited["seq"]))
        assert deliveries == edited["seq"]
        last = api.call("POST", "/v1/channels/c/messages", alice, json={"text": "later", "attachments": []})
        hold = until_sampled(client, metered.url, tenant.tenant_id)
        resumed = asyncio.run(watch(metered.url, bob_token, edited["seq"], last["seq"], hold))
        assert resumed == last["seq"] - edited["seq"]
        deliveries += resumed
        for _ in range(3):
            api.call("GET", "/v1/channels/c/messages", key, params={"min_position": last["position"]})
        stored = sum(len(t.encode()) for t in ("hello", "world!", "third", "re", "later"))
        expected = {
            "messages": 4,
            "replies": 1,
            "edits": 1,
            "deliveries": deliveries,
            "api_reads": api.reads,
            "api_writes": api.writes,
            "connection_minutes": 0,
            "peak_connections": 1,  # one socket at a time, sampled every second while held open
            "mau": 2,  # alice wrote, bob wrote (a reply) and connected
            "stored_bytes": stored,
        }
        deadline = time.monotonic() + WAIT
        while (got := admin_usage(client, metered.url, tenant.tenant_id)["totals"]) != expected:
            assert time.monotonic() < deadline, f"usage {got} != {expected}"
            time.sleep(0.2)
        # the tenant's own view agrees; it is itself one more read, which a flush may record
        # between the request and the answer
        r = client.get(f"{tenant.url}/v1/usage", params={**window(), "granularity": "day"}, headers=key)
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["tenant_id"] == tenant.tenant_id and report["granularity"] == "day"
        assert report["totals"]["api_reads"] - expected["api_reads"] in (0, 1)
        assert {**report["totals"], "api_reads": expected["api_reads"]} == expected
        assert sum(b["meters"]["messages"] for b in report["buckets"]) == 4
        # the UsageRecorded events are the tenant's own, in its log: usage re-derivable from it
        events = api.call("GET", "/v1/events", key, params={"types": "UsageRecorded", "limit": 1000})["events"]
        assert sum(e["payload"]["deliveries"] for e in events) == deliveries


def test_usage_refuses_bad_ranges_and_unknown_meters(metered: Server) -> None:
    with httpx.Client(timeout=10) as client:
        tenant = new_tenant(client, metered.url)
        base, key = f"{tenant.url}/v1/usage", tenant.headers()
        cases = [
            ({}, None),
            ({"from": "yesterday", "to": "2026-01-01T00:00:00Z"}, None),
            ({"from": "2026-01-01T00:00:00", "to": "2026-01-02T00:00:00Z"}, None),  # no zone
            ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "empty_range"),
            ({"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "range_too_large"),
            # the ends of the calendar: before year 1 once in UTC, an hour or a month past year 9999
            ({"from": "0001-01-01T00:00:00+01:00", "to": "2026-01-01T00:00:00Z"}, "out_of_range"),
            ({"from": "9999-12-31T00:00:00Z", "to": "9999-12-31T23:30:00Z"}, "out_of_range"),
            ({"from": "9999-11-01T00:00:00Z", "to": "9999-12-31T00:00:00Z", "granularity": "month"}, "out_of_range"),
            (
                {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "granularity": "week"},
                "unknown_granularity",
            ),
            (
                {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "meters": "messages,bogus"},
                "unknown_meter",
            ),
        ]
        for params, rule in cases:
            r = client.get(base, params=params, headers=key)
            assert r.status_code == 422, (params, r.text)
            error = r.json()["error"]
            assert error["code"] == "invalid_request", error
            if rule is not None:
                assert error["details"]["rule"] == rule, error
        ok = client.get(
            base,
            params={"from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z", "granularity": "month",
                    "meters": "messages,mau"},
            headers=key,
        )  # fmt: skip
        assert ok.status_code == 200, ok.text
        assert [b["start"] for b in ok.json()["buckets"]] == ["2026-01-01T00:00:00.000Z", "2026-02-01T00:00:00.000Z"]
        assert ok.json()["totals"] == {"messages": 0, "mau": 0}
        # the admin view: the admin token only, any existing tenant
        r = client.get(f"{tenant.url}/v1/tenants/{tenant.tenant_id}/usage", params=window(), headers=key)
        assert r.status_code == 403, r.text
        r = client.get(f"{tenant.url}/v1/tenants/t-nobody/usage", params=window(), headers=bearer(ADMIN))
        assert r.status_code == 404 and r.json()["error"]["details"]["rule"] == "tenant_not_found", r.text
        assert client.get(base, params=window(), headers=bearer(ADMIN)).status_code == 403


def caas(data_dir: Path, *args: str) -> str:
    env = {**os.environ, "CAAS_BACKEND": "embedded", "CAAS_DATA_DIR": str(data_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_caas_usage_and_a_rebuilt_usage_model_agree_with_the_api(tmp_path: Path) -> None:
    """Embedded: what ``GET /v1/usage`` served equals ``caas usage`` on the same read model and
    after ``caas rebuild --projection usage`` (the usage rebuilt from the log)."""
    srv = Server(tmp_path / "data", env=FLUSH).start()
    with httpx.Client(timeout=10) as client:
        tenant = new_tenant(client, srv.url)
        token = tenant.user(client, "alice")
        r = client.post(
            f"{srv.url}/v1/channels", json={"channel_id": "c", "name": "C", "members": []}, headers=bearer(token)
        )
        assert r.status_code == 201, r.text
        for text in ("one", "two"):
            r = client.post(f"{srv.url}/v1/channels/c/messages", json={"text": text}, headers=bearer(token))
            assert r.status_code == 201, r.text
        asyncio.run(watch(srv.url, token, 0, r.json()["seq"]))
        srv.stop()  # records the last interval
        srv.env = {**FLUSH, "CAAS_METERING": "off"}  # nothing more is metered from here on
        srv.start()
        head = client.get(f"{srv.url}/readyz").json()["head_position"]
        served = admin_usage(client, srv.url, tenant.tenant_id, min_position=str(head), granularity="day")
        srv.stop()
    assert served["totals"]["messages"] == 2 and served["totals"]["deliveries"] > 0
    args = ["usage", "--tenant", tenant.tenant_id, "--from", served["from"], "--to", served["to"], "--format", "json"]
    assert json.loads(caas(tmp_path / "data", *args))["totals"] == served["totals"]
    rebuilt = json.loads(caas(tmp_path / "data", "rebuild", "--projection", "usage").splitlines()[-1])
    assert rebuilt["projection"] == "usage" and rebuilt["events"] > 0
    assert json.loads(caas(tmp_path / "data", *args)) == {**served, "granularity": "day"}
    table = caas(tmp_path / "data", *args[:-2])
    assert "messages" in table and "total" in table
    rows = caas(tmp_path / "data", *args[:-1], "csv").splitlines()
    assert rows[0].startswith("start,messages,") and rows[-1].startswith("total,2,")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-01-01T00:00:00", "--to", "2026-01-02T00:00:00Z"], "from must be an RFC 3339 time with"),
        (["--from", "2020-01-01T00:00:00Z", "--to", "2026-01-01T00:00:00Z"], "the range is too long"),
        (["--from", "0001-01-01T00:00:00+01:00", "--to", "2026-01-01T00:00:00Z"], "from must lie between"),
        (["--from", "9999-12-31T00:00:00Z", "--to", "9999-12-31T23:30:00Z"], "from must lie between"),
        (["--from", "2026-01-02T00:00:00Z", "--to", "2026-01-01T00:00:00Z"], "to must be later than from"),
        (["--meters", "messages,bogus"], "unknown meter 'bogus'"),
    ],
)
def test_caas_usage_refuses_what_the_api_refuses(tmp_path: Path, args: list[str], message: str) -> None:
    """``caas usage`` parses its range with the API's parser: zone-less times, over-long ranges
    and the ends of the calendar are refused with the API's message, before any store is opened."""
    env = {**os.environ, "CAAS_BACKEND": "embedded", "CAAS_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "usage", "--tenant", "t1", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0 and f"caas usage: {message}" in done.stderr, done.stderr
    assert not (tmp_path / "data").exists()


def usage_records(client: httpx.Client, tenant: Tenant) -> list[dict[str, Any]]:
    r = client.get(
        f"{tenant.url}/v1/events", params={"types": "UsageRecorded", "limit": 1000}, headers=tenant.headers()
    )
    assert r.status_code == 200, r.text
    return [e["payload"] for e in r.json()["events"]]


def recorded_past(client: httpx.Client, tenant: Tenant, moment: float) -> list[dict[str, Any]]:
    """The tenant's node records once one of them starts after ``moment``: the node records a
    tenant's intervals in order, so every count made before ``moment`` is among them. Reads
    keep something to record at each flush until then."""
    deadline = time.monotonic() + WAIT
    while True:
        found = usage_records(client, tenant)
        if any(datetime.fromisoformat(p["start"]).timestamp() >= moment for p in found):
            return found
        assert time.monotonic() < deadline, "no record after the sockets closed"
        time.sleep(0.1)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 8), st.booleans()), min_size=1, max_size=4))
def test_deliveries_across_resumes_are_one_per_frame_sent(metered: Server, sessions: list[tuple[int, bool]]) -> None:
    """A subscriber connects, reads up to the channel's last message, goes away, and resumes
    from any seq it likes (more messages posted meanwhile, or not): the tenant is billed exactly
    one delivery per event frame each socket was sent, nothing for the resume itself."""
    with httpx.Client(timeout=10) as client:
        tenant = new_tenant(client, metered.url)
        key = tenant.headers()
        for uid in ("alice", "bob"):
            assert client.put(f"{tenant.url}/v1/users/{uid}", json={"name": uid}, headers=key).status_code < 300
        token = client.post(f"{tenant.url}/v1/users/bob/tokens", json={}, headers=key).json()["token"]
        alice = bearer(client.post(f"{tenant.url}/v1/users/alice/tokens", json={}, headers=key).json()["token"])
        body = {"channel_id": "c", "name": "C", "members": ["bob"]}
        assert client.post(f"{tenant.url}/v1/channels", json=body, headers=alice).status_code == 201
        last = 0
        for _ in range(3):
            last = client.post(f"{tenant.url}/v1/channels/c/messages", json={"text": "m"}, headers=alice).json()["seq"]
        expected = 0
        for since, post_more in sessions:
            start = min(since, last)
            frames = asyncio.run(watch(metered.url, token, start, last))
            assert frames == last - start  # the replay and nothing else: one frame per event after since
            expected += frames
            if post_more:
                r = client.post(f"{tenant.url}/v1/channels/c/messages", json={"text": "more"}, headers=alice)
                last = r.json()["seq"]
        closed = time.time()
        records = recorded_past(client, tenant, closed)
        assert sum(p["deliveries"] for p in records) == expected


def test_with_quotas_off_a_capped_meter_refuses_nothing(tmp_path: Path) -> None:
    """``CAAS_QUOTAS=off`` (a deployment that does not bill; the benchmarks that measure the
    check's cost): a default plan capping messages at 1 admits every post, and usage still counts them."""
    plans = tmp_path / "plans.toml"
    plans.write_text('default = "tiny"\n[plans.tiny.meters.messages]\nincluded = 1\nmode = "cap"\n')
    env = {**FLUSH, "CAAS_QUOTAS": "off", "CAAS_PLANS_FILE": str(plans)}
    with serving("embedded", tmp_path, env) as srv, httpx.Client(timeout=10) as client:
        tenant = new_tenant(client, srv.url)
        key = tenant.headers()
        assert client.put(f"{srv.url}/v1/users/alice", json={"name": "a"}, headers=key).status_code < 300
        alice = bearer(client.post(f"{srv.url}/v1/users/alice/tokens", json={}, headers=key).json()["token"])
        assert client.post(f"{srv.url}/v1/channels", json={"channel_id": "c", "name": "C"}, headers=alice).is_success
        for n in range(3):
            r = client.post(f"{srv.url}/v1/channels/c/messages", json={"text": f"m{n}"}, headers=alice)
            assert r.status_code == 201, r.text
        head = str(r.json()["position"])
        assert admin_usage(client, srv.url, tenant.tenant_id, min_position=head)["totals"]["messages"] == 3
