"""The ``caas`` command line: serve, worker, replay, export, rebuild, usage."""

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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from adapters import tracing
from api.bootstrap import BackendUnsupported, build_backend, missing_secrets
from api.settings import Settings
from caas.rows import CSV_HEADER, csv_row, jsonl_line
from caas.selection import event_types, tenant_id

if TYPE_CHECKING:
    from projections.usage import UsageRange


class RedactTokens(logging.Filter):
    """Websocket URLs carry the user's token (``?token=``) or the console tail's CSRF token
    (``?csrf=``); never write them to a log."""

    pattern = re.compile(r"((?:token|csrf)=)[^&\s\"]+")

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
                # An error's traceback goes into the line as ``exception``, for our logs and the libraries'.
                structlog.processors.format_exc_info,
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
    tracing.configure(os.environ, [tracing.NODE, tracing.PROJECTOR])  # off unless OTEL_* asks (adapters/tracing.py)
    token = admin_token(settings)
    http, ws = guarded_protocols(settings)  # httptools and websockets-sansio, with read timeouts and a per-address cap
    if settings.admin_token is None:
        print(f"CAAS admin token (kept in {settings.data_dir / 'admin_token'}): {token}", flush=True)
    print(f"CAAS {settings.backend} serving on http://{settings.host}:{settings.port}", flush=True)
    print(f"CAAS tenant console: http://{settings.host}:{settings.port}/console/ (sign in with an API key)", flush=True)
    if settings.demo == "on":
        print(f"CAAS demo chat: http://{settings.host}:{settings.port}/demo/", flush=True)
        if settings.host not in ("127.0.0.1", "localhost", "::1"):
            print("warning: demo mode on a non-loopback address: anyone who reaches it can chat as the demo users",
                  flush=True)  # fmt: skip
    uvicorn.run(
        create_app(settings),
        log_config=None,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # the access line is CAAS's own (api/edge.py: one per request, with its ids)
        loop="uvloop",
        http=http,
        ws=ws,
        ws_max_size=settings.ws_max_frame_bytes * 4,
        timeout_keep_alive=30,
        # no limit_concurrency: it counted every open connection, so one client holding 10,000
        # made everyone's requests 503; the per-address cap bounds what one client holds
    )
    tracing.shutdown()  # export the spans still buffered


async def replay(settings: Settings, args: argparse.Namespace) -> None:
    writer = None
    if args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(CSV_HEADER)
    try:
        batches = build_backend(settings).replay(
            after_position=args.after_position,
            tenant_id=args.tenant,
            types=args.types,
            since=args.since,
        )
        async for events in batches:
            for event in events:
                if args.since and event.occurred_at < args.since:
                    continue
                if writer is not None:
                    writer.writerow(csv_row(event))
                else:
                    sys.stdout.write(jsonl_line(event))
    finally:
        sys.stdout.flush()


async def export(settings: Settings, args: argparse.Namespace) -> None:
    """``caas export``: the selection written to ``--output`` (caas/export.py), then a JSON report line."""
    from caas.analytics import export_async, select

    cli: argparse.ArgumentParser = args.parser  # errors say "caas export: error: …" and exit 2
    try:
        window = ("--since", "--until")
        args.tenant = tenant_id(args.tenant, "--tenant")
        selection = select(tenant=args.tenant, types=args.types, since=args.since, until=args.until, names=window)
    except ValueError as exc:
        cli.error(str(exc))  # before any backend is touched
    started = time.perf_counter()
    try:
        summary = await export_async(settings, args.output, args.format, selection)
    except ValueError as exc:  # the output directory is taken or cannot be written
        cli.error(str(exc))
    except Exception as exc:  # the log could not be read or the files written: nothing was left at --output
        failure = f"{type(exc).__name__}: {exc}"
        raise SystemExit(f"caas export failed, nothing was written to {args.output}: {failure}") from exc
    seconds = time.perf_counter() - started
    rate = round(summary.events / seconds) if seconds else 0
    line = {**summary.as_dict(), "seconds": round(seconds, 3), "events_per_second": rate, "peak_rss_mib": peak_rss()}
    print(orjson.dumps(line).decode(), flush=True)


