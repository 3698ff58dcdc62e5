"""Erasure on the embedded backend, end to end through a real server, ``caas replay`` and
``caas rebuild``; and the server-blind scan of every SQLite file (docs/erasure.md)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from commands.keys import MasterKey
from tests.erasure_scenario import (
    check_channel_hold_refuses_erasure,
    check_events,
    check_reads,
    erase_and_check,
    fill,
    found_in,
    ok,
)
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
            erase_and_check(client, server.ws_url, chat)
        assert not found_in(files(data), chat.secrets), "an erased value is still in clear"
        assert found_in(files(data), [chat.bob[1].encode()]), "the scan finds what it looks for"
    finally:
        server.stop()

    # the operator's tools on the stopped server's data dir: the log is as it was, shown erased
    replay = [json.loads(line) for line in caas(data, "replay", "--tenant", chat.tenant.tenant_id).splitlines()]
    check_events(replay, chat)
    out = data.parent / "export"
    caas(data, "export", "--format", "jsonl", "--output", str(out), "--tenant", chat.tenant.tenant_id)
    check_events([json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()], chat)
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


def rotate(data_dir: Path, **env: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "api.cli", "keys", "rotate-master"],
                          env={**os.environ, "CAAS_DATA_DIR": str(data_dir), **env},
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return {**report, "stderr": done.stderr}


def test_master_key_rotation_rewraps_the_keys_and_leaves_the_log_as_it_was(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old, new = MasterKey.generate(), MasterKey.generate()
    server = Server(data, env={"CAAS_METERING": "off", "CAAS_MASTER_KEY": old.to_base64()}).start()
    try:
        with httpx.Client(timeout=30) as client:
            chat = fill(client, server.url)
    finally:
        server.stop()
    log = (data / "events.db").read_bytes()
    refused = subprocess.run([sys.executable, "-m", "api.cli", "keys", "rotate-master"],
                             env={**os.environ, "CAAS_DATA_DIR": str(data), "CAAS_MASTER_KEY": old.to_base64()},
                             capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert refused.returncode != 0 and "CAAS_NEW_MASTER_KEY" in refused.stderr  # a given key is never generated
    report = rotate(data, CAAS_MASTER_KEY=old.to_base64(), CAAS_NEW_MASTER_KEY=new.to_base64())
    assert report["rewrapped"] >= 3 and report["master_id"] == new.id  # alice, bob, general's day
    assert (
        f"master_key_rotated: {report['rewrapped']} data keys rewrapped from master {old.id} to master {new.id}"
        in report["stderr"]
    )  # the operator's record of it (no tenant's audit trail holds it)
    assert old.to_base64() not in report["stderr"] and new.to_base64() not in report["stderr"]
    assert (data / "events.db").read_bytes() == log  # the log is not touched
    with sqlite3.connect(data / "keys.db") as keys:
        assert {row[0] for row in keys.execute("SELECT master_id FROM data_keys")} == {new.id}
    assert rotate(data, CAAS_MASTER_KEY=new.to_base64(), CAAS_NEW_MASTER_KEY=new.to_base64())["rewrapped"] == 0
    server.env["CAAS_MASTER_KEY"] = new.to_base64()
    server.start()
    try:
        with httpx.Client(timeout=30) as client:
            users = ok(client.get(f"{server.url}/v1/users", headers=chat.tenant.headers()))["users"]
            assert {u["user_id"]: u["name"] for u in users} == {"alice": chat.alice[0], "bob": chat.bob[0]}
            events = ok(client.get(f"{server.url}/v1/events", params={"limit": 1000}, headers=chat.tenant.headers()))
            texts = {e["payload"].get("text") for e in events["events"]}
            assert chat.bob[1] in texts and chat.alice[-1] in texts  # both still open, under the new master key
    finally:
        server.stop()


def test_a_master_key_kept_in_the_data_dir_is_rotated_in_place(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data, env={"CAAS_METERING": "off"}).start()  # no CAAS_MASTER_KEY: generated (README quickstart)
    try:
        with httpx.Client(timeout=30) as client:
            chat = fill(client, server.url)
    finally:
        server.stop()
    before = (data / "master_key").read_text()
    report = rotate(data)
    after = (data / "master_key").read_text()
    assert after != before and MasterKey.from_base64(after).id == report["master_id"]
    assert not (data / "master_key.next").exists()
    assert before.strip() not in "".join(p.read_text(errors="replace") for p in data.iterdir() if p.is_file())
    server.start()
    try:
        with httpx.Client(timeout=30) as client:
            events = ok(client.get(f"{server.url}/v1/events", params={"limit": 1000}, headers=chat.tenant.headers()))
            assert chat.alice[-1] in {e["payload"].get("text") for e in events["events"]}
    finally:
        server.stop()


def test_a_legal_hold_on_a_channel_refuses_erasing_its_members_and_former_members(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", env={"CAAS_METERING": "off"}).start()
    try:
        with httpx.Client(timeout=30) as client:
            check_channel_hold_refuses_erasure(client, server.url)
    finally:
        server.stop()
