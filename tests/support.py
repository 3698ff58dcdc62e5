"""Helpers for tests that run a real CAAS server: a subprocess on a loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from commands.sealing import Sealer

ADMIN = "test-admin-token"
# Test servers lift the rate limits unless a test sets them: suites post in bursts.
UNLIMITED = {
    f"CAAS_{name}": "1000000"
    for name in (
        "RATE_USER_WRITES_PER_SECOND", "RATE_USER_WRITES_BURST", "RATE_TENANT_WRITES_PER_SECOND",
        "RATE_TENANT_WRITES_BURST", "RATE_TENANT_READS_PER_SECOND", "RATE_TENANT_READS_BURST",
        "WS_FRAMES_PER_SECOND", "WS_FRAMES_BURST",
    )
}  # fmt: skip
# Test servers send webhooks to receivers on loopback and retry quickly (docs/webhooks.md).
WEBHOOKS = {
    "CAAS_WEBHOOK_ALLOW_PRIVATE": "true",
    # whatever a test registers (a fuzzer's URLs too), nothing is sent, nor looked up, off this machine
    "CAAS_WEBHOOK_ALLOWED_TARGETS": "127.0.0.0/8,::1/128,localhost",
    "CAAS_WEBHOOK_RETRY_BASE_SECONDS": "0.05",
    # Endpoints other tests leave behind (their receivers gone) keep failing on the session's
    # shared servers: each attempt writes to the read store the read models use, so they retry
    # at most every 2 s and are disabled after a minute, as production's hour and day scaled down.
    "CAAS_WEBHOOK_RETRY_MAX_SECONDS": "2",
    "CAAS_WEBHOOK_DISABLE_AFTER_SECONDS": "60",
    "CAAS_WEBHOOK_POLL_SECONDS": "1",
    "CAAS_WEBHOOK_ALLOWED_PORTS": "*",  # receivers listen on ephemeral loopback ports
    "CAAS_WEBHOOK_LEASE_SECONDS": "3",  # a server killed mid-test frees the delivery lease soon
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """``caas serve`` in a subprocess: start, kill -9, restart on the same data dir."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    cwd: Path | None = None  # the source tree ``python -m api.cli`` runs from (a benchmark's baseline)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def start(self, timeout: float = 30.0) -> Server:
        env = {
            **os.environ,
            "CAAS_DATA_DIR": str(self.data_dir),
            "CAAS_ADMIN_TOKEN": ADMIN,
            "CAAS_PORT": str(self.port),
            "CAAS_LOG_LEVEL": "warning",
            "CAAS_POLICY_RECHECK_SECONDS": "1",  # time conditions on open subscriptions: every second
            **UNLIMITED,
            **WEBHOOKS,
            **self.env,
        }
        log = open(self.data_dir.parent / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"caas serve exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("caas serve did not become healthy")

    def kill(self) -> None:
        """``kill -9``: no shutdown hooks, no flushing."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None


@dataclass
class Tenant:
    """A tenant with an API key, and helpers to make users and tokens."""

    url: str
    tenant_id: str
    api_key: str

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"}

    def user(self, client: httpx.Client, user_id: str, name: str | None = None) -> str:
        """Register ``user_id`` and return a token for them."""
        r = client.put(f"{self.url}/v1/users/{user_id}", json={"name": name or user_id}, headers=self.headers())
        assert r.status_code in (200, 201), r.text
        r = client.post(f"{self.url}/v1/users/{user_id}/tokens", json={}, headers=self.headers())
        assert r.status_code == 201, r.text
        return str(r.json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def new_tenant(client: httpx.Client, url: str, name: str = "acme") -> Tenant:
    r = client.post(f"{url}/v1/tenants", json={"name": name}, headers=bearer(ADMIN))
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return Tenant(url, data["tenant_id"], data["api_key"])


NODE_RECORDS = frozenset({"UsageRecorded"})
"""Events an API node records on its own schedule (usage metering, every flush interval), not in
answer to a request: a check that requests recorded nothing leaves them out."""


def requested_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``events`` without the nodes' own records (:data:`NODE_RECORDS`)."""
    return [e for e in events if e["type"] not in NODE_RECORDS]


def _sealer() -> Sealer:
    from adapters.memory_keys import MemoryKeyStore
    from commands.keys import Keyring, MasterKey

    return Sealer(Keyring(MemoryKeyStore(), MasterKey.generate()))


SEALER = _sealer()
"""Seals and opens personal fields with keys in memory (the adapters the tests build by hand take one)."""
