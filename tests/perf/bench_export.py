"""Benchmark: ``caas export --format parquet`` beside a raw scan of the same log (issue 13).

A log of ~200k chat events is written through the real write path (``bench_rebuild.generate``:
``CommandService`` + ``SqliteEventLog``), its times spread over 30 days so the export writes a
partition per day and event type. Then, in interleaved rounds in this process:

- the scan: the log read as the export reads it (``caas.analytics.scan_rows``: the stored rows,
  ``Backend.replay_rows``), counted and dropped: the limit;
- the export: ``caas.analytics.export_async`` to Parquet (what ``caas export`` runs);
- ``bench_rebuild.raw_scan``: every SQLite row read and its payload decoded;
- the event scan: ``caas.analytics.scan``, events built as ``caas replay`` reads them.

Scans run with the cyclic garbage collector paused, as the export does.

Each figure is the median of the rounds, in events per second and per CPU second (the steadier
figure on a shared machine). Then JSONL and CSV exports once each, and ``caas export`` as a
subprocess: its own report and its peak RSS (``VmHWM``, from the report; the export streams, so
this stays flat as the log grows), the files read back by DuckDB (their count must equal the log's).

    .venv/bin/python -m tests.perf.bench_export [--events 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson

from caas.analytics import export_async, scan, scan_rows
from caas.export import Format
from caas.selection import Selection
from domain.base import format_time
from streams.projector import bulk_allocation
from tests.perf.bench_rebuild import generate, raw_scan
from tests.perf.common import PYTHON, ROOT, Workdir, figure, log, machine, run_async

TARGET_EVENTS_PER_S = 200_000.0  # issue 13
DAYS = 30


def spread(path: Path, days: int = DAYS) -> int:
    """Give the log's events times over ``days`` days, in position order (as a month of traffic)."""
    conn = sqlite3.connect(path)
    positions = [p for (p,) in conn.execute("SELECT position FROM events ORDER BY position")]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    step = timedelta(days=days) / max(1, len(positions))
    with conn:
        conn.executemany(
            "UPDATE events SET occurred_at = ? WHERE position = ?",
            ((format_time(start + step * i), p) for i, p in enumerate(positions)),
        )
    conn.close()
    return len(positions)


def timed(coroutine: Any) -> tuple[Any, float, float]:
    """``(result, wall seconds, CPU seconds of this process)`` of running ``coroutine``."""
    started, cpu = time.perf_counter(), time.process_time()
    result = run_async(coroutine)
    return result, time.perf_counter() - started, time.process_time() - cpu


async def count_scan(data: Path, rows: bool) -> int:
    count = 0
    with bulk_allocation():
        async for batch in (scan_rows if rows else scan)(data, Selection()):
            count += len(batch)
    return count


def rates(count: int, seconds: float, cpu: float) -> dict[str, Any]:
    return {"events": count, "seconds": round(seconds, 3), "events_per_second": round(count / seconds),
            "events_per_cpu_second": round(count / cpu), "load_1m": round(os.getloadavg()[0], 2)}  # fmt: skip


def median(rounds: list[dict[str, Any]], key: str) -> int:
    return round(statistics.median(r[key] for r in rounds))


def export_once(data: Path, out: Path, fmt: Format) -> dict[str, Any]:
    summary, seconds, cpu = timed(export_async(data, out, fmt, Selection()))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    result = {**rates(summary.events, seconds, cpu), "files": summary.files, "partitions": summary.partitions,
              "mib": round(size / 2**20, 1)}  # fmt: skip
    shutil.rmtree(out)
    return result


