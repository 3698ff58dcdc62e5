"""``caas replay`` and ``caas rebuild`` on the data dir of a stopped server, as an analyst or operator runs them."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Server, Tenant, bearer, new_tenant


@dataclass
class Stopped:
    """A server that was filled with two tenants' chat and stopped; what its API said before it stopped."""

    server: Server
    tenants: list[Tenant]
    tokens: dict[str, str]  # acme's users
    events: dict[str, list[dict[str, Any]]]  # tenant_id -> GET /v1/events
    views: dict[str, Any]  # GET results to compare after a rebuild


def ok(r: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert r.status_code == status, f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}"
    data: dict[str, Any] = r.json()
    return data


def events_of(client: httpx.Client, tenant: Tenant) -> list[dict[str, Any]]:
    page = ok(client.get(f"{tenant.url}/v1/events", params={"limit": 1000}, headers=tenant.headers()), 200)
    assert page["next_after_position"] is None
    events: list[dict[str, Any]] = page["events"]
    return events


def views(client: httpx.Client, tenant: Tenant, tokens: dict[str, str], head: int) -> dict[str, Any]:
    """Everything a user or the tenant can read about the chat, once the read model has applied ``head``."""
    wait = {"min_position": head}
    out: dict[str, Any] = {}
    for who, h in [("tenant", tenant.headers()), *[(u, bearer(t)) for u, t in tokens.items()]]:
        out[f"channels/{who}"] = ok(client.get(f"{tenant.url}/v1/channels", params=wait, headers=h), 200)
    for cid in ("general", "random"):
        base = f"{tenant.url}/v1/channels/{cid}"
        out[cid] = ok(client.get(base, params=wait, headers=bearer(tokens["bob"])), 200)
        out[f"{cid}/messages"] = ok(
            client.get(f"{base}/messages", params={**wait, "limit": 200}, headers=tenant.headers()), 200
        )
        out[f"{cid}/ascending"] = ok(
            client.get(f"{base}/messages", params={**wait, "after_seq": 0, "limit": 7}, headers=tenant.headers()), 200
        )
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    span = {**wait, "from": (today - timedelta(days=1)).isoformat(), "to": (today + timedelta(days=2)).isoformat()}
    out["analytics"] = ok(client.get(f"{tenant.url}/v1/analytics", params=span, headers=tenant.headers()), 200)
    out["audit"] = ok(
        client.get(f"{tenant.url}/v1/audit", params={**wait, "limit": 1000}, headers=tenant.headers()), 200
    )
    for message in out["general/messages"]["messages"]:
        if message["reply_count"]:
            out[f"thread/{message['message_id']}"] = ok(
                client.get(
                    f"{tenant.url}/v1/channels/general/messages/{message['message_id']}/thread",
                    params=wait,
                    headers=tenant.headers(),
                ),
                200,
            )
    return out


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stopped]:
    # metering off: the replay is compared with what GET /v1/events served before the stop, and a
    # metering node records the usage of those very reads at shutdown (tests/e2e/test_usage.py)
    srv = Server(Path(tmp_path_factory.mktemp("caas-cli")) / "data", env={"CAAS_METERING": "off"}).start()
    try:
        filled = fill(srv)
    finally:
        srv.stop()  # the CLI works on the data dir of a stopped server
    yield filled
    srv.stop()