def peak_rss() -> float | None:
    """This process's peak resident memory in MiB (Linux; else ``None``): an export's stays bounded."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def report(projection: str, count: int, seconds: float) -> None:
    rate = round(count / seconds) if seconds else 0
    summary = {"projection": projection, "events": count, "seconds": round(seconds, 3), "events_per_second": rate}
    print(orjson.dumps(summary).decode(), flush=True)


# Events folded in memory per bulk load (``caas rebuild``, both backends). Bigger windows mean fewer
# documents read back and replaced by a later window (into FerretDB, 100k chat events: 30-31 s -> 24-27 s).
REBUILD_WINDOW = 50_000


class RebuildBars:
    """A progress bar per projection, for a backend that reports its progress (embedded)."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.name: str | None = None
        self.task: Any = None

    def __call__(self, name: str, done: int, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if name != self.name:
            self.close()
            self.bar = Progress(
                TextColumn(f"rebuilding {name}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=None, transient=False,
            )  # fmt: skip
            self.bar.start()
            self.name, self.task = name, self.bar.add_task(name, total=total)
        self.bar.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        self.bar = self.name = None


async def rebuild(settings: Settings, args: argparse.Namespace) -> None:
    backend = build_backend(settings)
    if args.projection and args.projection not in backend.projections:
        has = ", ".join(backend.projections)
        raise SystemExit(f"the {backend.name} backend has no {args.projection!r} projection (it has: {has})")
    names = [args.projection] if args.projection else list(backend.projections)
    bars = RebuildBars()
    try:
        async for name, count, seconds in backend.rebuild(names, window=args.window, progress=bars):
            bars.close()
            report(name, count, seconds)
    finally:
        bars.close()


def usage_range(args: argparse.Namespace) -> UsageRange:
    """``--from``/``--to``/``--granularity``/``--meters`` parsed exactly as ``GET /v1/usage``
    parses its query (same rules, same messages); the range defaults to the current calendar
    month (UTC)."""
    from adapters.ids import utcnow
    from projections.usage import METERS, RangeError, parse_range, this_month

    month = this_month(utcnow())
    try:
        return parse_range(args.start or month[0], args.end or month[1], args.granularity, args.meters, METERS)
    except RangeError as exc:
        raise SystemExit(f"caas usage: {exc.message}") from None


async def usage(settings: Settings, args: argparse.Namespace) -> None:
    """A tenant's usage from the usage read model (``GET /v1/usage`` without a server)."""
    from domain.base import format_time
    from projections.usage import usage_report

    asked = usage_range(args)
    start, end, meters = asked.start, asked.end, asked.meters
    store = build_backend(settings).store
    await store.start()
    try:
        found = await usage_report(store, args.tenant, start, end, asked.granularity, meters)
    finally:
        await store.close()
    rows = [(format_time(at), values) for at, values in found.buckets]
    if args.format == "json":
        data = {
            "tenant_id": args.tenant, "from": format_time(start), "to": format_time(end),
            "granularity": args.granularity, "meters": meters,
            "buckets": [{"start": at, "meters": values} for at, values in rows], "totals": found.totals,
        }  # fmt: skip
        sys.stdout.write(orjson.dumps(data).decode() + "\n")
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["start", *meters])
        for at, values in [*rows, ("total", found.totals)]:
            writer.writerow([at, *(values[m] for m in meters)])
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"usage of {args.tenant}, {format_time(start)} to {format_time(end)}")
        table.add_column(args.granularity)
        for meter in meters:
            table.add_column(meter, justify="right")
        for at, values in rows:
            table.add_row(at, *(f"{values[m]:,}" for m in meters))
        table.add_row("total", *(f"{found.totals[m]:,}" for m in meters), style="bold")
        Console(width=None if sys.stdout.isatty() else 240).print(table)  # piped: never squeezed
    sys.stdout.flush()


async def worker(settings: Settings) -> None:
    try:
        await build_backend(settings).worker()
    except BackendUnsupported as exc:
        raise SystemExit(str(exc)) from None