def cli_export(data: Path, out: Path) -> dict[str, Any]:
    """``caas export`` as a subprocess: its report line, wall and CPU time, peak RSS; the files
    read back by DuckDB."""
    env = {**os.environ, "CAAS_BACKEND": "embedded", "CAAS_DATA_DIR": str(data), "CAAS_LOG_LEVEL": "warning"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([PYTHON, "-m", "api.cli", "export", "--output", str(out)], env=env, cwd=ROOT,
                          capture_output=True, timeout=900, check=False)  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"caas export failed: {done.stderr.decode()[-2000:]}")
    report = orjson.loads(done.stdout)
    with duckdb.connect() as db:
        row = db.execute("SELECT count(*) FROM read_parquet(?, hive_partitioning = true)", [f"{out}/**/*.parquet"])
        read_back = row.fetchone()
    shutil.rmtree(out)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    count = read_back[0] if read_back else None
    return {"report": report, "process_wall_seconds": round(wall, 3), "process_cpu_seconds": round(cpu, 3),
            "peak_rss_mib": report["peak_rss_mib"], "duckdb_count": count}  # fmt: skip


def run(events: int = 200_000, rounds: int = 3) -> dict[str, Any]:
    with Workdir() as work:
        data = work / "data"
        data.mkdir()
        path = data / "events.db"
        log(f"export: generating {events} events through CommandService + SqliteEventLog")
        started = time.perf_counter()
        run_async(generate(path, events))
        generated = round(time.perf_counter() - started, 1)
        head = spread(path)
        log(f"export: {head} events in {generated}s, spread over {DAYS} days; {rounds} interleaved rounds")
        scans, exports, raws, event_scans = [], [], [], []
        for n in range(rounds):
            count, seconds, cpu = timed(count_scan(data, rows=True))
            scans.append(rates(count, seconds, cpu))
            exports.append(export_once(data, work / f"out-{n}", "parquet"))
            raws.append(raw_scan(path))
            count, seconds, cpu = timed(count_scan(data, rows=False))
            event_scans.append(rates(count, seconds, cpu))
            log(f"export: round {n}: scan {scans[-1]['events_per_second']}/s, "
                f"export {exports[-1]['events_per_second']}/s, raw {raws[-1]['events_per_second']}/s, "
                f"event scan {event_scans[-1]['events_per_second']}/s")  # fmt: skip
        others = {fmt: export_once(data, work / f"out-{fmt}", fmt) for fmt in ("jsonl", "csv")}
        cli = cli_export(data, work / "out-cli")
        log_mib = round(path.stat().st_size / 2**20, 1)
    if cli["duckdb_count"] != head:
        raise RuntimeError(f"DuckDB read {cli['duckdb_count']} rows back, the log has {head}")
    scan_rate, export_rate = median(scans, "events_per_second"), median(exports, "events_per_second")
    scan_cpu, export_cpu = median(scans, "events_per_cpu_second"), median(exports, "events_per_cpu_second")
    raw_rate, events_rate = median(raws, "events_per_second"), median(event_scans, "events_per_second")
    limit = (f"scan of the same log as the export reads it ({scan_rate}/s; raw SQLite scan + JSON decode "
             f"{raw_rate}/s; events as caas replay builds them {events_rate}/s)")  # fmt: skip
    figures = [
        figure("export_parquet_throughput", export_rate, "events/s", target=TARGET_EVENTS_PER_S, limit=limit,
               ratio_to=scan_rate),
        figure("export_parquet_events_per_cpu_second", export_cpu, "events/CPU s", target=TARGET_EVENTS_PER_S,
               limit=f"scan per CPU second ({scan_cpu})", ratio_to=scan_cpu),
        figure("export_jsonl_throughput", others["jsonl"]["events_per_second"], "events/s",
               target=TARGET_EVENTS_PER_S, limit=limit, ratio_to=scan_rate),
        figure("export_csv_throughput", others["csv"]["events_per_second"], "events/s",
               target=TARGET_EVENTS_PER_S, limit=limit, ratio_to=scan_rate),
    ]  # fmt: skip
    return {
        "setup": {"events": head, "log_mib": log_mib, "days": DAYS, "generate_seconds": generated, "rounds": rounds},
        "scan": scans,
        "export_parquet": exports,
        "raw_scan": raws,
        "event_scan": event_scans,
        "export_jsonl": others["jsonl"],
        "export_csv": others["csv"],
        "caas_export": cli,
        "figures": figures,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    result = run(args.events, args.rounds)
    print(orjson.dumps({"machine": machine(), "export": result}, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
