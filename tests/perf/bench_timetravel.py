"""Time travel (issue 13): ``as_of`` on a channel of 100k events, beside the live history route.

One channel's log of ``events`` events is written in-process through the real write path
(``commands.service.CommandService`` + ``adapters.sqlite_log.SqliteEventLog``): 20 members posting
(a tenth of the posts are thread replies, some name a member as ``@user``), reacting, editing,
deleting and moving read markers. Then ``caas serve`` (embedded) runs on that data dir and a
client asks, in interleaved rounds:

- ``GET /v1/channels/c/messages`` (the live route: the read model's newest page) — the limit;
- ``GET /v1/channels/c/messages?as_of=pos:<p>`` and ``GET /v1/channels/c?as_of=pos:<p>``, ``p``
  drawn uniformly over the channel's positions (a page of history as of then, the channel's
  state as of then), the channel as the tenant sees it (as_of is the tenant API key's only
  since user tokens are refused it);
- ``GET /v1/channels/c`` live.

The first ``as_of`` folds the whole stream into the node's timeline (``projections.timetravel``):
its latency is reported apart (``cold``), with the server's RSS before and after. Latencies are
the client's (sequential requests on one keep-alive connection); CPU per request is the
server process's CPU time over the requests of a kind.

    .venv/bin/python -m tests.perf.bench_timetravel [--events 100000] [--rounds 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import orjson

from adapters.ids import utcnow, uuid7
from adapters.sqlite_log import SqliteEventLog
from commands.auth import new_api_key
from commands.service import CommandEnvelope, CommandService
from domain import channel as ch
from domain import tenant, user
from domain.base import Actor, format_time
from domain.errors import DomainError
from domain.events import stream_name
from projections.timetravel import Timeline
from tests.perf.common import Workdir, cpu_seconds, figure, log, machine, percentiles, rss_kib, run_async
from tests.support import Server, bearer

TARGET_P99_MS = 100.0  # issue 13
MEMBERS = 20
BATCH = 500
TID, CID = "tbench", "c"


async def generate(path: Path, events: int, seed: int = 13) -> tuple[str, list[int]]:
    """Write a channel of ``events`` events; return the tenant's API key and the channel's positions."""
    rng = random.Random(seed)
    log_ = SqliteEventLog(path)
    await log_.start()
    service = CommandService(log_, clock=utcnow, new_id=uuid7)
    admin, key = Actor("admin", "admin"), Actor("tenant", "k1")
    api_key, key_hash = new_api_key(TID, "k1")
    register = tenant.RegisterTenant(name="bench", key_id="k1", key_hash=key_hash)
    await service.execute(CommandEnvelope(TID, stream_name("tenant", TID), register, actor=admin.label))
    users = [f"u{i}" for i in range(MEMBERS)]
    for u in users:
        await service.execute(CommandEnvelope(TID, stream_name("user", u), user.RegisterUser(name=u, metadata={}),
                                              actor=key.label))  # fmt: skip
    stream = stream_name("channel", CID)
    create = ch.CreateChannel(actor=key, name="bench", kind="group", members=users)
    await service.execute(CommandEnvelope(TID, stream, create, actor=key.label))
    posted: list[tuple[str, str]] = []  # (message_id, author) of top-level messages not deleted
    count = 1 + MEMBERS

    def command() -> ch.ChannelCommand:
        author = rng.choice(users)
        actor = Actor("user", author)
        roll = rng.random()
        if posted and roll < 0.12:
            mid, _ = rng.choice(posted)
            return ch.AddReaction(actor=actor, message_id=mid, user_id=author, emoji=rng.choice("👍🎉❤️🚀"))
        if posted and roll < 0.17:
            mid, by = rng.choice(posted)
            return ch.EditMessage(actor=Actor("user", by), message_id=mid, text=f"edited {rng.random()}")
        if posted and roll < 0.19:
            mid, by = posted.pop(rng.randrange(len(posted)))
            return ch.DeleteMessage(actor=Actor("user", by), message_id=mid)
        if roll < 0.24:
            return ch.MoveReadMarker(actor=actor, user_id=author, seq=count)
        parent = rng.choice(posted)[0] if posted and roll < 0.31 else None
        mid = uuid7()
        if parent is None:
            posted.append((mid, author))
        mention = f" @{rng.choice(users)}" if rng.random() < 0.2 else ""
        text = f"message {rng.getrandbits(64):x} of a fairly typical chat length, lorem ipsum{mention}"
        return ch.PostMessage(actor=actor, message_id=mid, author_id=author, text=text, parent_id=parent,
                              now=format_time(utcnow()))  # fmt: skip

    while count < events:
        batch = [command() for _ in range(min(BATCH, events - count))]
        results = await asyncio.gather(*(service.execute(CommandEnvelope(TID, stream, c, actor=c.actor.label))
                                         for c in batch), return_exceptions=True)  # fmt: skip
        # a batch decided concurrently may edit or react to a message its own deletion removed: refused
        unexpected = [r for r in results if isinstance(r, BaseException) and not isinstance(r, DomainError)]
        if unexpected:
            raise unexpected[0]
        count += len(await log_.read_stream(TID, stream, count, None))
    recorded = await log_.read_stream(TID, stream)
    await log_.close()
    return api_key, [e.position for e in recorded]


def fold_in_process(path: Path) -> dict[str, Any]:
    """The timeline's own cost, without HTTP: the stream read from the log, folded (CPU time),
    and the memory the folded timeline holds (``tracemalloc``, a second fold)."""

    async def read() -> list[Any]:
        log_ = SqliteEventLog(path)
        await log_.start()
        try:
            return await log_.read_stream(TID, stream_name("channel", CID))
        finally:
            await log_.close()

    cpu = time.process_time()
    events = run_async(read())
    read_cpu = time.process_time() - cpu
    cpu = time.process_time()
    Timeline(TID, CID).extend(events)
    fold_cpu = time.process_time() - cpu
    tracemalloc.start()
    timeline = Timeline(TID, CID)
    timeline.extend(events)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    versions = sum(len(v.docs) for v in timeline.versions.values())
    return {"events": len(events), "read_cpu_s": round(read_cpu, 2), "fold_cpu_s": round(fold_cpu, 2),
            "fold_events_per_cpu_s": round(len(events) / fold_cpu), "versions": versions,
            "estimated_mib": round(timeline.size / 2**20, 1),
            "timeline_mib": round(held / 2**20, 1), "timeline_bytes_per_event": round(held / len(events))}  # fmt: skip


def timed(client: httpx.Client, url: str, headers: dict[str, str], params: dict[str, str]) -> float:
    started = time.perf_counter()
    r = client.get(url, params=params, headers=headers)
    elapsed = (time.perf_counter() - started) * 1000
    if r.status_code != 200:
        raise RuntimeError(f"GET {url} {params}: {r.status_code} {r.text[:500]}")
    return elapsed


def measure(srv: Server, api_key: str, positions: list[int], rounds: int, seed: int = 5) -> dict[str, Any]:
    rng = random.Random(seed)
    h = bearer(api_key)
    history, channel = f"{srv.url}/v1/channels/{CID}/messages", f"{srv.url}/v1/channels/{CID}"
    pid = srv.process.pid if srv.process is not None else 0
    kinds = ("live_history", "as_of_history", "as_of_channel", "live_channel")
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, float] = dict.fromkeys(kinds, 0.0)
    with httpx.Client(timeout=120) as client:
        # the server projects the log into its read model first: the live routes are measured once it has
        deadline = time.monotonic() + 900
        while client.get(history, params={"min_position": str(positions[-1])}, headers=h).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the read model did not catch up with the log")
        rss_before = rss_kib(pid)
        cpu0 = cpu_seconds(pid)
        cold = timed(client, history, h, {"as_of": f"pos:{positions[len(positions) // 2]}"})
        cold_cpu = cpu_seconds(pid) - cpu0
        rss_after = rss_kib(pid)
        load = [os.getloadavg()]
        for _ in range(rounds):
            point = {"as_of": f"pos:{rng.choice(positions)}"}
            for kind, url, who, params in (("live_history", history, h, {}), ("as_of_history", history, h, point),
                                           ("as_of_channel", channel, h, point),
                                           ("live_channel", channel, h, {})):  # fmt: skip
                before = cpu_seconds(pid)
                samples[kind].append(timed(client, url, who, params))
                cpu[kind] += cpu_seconds(pid) - before
        load.append(os.getloadavg())
    return {
        "cold_first_as_of_ms": round(cold, 1),
        "cold_first_as_of_server_cpu_s": round(cold_cpu, 2),
        "rss_kib_before_first_as_of": rss_before,
        "rss_kib_after_first_as_of": rss_after,
        "latency_ms": {k: percentiles(v) for k, v in samples.items()},
        "server_cpu_ms_per_request": {k: round(cpu[k] * 1000 / rounds, 2) for k in kinds},
        "rounds": rounds,
        "load": load,
    }


def run(events: int = 100_000, rounds: int = 300) -> dict[str, Any]:
    with Workdir() as work:
        data = work / "data"
        data.mkdir()
        log(f"timetravel: writing a channel of {events} events")
        started = time.perf_counter()
        api_key, positions = run_async(generate(data / "events.db", events))
        generated = round(time.perf_counter() - started, 1)
        log(f"timetravel: {len(positions)} channel events in {generated}s; the fold in-process")
        in_process = fold_in_process(data / "events.db")
        log(f"timetravel: {in_process}; caas serve")
        srv = Server(data, env={"CAAS_LOG_LEVEL": "warning", "CAAS_METERING": "off"}).start(timeout=600)
        try:
            result = measure(srv, api_key, positions, rounds)
        finally:
            srv.stop()
    lat = result["latency_ms"]
    live = lat["live_history"]["p99"]
    figures = [
        figure("as_of_history_p99", lat["as_of_history"]["p99"], "ms", target=TARGET_P99_MS, higher_is_better=False,
               limit=f"the live history route's p99 in the same run ({live} ms)", limit_value=live),
        figure("as_of_channel_p99", lat["as_of_channel"]["p99"], "ms", target=TARGET_P99_MS, higher_is_better=False,
               limit=f"the live channel route's p99 in the same run ({lat['live_channel']['p99']} ms)",
               limit_value=lat["live_channel"]["p99"]),
        figure("as_of_history_p50", lat["as_of_history"]["p50"], "ms", target=TARGET_P99_MS, higher_is_better=False,
               limit=f"the live history route's p50 ({lat['live_history']['p50']} ms)",
               limit_value=lat["live_history"]["p50"]),
    ]  # fmt: skip
    return {"setup": {"channel_events": len(positions), "members": MEMBERS, "generate_seconds": generated},
            "fold_in_process": in_process, **result, "figures": figures}  # fmt: skip


async def post_channel(url: str, api_key: str, events: int, connections: int = 16) -> list[int]:
    """Fill channel ``c`` over HTTP with posts (every tenth an edit) up to ``events`` events;
    return the channel's positions (``GET /v1/events``)."""
    h = bearer(api_key)
    async with httpx.AsyncClient(timeout=60) as client:
        for n in range(MEMBERS):
            r = await client.put(f"{url}/v1/users/u{n}", json={"name": f"u{n}"}, headers=h)
            r.raise_for_status()
        members = [f"u{n}" for n in range(MEMBERS)]
        r = await client.post(f"{url}/v1/channels", json={"channel_id": CID, "name": "bench", "members": members},
                              headers=h)  # fmt: skip
        r.raise_for_status()
        todo = iter(range(events - 1 - MEMBERS))

        async def poster(worker: int) -> None:
            last = None
            for n in todo:
                if last is not None and n % 10 == 0:
                    r = await client.patch(f"{url}/v1/channels/{CID}/messages/{last}", json={"text": f"edit {n}"},
                                           headers=h)  # fmt: skip
                else:
                    body = {"text": f"message {n} @u{n % MEMBERS}", "user_id": f"u{(n + worker) % MEMBERS}"}
                    r = await client.post(f"{url}/v1/channels/{CID}/messages", json=body, headers=h)
                    last = r.json().get("message_id")
                r.raise_for_status()

        await asyncio.gather(*(poster(w) for w in range(connections)))
        positions: list[int] = []
        after = 0
        while True:
            r = await client.get(f"{url}/v1/events", params={"after_position": after, "limit": 1000}, headers=h)
            page = r.json()
            positions += [e["position"] for e in page["events"] if e["stream"] == f"channel:{CID}"]
            if page["next_after_position"] is None:
                return positions
            after = page["next_after_position"]


