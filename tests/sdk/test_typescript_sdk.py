"""The TypeScript SDK's Node suite (``sdk/typescript/test``), run against real servers.

Embedded: property tests of the channel timeline (``timeline.test.ts``), then the suite starts
its own ``caas serve`` subprocesses (this interpreter's CAAS) and runs every scenario: send and
receive, resume across a restart and a forced 1013, the outbox through a proxy that cuts
requests and in IndexedDB, token refresh on 1008 (key rotation) and 401, a 1009, the generated types
against the live documents. Kafka: this test starts a ``caas worker`` on the test Kafka and FerretDB (as
``tests/cluster.py`` does) and the suite starts its API nodes with the cluster's settings, then
runs the resume tests (restart, 1013) on them. E2E: the TypeScript E2E suites (properties, the Python
SDK's known answers and driver, a real server), then Python and TypeScript devices in the same e2e
channels through the server (both backends).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from caas_client import AsyncClient
from caas_client.calls import Call
from caas_client.e2e import E2EClient, E2EError

from tests.cluster import Cluster
from tests.sdk.helpers import admin_for
from tests.support import Server

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
    assert counts(out) == {"pass": 21, "fail": 0, "skipped": 0, "cancelled": 0, "todo": 0}, out


class TypeScriptDevices:
    """TypeScript E2E devices in a Node subprocess (``test/e2e-peer.ts``), one JSON line each way."""

    def __init__(self, built: Path) -> None:
        self.proc = subprocess.Popen(
            ["node", str(built / "e2e-peer.js")],
            cwd=SDK,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        assert "error" not in answer, answer
        return answer

    def read(self, name: str, channel_id: str, position: int) -> dict[str, dict[str, Any]]:
        """The channel's messages as this device decrypts them, by message id."""
        answer = self.ask(cmd="read", name=name, channel_id=channel_id, min_position=position)
        return {m["message_id"]: m for m in answer["messages"]}

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


async def test_python_and_typescript_devices_share_e2e_channels_through_the_server(built: Path, server: Server) -> None:
    # a user with a Python device and a TypeScript device, a TypeScript-only user and a Python-only
    # user, in a group channel (sender keys) and a two-member one (Python's pairwise mode)
    admin = await admin_for(server, "e2e-cross-sdk")
    tokens = {}
    for uid in ("pia", "tom", "quinn"):
        await admin.put_user(uid, uid.title())
        tokens[uid] = (await admin.create_token(uid)).token
    for cid, members in (("mixed", ["pia", "tom", "quinn"]), ("dm", ["pia", "tom"])):
        await admin.call(Call("POST", "/v1/channels", dict, {"channel_id": cid, "members": members, "e2e": True}))
    ts = TypeScriptDevices(built)
    try:
        pia_py = await E2EClient.open(AsyncClient(server.url, tokens["pia"]), "pia", "py", prekeys=10)
        await pia_py.register()
        quinn = await E2EClient.open(AsyncClient(server.url, tokens["quinn"]), "quinn", "py", prekeys=10)
        await quinn.register()
        for name, uid in (("pia_ts", "pia"), ("tom", "tom")):
            ts.ask(cmd="open", name=name, url=server.url, token=tokens[uid], user_id=uid, device_id=f"{uid}-ts")

        async def python_reads(reader: E2EClient, cid: str, written: dict[str, Any]) -> str | None:
            reader.client.observe_position(written["position"])
            [message] = [m for m in await reader.history(cid) if m["message_id"] == written["message_id"]]
            got = reader.decrypt(message)
            return None if got is None else got.text

        # Python writes in the group: both TypeScript devices (the author's own other device too) read
        written = await pia_py.send("mixed", "from python to the group")
        for name in ("tom", "pia_ts"):
            assert (
                ts.read(name, "mixed", written["position"])[written["message_id"]]["text"] == "from python to the group"
            )
        assert await python_reads(quinn, "mixed", written) == "from python to the group"
        # TypeScript writes in the group: the Python devices and the other TypeScript device read
        for i in range(3):
            written = ts.ask(cmd="send", name="tom", channel_id="mixed", text=f"from typescript {i}")
            for reader in (pia_py, quinn):
                assert await python_reads(reader, "mixed", written) == f"from typescript {i}"
        assert ts.read("pia_ts", "mixed", written["position"])[written["message_id"]]["text"] == "from typescript 2"
        # a two-member channel: Python encrypts per device, TypeScript answers
        written = await pia_py.send("dm", "just us")
        assert ts.read("tom", "dm", written["position"])[written["message_id"]]["text"] == "just us"
        written = ts.ask(cmd="send", name="tom", channel_id="dm", text="just us, answered")
        assert await python_reads(pia_py, "dm", written) == "just us, answered"
        assert ts.read("pia_ts", "dm", written["position"])[written["message_id"]]["text"] == "just us, answered"
        # quinn leaves the group: TypeScript's next message has a new sender key quinn never gets
        removed = await admin.remove_member("mixed", "quinn")
        ts.ask(cmd="read", name="tom", channel_id="mixed", min_position=removed.position)
        written = ts.ask(cmd="send", name="tom", channel_id="mixed", text="without quinn")
        assert await python_reads(pia_py, "mixed", written) == "without quinn"
        # (the server no longer lets quinn read the channel; given the envelope, quinn cannot open it)
        page = await admin.call(
            Call("GET", "/v1/channels/mixed/messages", dict, query={"min_position": written["position"]}, reads=True)
        )
        [envelope] = [m for m in page["messages"] if m["message_id"] == written["message_id"]]
        with pytest.raises(E2EError):
            quinn.decrypt(envelope)
    finally:
        ts.close()
