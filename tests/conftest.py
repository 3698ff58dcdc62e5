"""Shared fixtures: a real ``caas serve`` subprocess on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster import Cluster
from tests.support import Server, Tenant, new_tenant


@pytest.fixture(scope="session", params=["embedded", "kafka"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per backend for the whole session; tests isolate themselves by tenant.

    Every test that uses it runs twice: on the embedded backend, and on the distributed one
    (a ``caas worker`` and a ``caas serve --backend kafka`` node on the real Kafka
    broker and MongoDB-wire server that ``make test`` starts).
    """
    root = Path(tmp_path_factory.mktemp(f"caas-{request.param}"))
    if request.param == "embedded":
        srv = Server(root / "data").start()
        yield srv
        srv.stop()
        return
    cluster = Cluster(root).start()
    yield cluster.nodes[0]
    cluster.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture
def tenant(server: Server, client: httpx.Client) -> Tenant:
    """A fresh tenant per test, so tests never see each other's data."""
    return new_tenant(client, server.url)
