"""Shared helpers of the benchmarks: servers, setup over HTTP, a raw keep-alive HTTP client,
wrk, latency percentiles, RSS, machine facts.

Nothing here asserts timings: a benchmark reports each figure beside its target and its limit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.support import ADMIN, Server, Tenant, bearer, free_port, new_tenant

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


# --- facts and numbers -----------------------------------------------------------------------
def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def percentiles(samples: Sequence[float], points: Sequence[float] = (50, 90, 99, 99.9)) -> dict[str, float]:
    """Nearest-rank percentiles of ``samples`` (milliseconds in, milliseconds out)."""
    if not samples:
        return {}
    ordered = sorted(samples)
    out = {}
    for p in points:
        rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
        out[f"p{p:g}".replace(".", "")] = round(ordered[rank], 3)
    out["max"] = round(ordered[-1], 3)
    out["mean"] = round(sum(ordered) / len(ordered), 3)
    return out


def verdict(value: float, target: float, *, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "pass" if ok else "miss"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def raise_nofile(want: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(want, hard) if hard != resource.RLIM_INFINITY else want
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def log(*args: Any) -> None:
    print("[bench]", *args, file=sys.stderr, flush=True)


# --- servers ---------------------------------------------------------------------------------
@dataclass
class Workdir:
    """A temporary directory removed at exit."""

    path: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="caas-bench-")))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# The built-in free plan caps messages at 10,000 a month (domain/plans.py): a load that posts
# more would measure 402 refusals, which cost the server less than posts. This plan caps what
# the load writes far above what it writes: the quota check runs on every post, refusing none.
UNCAPPED_PLANS = """
[plans.free.meters.messages]
included = 1000000000
mode = "cap"

[plans.free.meters.api_writes]
included = 1000000000
mode = "cap"
"""


def uncapped(work: Path) -> dict[str, str]:
    """The environment of a server whose tenants are on :data:`UNCAPPED_PLANS`."""
    plans = work / "plans.toml"
    plans.write_text(UNCAPPED_PLANS)
    return {"CAAS_PLANS_FILE": str(plans)}


def start_caas(work: Path, **env: str) -> Server:
    """``caas serve`` (embedded, uvloop + httptools) in a subprocess, with a high fd limit."""
    raise_nofile()  # inherited by the child
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    # the load generators open thousands of connections from one address: no per-address cap
    return Server(data, env={"CAAS_LOG_LEVEL": "warning", "CAAS_HTTP_MAX_CONNECTIONS_PER_ADDRESS": "0", **env}).start()


class Process:
    """A helper server (bare Starlette, bare websockets) in a subprocess on a free port."""

    def __init__(self, module: str, *args: str) -> None:
        raise_nofile()
        self.port = free_port()
        self.proc = subprocess.Popen(
            [PYTHON, "-m", module, "--port", str(self.port), *args], cwd=ROOT, stdout=subprocess.DEVNULL
        )
        wait_port(self.port, self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"helper server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


# --- setup over HTTP (httpx: slow but only for setup) ----------------------------------------
@dataclass
class Chat:
    """A tenant, users with tokens, and channels whose members are all those users."""

    tenant: Tenant
    tokens: dict[str, str]
    channels: list[str]


def make_chat(server: Server, *, users: int, channels: int, name: str = "bench") -> Chat:
    with httpx.Client(timeout=60) as client:
        tenant = new_tenant(client, server.url, name)
        tokens = {}
        for i in range(users):
            uid = f"u{i}"
            tokens[uid] = tenant.user(client, uid)
        members = list(tokens)
        cids = []
        for i in range(channels):
            cid = f"c{i}"
            r = client.post(
                f"{server.url}/v1/channels",
                json={"channel_id": cid, "name": cid, "members": members},
                headers=tenant.headers(),
            )
            assert r.status_code == 201, r.text
            cids.append(cid)
    return Chat(tenant, tokens, cids)


def admin_headers() -> dict[str, str]:
    return bearer(ADMIN)


# --- a raw keep-alive HTTP/1.1 client (for pacing posts; httpx is too slow) -------------------
class HttpConn:
    """One keep-alive connection; one request at a time. Parses Content-Length bodies only."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> HttpConn:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def json_body(data: Any) -> bytes:
    return orjson.dumps(data)


