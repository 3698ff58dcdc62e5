"""Erasure on the embedded backend, end to end through a real server, ``caas replay`` and
``caas rebuild``; and the server-blind scan of every SQLite file (docs/erasure.md)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.erasure_scenario import check_events, check_reads, erase, fill, found_in, history, ok, watch_erasure
from tests.support import Server


def files(data_dir: Path) -> list[tuple[str, bytes]]:
    """Every file of the data dir (SQLite databases with their WAL), raw."""
    return [(p.name, p.read_bytes()) for p in sorted(data_dir.iterdir()) if p.is_file()]


def caas(data_dir: Path, *args: str) -> str:
    env = {**os.environ, "CAAS_BACKEND": "embedded", "CAAS_DATA_DIR": str(data_dir)}
    done = subprocess.run([sys.executable, "-m", "api.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_erased_user_reads_as_erased_everywhere_and_is_nowhere_in_clear(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data, env={"CAAS_METERING": "off"}).start()
    try:
        with httpx.Client(timeout=30) as client:
            chat = fill(client, server.url)
            # before erasure: the log and the key store hold no personal field in clear; only the read models do
            ok(client.get(f"{server.url}/v1/events", params={"min_position": chat.acks[-1]["position"]},
                          headers=chat.tenant.headers()))  # fmt: skip
            seen = found_in(files(data), chat.secrets)
            assert seen and {where for where, _ in seen} <= {"read.db", "read.db-wal"}, seen
            frame = asyncio.run(watch_erasure(server.ws_url, chat, lambda: erase(client, chat)))
            assert frame == {"type": "user_erased", "user_id": "alice"}
            check_reads(client, chat)
            replayed = asyncio.run(history(server.ws_url, chat))
            mine = [e for e in replayed if e["payload"].get("author_id") == "alice"]
            assert len(mine) == 4 and all(e["payload"]["text"] == "" for e in mine), mine
            assert not found_in([("history", json.dumps(replayed).encode())], chat.secrets)
        assert not found_in(files(data), chat.secrets), "an erased value is still in clear"
        assert found_in(files(data), [chat.bob[1].encode()]), "the scan finds what it looks for"
    finally:
        server.stop()

    # the operator's tools on the stopped server's data dir: the log is as it was, shown erased
    replay = [json.loads(line) for line in caas(data, "replay", "--tenant", chat.tenant.tenant_id).splitlines()]
    check_events(replay, chat)
    caas(data, "rebuild")
    assert not found_in(files(data), chat.secrets)
    server.start()
    try:
        with httpx.Client(timeout=30) as client:
            check_reads(client, chat)
    finally:
        server.stop()


def test_erasing_an_unknown_user_is_404_and_needs_the_tenant_key(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", env={"CAAS_METERING": "off"}).start()
    try:
        with httpx.Client(timeout=30) as client:
            chat = fill(client, server.url)
            missing = client.delete(f"{server.url}/v1/users/nobody", params={"erase": "true"},
                                    headers=chat.tenant.headers())  # fmt: skip
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found", missing.text
            as_user = client.delete(f"{server.url}/v1/users/alice", params={"erase": "true"},
                                    headers={"authorization": f"Bearer {chat.tokens['alice']}"})  # fmt: skip
            assert as_user.status_code == 403, as_user.text
            listed = client.get(f"{server.url}/v1/users", headers=chat.tenant.headers())
            users: list[dict[str, Any]] = ok(listed)["users"]
            assert {u["user_id"]: u["name"] for u in users}["alice"] == chat.alice[0]
    finally:
        server.stop()
