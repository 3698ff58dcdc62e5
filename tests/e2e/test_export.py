"""``caas export`` and ``caas.analytics`` on the log of a stopped server, on both backends, as an
analyst runs them: what DuckDB reads back from the Parquet files, and the JSONL and CSV files,
equal what ``caas replay`` prints for the same selection (docs/analyst.md)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from adapters.kafka.codec import decode_position
from api.settings import Settings
from caas import analytics
from domain.base import format_time
from tests.cluster import Cluster
from tests.support import Server, bearer, new_tenant

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What DuckDB gives back, as replay's JSON lines: the time from its epoch milliseconds, the
# payload as JSON text, and the hive partition columns of the path
READ_BACK = """
SELECT event_id, tenant_id, stream, seq, position, type, schema_version, epoch_ms(occurred_at) AS occurred_ms,
       actor, command_id, causation_id, correlation_id, payload::VARCHAR AS payload, day::VARCHAR AS day
FROM read_parquet(?, hive_partitioning = true)
"""


@dataclass
class Log:
    """A stopped server's log: how to run ``caas`` on it, and the order ``caas replay`` prints in."""

    backend: str
    env: dict[str, str]
    tenants: list[str]
    order: Callable[[int], Any]  # a position's place in the log's order

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "api.cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=300, check=False)  # fmt: skip
        if check:
            assert done.returncode == 0, done.stderr[-3000:]
        return done

    def replay(self, *args: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.run("replay", *args).stdout.splitlines()]

    def settings(self) -> Settings:
        return Settings.from_env(self.env)


def ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code in (200, 201), f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}"
    data: dict[str, Any] = r.json()
    return data


def fill(url: str) -> list[str]:
    """Two tenants' chat: channels, messages, a thread reply, an edit, a delete, reactions, a ban."""
    with httpx.Client(timeout=30) as client:
        acme, umbrella = new_tenant(client, url, "acme"), new_tenant(client, url, "umbrella")
        tokens = {u: acme.user(client, u) for u in ("alice", "bob")}
        umbrella.user(client, "zed")
        a, b = bearer(tokens["alice"]), bearer(tokens["bob"])
        for cid in ("general", "random", "ops"):
            ok(client.post(f"{url}/v1/channels", json={"channel_id": cid, "name": cid, "members": ["bob"]}, headers=a))
        ok(client.post(f"{url}/v1/channels", json={"channel_id": "z", "name": "Z", "members": ["zed"]},
                       headers=umbrella.headers()))  # fmt: skip
        posted = []
        for i in range(12):
            cid = ("general", "random", "ops")[i % 3]
            posted.append((cid, ok(client.post(f"{url}/v1/channels/{cid}/messages", json={"text": f"m {i} ✓"},
                                               headers=a if i % 2 else b))["message_id"]))  # fmt: skip
            ok(client.post(f"{url}/v1/channels/z/messages", json={"text": f"zed {i}", "user_id": "zed"},
                           headers=umbrella.headers()))  # fmt: skip
        (c0, m0), (c1, m1), (c2, m2) = posted[:3]
        ok(client.patch(f"{url}/v1/channels/{c0}/messages/{m0}", json={"text": 'edited, with "quotes"'}, headers=b))
        ok(client.delete(f"{url}/v1/channels/{c1}/messages/{m1}", headers=a))
        ok(client.post(f"{url}/v1/channels/{c2}/messages/{m2}/reactions", json={"emoji": "🎉"}, headers=b))
        ok(client.post(f"{url}/v1/channels/{c2}/messages", json={"text": "a reply", "parent_id": m2}, headers=a))
        ok(client.post(f"{url}/v1/channels/general/bans", json={"user_id": "bob"}, headers=a))
    return [acme.tenant_id, umbrella.tenant_id]


@pytest.fixture(scope="module", params=["embedded", "kafka"])
def log(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Log]:
    root = Path(tmp_path_factory.mktemp(f"caas-export-{request.param}"))
    base = {k: v for k, v in os.environ.items() if not k.startswith("CAAS_")}
    if request.param == "embedded":
        srv = Server(root / "data").start()
        try:
            tenants = fill(srv.url)
        finally:
            srv.stop()  # replay and export read the log of a stopped server: both see the same events
        env = {**base, "CAAS_BACKEND": "embedded", "CAAS_DATA_DIR": str(srv.data_dir)}
        yield Log("embedded", env, tenants, lambda position: position)
        return
    cluster = Cluster(root / "cluster", partitions=2)  # two partitions: replay prints one, then the other
    try:
        cluster.start(workers=1, nodes=1)
        tenants = fill(cluster.nodes[0].url)
        settings = cluster.settings()
    finally:
        cluster.stop()
    env = {**base, **settings, "CAAS_DATA_DIR": str(root / "cli")}
    yield Log("kafka", env, tenants, decode_position)  # (partition, offset): the topic read partition by partition


