"""Benchmark 4: ``caas rebuild`` of the chat read model, beside a raw SQLite scan of the same log.

A log of ~200k events is generated in-process through the real write path
(``commands.service.CommandService`` + ``adapters.sqlite_log.SqliteEventLog``): tenant, users,
channels, then messages (a tenth of them thread replies), reactions and edits. Then
``caas rebuild --projection chat`` runs as a subprocess and its JSON line is parsed. The limit is
a raw scan of the same file: SELECT every row and ``orjson.loads`` its payload. Beside events per
second, the rebuild's events per CPU second (the process's user + system time) are compared with
the scan's: on a shared machine that ratio moves far less than the wall-clock one.

Then ``caas rebuild --projection usage`` of the same log, and (with ``CAAS_MONGO_URL`` set) the
chat model's bulk load into FerretDB beside a raw ``insert_many`` (:func:`into_mongo`).

    .venv/bin/python -m tests.perf.bench_rebuild [--events 200000] [--mongo-events 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from adapters.ids import utcnow, uuid7
from adapters.sqlite_log import COLUMNS, SqliteEventLog
from commands.ports import EventLog
from commands.service import CommandEnvelope, CommandService
from domain import channel as ch
from domain import tenant, user
from domain.base import Actor, format_time
from domain.events import stream_name
from tests.perf.common import PYTHON, ROOT, Workdir, figure, log, machine, run_async

TARGET_EVENTS_PER_S = 100_000.0  # issue 12
TARGET_RATIO = 0.3  # of the raw scan, issue 12
TARGET_MONGO_RATIO = 0.8  # of a raw insert_many of as many documents into FerretDB, issue 12
USERS = 200
CHANNELS = 100
MEMBERS = 20
BATCH = 2000


async def generate(
    path: Path, events: int, seed: int = 7, *, open_log: Callable[[Path], EventLog] = SqliteEventLog
) -> int:
    """Write about ``events`` events through the command service into the log ``open_log(path)``;
    return the log's head position."""
    rng = random.Random(seed)
    log_ = open_log(path)
    await log_.start()
    service = CommandService(log_, clock=utcnow, new_id=uuid7)
    tid = "tbench"
    admin, key = Actor("admin", "admin"), Actor("tenant", "k1")
    register = tenant.RegisterTenant(name="bench", key_id="k1", key_hash="0" * 64)
    await service.execute(CommandEnvelope(tid, stream_name("tenant", tid), register, actor=admin.label))
    users = [f"u{i}" for i in range(USERS)]
    await asyncio.gather(*(service.execute(CommandEnvelope(tid, stream_name("user", u),
                                                           user.RegisterUser(name=u, metadata={}), actor=key.label))
                           for u in users))  # fmt: skip
    members: dict[str, list[str]] = {}
    for i in range(CHANNELS):
        cid = f"c{i}"
        members[cid] = rng.sample(users, MEMBERS)
        await service.execute(CommandEnvelope(tid, stream_name("channel", cid),
                              ch.CreateChannel(actor=key, name=cid, kind="group", members=members[cid]),
                              actor=key.label))  # fmt: skip
    messages: dict[str, list[tuple[str, str]]] = {cid: [] for cid in members}  # (message_id, author)
    head = await log_.head_position()

    def command() -> tuple[str, ch.ChannelCommand]:
        cid = f"c{rng.randrange(CHANNELS)}"
        author = rng.choice(members[cid])
        actor = Actor("user", author)
        roll = rng.random()
        known = messages[cid]
        if known and roll < 0.07:
            mid, _ = rng.choice(known)
            return cid, ch.AddReaction(actor=actor, message_id=mid, user_id=author, emoji=rng.choice("👍🎉❤️🚀"))
        if known and roll < 0.10:
            mid, by = rng.choice(known)
            return cid, ch.EditMessage(actor=Actor("user", by), message_id=mid, text=f"edited {rng.random()}")
        parent = rng.choice(known)[0] if known and roll < 0.19 else None
        mid = uuid7()
        if parent is None:
            known.append((mid, author))
        text = f"message {rng.getrandbits(64):x} of a fairly typical chat length, lorem ipsum dolor sit amet"
        return cid, ch.PostMessage(actor=actor, message_id=mid, author_id=author, text=text, parent_id=parent,
                                   now=format_time(utcnow()))  # fmt: skip

    while head < events:
        batch = [command() for _ in range(min(BATCH, events - head))]
        results = await asyncio.gather(*(service.execute(CommandEnvelope(tid, stream_name("channel", cid), c,
                                                                         actor=c.actor.label))
                                         for cid, c in batch), return_exceptions=True)  # fmt: skip
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:  # a reaction repeated by chance is Unchanged, not an error; anything else is a bug
            raise failures[0]
        head = await log_.head_position()
    await log_.close()
    return head


