"""The ``caas`` command line: serve, replay, rebuild."""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import orjson
import structlog

from adapters.kafka_codec import decode_position
from api.settings import Settings
from domain.events import EVENT_TYPES, Event


class RedactTokens(logging.Filter):
    """Websocket URLs carry the user's token (``?token=``); never write it to a log."""

    pattern = re.compile(r"(token=)[^&\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.pattern.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, dict):  # a structlog event dict: the formatter renders it later
            record.msg = {k: self.pattern.sub(r"\1[redacted]", v) if isinstance(v, str) else v
                          for k, v in record.msg.items()}  # fmt: skip
        else:
            record.msg = self.pattern.sub(r"\1[redacted]", str(record.msg))
        return True


def configure_logging(level: str) -> None:
    """JSON lines on stderr for our own logs and for the libraries' (uvicorn, aiokafka)."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactTokens())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def serve(settings: Settings) -> None:
    import uvicorn

    from api.app import create_app
    from api.bootstrap import admin_token
    from api.connections import guarded_protocols

    configure_logging(settings.log_level)
    token = admin_token(settings)
    http, ws = guarded_protocols(settings)  # httptools and websockets-sansio, with read timeouts and a per-address cap
    if settings.admin_token is None:
        print(f"CAAS admin token (kept in {settings.data_dir / 'admin_token'}): {token}", flush=True)
    print(f"CAAS {settings.backend} serving on http://{settings.host}:{settings.port}", flush=True)
    uvicorn.run(
        create_app(settings),
        log_config=None,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        loop="uvloop",
        http=http,
        ws=ws,
        ws_max_size=settings.ws_max_frame_bytes * 4,
        timeout_keep_alive=30,
        # no limit_concurrency: it counted every open connection, so one client holding 10,000
        # made everyone's requests 503; the per-address cap bounds what one client holds
    )


async def _log_batches(settings: Settings, args: argparse.Namespace) -> AsyncIterator[list[Event]]:
    """The log in batches: the SQLite file (embedded) or the Kafka event topic."""
    types: list[str] = args.types
    if settings.backend == "kafka":
        from adapters.kafka_log import iterate_events

        since_ms = (
            int(datetime.fromisoformat(args.since.replace("Z", "+00:00")).timestamp() * 1000) if args.since else None
        )
        topic = f"{settings.kafka_topic_prefix}events"
        batches = iterate_events(
            settings.kafka_bootstrap,
            topic,
            settings.kafka_partitions,
            after_position=args.after_position,
            since_ms=since_ms,
        )
        async for batch in batches:
            yield [
                e for e in batch if (not args.tenant or e.tenant_id == args.tenant) and (not types or e.type in types)
            ]
        return
    from api.bootstrap import build_log

    log = build_log(settings)
    await log.start()
    after = args.after_position
    try:
        while events := await log.read_all(after_position=after, limit=5000, tenant_id=args.tenant, types=types):
            after = events[-1].position
            yield events
    finally:
        await log.close()


async def replay(settings: Settings, args: argparse.Namespace) -> None:
    writer = None
    if args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["position", "tenant_id", "stream", "seq", "type", "occurred_at", "event_id", "payload"])
    try:
        async for events in _log_batches(settings, args):
            for event in events:
                if args.since and event.occurred_at < args.since:
                    continue
                if writer is not None:
                    payload = orjson.dumps(event.payload).decode()
                    row = [event.position, event.tenant_id, event.stream, event.seq, event.type, event.occurred_at]
                    writer.writerow([*row, event.event_id, payload])
                else:
                    sys.stdout.write(orjson.dumps(event.model_dump()).decode() + "\n")
    finally:
        sys.stdout.flush()


def report(projection: str, count: int, seconds: float) -> None:
    rate = round(count / seconds) if seconds else 0
    summary = {"projection": projection, "events": count, "seconds": round(seconds, 3), "events_per_second": rate}
    print(orjson.dumps(summary).decode(), flush=True)


REBUILD_WINDOW = 10_000  # events folded in memory per bulk load (``caas rebuild --backend kafka``)


async def _bulk_load(fresh: Any, name: str, projection: Any, window: list[Event], loaded: set[str]) -> None:
    """Bulk-load a window of one partition's events into the fresh collections, retried: a
    slow database (FerretDB in tests) must not abort a rebuild."""
    from projections.ports import ReadStoreUnavailable
    from streams.projector import ops_for

    partition, offset = decode_position(window[-1].position)
    for attempt in range(5):
        try:
            await fresh.load(f"{name}@p{partition}", ops_for(projection, window, 0), offset + 1, loaded)
            return
        except ReadStoreUnavailable:
            if attempt == 4:
                raise
            await asyncio.sleep(1 + attempt)


async def rebuild_kafka(settings: Settings, args: argparse.Namespace) -> None:
    """Rebuild from the Kafka event topic into fresh collections, then swap them in."""
    from adapters.kafka_log import iterate_events
    from adapters.mongo_store import MongoReadStore, swap_in
    from api.bootstrap import DISTRIBUTED_PROJECTIONS

    names = [args.projection] if args.projection else list(DISTRIBUTED_PROJECTIONS)
    live = MongoReadStore(settings.mongo_url, settings.mongo_database)
    fresh = MongoReadStore(settings.mongo_url, settings.mongo_database, prefix="rebuild_")
    await live.start()
    await fresh.start()
    try:
        for name in names:
            projection = DISTRIBUTED_PROJECTIONS[name]
            await fresh.drop(name, projection.collections)
            started, count = time.perf_counter(), 0
            topic = f"{settings.kafka_topic_prefix}events"
            loaded: set[str] = set()  # documents already in the fresh collections
            window: list[Event] = []  # one partition's events (a window has one checkpoint)
            async for events in iterate_events(settings.kafka_bootstrap, topic, settings.kafka_partitions, batch=5000):
                if window and decode_position(window[-1].position)[0] != decode_position(events[0].position)[0]:
                    await _bulk_load(fresh, name, projection, window, loaded)
                    window = []
                window += events
                count += len(events)
                while len(window) >= args.window:
                    await _bulk_load(fresh, name, projection, window[: args.window], loaded)
                    window = window[args.window :]
            if window:
                await _bulk_load(fresh, name, projection, window, loaded)
            await swap_in(fresh, live, name, projection.collections)
            report(name, count, time.perf_counter() - started)
    finally:
        await live.close()
        await fresh.close()


async def rebuild(settings: Settings, args: argparse.Namespace) -> None:
    if settings.backend == "kafka":
        await rebuild_kafka(settings, args)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from api.bootstrap import PROJECTIONS, build_log, build_store
    from streams.projector import rebuild as run_rebuild

    if args.projection and args.projection not in PROJECTIONS:
        raise SystemExit(
            f"the embedded backend has no {args.projection!r} projection (it has: {', '.join(PROJECTIONS)})"
        )
    names = [args.projection] if args.projection else list(PROJECTIONS)
    log, store = build_log(settings), build_store(settings)
    await log.start()
    await store.start()
    try:
        for name in names:
            projection = PROJECTIONS[name]
            with Progress(
                TextColumn(f"rebuilding {name}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=None, transient=False,
            ) as bar:  # fmt: skip
                task = bar.add_task(name, total=await log.head_position())
                count, seconds = await run_rebuild(
                    log,
                    store,
                    projection,
                    progress=lambda done, total, task=task: bar.update(task, completed=done, total=total),
                )
            report(name, count, seconds)
    finally:
        await log.close()
        await store.close()


async def worker(settings: Settings) -> None:
    from api.bootstrap import DISTRIBUTED_PROJECTIONS, build_store
    from streams.worker import run_worker

    await run_worker(
        settings.kafka_bootstrap,
        settings.kafka_topic_prefix,
        settings.kafka_partitions,
        build_store(settings.model_copy(update={"backend": "kafka"})),
        list(DISTRIBUTED_PROJECTIONS.values()),
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="caas", description="CAAS: event-sourced chat as a service")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the API and websockets (embedded: also the processors)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--backend", choices=["embedded", "kafka"])
    s.add_argument("--data-dir")
    sub.add_parser("worker", help="distributed mode: run the deciders and projectors")
    r = sub.add_parser("replay", help="print events in log order")
    r.add_argument("--after-position", type=int, default=0)
    r.add_argument("--tenant")
    r.add_argument("--types", help="comma-separated event types")
    r.add_argument("--since", help="RFC 3339 time; events at or after it")
    r.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    r.add_argument("--data-dir")
    r.add_argument("--backend", choices=["embedded", "kafka"])
    b = sub.add_parser("rebuild", help="drop and rebuild read models from the log (server stopped)")
    b.add_argument("--projection", choices=["chat", "events"])
    b.add_argument("--data-dir")
    b.add_argument("--backend", choices=["embedded", "kafka"])
    b.add_argument(
        "--window", type=int, default=REBUILD_WINDOW, help="kafka: events folded per bulk load (default %(default)s)"
    )
    return p


def log_time(text: str) -> str:
    """An RFC 3339 time (or date) as the log writes times: UTC, milliseconds, ``Z``; their text order is time order."""
    from datetime import UTC

    from domain.base import format_time

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"--since takes an RFC 3339 time such as 2026-01-31T12:00:00Z, not {text!r}") from None
    return format_time(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))


def event_types(text: str | None) -> list[str]:
    """``--types`` as a list of known event types: a misspelt one would silently match nothing."""
    types = [t for t in (text or "").split(",") if t]
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type(s) {', '.join(unknown)}; the event types are: {', '.join(EVENT_TYPES)}")
    return types


def require_shared_secrets(settings: Settings, command: str) -> None:
    """A Kafka node refuses to start with a generated secret: it would differ on every node."""
    missing = settings.unshared_secrets()
    if missing:
        raise SystemExit(
            f"caas {command}: {' and '.join(missing)} not set. On the kafka backend every node must be given the "
            "same CAAS_SECRET_KEY and CAAS_ADMIN_TOKEN: a token minted on one node is verified on every other node, "
            "and a secret generated here would differ per node. Set each to the same random value on every node, "
            "e.g. from python3 -c 'import secrets; print(secrets.token_urlsafe(32))'."
        )


def main(argv: Sequence[str] | None = None) -> None:
    cli = parser()
    args = cli.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k in ("host", "port", "backend", "data_dir") and v is not None}
    settings = Settings.from_env(os.environ, **overrides)
    if args.command == "replay":
        try:
            args.types = event_types(args.types)
        except ValueError as exc:
            cli.error(str(exc))  # exits 2 before any backend is touched
    if args.command == "worker" or (args.command == "serve" and settings.backend == "kafka"):
        require_shared_secrets(settings, args.command)
    if args.command == "serve":
        serve(settings)
    elif args.command == "worker":
        import uvloop

        configure_logging(settings.log_level)
        uvloop.run(worker(settings))
    elif args.command == "replay":
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `caas replay | head` ends quietly
        if args.since:
            args.since = log_time(args.since)
        asyncio.run(replay(settings, args))
    elif args.command == "rebuild":
        started = time.perf_counter()
        asyncio.run(rebuild(settings, args))
        print(f"done in {time.perf_counter() - started:.2f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
