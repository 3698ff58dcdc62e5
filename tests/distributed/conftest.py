"""The distributed backend's own tests run on the real broker and database, so they carry the
``kafka`` mark: ``-k "not kafka"`` leaves them out like the kafka-parametrised tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kafka: runs on the real Kafka broker and MongoDB-wire server")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two API nodes and two workers on two partitions, for the module (a module may define its own)."""
    cluster = Cluster(Path(tmp_path_factory.mktemp("caas-cluster")), partitions=2)
    try:
        cluster.start(workers=2, nodes=2)
        for node in cluster.nodes:
            Cluster.wait_ready(node.url)
        yield cluster
    finally:
        cluster.stop()
