"""The tenant portal (``/console``) in Chromium against a real ``caas serve`` (``tests/browser/console``).

The portal as ``make serve`` builds it; a fresh tenant's API key in ``CAAS_API_KEY``. The spec signs
in, issues a key (shown once, not on reload), revokes it (the old key gets 401), rotates the signing
key, watches the live tail while posting, reads the usage chart with the counts just produced, visits
users, channels (moderation), webhooks and CORS origins, and signs out (the cookie no longer works).
axe-core checks every page; screenshots go to ``CAAS_ARTIFACTS`` (``tests/browser/artifacts``).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser.harness import ROOT, install, run_node_tests
from tests.support import Server, new_tenant


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    install()
    subprocess.run(["make", "-s", "console"], cwd=ROOT, check=True, timeout=900)
    server = Server(Path(tmp_path_factory.mktemp("browser-console")) / "data").start()
    yield server
    server.stop()


def test_console_in_a_browser(console_server: Server) -> None:
    with httpx.Client(timeout=30) as client:
        tenant = new_tenant(client, console_server.url, name="Console test tenant")
    result = run_node_tests("console", {"CAAS_URL": console_server.url, "CAAS_API_KEY": tenant.api_key})
    assert result["pass"] == 10, result


def test_console_component_tests() -> None:
    """The portal's vitest suite (ui/console/src/**/*.test.tsx: Testing Library on jsdom)."""
    subprocess.run(["make", "-s", "console"], cwd=ROOT, check=True, timeout=900)
    done = subprocess.run(
        ["npm", "test", "--silent"],
        cwd=ROOT / "ui" / "console",
        env={**os.environ, "NO_COLOR": "1"},  # plain text whatever CI sets (CI=true turns colours on)
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]
    passed = re.search(r"Tests\s+(\d+) passed \((\d+)\)", re.sub(r"\x1b\[[0-9;]*m", "", done.stdout))
    assert passed and passed.group(1) == passed.group(2) == "7", done.stdout
