"""Tracing's cost (issue 13): embedded HTTP message posts with tracing off, beside the same load on
the code before tracing existed, and with tracing on at sampling 1.0.

Three ``caas serve`` processes run side by side: ``before`` (the tree of ``--before-ref``,
exported with ``git archive``; by default ``main`` before tracing was merged), ``off`` (this tree,
no OTEL variable) and ``on`` (this tree, every request traced and exported over OTLP/HTTP to the
test Jaeger of ``infra/services``, started if need be). Each round measures the three in a
rotated order, so a change in the machine's load falls on all of them; the figures are the
medians over rounds of the same-round ratios to ``before``, for throughput and for the server's
CPU time per post (the steadier figure on a shared machine).

Then the same three, in process: the ASGI app driven directly (no HTTP server, no client in the
measured process's way), ``--posts`` posts by 32 concurrent posters, each variant in its own
process from its own tree, rounds interleaved; the figure is the process's CPU time per post. On
a loaded machine this is the figure to read: it does not depend on what share of a core the
server got.

    .venv/bin/python -m tests.perf.bench_tracing [--rounds 5] [--seconds 8] [--posts 3000] [--before-ref main]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from tests.perf.bench_http import CHANNELS, USERS, measure, requests
from tests.perf.common import ROOT, Workdir, figure, log, machine, make_chat, start_caas, uncapped
from tests.support import UNLIMITED, Server

VARIANTS = ("before", "off", "on")
TARGET_OFF_COST_PCT = 2.0  # issue 13: tracing off costs under 2 % of embedded post throughput


@contextlib.contextmanager
def tree_of(ref: str) -> Iterator[tuple[Path, str]]:
    """The repository's files at ``ref`` in a temporary folder, and the commit it names."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", ref], check=True, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="caas-before-") as folder:
        archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", commit], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", folder], stdin=archive.stdout, check=True)
        archive.wait()
        yield Path(folder), commit


@contextlib.contextmanager
def working_in(folder: Path) -> Iterator[None]:
    """Start servers from ``folder``: ``python -m api.cli`` imports the code of its working folder."""
    here = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)


def start(variant: str, work: Path, before: Path) -> Server:
    env = uncapped(work)
    if variant == "on":
        from tests.tracing.jaeger import jaeger_env

        env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": jaeger_env()["CAAS_JAEGER_OTLP"], "OTEL_TRACES_SAMPLER": "always_on"}
    with working_in(before if variant == "before" else ROOT):
        return start_caas(work, **env)


def run(
    rounds: int = 5, seconds: float = 8.0, connections: int = 32, before_ref: str = "main", posts: int = 3000
) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    with tree_of(before_ref) as (before, commit):
        inside = run_in_process(before, rounds, posts) if posts else {}
        over_http(before, results, rounds, seconds, connections)
    summary = summarize(results, commit, rounds, seconds, connections)
    if inside:
        summary["in_process_cpu_us_per_post"] = inside
        summary["figures"] += in_process_figures(inside, commit, posts)
    return summary


def in_process_figures(inside: dict[str, list[float]], commit: str, posts: int) -> list[dict[str, Any]]:
    off = statistics.median(a / b for a, b in zip(inside["off"], inside["before"], strict=True))
    on = statistics.median(a / b for a, b in zip(inside["on"], inside["before"], strict=True))
    base = statistics.median(inside["before"])
    limit = f"before tracing ({commit[:12]}), in process: {base} us per post (median), {posts} posts a round"
    return [
        figure("tracing_off_in_process_cpu_per_post_cost_pct", round((off - 1) * 100, 2), "%",
               target=TARGET_OFF_COST_PCT, higher_is_better=False, limit=limit),
        figure("tracing_on_in_process_cpu_per_post_ratio", round(on, 3), "x before", target=0, limit=limit),
    ]  # fmt: skip


def over_http(
    before: Path, results: dict[str, list[dict[str, Any]]], rounds: int, seconds: float, connections: int
) -> None:
    with contextlib.ExitStack() as stack:
        servers, loads = {}, {}
        for variant in VARIANTS:
            work = Path(stack.enter_context(Workdir())) / variant
            work.mkdir()
            server = servers[variant] = start(variant, work, before)
            stack.callback(server.stop)
            chat = make_chat(server, users=USERS, channels=CHANNELS)
            loads[variant] = requests(chat.tokens, chat.channels)
        for r in range(rounds):
            order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
            for variant in order:
                server = servers[variant]
                assert server.process is not None
                res = measure(server.process.pid, server.port, loads[variant], connections, seconds)
                results[variant].append(res)
                log(f"tracing: round {r + 1} {variant} {res['rps']:.0f}/s {res['server_cpu_us_per_op']} us/post")


