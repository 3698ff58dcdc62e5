"""``/metrics`` on a port of its own (``CAAS_METRICS_PORT`` for ``caas serve``,
``CAAS_WORKER_METRICS_PORT`` for ``caas worker``), on ``CAAS_METRICS_HOST`` (loopback by default).

A small HTTP/1.1 responder in the process's event loop, so a scrape reads the processors' state
where they run (no thread): ``GET /metrics`` with ``Authorization: Bearer <admin token |
CAAS_METRICS_TOKEN>`` answers the Prometheus text; anything else a JSON error as the API gives
them (``{"error": {"code", "message", "details"}}``), and the connection is closed after each
answer. A request's head must arrive within :data:`HEAD_SECONDS` and fit in :data:`HEAD_BYTES`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from api.errors import STATUS, ErrorCode, error_body
from api.observability import scrape_allowed

log = structlog.get_logger("caas.metrics")

HEAD_BYTES = 8192
HEAD_SECONDS = 5.0
REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed", 422: "Unprocessable Content"}


def _answer(status: int, body: bytes, content_type: str, *extra: str) -> bytes:
    head = [
        f"HTTP/1.1 {status} {REASONS[status]}",
        f"content-type: {content_type}",
        f"content-length: {len(body)}",
        "cache-control: no-store",
        "connection: close",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _error(code: ErrorCode, message: str, *extra: str) -> bytes:
    return _answer(STATUS[code], error_body(code, message), "application/json", *extra)


async def respond(
    reader: asyncio.StreamReader, tokens: Sequence[str | None], scrape: Callable[[], Awaitable[bytes]]
) -> bytes:
    """The answer to the one request ``reader`` holds."""
    try:
        async with asyncio.timeout(HEAD_SECONDS):
            head = await reader.readuntil(b"\r\n\r\n")
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return _error("invalid_request", "send one HTTP/1.1 request head, within 5 s and 8 KiB")
    lines = head.decode("latin-1").split("\r\n")
    method, _, rest = lines[0].partition(" ")
    target = rest.partition(" ")[0]
    authorization = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "authorization":
            authorization = value.strip()
    if target.partition("?")[0] != "/metrics":
        return _error("not_found", "this port serves GET /metrics only")
    if method != "GET":
        return _error("method_not_allowed", "use GET /metrics", "allow: GET")
    if not scrape_allowed(authorization, tokens):
        return _error(
            "unauthenticated",
            "send Authorization: Bearer <the admin token or CAAS_METRICS_TOKEN>",
            "www-authenticate: Bearer",
        )
    return _answer(200, await scrape(), CONTENT_TYPE_LATEST)


async def start_metrics_port(
    host: str, port: int, tokens: Sequence[str | None], scrape: Callable[[], Awaitable[bytes]]
) -> asyncio.Server:
    """Listen on ``host:port``; each connection gets one answer (:func:`respond`)."""

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await respond(reader, tokens, scrape))
            async with asyncio.timeout(HEAD_SECONDS):
                await writer.drain()
        except Exception as exc:  # the scraper went away, or the scrape failed: log, close
            log.warning("metrics_scrape_failed", error=repr(exc))
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(connected, host, port, limit=HEAD_BYTES)
    log.info("metrics_port", host=host, port=server.sockets[0].getsockname()[1])
    return server


async def serve_metrics(
    host: str, port: int, tokens: Sequence[str | None], scrape: Callable[[], Awaitable[bytes]]
) -> None:
    """:func:`start_metrics_port`, until cancelled."""
    server = await start_metrics_port(host, port, tokens, scrape)
    try:
        await server.serve_forever()
    finally:
        server.close()