def run_kafka(events: int = 5000, rounds: int = 100) -> dict[str, Any]:
    """The same measurement on the distributed backend (a worker and a node on the test Kafka and
    FerretDB: ``eval "$(infra/services env)"``), the channel filled over HTTP."""
    from tests.cluster import Cluster
    from tests.perf.common import uncapped
    from tests.support import new_tenant

    with Workdir() as work:
        cluster = Cluster(work / "cluster", env={"CAAS_METERING": "off", **uncapped(work)}).start()
        try:
            node = cluster.nodes[0]
            with httpx.Client(timeout=30) as client:
                tenant = new_tenant(client, node.url, "bench")
            started = time.perf_counter()
            positions = run_async(post_channel(node.url, tenant.api_key, events))
            generated = round(time.perf_counter() - started, 1)
            log(f"timetravel kafka: {len(positions)} channel events in {generated}s")
            result = measure(node, tenant.api_key, positions, rounds)
        finally:
            cluster.stop()
    return {"setup": {"backend": "kafka", "channel_events": len(positions), "generate_seconds": generated}, **result}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--kafka-events", type=int, default=0, help="also on Kafka + FerretDB, a channel of this many")
    args = p.parse_args()
    result = {"machine": machine(), "timetravel": run(args.events, args.rounds) if args.events else None}
    if args.kafka_events:
        result["timetravel_kafka"] = run_kafka(args.kafka_events)
    out = orjson.dumps(result, option=orjson.OPT_INDENT_2)
    if args.out:
        Path(args.out).write_bytes(out)
    print(out.decode())


if __name__ == "__main__":
    main()
