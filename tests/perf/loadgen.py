"""HTTP load generation: ``wrk`` (C, Lua-scripted POSTs) when available, else this module's own
multi-connection keep-alive asyncio client, run in a separate process either way.

``run_load`` returns ``{"requests", "seconds", "rps", "latency_ms": {...}, "errors", "tool"}``
for a closed loop of ``connections`` connections cycling through ``requests``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from tests.perf.common import PYTHON, ROOT, HttpConn, log, percentiles, run_async

Req = tuple[str, str, dict[str, str], bytes]  # method, path, headers, body

LUA = r"""
local specs = %(specs)s
local reqs = {}
local n = 0
init = function(args)
  for i, s in ipairs(specs) do reqs[i] = wrk.format(s[1], s[2], s[3], s[4]) end
  n = math.random(#reqs)
end
request = function()
  n = n %% #reqs + 1
  return reqs[n]
end
local statuses = {}
response = function(status, headers, body)
  if status >= 300 then statuses[status] = (statuses[status] or 0) + 1 end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,' ..
    '"errors":{"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d},' ..
    '"latency_us":{"p50":%%d,"p90":%%d,"p99":%%d,"p99.9":%%d,"max":%%d,"mean":%%.1f}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
"""


def _lua_string(s: str | bytes) -> str:
    if isinstance(s, bytes):
        s = s.decode()
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _lua_specs(requests: Sequence[Req]) -> str:
    out = []
    for method, path, headers, body in requests:
        hs = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items())
        out.append(f"{{{_lua_string(method)}, {_lua_string(path)}, {{{hs}}}, {_lua_string(body)}}}")
    return "{\n" + ",\n".join(out) + "\n}"


def find_wrk() -> str | None:
    """``wrk`` on PATH, installing Debian's package once if we are root and apt-get exists."""
    if os.environ.get("CAAS_BENCH_NO_WRK"):
        return None
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    log("wrk not found; installing Debian's wrk package")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env, capture_output=True, timeout=180)
        if not shutil.which("wrk"):
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=180)
            subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env, capture_output=True, timeout=180)
    except (OSError, subprocess.SubprocessError) as exc:
        log(f"could not install wrk: {exc}")
    return shutil.which("wrk")


def run_load(
    host: str, port: int, requests: Sequence[Req], *, connections: int, seconds: float, warmup: float = 2.0
) -> dict[str, Any]:
    wrk = find_wrk()
    if wrk is not None:
        return _run_wrk(wrk, host, port, requests, connections, seconds, warmup)
    return _run_python(host, port, requests, connections, seconds, warmup)


def _run_wrk(
    wrk: str, host: str, port: int, requests: Sequence[Req], connections: int, seconds: float, warmup: float
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA % {"specs": _lua_specs(requests)})
        script = f.name
    try:
        url = f"http://{host}:{port}/"

        def once(duration: float) -> dict[str, Any]:
            cmd = [
                wrk,
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(duration))}s",
                "--timeout",
                "10s",
                "-s",
                script,
                url,
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
            for line in out.stdout.splitlines():
                if line.startswith("WRKJSON "):
                    return dict(orjson.loads(line[8:]))
            raise RuntimeError(f"wrk printed no summary: {out.stdout} {out.stderr}")

        if warmup > 0:
            once(warmup)
        raw = once(seconds)
    finally:
        Path(script).unlink(missing_ok=True)
    secs = raw["duration_us"] / 1e6
    lat = {k: round(v / 1000, 3) for k, v in raw["latency_us"].items()}
    lat = {("p999" if k == "p99.9" else k): v for k, v in lat.items()}
    return {
        "tool": "wrk -t1",
        "connections": connections,
        "requests": raw["requests"],
        "seconds": round(secs, 3),
        "rps": round(raw["requests"] / secs, 1),
        "latency_ms": lat,
        "errors": {k: v for k, v in raw["errors"].items() if v},
    }


def _run_python(
    host: str, port: int, requests: Sequence[Req], connections: int, seconds: float, warmup: float
) -> dict[str, Any]:
    spec = {"host": host, "port": port, "connections": connections, "seconds": seconds, "warmup": warmup,
            "requests": [[m, p, h, b.decode()] for m, p, h, b in requests]}  # fmt: skip
    out = subprocess.run(
        [PYTHON, "-m", "tests.perf.loadgen"], input=orjson.dumps(spec), capture_output=True, cwd=ROOT,
        timeout=seconds + warmup + 120,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr.decode()}")
    return dict(orjson.loads(out.stdout))


async def _closed_loop(spec: dict[str, Any]) -> dict[str, Any]:
    reqs = [(m, p, h, b.encode()) for m, p, h, b in spec["requests"]]
    conns = [await HttpConn(spec["host"], spec["port"]).connect() for _ in range(spec["connections"])]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    state = {"measure": False, "stop": False}

    async def worker(i: int, conn: HttpConn) -> None:
        n = i
        while not state["stop"]:
            m, p, h, b = reqs[n % len(reqs)]
            n += 1
            t0 = time.perf_counter()
            status, _ = await conn.request(m, p, h, b)
            if state["measure"]:
                latencies.append((time.perf_counter() - t0) * 1000)
                if status >= 300:
                    errors[str(status)] = errors.get(str(status), 0) + 1

    tasks = [asyncio.create_task(worker(i, c)) for i, c in enumerate(conns)]
    await asyncio.sleep(spec["warmup"])
    state["measure"] = True
    t0 = time.perf_counter()
    await asyncio.sleep(spec["seconds"])
    state["measure"] = False
    elapsed = time.perf_counter() - t0
    state["stop"] = True
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in conns:
        c.close()
    return {
        "tool": "python asyncio keep-alive client",
        "connections": spec["connections"],
        "requests": len(latencies),
        "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1),
        "latency_ms": percentiles(latencies),
        "errors": errors,
    }


def main() -> None:
    spec = orjson.loads(sys.stdin.buffer.read())
    result = run_async(_closed_loop(spec))
    sys.stdout.buffer.write(orjson.dumps(result))


if __name__ == "__main__":
    main()
