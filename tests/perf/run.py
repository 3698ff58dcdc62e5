"""Run every CAAS benchmark and print one JSON document (``make bench``).

    .venv/bin/python -m tests.perf.run [--only http,ws_latency,fanout,rebuild] [--quick]
    .venv/bin/python -m tests.perf.run --table saved.json   # the summary as a Markdown table

Each figure is measured in the same run as its limit (bare Starlette, bare ``websockets``,
raw SQLite scan) and reported beside its target; nothing here asserts a timing. Progress
goes to stderr, the JSON document to stdout. Every benchmark module also runs alone:
``python -m tests.perf.bench_http`` etc.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import orjson

from tests.perf import (
    bench_distributed,
    bench_export,
    bench_fanout,
    bench_flood,
    bench_http,
    bench_presence,
    bench_projectors,
    bench_rebuild,
    bench_timetravel,
    bench_usage,
    bench_ws_latency,
)
from tests.perf.common import calibrate, log, machine

BENCHES: dict[str, tuple[Callable[..., dict[str, Any]], dict[str, Any], dict[str, Any]]] = {
    # name: (run, full arguments, --quick arguments)
    "http": (bench_http.run, {"seconds": 10.0, "connections": 32}, {"seconds": 4.0, "connections": 32}),
    "ws_latency": (bench_ws_latency.run, {"rate": 500.0, "seconds": 10.0}, {"rate": 500.0, "seconds": 4.0}),
    "fanout": (bench_fanout.run, {"subscribers": 1000, "messages": 300}, {"subscribers": 1000, "messages": 100}),
    "rebuild": (bench_rebuild.run, {"events": 200_000}, {"events": 50_000, "mongo_events": 20_000}),
    "flood": (bench_flood.run, {"rounds": 3}, {"rounds": 1}),
    # issue 3 (Kafka + FerretDB, via tests.cluster) and issue 5 (presence at 5,000 sockets)
    "distributed": (
        bench_distributed.run,
        {"seconds": 8.0},
        {"seconds": 3.0, "raw_records": 5000, "decider_commands": 1000, "latency_seconds": 3.0},
    ),
    # issue 9: the Faust read-model processors vs the aiokafka projector, same events into FerretDB
    "projectors": (bench_projectors.run, {"events": 200_000}, {"events": 20_000}),
    # metering: on vs off (HTTP posts, fan-out), a year of usage read, usage rebuilt from a log
    "usage": (
        bench_usage.run,
        {"events": 1_000_000},
        {"events": 100_000, "rounds": 20, "seconds": 4.0, "messages": 100},
    ),
    "presence": (
        bench_presence.run,
        {"users": 5000, "seconds": 60.0},
        {"users": 500, "seconds": 10.0, "watchers": 10, "storm_users": 100},
    ),
    # issue 13: caas export to Parquet beside a scan of the same log
    "export": (bench_export.run, {"events": 200_000, "rounds": 3}, {"events": 20_000, "rounds": 2}),
    # issue 13: as_of on a channel of 100k events beside the live history route
    "timetravel": (bench_timetravel.run, {"events": 100_000}, {"events": 20_000, "rounds": 60}),
}


def table(out: dict[str, Any]) -> str:
    """The summary of a saved run as the Markdown table of BENCHMARKS.md."""
    rows = ["| figure | value | target | | limit, measured in the same run | vs limit |", "|---|---|---|---|---|---|"]
    for f in out["summary"]:
        verdict = f["target_verdict"] + (f" (limit: {f['limit_verdict']})" if "limit_verdict" in f else "")
        ratio = f"{f['ratio_to_limit']:g}x" if "ratio_to_limit" in f else ""
        rows.append(
            f"| {f['figure']} | {f['value']:g} {f['unit']} | {f['target']} | {verdict} | {f['limit']} | {ratio} |"
        )
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help="comma-separated subset of " + ",".join(BENCHES))
    p.add_argument("--quick", action="store_true", help="shorter runs, for a smoke test of the harness")
    p.add_argument("--table", metavar="JSON", help="print the summary of a saved run as a Markdown table")
    args = p.parse_args()
    if args.table:
        with open(args.table, "rb") as f:
            print(table(orjson.loads(f.read())))
        return
    names = args.only.split(",") if args.only else list(BENCHES)
    unknown = set(names) - set(BENCHES)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    started = time.monotonic()
    out: dict[str, Any] = {"machine": machine(), "calibration_before": calibrate(), "benchmarks": {}}
    for name in names:
        run, full, quick = BENCHES[name]
        log(f"== {name}")
        t0 = time.monotonic()
        try:
            result = run(**(quick if args.quick else full))
        except Exception as exc:  # report and go on: one broken bench must not hide the others
            traceback.print_exc(file=sys.stderr)
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result["wall_seconds"] = round(time.monotonic() - t0, 1)
        out["benchmarks"][name] = result
    out["calibration_after"] = calibrate()
    out["summary"] = [fig for res in out["benchmarks"].values() for fig in res.get("figures", [])]
    out["wall_seconds"] = round(time.monotonic() - started, 1)
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
