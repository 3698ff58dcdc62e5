"""Billing on a real server of each backend, with a plans file and a real stripe-mock.

stripe-mock keeps no state, so the tests check what CAAS sent (through a recording proxy in
front of stripe-mock: what reached "Stripe") and what CAAS recorded in its log. stripe-mock
enforces neither the age limit of meter events nor idempotency keys nor identifiers, so the
proxy enforces those rules of Stripe's itself (:class:`Recorder`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster import Cluster
from tests.support import ADMIN, UNLIMITED, Server, free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "infra" / "services"
WEBHOOK_SECRET = "whsec_test_caas"
PLANS = """
[plans.tiny.meters.messages]
included = 3
mode = "cap"

[plans.small_store.meters.stored_bytes]
included = 30
mode = "cap"

[plans.two_users.meters.mau]
included = 2
mode = "cap"

[plans.one_socket.meters.peak_connections]
included = 1
mode = "cap"

[plans.pro]
base_fee = 4900
[plans.pro.meters.messages]
included = 2
tiers = [{up_to = 10, unit_price = 5}, {unit_price = 2}]
"""


def _stripe_mock_bin() -> Path:
    cache = Path(os.environ.get("CAAS_INFRA_CACHE") or ROOT / "infra" / ".cache")
    binary = cache / "bin" / "caas-stripe-mock"
    subprocess.run([sys.executable, str(SERVICES), "prepare", "stripe-mock"], check=True, timeout=1800)
    return binary


def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/v1/customers", headers={"authorization": "Bearer sk_test_x"}).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"stripe-mock did not answer at {url}")


@pytest.fixture(scope="session")
def stripe_mock() -> Iterator[str]:
    """stripe-mock's address: the one ``infra/services up`` started (``CAAS_STRIPE_API_BASE``),
    else one of our own on a free loopback port, stopped after the session."""
    given = os.environ.get("CAAS_STRIPE_API_BASE")
    if given:
        _wait_http(given)
        yield given
        return
    port, https_port = free_port(), free_port()
    process = subprocess.Popen(
        [str(_stripe_mock_bin()), "-http-addr", f"127.0.0.1:{port}", "-https-addr", f"127.0.0.1:{https_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(url)
        yield url
    finally:
        process.terminate()
        process.wait(10)


METER_EVENT_MAX_AGE = 35 * 86_400  # Stripe: "within the past 35 calendar days"
METER_EVENT_MAX_AHEAD = 300  # "or up to 5 minutes in the future"


@dataclass
class Recorder:
    """A proxy in front of stripe-mock that keeps every request it forwarded, and plays the
    rules stripe-mock leaves out, as Stripe states them:

    - a meter event's ``timestamp`` must be within the past 35 days and at most 5 minutes ahead
      (else ``400 invalid_request_error``);
    - an ``Idempotency-Key`` seen before with other parameters is refused
      (``400 idempotency_error``); with the same parameters the first answer is replayed;
    - a meter event whose ``identifier`` was seen before is accepted and not counted.
    """

    upstream: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    delay: float = 0.0
    ahead: float = 0.0  # play Stripe this many seconds later (a sync run with a clock offset)
    port: int = field(default_factory=free_port)
    _keys: dict[str, tuple[bytes, int, bytes]] = field(default_factory=dict)
    _identifiers: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def meter_events(self) -> list[dict[str, Any]]:
        """Every meter event Stripe accepted (repeats of an identifier included)."""
        return [r["form"] for r in list(self.requests) if r["path"] == "/v1/billing/meter_events"]

    def counted(self) -> list[dict[str, Any]]:
        """The meter events Stripe counts: the first of each identifier."""
        return [r["form"] for r in list(self.requests) if r["path"] == "/v1/billing/meter_events" and r["counted"]]

    def totals(self) -> dict[tuple[str, str], int]:
        """(customer, event name) -> the value Stripe would bill."""
        out: dict[tuple[str, str], int] = {}
        for e in self.counted():
            key = (e["payload[stripe_customer_id]"], e["event_name"])
            out[key] = out.get(key, 0) + int(e["payload[value]"])
        return out

    def last(self) -> dict[tuple[str, str], int]:
        """(customer, event name) -> the value of the last counted event (by timestamp, then by
        arrival): what a meter with the ``last`` formula bills."""
        out: dict[tuple[str, str], tuple[int, int, int]] = {}
        for order, e in enumerate(self.counted()):
            key = (e["payload[stripe_customer_id]"], e["event_name"])
            stamp = (int(e["timestamp"]), order, int(e["payload[value]"]))
            out[key] = max(out.get(key, stamp), stamp)
        return {key: value for key, (_, _, value) in out.items()}

    def customers(self) -> list[dict[str, Any]]:
        return [r for r in list(self.requests) if r["path"] == "/v1/customers" and r["method"] == "POST"]

    def _rule(self, path: str, form: dict[str, str], body: bytes, key: str | None) -> tuple[int, bytes] | None:
        """Stripe's answer if one of its rules stops the request here, else None."""
        if key is not None and key in self._keys:
            first, status, answer = self._keys[key]
            if first != body:
                error = {"type": "idempotency_error", "message": f"{key} was used with other parameters"}
                return 400, json.dumps({"error": error}).encode()
            return status, answer
        if path == "/v1/billing/meter_events":
            now = time.time() + self.ahead
            at = int(form.get("timestamp", now))
            if at < now - METER_EVENT_MAX_AGE or at > now + METER_EVENT_MAX_AHEAD:
                message = "timestamp must be within the past 35 calendar days or up to 5 minutes in the future"
                error = {"type": "invalid_request_error", "param": "timestamp", "message": message}
                return 400, json.dumps({"error": error}).encode()
        return None

    def start(self) -> ThreadingHTTPServer:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, content: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(name, value)
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:  # the client died mid-request (a killed sync): Stripe never sees it
                    self.close_connection = True
                    return
                if recorder.delay:
                    time.sleep(recorder.delay)
                form = dict(urllib.parse.parse_qsl(body.decode()))
                path = self.path.split("?")[0]
                key = self.headers.get("idempotency-key") if self.command == "POST" else None
                with recorder._lock:
                    stopped = recorder._rule(path, form, body, key)
                if stopped is not None and stopped[0] >= 400:
                    recorder.refused.append({"path": path, "form": form, "status": stopped[0], "body": stopped[1]})
                    self._answer(stopped[0], stopped[1], {"content-type": "application/json"})
                    return
                if stopped is not None:  # an idempotent replay: Stripe answers as the first time
                    self._answer(stopped[0], stopped[1], {"content-type": "application/json"})
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                r = httpx.request(self.command, recorder.upstream + self.path, content=body, headers=headers)
                with recorder._lock:
                    counted = False
                    if path == "/v1/billing/meter_events" and r.status_code == 200:
                        identifier = form.get("identifier", "")
                        counted = identifier not in recorder._identifiers
                        recorder._identifiers.add(identifier)
                    if key is not None:
                        recorder._keys[key] = (body, r.status_code, r.content)
                    recorder.requests.append(
                        {
                            "method": self.command,
                            "path": path,
                            "form": form,
                            "status": r.status_code,
                            "counted": counted,
                        }
                    )
                self._answer(r.status_code, r.content, dict(r.headers.items()))

            do_GET = do_POST = _forward

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


