"""The demo chat (``/demo``) in Chromium against a real ``caas serve --demo`` (``tests/browser/demo``).

Two browser contexts as two demo users: a message appears in the other within a second, typing
and presence show, read receipts and unread badges update, edits, tombstones, reactions and
threads reach the other browser; the server is killed (``kill -9``) and restarted on the same
data dir and port while both browsers stay open, and both show every message once, in order.
axe-core checks every page; screenshots go to ``CAAS_ARTIFACTS`` (``tests/browser/artifacts``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.harness import ROOT, install, run_node_tests
from tests.support import Server


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    install()
    # the demo as `make serve` builds it: the SDK, the kit, then the app
    subprocess.run(["make", "-s", "demo"], cwd=ROOT, check=True, timeout=900)
    server = Server(Path(tmp_path_factory.mktemp("browser-demo")) / "data", env={"CAAS_DEMO": "on"}).start()
    yield server
    server.stop()


def test_demo_chat_in_two_browsers(demo_server: Server) -> None:
    def control(action: str) -> str:
        if action == "kill":
            demo_server.kill()
        elif action == "start":
            demo_server.start()
        else:
            raise ValueError(f"unknown action {action}")
        return "ok"

    result = run_node_tests("demo", {"CAAS_URL": demo_server.url}, control=control)
    assert result["pass"] == 9, result
