"""The TypeScript SDK's Node suite (``sdk/typescript/test``), run against real servers.

Embedded: property tests of the channel timeline (``timeline.test.ts``), then the suite starts
its own ``caas serve`` subprocesses (this interpreter's CAAS) and runs every scenario: send and
receive, resume across a restart and a forced 1013, the outbox through a proxy that cuts
requests and in IndexedDB, token refresh on 1008 (key rotation) and 401, a 1009, the generated types
against the live documents. Kafka: this test starts a ``caas worker`` on the test Kafka and FerretDB (as
``tests/cluster.py`` does) and the suite starts its API nodes with the cluster's settings, then
runs the resume tests (restart, 1013) on them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "sdk" / "typescript"


@pytest.fixture(scope="module")
def built() -> Path:
    """The SDK's dependencies from its lockfile (``make sdk-ts``), its build (size budget), then the compiled suite."""
    subprocess.run(["make", "-s", "sdk-ts"], cwd=ROOT, check=True, timeout=600)
    # the package build: compile, then the core bundle's size budget (fails over budget)
    for command in (["npm", "run", "-s", "build"], ["npx", "tsc", "-p", "tsconfig.test.json"]):
        done = subprocess.run(command, cwd=SDK, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    return SDK / "dist-test" / "test"


def run_suite(suites: list[Path], env: dict[str, str]) -> str:
    done = subprocess.run(
        ["node", "--test", "--test-concurrency=1", *map(str, suites)],
        cwd=SDK,
        env={**os.environ, "CAAS_PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]
    return done.stdout


def counts(out: str) -> dict[str, int]:
    """The run's summary lines (``# pass N``, ``# fail N``...), parsed whole: 12 is not 120."""
    found = re.findall(r"^# (pass|fail|skipped|cancelled|todo) (\d+)$", out, flags=re.MULTILINE)
    return {name: int(n) for name, n in found}


def test_typescript_sdk_on_the_embedded_backend(built: Path) -> None:
    # the timeline's property tests, then every scenario against real servers
    out = run_suite(
        [built / "timeline.test.js", built / "reconnect.test.js", built / "outbox.test.js", built / "sdk.test.js"],
        {"CAAS_SDK_BACKEND": "embedded"},
    )
    assert counts(out) == {"pass": 31, "fail": 0, "skipped": 0, "cancelled": 0, "todo": 0}, out


def test_typescript_sdk_resumes_on_the_kafka_backend(built: Path, tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "cluster")
    cluster.start_worker()
    try:
        env = {"CAAS_SDK_BACKEND": "kafka", "CAAS_SDK_SERVER_ENV": json.dumps(cluster.settings())}
        out = run_suite([built / "sdk.test.js"], env)
    finally:
        cluster.stop()
    # the restart and 1013 resume tests; the others are skipped on Kafka
    assert counts(out) == {"pass": 2, "fail": 0, "skipped": 9, "cancelled": 0, "todo": 0}, out


def test_typescript_e2e_and_interop_with_the_python_sdk(built: Path) -> None:
    # the E2E state machines' property tests; the Python SDK's known-answer vectors byte for byte and a
    # TypeScript device talking with Python devices (caas_client.e2e.driver, run by CAAS_PYTHON); then
    # E2eClient through a real server (devices API, an e2e channel, history and websocket frames)
    suites = [built / "e2e.test.js", built / "e2e-interop.test.js", built / "e2e-server.test.js"]
    out = run_suite(suites, {"CAAS_SDK_BACKEND": "embedded"})
    assert counts(out) == {"pass": 17, "fail": 0, "skipped": 0, "cancelled": 0, "todo": 0}, out