@pytest.fixture
def recorder(stripe_mock: str) -> Iterator[Recorder]:
    rec = Recorder(stripe_mock)
    server = rec.start()
    yield rec
    server.shutdown()


@dataclass
class Billed:
    """A CAAS deployment with billing configured, and ``caas billing sync`` beside it."""

    backend: str
    root: Path
    env: dict[str, str]
    server: Server | None = None
    cluster: Cluster | None = None

    @property
    def url(self) -> str:
        node = self.server if self.server is not None else self.cluster.nodes[0]  # type: ignore[union-attr]
        return node.url

    def sync_env(self, stripe_base: str, request_log: Path, ahead: float = 3600) -> dict[str, str]:
        data_dir = self.server.data_dir if self.server is not None else self.root / "sync"
        settings = self.cluster.settings() if self.cluster is not None else {"CAAS_ADMIN_TOKEN": ADMIN}
        return {
            **os.environ,
            **settings,
            **self.env,
            "CAAS_DATA_DIR": str(data_dir),
            "CAAS_STRIPE_API_BASE": stripe_base,
            "CAAS_STRIPE_REQUEST_LOG": str(request_log),
            "CAAS_LOG_LEVEL": "warning",
            # tests cannot wait for the hour to end: the sync acts as if it were ``ahead`` later
            "CAAS_BILLING_SYNC_CLOCK_OFFSET_SECONDS": str(ahead),
        }

    @contextlib.contextmanager
    def offline(self) -> Iterator[None]:
        """Embedded, ``caas billing sync`` runs with the server stopped (one process owns the
        SQLite log); on Kafka it runs beside the nodes."""
        if self.server is None:
            yield
            return
        self.server.stop()
        try:
            yield
        finally:
            self.server.start()

    def sync(self, stripe_base: str, request_log: Path, ahead: float = 3600) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "api.cli", "billing", "sync"],
            env=self.sync_env(stripe_base, request_log, ahead),
            stdout=subprocess.PIPE,
            stderr=open(self.root / "sync.log", "ab"),
        )

    def sync_done(self, stripe_base: str, request_log: Path, ahead: float = 3600) -> dict[str, int]:
        process = self.sync(stripe_base, request_log, ahead)
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0, (self.root / "sync.log").read_text()[-3000:]
        report: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
        return report


@pytest.fixture(scope="module", params=["embedded", "kafka"])
def billed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, stripe_mock: str
) -> Iterator[Billed]:
    root = Path(tmp_path_factory.mktemp(f"billing-{request.param}"))
    (root / "plans.toml").write_text(PLANS)
    env = {
        **UNLIMITED,
        "CAAS_PLANS_FILE": str(root / "plans.toml"),
        "CAAS_QUOTA_CACHE_SECONDS": "0.2",
        "CAAS_STRIPE_API_KEY": "sk_test_caas",
        "CAAS_STRIPE_API_BASE": stripe_mock,
        "CAAS_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "CAAS_BILLING_PAST_DUE": "read_only",
        "CAAS_BILLING_SYNC_SETTLE_SECONDS": "0",
    }
    if request.param == "embedded":
        srv = Server(root / "data", env=env)
        srv.data_dir.mkdir(parents=True, exist_ok=True)
        srv.start()
        yield Billed("embedded", root, env, server=srv)
        srv.stop()
        return
    cluster = Cluster(root / "cluster", env=env).start()
    yield Billed("kafka", root, env, cluster=cluster)
    cluster.stop()