def raw_scan(path: Path) -> dict[str, Any]:
    """The limit: every row read and its payload decoded. On a shared machine the events per
    CPU second are the steadier figure (wall time depends on who else runs)."""
    conn = sqlite3.connect(path)
    started, cpu = time.perf_counter(), time.process_time()
    count = 0
    for row in conn.execute(f"SELECT {COLUMNS} FROM events ORDER BY position"):
        orjson.loads(row[12])
        count += 1
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    conn.close()
    return {"events": count, "seconds": round(seconds, 3), "events_per_second": round(count / seconds),
            "events_per_cpu_second": round(count / cpu), "load": os.getloadavg()}  # fmt: skip


def caas_rebuild(data: Path, *args: str, timeout: float = 900, cwd: Path = ROOT) -> dict[str, Any]:
    """``caas rebuild [args]`` as a subprocess (of the source tree ``cwd``): its first JSON line, the
    process's wall time, its CPU time (user + system, imports included) and the load average around it."""
    env = {**os.environ, "CAAS_DATA_DIR": str(data), "CAAS_LOG_LEVEL": "warning", "TERM": "dumb"}
    load, before = os.getloadavg(), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    cmd = [PYTHON, "-m", "api.cli", "rebuild", *args]
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, timeout=timeout)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if out.returncode != 0:
        raise RuntimeError(f"caas rebuild failed: {out.stderr.decode()[-2000:]}")
    for line in out.stdout.decode().splitlines():
        if line.startswith("{"):
            summary = orjson.loads(line)
            per_cpu = round(summary["events"] / cpu)
            return {**summary, "process_wall_seconds": round(wall, 3), "process_cpu_seconds": round(cpu, 3),
                    "events_per_cpu_second": per_cpu, "load": [load, os.getloadavg()]}  # fmt: skip
    raise RuntimeError(f"caas rebuild printed no JSON line: {out.stdout.decode()[-2000:]}")


def into_mongo(path: Path, url: str, database: str, events: int, window: int = 50_000) -> dict[str, Any]:
    """The Kafka rebuild's load into MongoDB (FerretDB here) of the chat model: the first
    ``events`` of the log at ``path`` folded ``window`` at a time into ``rebuild_*`` collections
    by ``MongoReadStore.load``, as ``adapters.kafka.tools.rebuild`` does (the events come from
    the embedded log, so Kafka's own read is left out); beside it a raw ``insert_many`` of as many
    documents (``bench_distributed.raw_insert_many``)."""
    from adapters.mongo_store import MongoReadStore
    from api.bootstrap import CHAT
    from streams.projector import bulk_allocation, checkpoint_name, ops_for
    from tests.perf.bench_distributed import raw_insert_many

    async def load() -> tuple[int, float, float]:
        log_ = SqliteEventLog(path)
        await log_.start()
        read: list[Any] = []
        while len(read) < events and (more := await log_.read_all(read[-1].position if read else 0, 50_000)):
            read += more[: events - len(read)]
        await log_.close()
        store = MongoReadStore(url, database, prefix="rebuild_")
        await store.start()
        await store.drop(CHAT.name, CHAT.collections)
        started, cpu = time.perf_counter(), time.process_time()
        loaded: set[Any] = set()
        with bulk_allocation():
            for start in range(0, len(read), window):
                part = read[start : start + window]
                await store.load(checkpoint_name(CHAT.name, 0), ops_for(CHAT, part, 0), part[-1].position, loaded)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        await store.drop(CHAT.name, CHAT.collections)
        await store.close()
        return len(read), seconds, cpu

    load_before = os.getloadavg()
    count, seconds, cpu = run_async(load())
    raw = raw_insert_many(url, database + "_raw", count)
    rate = round(count / seconds)
    return {"events": count, "window": window, "seconds": round(seconds, 2), "events_per_second": rate,
            "cpu_seconds": round(cpu, 2), "raw_insert_many": raw, "load": [load_before, os.getloadavg()],
            "figure": figure("rebuild_into_ferretdb", rate, "events/s",
                             target=round(TARGET_MONGO_RATIO * raw["docs_per_s"]),
                             limit=f"raw insert_many of as many documents ({raw['docs_per_s']}/s)",
                             ratio_to=raw["docs_per_s"])}  # fmt: skip


