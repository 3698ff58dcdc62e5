"""A webhook receiver for bench_webhooks: one uvicorn process (uvloop, httptools) that answers
204 to ``POST /hook/{n}`` and records each delivery's event id, ``occurred_at`` and arrival
time; ``GET /stats`` hands the records over, ``DELETE /stats`` forgets them."""

from __future__ import annotations

import argparse
import time

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_records: list[tuple[str, str, str, float]] = []  # (endpoint, event id, occurred_at, arrival wall time)


async def hook(request: Request) -> Response:
    body = await request.body()
    arrived = time.time()
    data = orjson.loads(body)
    _records.append((request.path_params["n"], str(data.get("id")), str(data.get("occurred_at", "")), arrived))
    return Response(status_code=204)


async def stats(request: Request) -> Response:
    if request.method == "DELETE":
        _records.clear()
        return Response(status_code=204)
    return Response(orjson.dumps(_records), media_type="application/json")


app = Starlette(routes=[Route("/hook/{n}", hook, methods=["POST"]), Route("/stats", stats, methods=["GET", "DELETE"])])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, loop="uvloop",
                http="httptools", timeout_keep_alive=30)  # fmt: skip


if __name__ == "__main__":
    main()
