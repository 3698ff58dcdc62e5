"""Profiles behind the benchmark figures: py-spy samples of the server (or ``caas rebuild``)
under the benchmark's own load, summarised as the top frames (own and inclusive time).

    .venv/bin/pip install py-spy            # a developer tool: not a project dependency
    .venv/bin/python -m tests.perf.pyspy http [--seconds 8]       # caas serve under bench_http's load
    .venv/bin/python -m tests.perf.pyspy fanout [--messages 200] [--compression none|deflate]
                                                   # caas serve fanning out to 1,000 sockets
    .venv/bin/python -m tests.perf.pyspy rebuild [--events 50000] # caas rebuild of a generated log

``--gil`` samples only the thread holding the GIL (where Python time goes); without it, every
thread's stacks are counted, waits included.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from tests.perf.common import PYTHON, ROOT, Workdir, log, make_chat, run_async, start_caas, uncapped


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(PYTHON).with_name("py-spy"))
    if not Path(found).exists():
        sys.exit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def summarise(raw: Path, top: int) -> dict[str, Any]:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        threads[frames[0].split(" (")[0] + " " + frames[0].rpartition(": ")[2]] += n
        own[frames[-1]] += n
        for f in set(frames[1:]):
            inclusive[f] += n

    def pct(counter: collections.Counter[str], k: int) -> list[str]:
        return [f"{n / total:6.1%}  {frame}" for frame, n in counter.most_common(k)]

    return {"samples": total, "threads": pct(threads, 5), "own": pct(own, top), "inclusive": pct(inclusive, top * 2)}


def record(args: list[str], out: Path, gil: bool) -> None:
    cmd = [py_spy(), "record", "-r", "250", "-f", "raw", "-o", str(out), "--threads", "--nonblocking"]
    subprocess.run([*cmd, *(["--gil"] if gil else []), *args], capture_output=True, check=False)


def profile_http(seconds: float, gil: bool, top: int) -> dict[str, Any]:
    from tests.perf.bench_http import CHANNELS, USERS, requests
    from tests.perf.loadgen import run_load

    out = Path(tempfile.mkdtemp()) / "http.txt"
    with Workdir() as work:
        server = start_caas(work, **uncapped(work))
        try:
            chat = make_chat(server, users=USERS, channels=CHANNELS)
            assert server.process is not None
            result: dict[str, Any] = {}
            load = threading.Thread(
                target=lambda: result.update(
                    run_load(
                        "127.0.0.1",
                        server.port,
                        requests(chat.tokens, chat.channels),
                        connections=32,
                        seconds=seconds + 3,
                        warmup=0,
                    )
                )
            )
            load.start()
            time.sleep(2)
            record(["-d", str(int(seconds)), "-p", str(server.process.pid)], out, gil)
            load.join()
        finally:
            server.stop()
    return {"load": {k: result.get(k) for k in ("rps", "latency_ms")}, **summarise(out, top)}


def profile_fanout(messages: int, gil: bool, top: int, compression: str = "none") -> dict[str, Any]:
    from tests.perf.bench_fanout import fan_out, post_burst

    out = Path(tempfile.mkdtemp()) / "fanout.txt"
    with Workdir() as work:
        server = start_caas(work)
        try:
            chat = make_chat(server, users=1000, channels=1)
            assert server.process is not None
            pid = server.process.pid
            urls = [f"{server.ws_url}?token={token}" for token in chat.tokens.values()]

            def go() -> int:
                spy = threading.Thread(target=record, args=(["-d", "6", "-p", str(pid)], out, gil))
                spy.start()
                errors: int = run_async(post_burst(server.port, chat.tokens["u0"], "c0", messages))
                spy.join()
                return errors

            result = fan_out(pid, urls, {"channel_id": "c0"}, messages, go, compression)
        finally:
            server.stop()
    return {"load": {k: result[k] for k in ("deliveries_per_s", "server_cpu_seconds")}, **summarise(out, top)}


def profile_rebuild(events: int, gil: bool, top: int) -> dict[str, Any]:
    from tests.perf.bench_rebuild import generate

    out = Path(tempfile.mkdtemp()) / "rebuild.txt"
    with Workdir() as work:
        data = work / "data"
        data.mkdir()
        run_async(generate(data / "events.db", events))
        env = {**os.environ, "CAAS_DATA_DIR": str(data), "TERM": "dumb"}
        cmd = [py_spy(), "record", "-r", "250", "-f", "raw", "-o", str(out), "--threads", "--nonblocking"]
        cmd += ["--gil"] if gil else []
        subprocess.run([*cmd, "--", PYTHON, "-m", "api.cli", "rebuild"], env=env, cwd=ROOT, capture_output=True)
    return summarise(out, top)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["http", "fanout", "rebuild"])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL")
    p.add_argument("--compression", choices=["none", "deflate"], default="none", help="fanout: what clients offer")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    log(f"profiling {args.what}")
    if args.what == "http":
        result = profile_http(args.seconds, args.gil, args.top)
    elif args.what == "fanout":
        result = profile_fanout(args.messages, args.gil, args.top, args.compression)
    else:
        result = profile_rebuild(args.events, args.gil, args.top)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
