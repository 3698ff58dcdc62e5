"""Benchmark 1: HTTP message posting, beside a bare Starlette endpoint on the same stack.

A closed loop of keep-alive connections (``wrk``, or the fallback asyncio client, in its own
process) posts messages to ``caas serve``: round-robin over many channels, then to a single
channel. The limit is the same load against a trivial Starlette POST endpoint that parses the
same JSON body and answers a small JSON, on one uvicorn process with uvloop and httptools.
The tenant's plan caps messages far above what the load posts (``UNCAPPED_PLANS``): every post
is checked against its quota and recorded; a refused post would stop the benchmark.

    .venv/bin/python -m tests.perf.bench_http [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from tests.perf.common import Meter, Process, Workdir, figure, log, machine, make_chat, start_caas, uncapped
from tests.perf.loadgen import Req, run_load

TARGET_FRACTION = 0.35  # issue 12: at least 0.35x the bare endpoint of the same run
TARGET_P99_MS = 15.0  # issue 12: p99 at most 15 ms at 32 connections
# what 0.35x of a ~21,000/s bare endpoint leaves the server's one event loop per post, when it
# gets a whole core; reported for a loaded machine, where the throughput ratio moves with the load
TARGET_CPU_US = 130.0
CHANNELS = 100
USERS = 10
TEXT = "hello from the benchmark: a chat message of a fairly typical length, ~70 chars"


def requests(tokens: dict[str, str], channels: list[str]) -> list[Req]:
    body = orjson.dumps({"text": TEXT})
    users = list(tokens)
    out = []
    for i, cid in enumerate(channels * (len(users) if len(channels) == 1 else 1)):
        headers = {"Authorization": f"Bearer {tokens[users[i % len(users)]]}", "Content-Type": "application/json"}
        out.append(("POST", f"/v1/channels/{cid}/messages", headers, body))
    return out


def measure(pid: int, port: int, reqs: list[Req], connections: int, seconds: float) -> dict[str, Any]:
    meter = Meter(pid)
    result = run_load("127.0.0.1", port, reqs, connections=connections, seconds=seconds, warmup=2.0)
    result.update(meter.stop(result["requests"]))
    if result["errors"]:  # refused or failed posts cost less than posts: the figure would flatter
        raise RuntimeError(f"posts failed: {result['errors']}")
    return result


def run(seconds: float = 10.0, connections: int = 32) -> dict[str, Any]:
    with Workdir() as work:
        server = start_caas(work, **uncapped(work))
        try:
            chat = make_chat(server, users=USERS, channels=CHANNELS)
            assert server.process is not None
            pid = server.process.pid
            log(f"http: caas, {CHANNELS} channels, {connections} connections, {seconds:g}s")
            many = measure(pid, server.port, requests(chat.tokens, chat.channels), connections, seconds)
            log(f"http: caas many channels {many['rps']:.0f}/s p99 {many['latency_ms']['p99']} ms")
            single = measure(pid, server.port, requests(chat.tokens, chat.channels[:1]), connections, seconds)
            log(f"http: caas single channel {single['rps']:.0f}/s p99 {single['latency_ms']['p99']} ms")
        finally:
            server.stop()
        bare_server = Process("tests.perf.bare_http")
        try:
            bare = measure(
                bare_server.pid, bare_server.port, requests(chat.tokens, chat.channels), connections, seconds
            )
            log(f"http: bare starlette {bare['rps']:.0f}/s p99 {bare['latency_ms']['p99']} ms")
        finally:
            bare_server.stop()
    target = round(TARGET_FRACTION * bare["rps"], 1)
    figures = []
    for name, res in (("many_channels", many), ("single_channel", single)):
        figures.append(
            figure(f"http_post_{name}_throughput", res["rps"], "messages/s", target=target,
                   limit=f"bare Starlette {bare['rps']}/s (target {TARGET_FRACTION:g}x)", ratio_to=bare["rps"])
        )  # fmt: skip
        figures.append(
            figure(f"http_post_{name}_cpu_per_post", res["server_cpu_us_per_op"], "us", target=TARGET_CPU_US,
                   higher_is_better=False, limit=f"bare Starlette {bare['server_cpu_us_per_op']} us",
                   ratio_to=bare["server_cpu_us_per_op"])
        )  # fmt: skip
        figures.append(
            figure(f"http_post_{name}_p99", res["latency_ms"]["p99"], "ms", target=TARGET_P99_MS,
                   higher_is_better=False, limit=f"bare Starlette p99 {bare['latency_ms']['p99']} ms")
        )  # fmt: skip
    return {
        "setup": {
            "channels": CHANNELS,
            "users": USERS,
            "connections": connections,
            "seconds": seconds,
            "body_bytes": len(orjson.dumps({"text": TEXT})),
        },
        "caas_many_channels": many,
        "caas_single_channel": single,
        "bare_starlette": bare,
        "figures": figures,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--connections", type=int, default=32)
    args = p.parse_args()
    print(
        orjson.dumps(
            {"machine": machine(), "http": run(args.seconds, args.connections)}, option=orjson.OPT_INDENT_2
        ).decode()
    )


if __name__ == "__main__":
    main()
