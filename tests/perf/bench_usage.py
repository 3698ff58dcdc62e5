"""Usage metering: what it costs the hot paths, how fast usage is read, how fast it is rebuilt.

- metering on vs off (``CAAS_METERING``), embedded: HTTP posts/s (bench_http's load) and fan-out
  deliveries/s (bench_fanout's), each pair measured back to back with the quota check off
  (``CAAS_QUOTAS=off``) on both sides; target: under 5% lost. The quota check's own cost is a
  separate figure: posts/s with metering on, quotas on vs off.
- ``GET /v1/usage``-equivalent reads (``projections.usage.usage_report`` of every meter, the
  response body rendered and encoded as the endpoint does, all on one event loop as the server
  runs them) over a year of usage (8,760 hours, a socket sample every minute, 45 messages an
  hour as the counters say, each with its own message document, 500 users a month) in the
  SQLite read store: p50/p99 per granularity; target p99 <= 50 ms; limit: a raw scan and JSON
  decode of the rows such a report reads. What quota checks read (``stored_bytes`` alone, and
  ``messages`` + ``api_writes`` of the month so far) is timed too.
- ``caas rebuild --projection usage`` of a generated log (bench_rebuild's chat history);
  target >= 100,000 events/s; limit: the raw SQLite scan + JSON decode of that log.

    python -m tests.perf.bench_usage [--events 1000000] [--only overhead,query,rebuild]
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from adapters.sqlite_store import SqliteReadStore
from api.usage import render
from projections import usage
from projections.ports import Op, Tally
from projections.usage.projection import sample_key
from tests.perf import bench_fanout, bench_http, bench_rebuild
from tests.perf.common import Workdir, figure, log, machine, make_chat, percentiles, run_async, start_caas, uncapped

TARGET_OVERHEAD = 0.05
TARGET_QUERY_P99_MS = 50.0
TARGET_REBUILD = 100_000.0
YEAR = datetime(2025, 1, 1, tzinfo=UTC)


# --- metering on vs off ------------------------------------------------------------------------
# The quota check's cost is measured on a plan that caps what the load writes, far above what it
# writes (tests.perf.common.UNCAPPED_PLANS): the check runs on every post and never refuses one (a
# refused post is cheaper than a posted one, so the built-in free plan's 10,000-message cap would
# flatter the figure).


def http_posts(metering: str, quotas: str, seconds: float, connections: int) -> dict[str, Any]:
    with Workdir() as work:
        server = start_caas(work, CAAS_METERING=metering, CAAS_QUOTAS=quotas, **uncapped(work))
        try:
            chat = make_chat(server, users=bench_http.USERS, channels=bench_http.CHANNELS)
            assert server.process is not None
            reqs = bench_http.requests(chat.tokens, chat.channels)
            result: dict[str, Any] = bench_http.measure(server.process.pid, server.port, reqs, connections, seconds)
            if result["errors"]:  # a refused or failed post would make the figure meaningless
                raise RuntimeError(f"posts failed with metering {metering}, quotas {quotas}: {result['errors']}")
            return result
        finally:
            server.stop()


MODES = {"off": ("off", "off"), "on": ("on", "off"), "quotas": ("on", "on")}  # name -> (metering, quotas)


def overhead(seconds: float, connections: int, subscribers: int, messages: int) -> dict[str, Any]:
    """Posts/s with metering off, metering on and metering on with the quota check (the default
    of a server), interleaved; fan-out deliveries/s with metering off and on (no quota check
    there: deliveries are not capped)."""
    out: dict[str, Any] = {"http": {}, "fanout": {}}
    for _ in range(2):  # interleaved, so a drift in load hits every mode
        for mode, (metering, quotas) in MODES.items():
            log(f"usage: http posts, metering {metering}, quotas {quotas}")
            out["http"].setdefault(mode, []).append(http_posts(metering, quotas, seconds, connections))
    for _ in range(3):  # interleaved too: one fan-out run against another spreads by 10 % and more
        for metering in ("off", "on"):
            log(f"usage: fan-out, metering {metering}")
            result, _ = bench_fanout.caas_fan_out(
                subscribers, messages, "none", CAAS_METERING=metering, CAAS_QUOTAS="off"
            )
            out["fanout"].setdefault(metering, []).append(result)
    best = {kind: {m: max(r["rps" if kind == "http" else "deliveries_per_s"] for r in runs)
                   for m, runs in modes.items()} for kind, modes in out.items()}  # fmt: skip
    figures = []
    for name, kind, unit, base, measured, what in (
        ("metering_http_loss", "http", "posts/s", "off", "on", "metering off vs on, quotas off"),
        ("metering_fanout_loss", "fanout", "deliveries/s", "off", "on", "metering off vs on"),
        ("quota_check_http_loss", "http", "posts/s", "on", "quotas", "metering on; quota check off vs on"),
    ):
        off, on = best[kind][base], best[kind][measured]
        loss = round(1 - on / off, 4) if off else 0.0
        figures.append(
            figure(name, loss, f"fraction of {unit} lost", target=TARGET_OVERHEAD, higher_is_better=False,
                   limit=f"{what}: {off:.0f} vs {on:.0f} {unit}")
        )  # fmt: skip
    return {"runs": out, "best": best, "figures": figures}


# --- reading a year of hourly buckets ------------------------------------------------------------
MESSAGES_PER_HOUR = 45  # the hours' messages + replies counters below


def year_of_usage(store: SqliteReadStore, tenant_id: str) -> int:
    """Fill ``store`` with a busy tenant's year, written as the projection writes it: every
    hour has every counter, a socket sample for every minute, and a message document for each
    of its 45 messages (394,200 in the year, so reading stored bytes by scanning messages
    would show); 500 active users a month.
    Returns how many documents it wrote."""
    ops: list[Op] = []
    position = 0
    for h in range(24 * 365):
        hour = usage.format_hour(YEAR + timedelta(hours=h))
        day, hh = hour[:10], hour[11:13]
        position += 1
        counters = {"messages": 40, "replies": 5, "edits": 2, "deliveries": 4000, "api_reads": 300,
                    "api_writes": 60, "connection_ms": 36_000_000}  # fmt: skip
        ops.append(Op("usage", tenant_id, f"{day}/0", position, inc={f"{k}.{hh}": v for k, v in counters.items()},
                      insert={"day": day, "shard": 0}))  # fmt: skip
        for m in range(60):  # as the projection writes a node's sample: the sockets, raising the hour's peak
            position += 1
            field = sample_key(f"{hour}:{m:02d}:00")
            peak = Tally("usage_peaks", f"{day}/0", f"peak.{hh}", insert={"day": day, "shard": 0}, high=True)
            ops.append(Op("usage_samples", tenant_id, f"{day}/0", position, inc={field: 50 + (m + h) % 30},
                          insert={"day": day, "shard": 0}, measure=(field,), tally=(peak,)))  # fmt: skip
        # as the projection writes them: a message's size moves the hour's change and the total
        tally = (Tally("usage_stored", f"{day}/0", f"bytes.{hh}", insert={"day": day, "shard": 0}),
                 Tally("usage_bytes", "0", "bytes", insert={"shard": 0}))  # fmt: skip
        for k in range(MESSAGES_PER_HOUR):
            position += 1
            ops.append(Op("usage_messages", tenant_id, f"c{k % 20}/{h}-{k}", position,
                          set={"hour": hour, "text_bytes": 70, "attachment_bytes": 0, "deleted_at": None},
                          measure=("text_bytes", "attachment_bytes"), measure_unless="deleted_at",
                          tally=tally))  # fmt: skip
    for month in range(1, 13):
        for u in range(500):
            position += 1
            first = f"2025-{month:02d}-{1 + u % 28:02d}T{u % 24:02d}"
            user = {"month": first[:7], "user_id": f"u{u}", "shard": 0}
            ops.append(Op("usage_users", tenant_id, f"2025-{month:02d}/u{u}/0", position,
                          insert=user, min={"first_hour": first}))  # fmt: skip
    for start in range(0, len(ops), 5000):
        store.apply_sync(usage.NAME, ops[start : start + 5000], position)
    return len({(op.collection, op.id) for op in ops} | {(t.collection, t.id) for op in ops for t in op.tally})


READ = ("usage", "usage_peaks", "usage_users", "usage_stored", "usage_bytes")  # what a report of every meter reads


def raw_scan(path: Path, tenant_id: str) -> float:
    """The floor: the rows a report of every meter reads, fetched and decoded, nothing more."""
    conn = sqlite3.connect(path)
    started = time.perf_counter()
    for table in (f"rm_{name}" for name in READ):
        for (doc,) in conn.execute(f"SELECT doc FROM {table} WHERE tenant_id = ?", (tenant_id,)):
            orjson.loads(doc)
    conn.close()
    return (time.perf_counter() - started) * 1000


async def timed(rounds: int, read: Callable[[], Awaitable[object]]) -> dict[str, float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        await read()
        samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples)


async def _queries(store: SqliteReadStore, rounds: int) -> dict[str, Any]:
    """Every query on one event loop, as the server runs them."""
    end = YEAR + timedelta(days=365)
    results: dict[str, Any] = {}
    for granularity in usage.GRANULARITIES:
        asked = usage.UsageRange(YEAR, end, granularity, list(usage.METERS))

        async def report(asked: usage.UsageRange = asked) -> bytes:  # the endpoint's work: read, render, encode
            found = await usage.usage_report(store, "t1", asked.start, asked.end, asked.granularity, asked.meters)
            return orjson.dumps(render("t1", asked, found))

        buckets = len(orjson.loads(await report())["buckets"])
        results[granularity] = {"buckets": buckets, "ms": await timed(rounds, report)}
        log(f"usage: {granularity}: p99 {results[granularity]['ms']['p99']} ms")
    month = end - timedelta(days=30)  # what a quota check reads: the month so far
    results["stored_bytes_now"] = {
        "buckets": 0,
        "ms": await timed(rounds, lambda: usage.current_totals(store, "t1", month, end, ["stored_bytes"])),
    }
    results["quota_month"] = {
        "buckets": 0,
        "ms": await timed(rounds, lambda: usage.current_totals(store, "t1", month, end, ["messages", "api_writes"])),
    }
    log(f"usage: stored bytes now: p99 {results['stored_bytes_now']['ms']['p99']} ms")
    return results


def query(rounds: int) -> dict[str, Any]:
    with Workdir() as work:
        path = work / "read.db"
        store = SqliteReadStore(path)
        run_async(store.start())
        docs = year_of_usage(store, "t1")
        run_async(store.settle())
        log(f"usage: {docs} documents for a year; querying")
        results = run_async(_queries(store, rounds))
        raw = percentiles([raw_scan(path, "t1") for _ in range(rounds)])
        run_async(store.close())
    figures = [
        figure(f"usage_query_year_{g}_p99" if g in usage.GRANULARITIES else f"usage_{g}_p99", r["ms"]["p99"],
               "ms", target=TARGET_QUERY_P99_MS, higher_is_better=False,
               limit=f"raw SQLite scan + JSON decode of the rows a report of every meter reads: p99 {raw['p99']} ms")
        for g, r in results.items()
    ]  # fmt: skip
    return {"documents": docs, "rounds": rounds, "queries": results, "raw_scan_ms": raw, "figures": figures}


# --- rebuilding usage from the log -------------------------------------------------------------------
def rebuild(events: int) -> dict[str, Any]:
    with Workdir() as work:
        data = work / "data"
        data.mkdir()
        log(f"usage: generating {events} events")
        head = run_async(bench_rebuild.generate(data / "events.db", events))
        raw = bench_rebuild.raw_scan(data / "events.db")
        rebuilt = bench_rebuild.caas_rebuild(data, "--projection", "usage", timeout=3600)
    log(f"usage: rebuilt {rebuilt['events']} events at {rebuilt['events_per_second']}/s")
    return {
        "events": head,
        "caas_rebuild_usage": rebuilt,
        "raw_scan": raw,
        "figures": [
            figure("usage_rebuild_throughput", rebuilt["events_per_second"], "events/s", target=TARGET_REBUILD,
                   limit=f"raw SQLite scan + JSON decode ({raw['events_per_second']}/s)",
                   ratio_to=raw["events_per_second"]),
            figure("usage_rebuild_events_per_cpu_second", rebuilt["events_per_cpu_second"], "events/CPU s",
                   target=round(bench_rebuild.TARGET_RATIO * raw["events_per_cpu_second"]),
                   limit=f"raw scan per CPU second ({raw['events_per_cpu_second']})",
                   ratio_to=raw["events_per_cpu_second"]),
        ],
    }  # fmt: skip


def run(
    *,
    events: int = 1_000_000,
    rounds: int = 50,
    seconds: float = 10.0,
    connections: int = 32,
    subscribers: int = 1000,
    messages: int = 300,
    only: tuple[str, ...] = ("overhead", "query", "rebuild"),
) -> dict[str, Any]:
    out: dict[str, Any] = {"figures": []}
    if "query" in only:
        out["query"] = query(rounds)
    if "rebuild" in only:
        out["rebuild"] = rebuild(events)
    if "overhead" in only:
        out["overhead"] = overhead(seconds, connections, subscribers, messages)
    for part in ("query", "rebuild", "overhead"):
        out["figures"] += out.get(part, {}).get("figures", [])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--only", default="overhead,query,rebuild")
    args = p.parse_args()
    result = run(events=args.events, rounds=args.rounds, seconds=args.seconds, only=tuple(args.only.split(",")))
    print(orjson.dumps({"machine": machine(), "usage": result}, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
