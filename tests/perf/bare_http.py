"""The HTTP limit: a trivial Starlette POST endpoint on the same server stack as ``caas serve``.

It reads the same JSON body, parses it, and answers a small JSON, served by one uvicorn
process with uvloop and httptools (the settings of ``api.cli.serve``). Run by bench_http.
"""

from __future__ import annotations

import argparse
import itertools

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_positions = itertools.count(1)


async def post(request: Request) -> Response:
    data = orjson.loads(await request.body())
    position = next(_positions)
    answer = {"event_id": "0", "position": position, "seq": position, "channel_id": request.path_params["cid"],
              "text_chars": len(data.get("text", ""))}  # fmt: skip
    return Response(orjson.dumps(answer), status_code=201, media_type="application/json")


app = Starlette(routes=[Route("/v1/channels/{cid}/messages", post, methods=["POST"])])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, loop="uvloop",
                http="httptools", timeout_keep_alive=30, limit_concurrency=10_000)  # fmt: skip


if __name__ == "__main__":
    main()