def admin_token() -> str:
    return ADMIN


def run_async(coro: Any) -> Any:
    """Run ``coro`` on uvloop when it is installed (as the server does), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_cores() -> tuple[float, float]:
    """(busy, total) CPU jiffies of the machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return float(sum(parts) - idle), float(sum(parts))


class Meter:
    """CPU used by a server process and by the whole machine over an interval."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t0 = time.monotonic()
        self.cpu0 = cpu_seconds(pid)
        self.busy0, self.total0 = busy_cores()

    def stop(self, work: int) -> dict[str, Any]:
        elapsed = time.monotonic() - self.t0
        cpu = cpu_seconds(self.pid) - self.cpu0
        busy, total = busy_cores()
        machine_busy = (busy - self.busy0) / max(1.0, total - self.total0) * (os.cpu_count() or 1)
        return {
            "server_cpu_cores": round(cpu / elapsed, 2),
            "server_cpu_us_per_op": round(cpu / max(1, work) * 1e6, 1),
            "machine_busy_cores": round(machine_busy, 2),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }


class Subscribers:
    """A ``tests.perf.wsclients`` process: start it, wait for READY, collect its JSON result."""

    def __init__(self, spec: dict[str, Any]) -> None:
        raise_nofile()
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "tests.perf.wsclients"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(spec) + b"\n")
        self.proc.stdin.flush()

    def ready(self) -> int:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("READY "):
            self.proc.kill()
            raise RuntimeError(f"subscribers failed to start: {line!r}")
        return int(line.split()[1])

    def result(self, timeout: float = 300) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=timeout)
        lines = out.decode().strip().splitlines()
        if self.proc.returncode != 0 or not lines:
            raise RuntimeError(f"subscribers exited with {self.proc.returncode}")
        return dict(orjson.loads(lines[-1]))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def calibrate() -> dict[str, Any]:
    """How fast (and how busy) this machine is right now: a fixed pure-Python loop, timed.

    On a shared or throttled machine every figure scales with this; compare runs with it.
    """
    started, cpu0 = time.perf_counter(), time.process_time()
    total = 0
    for i in range(2_000_000):
        total += i
    wall = (time.perf_counter() - started) * 1000
    cpu = (time.process_time() - cpu0) * 1000
    fsyncs = []
    fd, name = tempfile.mkstemp(prefix="caas-bench-fsync-")
    try:
        for _ in range(50):  # the event log commits with synchronous=FULL: one fsync per group commit
            os.write(fd, b"x" * 4096)
            t0 = time.perf_counter()
            os.fsync(fd)
            fsyncs.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        os.unlink(name)
    return {
        "python_loop_2M_wall_ms": round(wall, 1),
        "python_loop_2M_cpu_ms": round(cpu, 1),
        "fsync_4k_ms": {k: v for k, v in percentiles(fsyncs).items() if k in ("p50", "p99")},
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def figure(
    name: str,
    value: float,
    unit: str,
    *,
    target: float,
    limit: str,
    higher_is_better: bool = True,
    limit_value: float | None = None,
    ratio_to: float | None = None,
) -> dict[str, Any]:
    """One reported figure: its value beside its target and the limit measured in the same run."""
    out: dict[str, Any] = {
        "figure": name,
        "value": value,
        "unit": unit,
        "target": f"{'>=' if higher_is_better else '<='} {target:g}",
        "target_verdict": verdict(value, target, higher_is_better=higher_is_better),
        "limit": limit,
    }
    if limit_value is not None:
        out["limit_value"] = limit_value
        out["limit_verdict"] = verdict(value, limit_value, higher_is_better=higher_is_better)
    if ratio_to:
        out["ratio_to_limit"] = round(value / ratio_to, 3)
    return out