async def billing_sync(settings: Settings) -> None:
    """``caas billing sync``: one pass, then a JSON report on stdout; exit status 1 if the read
    models did not catch up with the log (nothing sent) or a tenant failed (the rest went on)."""
    from adapters.ids import utcnow
    from api.bootstrap import build_billing, build_reporter, sync_billing

    reporter = build_reporter(settings)
    if reporter is None:
        raise SystemExit("caas billing sync needs CAAS_STRIPE_API_KEY (docs/stripe.md)")
    backend = build_backend(settings)
    await backend.start([])
    try:
        billing_service = build_billing(settings, backend.commands, backend.store, utcnow)
        report = await sync_billing(backend, billing_service, reporter, settings)
    finally:
        await backend.close()
    if report is None:
        raise SystemExit("the read models did not catch up with the log; nothing was sent, run it again")
    print(orjson.dumps(report.as_dict()).decode(), flush=True)
    if report.failed:
        raise SystemExit(1)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="caas", description="CAAS: event-sourced chat as a service")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the API and websockets (embedded: also the processors)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--backend", choices=["embedded", "kafka"])
    s.add_argument("--data-dir")
    s.add_argument(
        "--demo", action="store_const", const="on", help="serve the demo chat's session route (/demo; api/ui.py)"
    )
    w = sub.add_parser("worker", help="distributed mode: run the deciders and projectors")
    w.add_argument("--backend", choices=["embedded", "kafka"], default="kafka")
    r = sub.add_parser("replay", help="print events in log order")
    r.add_argument("--after-position", type=int, default=0, help="events after this log position")
    r.add_argument("--tenant", help="only this tenant's events")
    r.add_argument("--types", help="comma-separated event types")
    r.add_argument("--since", help="RFC 3339 time; events at or after it")
    r.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="a JSON object per line, or CSV")
    r.add_argument("--data-dir")
    r.add_argument("--backend", choices=["embedded", "kafka"])
    x = sub.add_parser(
        "export",
        help="write events to a directory as Parquet (partitioned by day and event type), JSONL or CSV",
        description="Write the selected events into --output, a new or empty directory: Parquet files "
        "DIR/day=YYYY-MM-DD/type=TYPE/part-N.parquet, or one events.jsonl or events.csv with caas replay's "
        "lines; a manifest _export.json; a JSON report on standard output. Written beside DIR and renamed "
        "into place when complete (docs/analyst.md).",
    )
    x.add_argument("--format", choices=["parquet", "jsonl", "csv"], default="parquet")
    x.add_argument("--output", required=True, metavar="DIR", help="a directory that does not exist yet, or is empty")
    x.add_argument("--tenant", help="only this tenant's events")
    x.add_argument("--types", help="comma-separated event types")
    x.add_argument("--since", help="a log position or an RFC 3339 time; events at or after it")
    x.add_argument("--until", help="a log position or an RFC 3339 time; events before it")
    x.add_argument("--data-dir")
    x.add_argument("--backend", choices=["embedded", "kafka"])
    x.set_defaults(parser=x)
    b = sub.add_parser("rebuild", help="drop and rebuild read models from the log (server stopped)")
    b.add_argument(
        "--projection", choices=["chat", "events", "usage", "analytics"], help="only this one (default: all)"
    )
    b.add_argument("--data-dir")
    b.add_argument("--backend", choices=["embedded", "kafka"])
    b.add_argument(
        "--window", type=int, default=REBUILD_WINDOW, help="events folded per bulk load (default %(default)s)"
    )
    u = sub.add_parser("usage", help="a tenant's metered usage (from the usage read model)")
    u.add_argument("--tenant", required=True, help="the tenant id")
    u.add_argument("--from", dest="start", help="RFC 3339 (default: the start of this month, UTC)")
    u.add_argument("--to", dest="end", help="RFC 3339, exclusive (default: the start of next month)")
    u.add_argument("--granularity", choices=["hour", "day", "month"], default="day")
    u.add_argument("--meters", help="comma-separated meter names (default: all)")
    u.add_argument("--format", choices=["table", "json", "csv"], default="table")
    u.add_argument("--data-dir")
    u.add_argument("--backend", choices=["embedded", "kafka"])
    keys = sub.add_parser("keys", help="the data keys of crypto-shredding (docs/erasure.md)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    rotate = keys_sub.add_parser(
        "rotate-master",
        help="rewrap every data key under a new master key (CAAS_NEW_MASTER_KEY; generated when the key is kept "
        "in the data dir); the log is not touched",
    )
    rotate.add_argument("--data-dir")
    rotate.add_argument("--backend", choices=["embedded", "kafka"])
    bill = sub.add_parser("billing", help="billing: report usage to Stripe")
    bill_sub = bill.add_subparsers(dest="billing_command", required=True)
    sync = bill_sub.add_parser("sync", help="send every closed hour's usage to Stripe, each meter hour once")
    sync.add_argument("--data-dir")
    sync.add_argument("--backend", choices=["embedded", "kafka"])
    return p