def read_back(directory: Path, log: Log) -> list[dict[str, Any]]:
    """The Parquet export as DuckDB reads the directory, as replay's JSON objects, in the log's order."""
    with duckdb.connect() as db:
        cursor = db.execute(READ_BACK, [f"{directory}/**/*.parquet"])
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    events = []
    for row in rows:
        occurred_at = format_time(EPOCH + timedelta(milliseconds=row.pop("occurred_ms")))
        assert row.pop("day") == occurred_at[:10], "the day partition is the day of occurred_at (UTC)"
        events.append({**row, "occurred_at": occurred_at, "payload": json.loads(row["payload"])})
    return sorted(events, key=lambda e: log.order(e["position"]))


def export(log: Log, out: Path, *args: str) -> dict[str, Any]:
    done = log.run("export", "--output", str(out), *args)
    report: dict[str, Any] = json.loads(done.stdout)
    assert json.loads((out / "_export.json").read_text())["events"] == report["events"]
    return report


def test_parquet_export_read_back_by_duckdb_equals_replay(log: Log, tmp_path: Path) -> None:
    replayed = log.replay()
    report = export(log, tmp_path / "all")
    assert report["format"] == "parquet" and report["events"] == len(replayed) > 50
    assert read_back(tmp_path / "all", log) == replayed  # same events, same fields, same order
    days_and_types = {(e["occurred_at"][:10], e["type"]) for e in replayed}
    found = {(p.parent.parent.name, p.parent.name) for p in (tmp_path / "all").glob("day=*/type=*/part-*.parquet")}
    assert found == {(f"day={day}", f"type={t}") for day, t in days_and_types}  # a directory per day and type
    assert report["partitions"] == len(days_and_types)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "the staging directory was renamed away"


def test_duckdb_prunes_and_unnests_the_payload(log: Log, tmp_path: Path) -> None:
    export(log, tmp_path / "x", "--tenant", log.tenants[0])
    with duckdb.connect() as db:
        texts = db.execute(
            "SELECT payload->>'$.text' FROM read_parquet(?, hive_partitioning = true) "
            "WHERE type = 'MessagePosted' AND payload->>'$.parent_id' IS NULL",
            [f"{tmp_path / 'x'}/**/*.parquet"],
        ).fetchall()
    assert sorted(t for (t,) in texts) == sorted(f"m {i} ✓" for i in range(12))  # Kafka: channels on two partitions


def test_jsonl_export_is_replays_output(log: Log, tmp_path: Path) -> None:
    for selection in ([], ["--tenant", log.tenants[1]], ["--types", "MessagePosted,MessageEdited"]):
        out = tmp_path / f"jsonl-{len(list(tmp_path.iterdir()))}"
        export(log, out, "--format", "jsonl", *selection)
        assert (out / "events.jsonl").read_text() == log.run("replay", *selection).stdout
        assert sorted(p.name for p in out.iterdir()) == ["_export.json", "events.jsonl"]


def test_csv_export_is_replays_csv(log: Log, tmp_path: Path) -> None:
    export(log, tmp_path / "csv", "--format", "csv", "--tenant", log.tenants[0])
    written = (tmp_path / "csv" / "events.csv").read_bytes()
    printed = log.run("replay", "--format", "csv", "--tenant", log.tenants[0]).stdout
    assert written.decode() == printed.replace("\n", "\r\n")  # text-mode stdout read back turns \r\n into \n
    rows = list(csv.reader(io.StringIO(written.decode(), newline="")))
    assert rows[0] == ["position", "tenant_id", "stream", "seq", "type", "occurred_at", "event_id", "payload"]
    assert len(rows) - 1 == len(log.replay("--tenant", log.tenants[0]))


