"""The websockets guide's resume loop, run as the page prints it against a real ``caas serve``:
it starts with a refused token (1008: it asks for a fresh one), follows a channel, and carries on
across a server restart with every seq once and in order."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Server, bearer, new_tenant

PAGE = Path(__file__).resolve().parents[2] / "docs" / "websockets.md"
WAIT = 30.0
# What the page leaves to the app: handling an event, and asking its backend for a token.
APP = """
import sys

URL, TOKEN_FILE = sys.argv[1], sys.argv[2]


def handle(event):
    print(event["seq"], event["type"], flush=True)


async def fresh_token():
    with open(TOKEN_FILE) as f:
        return f.read().strip()


asyncio.run(follow(URL, "not-a-token"))
"""


def resume_loop() -> str:
    found: list[str] = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
    return next(b for b in found if "async def follow" in b)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data").start()
    yield srv
    srv.stop()


def printed(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_until_printed(path: Path, line: str, process: subprocess.Popen[bytes]) -> list[str]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and process.poll() is None and line not in printed(path):
        time.sleep(0.05)
    return printed(path)


def post(client: httpx.Client, server: Server, token: str, text: str) -> None:
    r = client.post(f"{server.url}/v1/channels/general/messages", json={"text": text}, headers=bearer(token))
    assert r.status_code == 201, r.text


def test_the_resume_loop_survives_a_refused_token_and_a_server_restart(server: Server, tmp_path: Path) -> None:
    with httpx.Client(timeout=10) as client:
        tenant = new_tenant(client, server.url)
        alice, bob = tenant.user(client, "alice"), tenant.user(client, "bob")
        body = {"channel_id": "general", "name": "General", "kind": "group", "members": ["bob"]}
        assert client.post(f"{server.url}/v1/channels", json=body, headers=bearer(alice)).status_code == 201
        post(client, server, alice, "one")  # seq 4
    (tmp_path / "bob.token").write_text(bob)
    (tmp_path / "follow.py").write_text(resume_loop() + APP)
    out = tmp_path / "follow.out"
    url = server.url.replace("http://", "ws://")
    follower = subprocess.Popen(
        [sys.executable, "follow.py", url, "bob.token"], cwd=tmp_path, stdout=out.open("w"), stderr=subprocess.STDOUT
    )
    try:
        assert "4 MessagePosted" in wait_until_printed(out, "4 MessagePosted", follower)
        server.stop()
        server.start()
        with httpx.Client(timeout=10) as client:
            post(client, server, alice, "after the restart")  # seq 5
        lines = wait_until_printed(out, "5 MessagePosted", follower)
    finally:
        follower.kill()
        follower.wait()
    assert lines == ["1 ChannelCreated", "2 MemberAdded", "3 MemberAdded", "4 MessagePosted", "5 MessagePosted"]


def test_the_resume_loop_stops_when_a_cap_refuses_the_socket(tmp_path: Path) -> None:
    """Over the user's socket cap the server sends ``rate_limited`` and closes with 1008: the
    loop gives up (the guide says not to retry in a loop) instead of reconnecting forever."""
    srv = Server(tmp_path / "data", env={"CAAS_WS_MAX_SOCKETS_PER_USER": "1"}).start()
    out = tmp_path / "follow.out"
    try:
        with httpx.Client(timeout=10) as client:
            tenant = new_tenant(client, srv.url)
            bob = tenant.user(client, "bob")
            body = {"channel_id": "general", "members": ["bob"]}
            assert client.post(f"{srv.url}/v1/channels", json=body, headers=tenant.headers()).status_code == 201
        (tmp_path / "bob.token").write_text(bob)
        url = srv.url.replace("http://", "ws://")
        app = APP.replace('follow(URL, "not-a-token")', "follow(URL, open(TOKEN_FILE).read().strip())")
        (tmp_path / "follow.py").write_text(resume_loop() + app)
        held = tmp_path / "holder.out"
        holder = subprocess.Popen(  # bob's one allowed socket, held open
            [sys.executable, "follow.py", url, "bob.token"], cwd=tmp_path, stdout=held.open("w"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            assert "1 ChannelCreated" in wait_until_printed(held, "1 ChannelCreated", holder)
            follower = subprocess.Popen(
                [sys.executable, "follow.py", url, "bob.token"], cwd=tmp_path, stdout=out.open("w"),
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                code = follower.wait(WAIT)
            finally:
                follower.kill()
                follower.wait()
        finally:
            holder.kill()
            holder.wait()
    finally:
        srv.stop()
    assert code != 0 and "ConnectionClosed" in out.read_text(), out.read_text()