# One variant in process (run with ``python -c`` from the variant's tree): the app of that tree,
# set up and posted to through raw ASGI calls; prints the CPU microseconds per post.
IN_PROCESS = """
import asyncio, os, pathlib, sys, tempfile, time
import orjson
from api.app import create_app
from api.settings import Settings

if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
    from adapters import tracing
    tracing.configure(os.environ, [tracing.NODE, tracing.PROJECTOR])

async def call(app, method, path, token, body=None):
    headers = [(b"authorization", b"Bearer " + token.encode()), (b"content-type", b"application/json")]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    chunks, sent = [], False
    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": orjson.dumps(body) if body is not None else b"", "more_body": False}
        await asyncio.Event().wait()
    async def send(message):
        if message["type"] == "http.response.start":
            chunks.append(message["status"])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
    await app(scope, receive, send)
    status, body = chunks[0], b"".join(chunks[1:])
    assert status < 300, (path, status, body)
    return orjson.loads(body) if body else None

async def main(posts):
    work = pathlib.Path(tempfile.mkdtemp())
    (work / "plans.toml").write_text(__PLANS__)
    env = {"CAAS_DATA_DIR": str(work / "data"), "CAAS_ADMIN_TOKEN": "admin",
           "CAAS_PLANS_FILE": str(work / "plans.toml"), **UNLIMITED}
    app = create_app(Settings.from_env(env))
    async with app.router.lifespan_context(app):
        key = (await call(app, "POST", "/v1/tenants", "admin", {"name": "bench"}))["api_key"]
        tokens = []
        for i in range(10):
            await call(app, "PUT", f"/v1/users/u{i}", key, {"name": f"u{i}"})
            tokens.append((await call(app, "POST", f"/v1/users/u{i}/tokens", key, {}))["token"])
        for c in range(100):
            members = [f"u{i}" for i in range(10)]
            await call(app, "POST", "/v1/channels", key, {"channel_id": f"c{c}", "name": f"c{c}", "members": members})
        async def poster(n, k):
            for j in range(n):
                await call(app, "POST", f"/v1/channels/c{(k * 7 + j) % 100}/messages", tokens[(k + j) % 10],
                           {"text": "hello from the benchmark: a chat message of a fairly typical length, ~70 chars"})
        await asyncio.gather(*(poster(20, k) for k in range(32)))  # warm up
        cpu = time.process_time()
        await asyncio.gather(*(poster(posts // 32, k) for k in range(32)))
        cpu = time.process_time() - cpu
    print(round(cpu / (posts // 32 * 32) * 1e6, 1))

asyncio.run(main(int(sys.argv[1])))
"""


def in_process(variant: str, before: Path, posts: int) -> float:
    """CPU microseconds per post of one variant, in a process of its own."""
    from tests.perf.common import UNCAPPED_PLANS

    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if variant == "on":
        from tests.tracing.jaeger import jaeger_env

        env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": jaeger_env()["CAAS_JAEGER_OTLP"], "OTEL_TRACES_SAMPLER": "always_on"}
    program = IN_PROCESS.replace("__PLANS__", repr(UNCAPPED_PLANS)).replace("**UNLIMITED", f"**{UNLIMITED!r}")
    done = subprocess.run(
        [sys.executable, "-c", program, str(posts)], cwd=before if variant == "before" else ROOT, env=env,
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"in-process {variant} failed: {done.stderr[-2000:]}")
    return float(done.stdout.split()[-1])


def run_in_process(before: Path, rounds: int, posts: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        for variant in VARIANTS[r % 3 :] + VARIANTS[: r % 3]:
            found[variant].append(in_process(variant, before, posts))
            log(f"tracing: in process, round {r + 1} {variant} {found[variant][-1]} us/post")
    return found


def ratios(results: dict[str, list[dict[str, Any]]], variant: str, key: str) -> list[float]:
    return [a[key] / b[key] for a, b in zip(results[variant], results["before"], strict=True)]


def summarize(
    results: dict[str, list[dict[str, Any]]], commit: str, rounds: int, seconds: float, connections: int
) -> dict[str, Any]:
    median = {
        v: {
            "rps": round(statistics.median(r["rps"] for r in results[v]), 1),
            "server_cpu_us_per_op": round(statistics.median(r["server_cpu_us_per_op"] for r in results[v]), 1),
            "p99_ms": round(statistics.median(r["latency_ms"]["p99"] for r in results[v]), 2),
            "loadavg_1m": round(statistics.median(r["loadavg_1m"] for r in results[v]), 2),
        }
        for v in VARIANTS
    }
    off_rps = statistics.median(ratios(results, "off", "rps"))
    off_cpu = statistics.median(ratios(results, "off", "server_cpu_us_per_op"))
    on_rps = statistics.median(ratios(results, "on", "rps"))
    on_cpu = statistics.median(ratios(results, "on", "server_cpu_us_per_op"))
    base = median["before"]
    before = f"before tracing ({commit[:12]}) {base['rps']}/s, {base['server_cpu_us_per_op']} us per post"
    figures = [
        figure("tracing_off_throughput_cost_pct", round((1 - off_rps) * 100, 2), "%", target=TARGET_OFF_COST_PCT,
               higher_is_better=False, limit=before),
        figure("tracing_off_cpu_per_post_cost_pct", round((off_cpu - 1) * 100, 2), "%", target=TARGET_OFF_COST_PCT,
               higher_is_better=False, limit=before),
        # sampling 1.0: reported beside the same limit, with no target of its own (the issue asks for the figure)
        figure("tracing_on_throughput_ratio", round(on_rps, 3), "x before", target=0, limit=before),
        figure("tracing_on_cpu_per_post_ratio", round(on_cpu, 3), "x before", target=0, limit=before),
    ]  # fmt: skip
    return {
        "setup": {
            "rounds": rounds,
            "seconds": seconds,
            "connections": connections,
            "channels": CHANNELS,
            "users": USERS,
            "before_commit": commit,
            "on": "OTEL_TRACES_SAMPLER=always_on, OTLP/HTTP to the test Jaeger on the same machine",
        },
        "median": median,
        "rounds": results,
        "figures": figures,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--before-ref", default="main", help="the code before tracing (a git ref)")
    p.add_argument("--posts", type=int, default=3000, help="posts a round in process (0: skip)")
    args = p.parse_args()
    result = run(args.rounds, args.seconds, args.connections, args.before_ref, args.posts)
    print(orjson.dumps({"machine": machine(), "tracing": result}, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