def fill(srv: Server) -> Stopped:
    with httpx.Client(timeout=30) as client:
        acme, umbrella = new_tenant(client, srv.url, "acme"), new_tenant(client, srv.url, "umbrella")
        tokens = {u: acme.user(client, u) for u in ("alice", "bob", "carol")}
        umbrella.user(client, "zed")
        a, b = bearer(tokens["alice"]), bearer(tokens["bob"])
        ok(
            client.post(
                f"{srv.url}/v1/channels",
                json={"channel_id": "general", "name": "General", "members": ["bob", "carol"]},
                headers=a,
            )
        )
        ok(
            client.post(
                f"{srv.url}/v1/channels", json={"channel_id": "random", "name": "Random", "members": ["bob"]}, headers=b
            )
        )
        ok(
            client.post(
                f"{srv.url}/v1/channels",
                json={"channel_id": "z", "name": "Z", "members": ["zed"]},
                headers=umbrella.headers(),
            )
        )
        mids = []
        for i in range(15):
            who, cid = (a, "general") if i % 3 else (b, "random")
            mids.append(
                ok(client.post(f"{srv.url}/v1/channels/{cid}/messages", json={"text": f"message {i}"}, headers=who))[
                    "message_id"
                ]
            )
            ok(
                client.post(
                    f"{srv.url}/v1/channels/z/messages",
                    json={"text": f"zed {i}", "user_id": "zed"},
                    headers=umbrella.headers(),
                )
            )
        general = [m for i, m in enumerate(mids) if i % 3]
        ok(
            client.patch(f"{srv.url}/v1/channels/general/messages/{general[0]}", json={"text": "edited"}, headers=a),
            200,
        )
        ok(client.delete(f"{srv.url}/v1/channels/general/messages/{general[1]}", headers=a), 200)
        ok(
            client.post(
                f"{srv.url}/v1/channels/general/messages/{general[2]}/reactions", json={"emoji": "🎉"}, headers=b
            )
        )
        ok(
            client.post(
                f"{srv.url}/v1/channels/general/messages", json={"text": "a reply", "parent_id": general[3]}, headers=b
            )
        )
        ok(client.post(f"{srv.url}/v1/channels/general/read", json={"seq": 6}, headers=b), 200)
        ok(client.post(f"{srv.url}/v1/channels/general/bans", json={"user_id": "carol"}, headers=a))
        events = {t.tenant_id: events_of(client, t) for t in (acme, umbrella)}
        head = max(e["position"] for tenant_events in events.values() for e in tenant_events)
        seen = views(client, acme, tokens, head)
    return Stopped(srv, [acme, umbrella], tokens, events, seen)


