"""``--data-dir`` on the command line: ``caas serve``, ``replay`` and ``rebuild`` work on the
directory it names, not on ``CAAS_DATA_DIR``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.security.common import eventually
from tests.support import ADMIN, Server, free_port, new_tenant


def cli_env(elsewhere: Path) -> dict[str, str]:
    """The environment names another data dir: only ``--data-dir`` can point at the filled one."""
    return {**os.environ, "CAAS_BACKEND": "embedded", "CAAS_DATA_DIR": str(elsewhere), "CAAS_ADMIN_TOKEN": ADMIN}


def caas(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done


def test_data_dir_option_of_serve_replay_and_rebuild(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = Server(data).start()
    try:
        with httpx.Client(timeout=30) as client:
            tenant = new_tenant(client, srv.url, "acme")
    finally:
        srv.stop()
    env = cli_env(tmp_path / "elsewhere")

    replayed = [json.loads(line) for line in caas(env, "replay", "--data-dir", str(data)).stdout.splitlines()]
    assert any(e["tenant_id"] == tenant.tenant_id for e in replayed), replayed

    reports = caas(env, "rebuild", "--data-dir", str(data)).stdout.splitlines()
    rebuilt = {r["projection"]: r for r in (json.loads(line) for line in reports if line.startswith("{"))}
    assert rebuilt.keys() >= {"chat", "usage"}, rebuilt
    assert rebuilt["chat"]["events"] >= len(replayed)

    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    serve = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--data-dir", str(data), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(healthy, timeout=30, interval=0.1)
        r = httpx.get(f"{url}/v1/channels", headers=tenant.headers(), timeout=30)
        assert r.status_code == 200, r.text  # the tenant of the filled data dir is known
    finally:
        serve.terminate()
        serve.wait(10)
        log.close()
