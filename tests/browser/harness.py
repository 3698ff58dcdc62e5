"""The browser tests' pytest side: a real ``caas serve``, then ``node --test`` on an area's specs.

Each area (``tests/browser/<area>/*.test.mjs``) is driven by one pytest module (``test_<area>.py``)
that starts a server the way :mod:`tests.support` does, then calls :func:`run_node_tests` with the
server's address in ``CAAS_URL``. The specs launch Debian's Chromium through ``lib/browser.mjs``
(``make tools`` installs it) and save screenshots into ``CAAS_ARTIFACTS``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CAAS_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("CAAS_ARTIFACTS", HERE / "artifacts"))


def install() -> None:
    """playwright-core and axe-core from the committed lockfile (``make browser-tests``), and Chromium present."""
    subprocess.run(["make", "-s", "browser-tests"], cwd=ROOT, check=True, timeout=600)
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `make tools` installs it"


def counts(out: str) -> dict[str, int]:
    """The node run's summary lines (``# pass N``, ``# fail N``...)."""
    found = re.findall(r"^# (pass|fail|skipped|cancelled|todo) (\d+)$", out, flags=re.MULTILINE)
    return {name: int(n) for name, n in found}


def run_node_tests(area: str, env: dict[str, str], timeout: float = 600) -> dict[str, int]:
    """Runs ``node --test`` on ``tests/browser/<area>/``; fails with its output unless every spec passed."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    specs = sorted(str(p.relative_to(HERE)) for p in (HERE / area).glob("*.test.mjs"))
    assert specs, f"no specs in tests/browser/{area}"
    done = subprocess.run(
        ["node", "--test", "--test-concurrency=1", *specs],
        cwd=HERE,
        env={**os.environ, "CAAS_ARTIFACTS": str(ARTIFACTS), "CAAS_CHROMIUM": CHROMIUM, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]
    result = counts(done.stdout)
    assert result.get("fail", 0) == 0 and result.get("pass", 0) > 0, done.stdout
    return result
