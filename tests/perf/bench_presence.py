"""Benchmark (issue 5): presence at 5,000 connected users under churn, and under a reconnect storm.

One ``caas serve`` (embedded backend); 5,000 users each hold one websocket (the minimal
asyncio client of ``tests.perf.wsclients``, in a separate process). ``watchers`` of them
subscribe to the presence of ``watch_each`` other users each. The client process runs the
schedule and timestamps its phases (CLOCK_MONOTONIC); this process samples the server's
CPU (user+sys, /proc/<pid>/stat) and RSS every half second and cuts them by phase:

1. ``quiet``: every socket connected, nobody reconnects (heartbeats, GC: the baseline).
2. ``churn``: 10% of users reconnect per minute, spread evenly; a reconnect is a quick blip
   (gap ``blip_gap``) except one in ``away_every``, which stays away longer than the grace
   period (so its watchers see offline, then online). Presence cost = churn − quiet CPU.
3. ``storm``: ``storm_users`` users each reconnect ``storm_times`` times within a few
   seconds (all quick): raw connection events (opened + closed) : presence frames delivered.
4. ``storm_away``: the same, but each user's last close lasts past the grace period, then
   they come back: the frames a watcher gets are offline + online per user, whatever the churn.

    .venv/bin/python -m tests.perf.bench_presence [--users 5000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import threading
import time
from typing import Any

import orjson

from tests.perf.common import (
    PYTHON,
    ROOT,
    HttpConn,
    Workdir,
    cpu_seconds,
    figure,
    log,
    machine,
    percentiles,
    raise_nofile,
    rss_kib,
    run_async,
    start_caas,
)
from tests.perf.wsclients import RawSocket, raw_connect
from tests.support import ADMIN

TARGET_PRESENCE_CORE_SHARE = 0.10  # of one core
GRACE = 10.0
AWAY = 3600.0  # idle sockets would turn "away" after the default 300 s, mid-run: not what is measured here


# --- setup: users and tokens over raw keep-alive HTTP ------------------------------------------
async def make_users(port: int, users: int, pool: int = 16) -> tuple[str, list[str]]:
    conn = await HttpConn("127.0.0.1", port).connect()
    status, body = await conn.request(
        "POST", "/v1/tenants", {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
        orjson.dumps({"name": "presence-bench"}),
    )  # fmt: skip
    assert status == 201, body
    tenant = orjson.loads(body)
    key = {"Authorization": f"Bearer {tenant['api_key']}", "Content-Type": "application/json"}
    tokens: list[str] = [""] * users
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(users):
        queue.put_nowait(i)

    async def work() -> None:
        c = await HttpConn("127.0.0.1", port).connect()
        while not queue.empty():
            i = queue.get_nowait()
            s, b = await c.request("PUT", f"/v1/users/u{i}", key, orjson.dumps({"name": f"u{i}"}))
            assert s in (200, 201), b
            s, b = await c.request("POST", f"/v1/users/u{i}/tokens", key, b"{}")
            assert s == 201, b
            tokens[i] = orjson.loads(b)["token"]
        c.close()

    await asyncio.gather(*(work() for _ in range(pool)))
    conn.close()
    return tenant["tenant_id"], tokens


# --- the client process ---------------------------------------------------------------------------
async def client(spec: dict[str, Any]) -> dict[str, Any]:
    raise_nofile()
    url, tokens = spec["url"], spec["tokens"]
    n = len(tokens)
    rng = random.Random(5)
    watchers = list(range(spec["watchers"]))  # users u0..u{w-1} watch; they never reconnect
    movers = list(range(spec["watchers"], n))
    watched: dict[int, list[int]] = {w: rng.sample(movers, spec["watch_each"]) for w in watchers}
    gate = asyncio.Semaphore(100)
    socks: dict[int, RawSocket] = {}
    marks: dict[str, int] = {}
    frames: list[tuple[int, str]] = []  # (monotonic ns, status) of every presence change a watcher got
    connect_ms: list[float] = []
    failures = {"connect": 0}

    async def open_one(i: int) -> None:
        async with gate:
            t0 = time.perf_counter()
            for attempt in range(5):
                try:
                    socks[i] = await raw_connect(f"{url}?token={tokens[i]}", False)
                    break
                except (TimeoutError, OSError, RuntimeError):
                    failures["connect"] += 1
                    await asyncio.sleep(0.2 * (attempt + 1))
            connect_ms.append((time.perf_counter() - t0) * 1000)

    gaps: list[float] = []  # seconds each reconnect left the user with no socket (close -> upgraded)

    async def reconnect(i: int, gap: float) -> None:
        sock = socks.pop(i, None)
        t0 = time.monotonic()
        if sock is not None:
            await sock.close()
        await asyncio.sleep(gap)
        await open_one(i)
        gaps.append(time.monotonic() - t0)

    marks["connect_start"] = time.monotonic_ns()
    await asyncio.gather(*(open_one(i) for i in range(n)))
    marks["connect_end"] = time.monotonic_ns()

    async def watch(w: int) -> None:
        sock = socks[w]
        sock.send(orjson.dumps({"type": "subscribe_presence", "user_ids": [f"u{u}" for u in watched[w]]}))
        initial = 0
        while True:
            frame = orjson.loads(await sock.recv())
            if frame.get("type") != "presence":
                continue
            if initial < spec["watch_each"]:
                initial += 1  # the snapshot of each watched user: not a change
                continue
            frames.append((time.monotonic_ns(), frame["status"]))

    watch_tasks = [asyncio.create_task(watch(w)) for w in watchers]
    print(f"READY {len(socks)}", flush=True)
    await asyncio.sleep(spec["settle"])

    async def phase(name: str, seconds: float) -> None:
        print(f"PHASE {name}", flush=True)
        marks[f"{name}_start"] = time.monotonic_ns()
        await asyncio.sleep(seconds)
        marks[f"{name}_end"] = time.monotonic_ns()

    # 1. quiet
    await phase("quiet", spec["seconds"])
    # 2. churn: 10% of users per minute, evenly
    per_minute = spec["reconnect_share_per_minute"] * n
    interval = 60.0 / per_minute
    order = movers[:]
    rng.shuffle(order)
    churn: list[asyncio.Task[None]] = []
    away = 0
    print("PHASE churn", flush=True)
    marks["churn_start"] = time.monotonic_ns()
    loop = asyncio.get_running_loop()
    start, k = loop.time(), 0
    while loop.time() - start < spec["seconds"]:
        gap = spec["blip_gap"]
        if spec["away_every"] and k % spec["away_every"] == spec["away_every"] - 1:
            gap, away = GRACE + 2.0, away + 1
        churn.append(asyncio.create_task(reconnect(order[k % len(order)], gap)))
        k += 1
        await asyncio.sleep(max(0.0, start + k * interval - loop.time()))
    marks["churn_end"] = time.monotonic_ns()
    await asyncio.gather(*churn)
    churn_reconnects, churn_away = k, away
    await asyncio.sleep(GRACE + 3)  # let the last away users come back and their frames land
    churn_frames = [f for f in frames if marks["churn_start"] <= f[0]]
    # 3. storm of quick reconnects; 4. the same ending with an absence past the grace
    stormers = order[: spec["storm_users"]]
    storm_set = set(stormers)
    watch_pairs = sum(1 for w in watchers for u in watched[w] if u in storm_set)

    async def storm_user(i: int, last_gap: float | None) -> None:
        await asyncio.sleep(rng.random() * spec["storm_spread"] / spec["storm_times"])
        for t in range(spec["storm_times"]):
            gap = last_gap if (last_gap is not None and t == spec["storm_times"] - 1) else rng.uniform(0.01, 0.2)
            await reconnect(i, gap)

    storms = {}
    for name, last_gap in (("storm", None), ("storm_away", GRACE + 2.0)):
        before = len(frames)
        gaps.clear()
        marks[f"{name}_start"] = time.monotonic_ns()
        await asyncio.gather(*(storm_user(i, last_gap) for i in stormers))
        marks[f"{name}_end"] = time.monotonic_ns()
        await asyncio.sleep(GRACE + 3)  # whatever the storm causes has been sent by now
        got = frames[before:]
        raw = 2 * spec["storm_users"] * spec["storm_times"]
        storms[name] = {
            "users": spec["storm_users"], "reconnects_each": spec["storm_times"],
            "burst_seconds": round((marks[f"{name}_end"] - marks[f"{name}_start"]) / 1e9, 2),
            "final_absence_seconds": last_gap or 0,
            "no_socket_seconds_per_reconnect": percentiles(gaps, (50, 99)),
            "reconnects_longer_than_grace": sum(1 for g in gaps if g >= GRACE),
            "raw_connection_events": raw, "watch_pairs_on_storm_users": watch_pairs,
            "presence_frames_delivered": len(got),
            "frames_by_status": {s: sum(1 for _, x in got if x == s) for s in ("online", "away", "offline")},
            "raw_to_frames": round(raw / len(got), 1) if got else None,
            "raw_per_watch_pair_to_frames_per_watch_pair":
                round((raw / spec["storm_users"]) / (len(got) / watch_pairs), 1) if got and watch_pairs else None,
        }  # fmt: skip
    for t in watch_tasks:
        t.cancel()
    await asyncio.gather(*(s.close() for s in socks.values()), return_exceptions=True)

    return {
        "marks": marks,
        "connected": len(socks),
        "connect_failures": failures["connect"],
        "connect_ms": percentiles(connect_ms, (50, 99)),
        "churn": {
            "reconnects": churn_reconnects,
            "of_which_away_past_grace": churn_away,
            "raw_connection_events": 2 * churn_reconnects,
            "presence_frames_delivered": len(churn_frames),
            "frames_by_status": {s: sum(1 for _, x in churn_frames if x == s) for s in ("online", "away", "offline")},
        },
        "storms": storms,
    }


def spy_on(pid: int, seconds: int, path: Any) -> dict[str, Any]:
    """py-spy samples of the server (threads on CPU only: idle ones are not sampled)."""
    from tests.perf.pyspy import record, summarise

    time.sleep(3)  # into the phase
    record(["-d", str(seconds), "-p", str(pid)], path, gil=False)
    return {"seconds": seconds, **summarise(path, 15)} if path.exists() else {"error": "py-spy wrote nothing"}


# --- the driver -----------------------------------------------------------------------------------
class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.samples.append((time.monotonic_ns(), cpu_seconds(self.pid), rss_kib(self.pid)))
            except OSError:
                return
            self.stop.wait(0.5)

    def window(self, start: int, end: int) -> dict[str, Any]:
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return {}
        (t0, c0, _), (t1, c1, r1) = inside[0], inside[-1]
        peak = max(s[2] for s in inside)
        return {"seconds": round((t1 - t0) / 1e9, 1), "server_cpu_cores": round((c1 - c0) / ((t1 - t0) / 1e9), 4),
                "server_rss_mib": round(r1 / 1024, 1), "server_rss_max_mib": round(peak / 1024, 1)}  # fmt: skip


def run(users: int = 5000, seconds: float = 60.0, watchers: int = 50, watch_each: int = 200,
        storm_users: int = 1000, storm_times: int = 5, with_profile: bool = False) -> dict[str, Any]:  # fmt: skip
    spec_extra = {
        "watchers": watchers, "watch_each": watch_each, "seconds": seconds, "settle": 5.0,
        "reconnect_share_per_minute": 0.10, "blip_gap": 0.5, "away_every": 5,
        "storm_users": storm_users, "storm_times": storm_times, "storm_spread": 3.0,
    }  # fmt: skip
    with Workdir() as work:
        server = start_caas(work, CAAS_PRESENCE_GRACE_SECONDS=str(GRACE), CAAS_WS_MAX_PRESENCE_WATCH="1000",
                            CAAS_PRESENCE_AWAY_SECONDS=str(AWAY))  # fmt: skip
        try:
            assert server.process is not None
            pid = server.process.pid
            log(f"presence: making {users} users")
            _, tokens = run_async(make_users(server.port, users))
            idle_cpu0, t0 = cpu_seconds(pid), time.monotonic()
            time.sleep(3)
            idle = round((cpu_seconds(pid) - idle_cpu0) / (time.monotonic() - t0), 4)
            sampler = Sampler(pid)
            sampler.start()
            raise_nofile()
            proc = subprocess.Popen([PYTHON, "-m", "tests.perf.bench_presence", "--client"], cwd=ROOT,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(orjson.dumps({"url": server.ws_url, "tokens": tokens, **spec_extra}) + b"\n")
            proc.stdin.flush()
            log(f"presence: connecting {users} sockets")
            ready = proc.stdout.readline().decode()
            log(f"presence: {ready.strip()}; quiet {seconds:g}s, churn {seconds:g}s, then two storms")
            profiles: dict[str, Any] = {}
            spies = []
            while (line := proc.stdout.readline().decode()).startswith("PHASE "):
                name = line.split()[1]
                log(f"presence: phase {name}")
                if with_profile:
                    spy = threading.Thread(target=lambda name=name: profiles.update(
                        {name: spy_on(pid, int(min(30, seconds / 2)), work / f"{name}.txt")}))  # fmt: skip
                    spy.start()
                    spies.append(spy)
            out = line.encode() + proc.communicate(timeout=4 * seconds + 300)[0]
            for spy in spies:
                spy.join()
            sampler.stop.set()
            sampler.join()
            result = orjson.loads(out.decode().strip().splitlines()[-1])
        finally:
            server.stop()
    m = result.pop("marks")
    phases = {name: sampler.window(m[f"{name}_start"], m[f"{name}_end"])
              for name in ("connect", "quiet", "churn", "storm", "storm_away")}  # fmt: skip
    phases["idle_no_sockets"] = {"server_cpu_cores": idle}
    quiet, churn = phases["quiet"].get("server_cpu_cores", 0), phases["churn"].get("server_cpu_cores", 0)
    cost = round(churn - quiet, 4)
    churn_secs = (m["churn_end"] - m["churn_start"]) / 1e9
    fps = round(result["churn"]["presence_frames_delivered"] / churn_secs, 2)
    storm, storm_away = result["storms"]["storm"], result["storms"]["storm_away"]
    figures = [
        figure("presence_cost_cores_churn_minus_quiet", cost, "cores", target=TARGET_PRESENCE_CORE_SHARE,
               higher_is_better=False,
               limit=f"same server, same {users} sockets, no reconnects: {quiet} cores; with churn {churn} cores"),
        figure("server_cpu_cores_with_churn", churn, "cores", target=1.0, higher_is_better=False,
               limit=f"quiet {quiet} cores; idle with no sockets {idle} cores"),
        figure("presence_frames_per_second_delivered_churn", fps, "frames/s", target=0, limit=(
            f"{result['churn']['reconnects']} reconnects in {churn_secs:.0f}s "
            f"({result['churn']['of_which_away_past_grace']} past the grace); {watchers} watchers x {watch_each}")),
        figure("storm_raw_events_to_max1_frames",
               storm["raw_connection_events"] / max(1, storm["presence_frames_delivered"]), "ratio", target=10,
               limit=f"{storm['raw_connection_events']} raw events : {storm['presence_frames_delivered']} frames "
                     "(every reconnect within the grace: the ideal is no frame at all)"),
        figure("storm_away_raw_per_user_to_frames_per_watcher",
               storm_away["raw_per_watch_pair_to_frames_per_watch_pair"] or 0, "ratio", target=5,
               limit=f"ideal {2 * storm_times}/2 = {storm_times}: one offline + one "
               f"online frame per watcher per user for {2 * storm_times} raw events"),
    ]  # fmt: skip
    return {
        "setup": {
            "backend": "embedded",
            "users": users,
            "sockets": users,
            "grace_seconds": GRACE,
            "away_seconds": AWAY,
            **spec_extra,
        },
        "client": result,
        "phases": phases,
        **({"profiles_server_py_spy": profiles} if with_profile else {}),
        "figures": figures,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--watchers", type=int, default=50)
    p.add_argument("--storm-users", type=int, default=1000)
    p.add_argument("--profile", action="store_true", help="py-spy the server in the quiet and churn phases")
    args = p.parse_args()
    if args.client:
        spec = orjson.loads(sys.stdin.buffer.readline())
        print(orjson.dumps(run_async(client(spec))).decode(), flush=True)
        return
    out = {"machine": machine(), "loadavg_before": list(__import__("os").getloadavg()),
           "presence": run(args.users, args.seconds, args.watchers, storm_users=args.storm_users,
                           with_profile=args.profile)}  # fmt: skip
    out["loadavg_after"] = list(__import__("os").getloadavg())
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
