"""Tenant analytics (issue 13): what the projection costs the hot path and a rebuild, and how fast
``GET /v1/analytics`` reads.

- HTTP posts/s and server CPU µs per post (bench_http's load, embedded, quota check off) with the
  analytics projection and without it: "without" is ``caas serve`` run from a snapshot of the
  commit this branch starts from (``git archive`` of the merge base with ``main``), so the two
  differ by exactly this change. Rounds are interleaved (base, analytics, base, …) so a drift
  in the machine's load hits both; the figures are the medians. Target: under 5% lost.
- ``caas rebuild --projection analytics`` of bench_rebuild's generated chat log, beside
  ``--projection usage`` of the same log and the raw SQLite scan + JSON decode of it.
- ``analytics_report`` (as the endpoint calls it, body rendered and encoded) over a busy
  tenant's quarter in the SQLite read store: 50 channels with posts by 3 authors in every hour of
  92 days, 300 active users a day; p50/p99 by day (92 buckets) and by month; target p99 <= 200 ms.

    python -m tests.perf.bench_analytics [--seconds 8] [--rounds 3] [--events 200000] [--only overhead,rebuild,query]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from adapters.sqlite_store import SqliteReadStore
from api.analytics import render
from domain.events import Event
from projections import analytics
from tests.perf import bench_http, bench_rebuild
from tests.perf.common import ROOT, Workdir, figure, log, machine, make_chat, percentiles, run_async, start_caas

TARGET_OVERHEAD = 0.05
TARGET_QUERY_P99_MS = 200.0
TARGET_REBUILD_RATIO = 0.3  # of the raw scan, as for the chat rebuild (issue 12)


# --- with and without the projection -------------------------------------------------------------
def base_snapshot(into: Path) -> str:
    """The code this branch starts from, extracted into ``into``; its commit."""
    commit = subprocess.run(
        ["git", "merge-base", "HEAD", "main"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return commit


def http_posts(code: Path, seconds: float, connections: int) -> dict[str, Any]:
    with Workdir() as work:
        with contextlib.chdir(code):  # ``python -m api.cli serve`` imports the code of its cwd
            server = start_caas(work, CAAS_QUOTAS="off")
        try:
            chat = make_chat(server, users=bench_http.USERS, channels=bench_http.CHANNELS)
            assert server.process is not None
            reqs = bench_http.requests(chat.tokens, chat.channels)
            result: dict[str, Any] = bench_http.measure(server.process.pid, server.port, reqs, connections, seconds)
            return result
        finally:
            server.stop()


def overhead(seconds: float, connections: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="caas-base-") as tmp:
        base = Path(tmp)
        commit = base_snapshot(base)
        runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
        for n in range(rounds):
            for mode, code in (("without", base), ("with", ROOT)):
                log(f"analytics: round {n + 1}, http posts {mode} the projection")
                runs[mode].append(http_posts(code, seconds, connections))
    med = {
        mode: {
            "rps": round(statistics.median(r["rps"] for r in found), 1),
            "server_cpu_us_per_op": round(statistics.median(r["server_cpu_us_per_op"] for r in found), 1),
        }
        for mode, found in runs.items()
    }
    off, on = med["without"]["rps"], med["with"]["rps"]
    cpu_off, cpu_on = med["without"]["server_cpu_us_per_op"], med["with"]["server_cpu_us_per_op"]
    ratios = [w["rps"] / b["rps"] for b, w in zip(runs["without"], runs["with"], strict=True)]
    figures = [
        figure("analytics_http_loss", round(1 - on / off, 4), "fraction of posts/s lost", target=TARGET_OVERHEAD,
               higher_is_better=False, limit=f"median of {rounds} interleaved rounds: {off:.0f} vs {on:.0f} posts/s"),
        figure("analytics_http_cpu_us_per_post_added", round(cpu_on - cpu_off, 1), "server CPU us per post",
               target=TARGET_OVERHEAD * cpu_off, higher_is_better=False,
               limit=f"server CPU per post without the projection: {cpu_off} us (with: {cpu_on} us)"),
    ]  # fmt: skip
    return {"base_commit": commit, "runs": runs, "medians": med, "round_ratios": ratios, "figures": figures}


# --- rebuild ------------------------------------------------------------------------------------
def rebuild(events: int) -> dict[str, Any]:
    with Workdir() as work:
        data = work / "data"
        data.mkdir()
        log(f"analytics: generating {events} events")
        head = run_async(bench_rebuild.generate(data / "events.db", events))
        raw = bench_rebuild.raw_scan(data / "events.db")
        mine = bench_rebuild.caas_rebuild(data, "--projection", "analytics", timeout=3600)
        usage = bench_rebuild.caas_rebuild(data, "--projection", "usage", timeout=3600)
    log(f"analytics: rebuilt {mine['events']} events at {mine['events_per_second']}/s")
    log(f"analytics: usage rebuilt at {usage['events_per_second']}/s")
    return {
        "events": head,
        "caas_rebuild_analytics": mine,
        "caas_rebuild_usage": usage,
        "raw_scan": raw,
        "figures": [
            figure("analytics_rebuild_throughput", mine["events_per_second"], "events/s",
                   target=round(TARGET_REBUILD_RATIO * raw["events_per_second"]),
                   limit=f"raw SQLite scan + JSON decode ({raw['events_per_second']}/s); usage's rebuild "
                         f"{usage['events_per_second']}/s", ratio_to=raw["events_per_second"]),
            figure("analytics_rebuild_events_per_cpu_second", mine["events_per_cpu_second"], "events/CPU s",
                   target=round(TARGET_REBUILD_RATIO * raw["events_per_cpu_second"]),
                   limit=f"raw scan per CPU second ({raw['events_per_cpu_second']}); usage's rebuild "
                         f"{usage['events_per_cpu_second']}", ratio_to=raw["events_per_cpu_second"]),
        ],
    }  # fmt: skip


# --- reading a quarter ---------------------------------------------------------------------------
QUARTER = datetime(2026, 1, 1, tzinfo=UTC)
DAYS, CHANNELS, AUTHORS, USERS_A_DAY = 92, 50, 3, 300


def busy_quarter() -> list[Event]:
    """Posts by 3 authors in every channel hour of 92 days, and 300 users reading each day."""
    events: list[Event] = []
    position = 0

    def add(stream: str, kind: str, moment: datetime, payload: dict[str, Any]) -> None:
        nonlocal position
        position += 1
        events.append(Event(event_id=f"e{position}", tenant_id="t", stream=stream, seq=position, position=position,
                            type=kind, schema_version=1, occurred_at=moment.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                            actor=None, payload=payload))  # fmt: skip

    for hour in range(DAYS * 24):
        start = QUARTER + timedelta(hours=hour)
        for c in range(CHANNELS):
            for a in range(AUTHORS):
                moment = start + timedelta(minutes=7 * a + c % 5)
                payload = {"message_id": f"m{position}", "author_id": f"u{(c + a) % 200}", "text": "x"}
                add(f"channel:c{c}", "MessagePosted", moment, payload)
    for day in range(DAYS):
        for u in range(USERS_A_DAY):
            moment = QUARTER + timedelta(days=day, minutes=u)
            add(f"channel:c{u % CHANNELS}", "ReadMarkerMoved", moment, {"user_id": f"r{u}", "seq": 1})
    return events


async def _queries(store: SqliteReadStore, rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (start, end, grain) in {
        "day_92": ("2026-01-01T00:00:00Z", "2026-04-03T00:00:00Z", "day"),
        "day_7": ("2026-02-01T00:00:00Z", "2026-02-08T00:00:00Z", "day"),
        "month_3": ("2026-01-01T00:00:00Z", "2026-04-01T00:00:00Z", "month"),
    }.items():
        asked = analytics.parse_range(start, end, grain)
        samples, cpu = [], []
        for _ in range(rounds):
            began, began_cpu = time.perf_counter(), time.process_time()  # the store's thread included
            report = await analytics.analytics_report(store, "t", asked)
            orjson.dumps(render("t", asked, report))
            samples.append((time.perf_counter() - began) * 1000)
            cpu.append((time.process_time() - began_cpu) * 1000)
        out[name] = {**percentiles(samples), "cpu_ms_median": round(statistics.median(cpu), 1)}
    return out


def query(rounds: int) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            store = SqliteReadStore(Path(tmp) / "read.db")
            await store.start()
            events = busy_quarter()
            log(f"analytics: loading {len(events)} events of a busy quarter")
            for i in range(0, len(events), 20_000):
                part = events[i : i + 20_000]
                await store.apply(analytics.NAME, [op for e in part for op in analytics.project(e)], part[-1].position)
            docs = {c: await store.count(c, "t", {}) for c in analytics.COLLECTIONS}
            found = await _queries(store, rounds)
            await store.close()
            return {"events": len(events), "documents": docs, "queries": found}

    result = run_async(go())
    result["figures"] = [
        figure(f"analytics_query_{name}_p99", r["p99"], "ms", target=TARGET_QUERY_P99_MS, higher_is_better=False,
               limit=f"p50 {r['p50']} ms, CPU {r['cpu_ms_median']} ms a report (median); "
                     f"{result['documents']['analytics_channels']} channel-days in the store")
        for name, r in result["queries"].items()
    ]  # fmt: skip
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--query-rounds", type=int, default=20)
    p.add_argument("--only", default="overhead,rebuild,query")
    args = p.parse_args()
    only = args.only.split(",")
    out: dict[str, Any] = {"figures": []}
    if "query" in only:
        out["query"] = query(args.query_rounds)
    if "rebuild" in only:
        out["rebuild"] = rebuild(args.events)
    if "overhead" in only:
        out["overhead"] = overhead(args.seconds, args.connections, args.rounds)
    for part in ("overhead", "rebuild", "query"):
        out["figures"] += out.get(part, {}).get("figures", [])
    print(orjson.dumps({"machine": machine(), "analytics": out}, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
