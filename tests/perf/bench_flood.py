"""Benchmark (issue 4): one tenant floods far over its limits; another tenant's p99.

Tenant X floods from four keep-alive clients (pinned to a CPU of their own, standing for other
machines) while tenant Y alternates a post and a history read every 20 ms, within its limits;
the server and Y's client share the other CPU. Y's p99 during the flood is reported beside
its p99 just before it, in the same run (the target is at most 2x). The flood itself is
``tests/security/test_flood.py``'s, which checks the behaviour (X refused, Y always served).

    .venv/bin/python -m tests.perf.bench_flood [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import httpx
import orjson

from tests.perf.common import Workdir, figure, log, machine
from tests.security.test_flood import measure_flood, start_server

TARGET_RATIO = 2.0


def run(rounds: int = 3) -> dict[str, Any]:
    with Workdir() as work:
        server = start_server(work / "data")
        try:
            found = []
            with httpx.Client(timeout=10) as client:
                for n in range(rounds):
                    found.append(measure_flood(server, client, work, run=str(n)))
                    log(f"flood round {n + 1}/{rounds}: {found[-1]}")
        finally:
            server.stop()
    ratios = [f["y_p99_ratio"] for f in found]
    median = statistics.median(ratios)
    unloaded = statistics.median(f["y_p99_ms"][0] for f in found)
    # issue 12: the target holds in every round, not only the median
    figures = [
        figure(
            f"flood_other_tenant_p99_ratio (round {n + 1})",
            f["y_p99_ratio"],
            "x",
            target=TARGET_RATIO,
            higher_is_better=False,
            limit=f"the same tenant's p99 without the flood ({f['y_p99_ms'][0]} ms)",
        )
        for n, f in enumerate(found)
    ]
    figures.append(
        figure("flood_other_tenant_p99_ratio (median of rounds)", median, "x", target=TARGET_RATIO,
               higher_is_better=False, limit=f"the same tenant's p99 without the flood ({unloaded} ms)")
    )  # fmt: skip
    return {"rounds": found, "ratios": ratios, "figures": figures}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    print(orjson.dumps({"machine": machine(), "flood": run(args.rounds)}, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
