"""A server on each backend whose retention runs three days ahead (docs/retention.md, the test
clock seam ``CAAS_RETENTION_CLOCK_OFFSET_SECONDS``): what a test posts now is three days old to
retention, and to nothing else. Its sweeper passes twice a second."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster
from tests.support import Server

AHEAD_DAYS = 3
AGED = {
    "CAAS_RETENTION_CLOCK_OFFSET_SECONDS": str(AHEAD_DAYS * 86_400),
    "CAAS_RETENTION_SWEEP_SECONDS": "0.5",
}


@pytest.fixture(scope="session", params=["embedded", "kafka"])
def aged(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = Path(tmp_path_factory.mktemp(f"caas-aged-{request.param}"))
    if request.param == "embedded":
        srv = Server(root / "data", env=AGED).start()
        yield srv
        srv.stop()
        return
    cluster = Cluster(root, env=AGED).start()
    yield cluster.nodes[0]
    cluster.stop()