def test_export_filters_by_tenant_types_and_window(log: Log, tmp_path: Path) -> None:
    everything = log.replay()
    acme = [e for e in everything if e["tenant_id"] == log.tenants[0]]
    positions = sorted(e["position"] for e in acme)
    low, high = positions[len(positions) // 4], positions[3 * len(positions) // 4]
    times = sorted(e["occurred_at"] for e in acme)
    early, late = times[len(times) // 4], times[3 * len(times) // 4]
    wanted = {"MessagePosted", "ReactionAdded", "MemberBanned"}
    cases: dict[str, tuple[list[str], Callable[[dict[str, Any]], bool]]] = {
        "tenant": (["--tenant", log.tenants[0]], lambda e: e["tenant_id"] == log.tenants[0]),
        "types": (["--types", ",".join(sorted(wanted))], lambda e: e["type"] in wanted),
        "positions": (["--since", str(low), "--until", str(high)], lambda e: low <= e["position"] < high),
        "times": (["--since", early, "--until", late], lambda e: early <= e["occurred_at"] < late),
        "all of them": (
            ["--tenant", log.tenants[0], "--types", "MessagePosted", "--since", str(low), "--until", late],
            lambda e: (
                e["tenant_id"] == log.tenants[0]
                and e["type"] == "MessagePosted"
                and low <= e["position"]
                and e["occurred_at"] < late
            ),
        ),
    }
    for name, (args, admits) in cases.items():
        expected = [e for e in everything if admits(e)]
        assert expected, f"{name}: the selection holds events"
        out = tmp_path / name.replace(" ", "-")
        assert export(log, out, *args)["events"] == len(expected), name
        assert read_back(out, log) == expected, name


def test_python_api_reads_what_replay_prints(log: Log, tmp_path: Path) -> None:
    replayed = log.replay("--tenant", log.tenants[0])
    source = log.settings()
    events = list(analytics.iter_events(source, tenant=log.tenants[0]))
    assert [e.model_dump() for e in events] == replayed
    table = analytics.load_table(source, tenant=log.tenants[0])
    assert table.schema.equals(analytics.SCHEMA, check_metadata=True)
    assert table.column("position").to_pylist() == [e["position"] for e in replayed]
    assert [json.loads(p) for p in table.column("payload").to_pylist()] == [e["payload"] for e in replayed]
    for fmt in ("parquet", "jsonl"):
        summary = analytics.export(source, tmp_path / fmt, format=fmt, tenant=log.tenants[0])
        assert summary.events == len(replayed)
        back = analytics.read_export(tmp_path / fmt)
        assert back.sort_by("position").equals(table.sort_by("position")), fmt
    analytics.export(source, tmp_path / "csv", format="csv", tenant=log.tenants[0])
    csv_back = analytics.read_export(tmp_path / "csv")
    assert csv_back.column_names == ["position", "tenant_id", "stream", "seq", "type", "occurred_at", "event_id",
                                     "payload"]  # fmt: skip
    assert csv_back.to_pylist() == table.select(csv_back.column_names).to_pylist()
    if log.backend == "embedded":  # a data directory is a source too
        by_path = analytics.iter_events(log.env["CAAS_DATA_DIR"], tenant=log.tenants[0])
        assert [e.model_dump() for e in by_path] == replayed


def test_python_api_runs_inside_a_running_event_loop(log: Log) -> None:
    """A notebook calls the synchronous functions from a thread whose event loop runs."""

    async def in_a_notebook() -> list[int]:
        first = []
        for event in analytics.iter_events(log.settings(), types=["MessagePosted"]):
            first.append(event.position)
            if len(first) == 3:
                break  # leaving early stops the read
        return first

    first = asyncio.run(in_a_notebook())
    assert first == [e["position"] for e in log.replay("--types", "MessagePosted")][:3]


def test_export_of_nothing_is_an_empty_export(log: Log, tmp_path: Path) -> None:
    report = export(log, tmp_path / "none", "--tenant", "t-nobody")
    assert (report["events"], report["files"], report["partitions"]) == (0, 0, 0)
    assert [p.name for p in (tmp_path / "none").iterdir()] == ["_export.json"]
    assert analytics.read_export(tmp_path / "none").num_rows == 0


@pytest.mark.parametrize("command", ["export", "replay"])
def test_a_blank_tenant_is_refused_not_read_as_every_tenant(log: Log, tmp_path: Path, command: str) -> None:
    """``--tenant "$TID"`` with ``$TID`` unset: refused, nothing written, on both backends."""
    out = tmp_path / "out"
    args = ["--output", str(out)] if command == "export" else []
    done = log.run(command, *args, "--tenant", "", check=False)
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "--tenant takes a tenant id" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.stdout == ""
    assert not out.exists()


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda out: analytics.export(out.parent / "data", out, format="xlsx"), "export formats"),  # type: ignore[arg-type]
        (lambda out: analytics.export(out.parent / "data", out, types=["Bogus"]), "Bogus"),
        (lambda out: analytics.load_table(out.parent / "data", since="yesterday"), "RFC 3339"),
        (lambda out: list(analytics.iter_events(out.parent / "data", since=5, until=5)), "empty"),
        (lambda out: list(analytics.iter_events(out.parent / "data", until=-1)), "0 or more"),
        (lambda out: analytics.export(out.parent / "data", out, tenant=""), "tenant id"),
        (lambda out: analytics.load_table(out.parent / "data", tenant=" "), "tenant id"),
    ],
)
def test_python_api_refuses_bad_input_before_it_reads_the_log(
    tmp_path: Path, call: Callable[[Path], object], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        call(tmp_path / "out")
    assert list(tmp_path.iterdir()) == [], "neither the log nor the output was touched"
