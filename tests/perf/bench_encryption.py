"""Benchmark: what encryption at rest (crypto-shredding, docs/erasure.md) costs embedded HTTP post
throughput and rebuild throughput, against the same load on a source tree without it, same run.

The baseline is the tree of a git ref (``--baseline-ref``, default ``main``) extracted with
``git archive`` into a temporary directory: its ``caas serve`` and ``caas rebuild`` run the code
path without sealing, this tree's run it with sealing. Rounds alternate (on, off, on, off, …) so
both see the same machine; each figure is the median of its rounds, with the server's CPU per post
and the rebuild's events per CPU second beside the wall-clock rates (steadier on a shared machine).

    .venv/bin/python -m tests.perf.bench_encryption [--rounds 3] [--seconds 8] [--events 50000]
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import orjson

from adapters.sqlite_keys import SqliteKeyStore
from adapters.sqlite_log import SqliteEventLog
from commands.keys import Keyring, MasterKey
from commands.sealing import SealedLog, Sealer
from tests.perf import bench_rebuild
from tests.perf.bench_http import measure, requests
from tests.perf.common import (
    ROOT,
    Workdir,
    calibrate,
    figure,
    log,
    machine,
    make_chat,
    raise_nofile,
    run_async,
    uncapped,
)
from tests.support import Server

TARGET_COST = 0.15  # issue 14: encryption at rest costs under 15 % of each throughput


def extract(ref: str, into: Path) -> Path:
    """The source tree of ``ref`` (a branch, tag or commit of this repository) in ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


class SealedFileLog(SealedLog):
    """The embedded log of a data dir with its key store and a master key kept in the dir, as
    ``caas serve`` makes them (what bench_rebuild.generate writes through, for the sealed log)."""

    def __init__(self, path: Path) -> None:
        master = MasterKey.generate()
        (path.parent / "master_key").write_text(master.to_base64() + "\n")
        self.keys = SqliteKeyStore(path.parent / "keys.db")
        super().__init__(SqliteEventLog(path), Sealer(Keyring(self.keys, master)))

    async def start(self) -> None:
        await self.keys.start()
        await super().start()

    async def close(self) -> None:
        await super().close()
        await self.keys.close()


def generate(data: Path, events: int, *, sealed: bool) -> int:
    data.mkdir(parents=True)
    writer = SealedFileLog if sealed else SqliteEventLog
    return int(run_async(bench_rebuild.generate(data / "events.db", events, open_log=writer)))


def start(work: Path, name: str, tree: Path) -> Server:
    raise_nofile()
    data = work / name / "data"
    data.mkdir(parents=True)
    env = {"CAAS_LOG_LEVEL": "warning", "CAAS_HTTP_MAX_CONNECTIONS_PER_ADDRESS": "0", "CAAS_METERING": "off",
           **uncapped(work)}  # fmt: skip
    return Server(data, env=env, cwd=tree).start()


def median(rounds: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rounds))


def run(ref: str, rounds: int, seconds: float, events: int, connections: int = 32) -> dict[str, Any]:
    with Workdir() as work:
        baseline = extract(ref, work / "baseline")
        trees = {"on": ROOT, "off": baseline}
        posts: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
        servers = {variant: start(work, variant, tree) for variant, tree in trees.items()}
        try:
            chats = {v: make_chat(s, users=10, channels=100) for v, s in servers.items()}
            for n in range(rounds):
                for variant in ("on", "off") if n % 2 == 0 else ("off", "on"):
                    server, chat = servers[variant], chats[variant]
                    assert server.process is not None
                    result = measure(server.process.pid, server.port, requests(chat.tokens, chat.channels),
                                     connections, seconds)  # fmt: skip
                    posts[variant].append(
                        {"rps": result["rps"], "cpu_us_per_post": result["server_cpu_us_per_op"],
                         "p99_ms": result["latency_ms"]["p99"], "loadavg_1m": result["loadavg_1m"]}
                    )  # fmt: skip
                    log(f"encryption: posts {variant} {result['rps']:.0f}/s {result['server_cpu_us_per_op']} us/post")
        finally:
            for server in servers.values():
                server.stop()

        rebuilds: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
        dirs = {variant: work / f"log-{variant}" for variant in trees}
        for variant in trees:
            head = generate(dirs[variant], events, sealed=variant == "on")
            log(f"encryption: {variant} log of {head} events")
        for n in range(rounds):
            for variant in ("on", "off") if n % 2 == 0 else ("off", "on"):
                done = bench_rebuild.caas_rebuild(dirs[variant], "--projection", "chat", cwd=trees[variant])
                rebuilds[variant].append(
                    {"events_per_second": done["events_per_second"],
                     "events_per_cpu_second": done["events_per_cpu_second"], "events": done["events"],
                     "load": done["load"]}
                )  # fmt: skip
                log(f"encryption: rebuild {variant} {done['events_per_second']} events/s")
    figures = []
    for name, key, higher in (
        ("http_post_throughput", "rps", True),
        ("http_post_cpu_us", "cpu_us_per_post", False),
    ):
        on, off = median(posts["on"], key), median(posts["off"], key)
        cost = (off - on) / off if higher else (on - off) / off
        figures.append(figure(f"encryption_cost_{name}", round(cost, 3), "fraction", target=TARGET_COST,
                              higher_is_better=False, limit=f"without sealing: {off} (with: {on})"))  # fmt: skip
    for name, key in (
        ("rebuild_throughput", "events_per_second"),
        ("rebuild_events_per_cpu_second", "events_per_cpu_second"),
    ):
        on, off = median(rebuilds["on"], key), median(rebuilds["off"], key)
        figures.append(figure(f"encryption_cost_{name}", round((off - on) / off, 3), "fraction", target=TARGET_COST,
                              higher_is_better=False, limit=f"without sealing: {off} (with: {on})"))  # fmt: skip
    return {
        "setup": {
            "baseline_ref": ref,
            "rounds": rounds,
            "seconds": seconds,
            "connections": connections,
            "rebuild_events": events,
            "channels": 100,
            "users": 10,
        },
        "posts": posts,
        "rebuilds": rebuilds,
        "figures": figures,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline-ref", default="main", help="the git ref whose tree runs without encryption at rest")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--events", type=int, default=50_000)
    args = p.parse_args()
    before = calibrate()
    result = run(args.baseline_ref, args.rounds, args.seconds, args.events)
    out = {"machine": machine(), "calibration": [before, calibrate()], "encryption": result}
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
