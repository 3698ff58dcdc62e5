"""The distributed backend for tests: ``caas worker`` and ``caas serve --backend kafka``
subprocesses on the real Kafka broker and MongoDB-wire server that ``infra/services up``
started (``CAAS_KAFKA_BOOTSTRAP``, ``CAAS_MONGO_URL``). Each cluster uses its own topic
prefix and database, so clusters never see each other's data."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support import ADMIN, WEBHOOKS, Server, bearer, free_port

SECRET = "test-secret-key-shared-by-all-nodes"
MASTER_KEY = "Y2Fhcy10ZXN0LW1hc3Rlci1rZXktMzItYnl0ZXMhISE="  # 32 bytes: the data keys of every node


SERVICES = Path(__file__).resolve().parent.parent / "infra" / "services"
NAMES = ("CAAS_KAFKA_BOOTSTRAP", "CAAS_MONGO_URL")


def services_env() -> dict[str, str]:
    """The broker and database settings. If the test command did not set them, start the
    services (``infra/services up`` is idempotent: it reuses running ones)."""
    if not all(os.environ.get(name) for name in NAMES):
        out = subprocess.run([str(SERVICES), "up"], check=True, capture_output=True, text=True, timeout=1800).stdout
        for line in out.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            if name in NAMES:
                os.environ[name] = value.strip().strip("'\"")
    return {name: os.environ[name] for name in NAMES}


@dataclass
class Cluster:
    """Workers and API nodes sharing one topic prefix and one database."""

    root: Path
    partitions: int = 1
    env: dict[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: "t" + uuid.uuid4().hex[:10])
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    nodes: list[Server] = field(default_factory=list)

    def settings(self) -> dict[str, str]:
        return {
            **services_env(),
            "CAAS_BACKEND": "kafka",
            "CAAS_KAFKA_TOPIC_PREFIX": f"{self.name}.",
            "CAAS_KAFKA_PARTITIONS": str(self.partitions),
            "CAAS_MONGO_DATABASE": self.name,
            "CAAS_SECRET_KEY": SECRET,
            "CAAS_ADMIN_TOKEN": ADMIN,
            "CAAS_MASTER_KEY": MASTER_KEY,
            "CAAS_LOG_LEVEL": "warning",
            # FerretDB (the test MongoDB) is slow on a loaded 2-core box; let replays wait for the event index
            "CAAS_WS_HISTORY_WAIT_SECONDS": "60",
            **WEBHOOKS,
            **self.env,
        }

    def start_worker(self) -> subprocess.Popen[bytes]:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / f"worker-{len(self.workers)}.log", "ab")  # noqa: SIM115
        env = {**os.environ, **self.settings(), "CAAS_DATA_DIR": str(self.root / "worker")}
        process = subprocess.Popen([sys.executable, "-m", "api.cli", "worker"], env=env, stdout=log, stderr=log)
        self.workers.append(process)
        return process

    def start_node(self) -> Server:
        node = Server(self.root / f"node-{len(self.nodes)}", port=free_port(), env=self.settings())
        node.data_dir.mkdir(parents=True, exist_ok=True)
        node.start(timeout=60)
        self.nodes.append(node)
        return node

    def start(self, workers: int = 1, nodes: int = 1) -> Cluster:
        for _ in range(workers):
            self.start_worker()
        for _ in range(nodes):
            self.start_node()
        self.wait_ready(self.nodes[-1].url)
        return self

    @staticmethod
    def wait_ready(url: str, timeout: float = 60.0) -> None:
        """Until a decider answers: a probe command succeeds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = httpx.post(f"{url}/v1/tenants", json={"name": "probe"}, headers=bearer(ADMIN), timeout=10)
                if r.status_code == 201:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("no decider answered within the timeout")

    def kill_worker(self, index: int = 0) -> None:
        process = self.workers[index]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        for process in self.workers:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()


@contextlib.contextmanager
def serving(backend: str, root: Path, env: dict[str, str]) -> Iterator[Server]:
    """A server of ``backend`` with ``env`` added to its settings: ``caas serve`` embedded, or a
    worker and a node on the test Kafka and FerretDB; stopped on exit."""
    if backend == "embedded":
        srv = Server(root / "data", env=env).start()
        try:
            yield srv
        finally:
            srv.stop()
        return
    cluster = Cluster(root, env=env).start()
    try:
        yield cluster.nodes[0]
    finally:
        cluster.stop()
