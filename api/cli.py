"""The ``caas`` command line: serve, replay, rebuild."""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import os
import sys
import time
from collections.abc import Sequence

import orjson
import structlog

from api.settings import Settings


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(message)s", stream=sys.stderr)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def serve(settings: Settings) -> None:
    import uvicorn

    from api.app import create_app
    from api.bootstrap import admin_token

    configure_logging(settings.log_level)
    token = admin_token(settings)
    if settings.admin_token is None:
        print(f"CAAS admin token (kept in {settings.data_dir / 'admin_token'}): {token}", flush=True)
    print(f"CAAS {settings.backend} serving on http://{settings.host}:{settings.port}", flush=True)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_max_size=settings.ws_max_frame_bytes * 4,
        timeout_keep_alive=30,
        limit_concurrency=10_000,
    )


async def replay(settings: Settings, args: argparse.Namespace) -> None:
    from api.bootstrap import build_log

    log = build_log(settings)
    await log.start()
    types = [t for t in (args.types or "").split(",") if t]
    after = args.after_position
    writer = None
    if args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["position", "tenant_id", "stream", "seq", "type", "occurred_at", "event_id", "payload"])
    try:
        while True:
            events = await log.read_all(after_position=after, limit=5000, tenant_id=args.tenant, types=types)
            if not events:
                break
            after = events[-1].position
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
        await log.close()


async def rebuild(settings: Settings, args: argparse.Namespace) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from api.bootstrap import PROJECTIONS, build_log, build_store
    from streams.projector import rebuild as run_rebuild

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
            rate = count / seconds if seconds else 0.0
            print(orjson.dumps({"projection": name, "events": count, "seconds": round(seconds, 3),
                                "events_per_second": round(rate)}).decode(), flush=True)  # fmt: skip
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
    b = sub.add_parser("rebuild", help="drop and rebuild read models from the log (server stopped)")
    b.add_argument("--projection", choices=["chat"])
    b.add_argument("--data-dir")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k in ("host", "port", "backend", "data_dir") and v is not None}
    settings = Settings.from_env(os.environ).model_copy(update=overrides)
    if args.command == "serve":
        serve(settings)
    elif args.command == "worker":
        import uvloop

        configure_logging(settings.log_level)
        uvloop.run(worker(settings))
    elif args.command == "replay":
        if args.since:
            args.since = args.since.replace("+00:00", "Z")
        asyncio.run(replay(settings, args))
    elif args.command == "rebuild":
        started = time.perf_counter()
        asyncio.run(rebuild(settings, args))
        print(f"done in {time.perf_counter() - started:.2f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