def caas(stopped: Stopped, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CAAS_BACKEND": "embedded", "CAAS_DATA_DIR": str(stopped.server.data_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done


def replay(stopped: Stopped, *args: str) -> list[dict[str, Any]]:
    out = caas(stopped, "replay", *args).stdout
    return [json.loads(line) for line in out.splitlines()]


def everything(stopped: Stopped) -> list[dict[str, Any]]:
    return sorted((e for events in stopped.events.values() for e in events), key=lambda e: e["position"])


def test_replay_prints_every_event_in_log_order(stopped: Stopped) -> None:
    replayed = replay(stopped)
    positions = [e["position"] for e in replayed]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert {e["tenant_id"] for e in replayed} >= {t.tenant_id for t in stopped.tenants}
    ours = [e for e in replayed if e["tenant_id"] in stopped.events]
    assert ours == everything(stopped)  # the same envelopes GET /v1/events served


def test_replay_filters_by_tenant(stopped: Stopped) -> None:
    for tenant in stopped.tenants:
        assert replay(stopped, "--tenant", tenant.tenant_id) == stopped.events[tenant.tenant_id]
    assert replay(stopped, "--tenant", "t-nobody") == []


def test_replay_filters_by_type(stopped: Stopped) -> None:
    wanted = {"MessagePosted", "MemberBanned"}
    replayed = replay(stopped, "--types", ",".join(sorted(wanted)))
    ours = [e for e in replayed if e["tenant_id"] in stopped.events]
    assert ours == [e for e in everything(stopped) if e["type"] in wanted]
    assert {e["type"] for e in replayed} == wanted


def test_replay_after_a_position(stopped: Stopped) -> None:
    acme = stopped.tenants[0]
    events = stopped.events[acme.tenant_id]
    middle = events[len(events) // 2]["position"]
    replayed = replay(stopped, "--tenant", acme.tenant_id, "--after-position", str(middle))
    assert replayed == [e for e in events if e["position"] > middle]
    combined = replay(stopped, "--tenant", acme.tenant_id, "--types", "MessagePosted", "--after-position", str(middle))
    assert combined == [e for e in events if e["position"] > middle and e["type"] == "MessagePosted"]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize("form", ["exact", "whole-second", "offset", "date"])
def test_replay_since_a_time(stopped: Stopped, form: str) -> None:
    acme = stopped.tenants[0]
    events = stopped.events[acme.tenant_id]
    moment = at(events[len(events) // 2]["occurred_at"])
    since = {
        "exact": events[len(events) // 2]["occurred_at"],
        "whole-second": moment.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "offset": moment.astimezone(timezone(timedelta(hours=2))).isoformat(),
        "date": moment.date().isoformat(),
    }[form]
    cutoff = {
        "exact": moment,
        "whole-second": moment.replace(microsecond=0),
        "offset": moment,
        "date": datetime.combine(moment.date(), datetime.min.time(), UTC),
    }[form]
    replayed = replay(stopped, "--tenant", acme.tenant_id, "--since", since)
    assert replayed == [e for e in events if at(e["occurred_at"]) >= cutoff]
    assert replayed, "the cut-off is inside the tenant's history"


def test_replay_as_csv(stopped: Stopped) -> None:
    acme = stopped.tenants[0]
    out = caas(stopped, "replay", "--tenant", acme.tenant_id, "--format", "csv").stdout
    rows = list(csv.reader(io.StringIO(out)))
    header, body = rows[0], rows[1:]
    assert header[:5] == ["position", "tenant_id", "stream", "seq", "type"]
    assert {"occurred_at", "event_id", "payload"} <= set(header)
    events = stopped.events[acme.tenant_id]
    assert len(body) == len(events)
    for row, event in zip(body, events, strict=True):
        record = dict(zip(header, row, strict=True))
        assert int(record["position"]) == event["position"] and int(record["seq"]) == event["seq"]
        assert (record["tenant_id"], record["stream"], record["type"]) == (
            event["tenant_id"],
            event["stream"],
            event["type"],
        )
        assert record["event_id"] == event["event_id"] and record["occurred_at"] == event["occurred_at"]
        assert json.loads(record["payload"]) == event["payload"]


def test_rebuild_restores_identical_read_models(stopped: Stopped) -> None:
    db = sqlite3.connect(stopped.server.data_dir / "read.db")
    with db:  # damage the read model while the server is down; the log is intact
        db.execute("DELETE FROM rm_messages")
        db.execute("DELETE FROM rm_memberships")
        db.execute("DELETE FROM rm_analytics_channels")
        db.execute("DELETE FROM rm_analytics_users")
    db.close()
    done = caas(stopped, "rebuild")
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert reports, done.stdout
    (chat,) = [r for r in reports if r["projection"] == "chat"]
    assert chat["events"] >= len(everything(stopped))
    assert isinstance(chat["events_per_second"], int | float) and chat["events_per_second"] > 0
    assert "analytics" in {r["projection"] for r in reports}
    assert stopped.views["analytics"]["totals"]["messages"] > 0
    stopped.server.start()
    try:
        acme = stopped.tenants[0]
        head = max(e["position"] for e in everything(stopped))
        with httpx.Client(timeout=30) as client:
            assert views(client, acme, stopped.tokens, head) == stopped.views
            assert events_of(client, acme) == stopped.events[acme.tenant_id]
    finally:
        stopped.server.stop()


def test_rebuild_of_the_analytics_alone_gives_the_same_analytics(stopped: Stopped) -> None:
    db = sqlite3.connect(stopped.server.data_dir / "read.db")
    with db:
        db.execute("DELETE FROM rm_analytics_channels")
        db.execute("DELETE FROM rm_analytics_monthly")
    db.close()
    done = caas(stopped, "rebuild", "--projection", "analytics")
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["projection"] for r in reports] == ["analytics"]
    stopped.server.start()
    try:
        head = max(e["position"] for e in everything(stopped))
        with httpx.Client(timeout=30) as client:
            got = views(client, stopped.tenants[0], stopped.tokens, head)
        assert got["analytics"] == stopped.views["analytics"]
    finally:
        stopped.server.stop()


def test_worker_refuses_the_embedded_backend(tmp_path: Path) -> None:
    """``caas worker`` runs the distributed backend's processors; the embedded server runs its own."""
    env = {**os.environ, "CAAS_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "worker", "--backend", "embedded"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "the embedded backend runs its projections inside caas serve (use --backend kafka)" in done.stderr
    assert "Traceback" not in done.stderr
