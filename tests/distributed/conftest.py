"""The distributed backend's own tests run on the real broker and database, so they carry the
``kafka`` mark: ``-k "not kafka"`` leaves them out like the kafka-parametrised tests."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kafka: runs on the real Kafka broker and MongoDB-wire server")
