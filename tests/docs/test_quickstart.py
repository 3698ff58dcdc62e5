"""The quickstart's commands, run as written against a real ``caas serve``: its shell blocks in
bash (curl and jq), its websocket client in Python, and what Bob's socket prints compared with
the output the page shows."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ADMIN, Server

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "quickstart.md"
DOCUMENTED = "127.0.0.1:8000"
WAIT = 30.0

MISSING = [tool for tool in ("curl", "jq") if shutil.which(tool) is None]


@pytest.fixture(autouse=True)
def tools() -> None:
    """The page's commands need curl and jq: without them the page is untested, which is a failure
    (``make test`` installs them), not a skip."""
    assert not MISSING, f"the quickstart runs {' and '.join(MISSING)}: install it (make tools)"


def blocks(language: str) -> list[str]:
    return [b for lang, b in re.findall(r"```(\w+)\n(.*?)```", PAGE.read_text(), re.S) if lang == language]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    """A server whose data dir is ``.caas-data`` of the folder the commands run in, as after
    ``make serve`` (the admin token in ``.caas-data/admin_token``)."""
    data = tmp_path / ".caas-data"
    data.mkdir()
    (data / "admin_token").write_text(ADMIN)
    server = Server(data).start()
    yield server, tmp_path
    server.stop()


def here(script: str, server: Server) -> str:
    """The page's commands aimed at this test's server (the page's is on port 8000)."""
    return script.replace(DOCUMENTED, server.url.removeprefix("http://"))


def shell(script: str, server: Server, cwd: Path) -> str:
    script = here(script, server)
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{script}\n---\n{done.stdout}\n{done.stderr}"
    return done.stdout


def lines_of(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def wait_for_lines(path: Path, count: int, process: subprocess.Popen[bytes]) -> list[str]:
    """The lines ``process`` printed, once there are ``count`` of them (or it ended, or time is up)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and process.poll() is None:
        found = lines_of(path)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    return lines_of(path)


def watch(script: str, server: Server, cwd: Path, out: Path) -> subprocess.Popen[bytes]:
    """The page's ``ws_tail.py`` run (``.venv/bin/python`` is this interpreter)."""
    command = here(script, server).strip().replace(".venv/bin/python", sys.executable)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(["bash", "-c", f"source vars.sh; exec {command}"], cwd=cwd, env=env, stdout=out.open("w"))


def test_the_quickstart_works_as_written(served: tuple[Server, Path]) -> None:
    server, cwd = served
    sh = [b for b in blocks("sh") if not b.startswith("make serve")]
    run = next(b for b in sh if "ws_tail.py" in b)
    before, after = sh[: sh.index(run)], sh[sh.index(run) + 1 :]
    (cwd / "ws_tail.py").write_text(next(b for b in blocks("python") if "websockets.connect" in b))
    expected = next(b for b in blocks("text") if "'type': 'subscribed'" in b).strip().splitlines()

    printed = shell("\n".join(before) + "\ndeclare -p CAAS ALICE BOB > vars.sh\n", server, cwd)
    assert "hello bob" in printed  # Bob read Alice's post back
    assert '"seq":4' in printed  # the first message of a channel with two members is its fourth event

    live = cwd / "ws.out"
    bob = watch(run, server, cwd, live)
    try:
        assert wait_for_lines(live, 5, bob)[:5] == [line.strip() for line in expected[:5]]  # subscribed, history
        shell("source vars.sh\n" + "\n".join(after), server, cwd)
        assert wait_for_lines(live, len(expected), bob) == [line.strip() for line in expected]
    finally:
        bob.kill()
        bob.wait()

    # "start it again with since_seq 4: it receives 5 and what came after, nothing twice"
    resumed = cwd / "ws-resumed.out"
    again = watch(run.replace("general 0", "general 4"), server, cwd, resumed)
    try:
        found = wait_for_lines(resumed, 2, again)
        assert found[:2] == ["{'type': 'subscribed', 'channel_id': 'general', 'head_seq': 5}", expected[5].strip()]
    finally:
        again.kill()
        again.wait()