def run(events: int = 200_000, mongo_events: int = 100_000) -> dict[str, Any]:
    """``mongo_events`` > 0 and ``CAAS_MONGO_URL`` set (``eval "$(infra/services env)"``): also
    the load into FerretDB (:func:`into_mongo`)."""
    mongo_url = os.environ.get("CAAS_MONGO_URL")
    with Workdir() as work:
        data = work / "data"
        data.mkdir()
        path = data / "events.db"
        log(f"rebuild: generating {events} events through CommandService + SqliteEventLog")
        started = time.perf_counter()
        head = run_async(generate(path, events))
        generated = round(time.perf_counter() - started, 1)
        log(f"rebuild: {head} events in {generated}s; raw scan")
        raw = raw_scan(path)
        log("rebuild: caas rebuild")
        rebuilt = caas_rebuild(data, "--projection", "chat")  # one projection: its CPU seconds are its own
        usage = caas_rebuild(data, "--projection", "usage")
        size_mib = round(path.stat().st_size / 2**20, 1)
        mongo = into_mongo(path, mongo_url, "perf_rebuild", mongo_events) if mongo_url and mongo_events else None
    log(f"rebuild: {rebuilt['events_per_second']} events/s (raw scan {raw['events_per_second']}/s)")
    figures = []
    for name, result in (("rebuild", rebuilt), ("usage_rebuild", usage)):
        figures += [
            figure(f"{name}_throughput", result["events_per_second"], "events/s", target=TARGET_EVENTS_PER_S,
                   limit=f"raw SQLite scan + JSON decode ({raw['events_per_second']}/s)",
                   ratio_to=raw["events_per_second"]),
            figure(f"{name}_ratio_to_scan", round(result["events_per_second"] / raw["events_per_second"], 3), "x",
                   target=TARGET_RATIO, limit=f"raw SQLite scan + JSON decode ({raw['events_per_second']}/s)"),
            figure(f"{name}_events_per_cpu_second", result["events_per_cpu_second"], "events/CPU s",
                   target=round(TARGET_RATIO * raw["events_per_cpu_second"]),
                   limit=f"raw scan per CPU second ({raw['events_per_cpu_second']})",
                   ratio_to=raw["events_per_cpu_second"]),
        ]  # fmt: skip
    if mongo is not None:
        figures.append(mongo["figure"])
    return {
        "setup": {
            "events": head,
            "log_mib": size_mib,
            "generate_seconds": generated,
            "users": USERS,
            "channels": CHANNELS,
            "write_path_events_per_s": round(head / generated),
        },
        "caas_rebuild": rebuilt,
        "caas_rebuild_usage": usage,
        "into_ferretdb": mongo,
        "raw_scan": raw,
        "figures": figures,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--mongo-events", type=int, default=100_000, help="0: no FerretDB run (it needs CAAS_MONGO_URL)")
    args = p.parse_args()
    result = run(args.events, args.mongo_events)
    print(orjson.dumps({"machine": machine(), "rebuild": result}, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
