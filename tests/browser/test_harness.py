"""The browser harness itself: Chromium, driven by playwright-core, opens a page a real ``caas serve`` serves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.harness import install, run_node_tests
from tests.support import Server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    install()
    server = Server(Path(tmp_path_factory.mktemp("browser-harness")) / "data").start()
    yield server
    server.stop()


def test_chromium_opens_a_served_page(served: Server) -> None:
    result = run_node_tests("smoke", {"CAAS_URL": served.url})
    assert result["pass"] == 1, result
