"""``@caas/react``'s component tests (vitest, Testing Library, jsdom) against a real ``caas serve``.

The kit's build first (``make ui-react``: the SDK, then the kit, then its bundle budget: the build
fails over 60 kB min+gzip); then ``vitest run`` with the server's address: the reducer's property
tests (fast-check), the virtualized list, and the components as two users (unread badges and live
reorder, optimistic sends, edits, tombstones, reactions, older pages, attachments by URL, a
refused send's Retry, typing and presence), each checked with axe-core.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ADMIN, Server

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "ui" / "react"


@pytest.fixture(scope="module")
def kit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    built = subprocess.run(["make", "-s", "ui-react"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout + built.stderr
    server = Server(Path(tmp_path_factory.mktemp("react-kit")) / "data").start()
    yield server
    server.stop()


def test_bundle_budget_is_measured() -> None:
    """The kit's build prints its size: core components with the SDK, React excluded, under 60 kB."""
    subprocess.run(["make", "-s", "ui-react"], cwd=ROOT, check=True, capture_output=True, timeout=900)
    done = subprocess.run(["node", "scripts/size.mjs"], cwd=KIT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["with_sdk"]["min_gzip_bytes"] <= report["budget_bytes"] == 60 * 1024, report


def test_the_kit_and_its_tests_type_check() -> None:
    subprocess.run(["make", "-s", "ui-react"], cwd=ROOT, check=True, capture_output=True, timeout=900)
    done = subprocess.run(["npm", "run", "-s", "typecheck"], cwd=KIT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_components_against_a_real_server(kit_server: Server) -> None:
    done = subprocess.run(
        ["npx", "vitest", "run", "--reporter=verbose"],
        cwd=KIT,
        env={**os.environ, "CAAS_URL": kit_server.url, "CAAS_ADMIN_TOKEN": ADMIN, "CI": "1", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-20000:]
    passed = re.search(r"Tests\s+(\d+) passed \((\d+)\)", out)
    assert passed and passed.group(1) == passed.group(2) == "13", out[-5000:]