def log_time(text: str) -> str:
    """An RFC 3339 time (or date) as the log writes times: UTC, milliseconds, ``Z``; their text order is time order."""
    from caas.selection import log_time as parse

    try:
        return parse(text)
    except ValueError:
        raise SystemExit(f"--since takes an RFC 3339 time such as 2026-01-31T12:00:00Z, not {text!r}") from None


def require_shared_secrets(settings: Settings, command: str) -> None:
    """A Kafka node refuses to start with a generated secret: it would differ on every node."""
    missing = missing_secrets(settings)
    if missing:
        raise SystemExit(
            f"caas {command}: {' and '.join(missing)} not set. On the kafka backend every node must be given the "
            "same CAAS_SECRET_KEY, CAAS_ADMIN_TOKEN and CAAS_MASTER_KEY: a token minted on one node is verified on "
            "every other node, data keys wrapped on one are opened on all, and a secret generated here would differ "
            "per node. Set each to the same random value on every node, e.g. from python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))' (CAAS_MASTER_KEY: 'import base64, os; "
            "print(base64.b64encode(os.urandom(32)).decode())')."
        )


def main(argv: Sequence[str] | None = None) -> None:
    cli = parser()
    args = cli.parse_args(argv)
    flags = ("host", "port", "backend", "data_dir", "demo")
    overrides = {k: v for k, v in vars(args).items() if k in flags and v is not None}
    settings = Settings.from_env(os.environ, **overrides)
    if args.command == "replay":
        try:
            args.types = event_types(args.types)
            args.tenant = tenant_id(args.tenant, "--tenant")
        except ValueError as exc:
            cli.error(str(exc))  # exits 2 before any backend is touched
    if args.command in ("serve", "worker"):
        require_shared_secrets(settings, args.command)
    if args.command == "serve":
        serve(settings)
    elif args.command == "worker":
        import uvloop

        configure_logging(settings.log_level)
        tracing.configure(os.environ, [tracing.DECIDER, tracing.PROJECTOR])
        try:
            uvloop.run(worker(settings))
        finally:
            tracing.shutdown()
    elif args.command == "replay":
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `caas replay | head` ends quietly
        if args.since:
            args.since = log_time(args.since)
        asyncio.run(replay(settings, args))
    elif args.command == "export":
        asyncio.run(export(settings, args))
    elif args.command == "billing":
        configure_logging(settings.log_level)
        asyncio.run(billing_sync(settings))
    elif args.command == "rebuild":
        started = time.perf_counter()
        asyncio.run(rebuild(settings, args))
        print(f"done in {time.perf_counter() - started:.2f}s", file=sys.stderr)
    elif args.command == "usage":
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        asyncio.run(usage(settings, args))
    elif args.command == "keys":
        asyncio.run(rotate_master(settings))


async def rotate_master(settings: Settings) -> None:
    """``caas keys rotate-master``: the new key from ``CAAS_NEW_MASTER_KEY`` (never an argument: a
    command line is visible to every user of the machine); a JSON report on standard output."""
    from api.bootstrap import rotate_master as rotate
    from commands.keys import MasterKey, MasterKeyError

    given = os.environ.get("CAAS_NEW_MASTER_KEY")
    try:
        report = await rotate(settings, MasterKey.from_base64(given) if given else None)
    except MasterKeyError as exc:
        raise SystemExit(f"caas keys rotate-master: {exc}") from None
    print(orjson.dumps(report).decode())


if __name__ == "__main__":
    main()
