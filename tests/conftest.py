"""Shared fixtures: a real ``caas serve`` subprocess on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Server, Tenant, new_tenant


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One embedded server for the whole session; tests isolate themselves by tenant."""
    srv = Server(Path(tmp_path_factory.mktemp("caas")) / "data").start()
    yield srv
    srv.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture
def tenant(server: Server, client: httpx.Client) -> Tenant:
    """A fresh tenant per test, so tests never see each other's data."""
    return new_tenant(client, server.url)
