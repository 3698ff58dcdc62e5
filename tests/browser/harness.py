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
import tempfile
import time
from collections.abc import Callable
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


def run_node_tests(
    area: str, env: dict[str, str], control: Callable[[str], str] | None = None, timeout: float = 600
) -> dict[str, int]:
    """Runs ``node --test`` on ``tests/browser/<area>/``; fails with its output unless every spec passed.

    ``control`` answers the specs' requests (``lib/control.mjs``: a file per request in
    ``CAAS_CONTROL``), e.g. to kill and restart the server while the browsers stay open.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    specs = sorted(str(p.relative_to(HERE)) for p in (HERE / area).glob("*.test.mjs"))
    assert specs, f"no specs in tests/browser/{area}"
    with tempfile.TemporaryDirectory(prefix="caas-control-") as box, tempfile.TemporaryFile("w+") as out:
        given = {"CAAS_ARTIFACTS": str(ARTIFACTS), "CAAS_CHROMIUM": CHROMIUM, "CAAS_CONTROL": box}
        process = subprocess.Popen(
            ["node", "--test", "--test-concurrency=1", *specs],
            cwd=HERE,
            env={**os.environ, **given, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + timeout
        try:
            while process.poll() is None:
                assert time.monotonic() < deadline, f"the browser tests ran over {timeout} s"
                for request in sorted(Path(box).glob("*.request")):
                    action = request.read_text()
                    request.unlink()
                    try:
                        answer = control(action) if control else f"error: no control for {action}"
                    except Exception as exc:  # the spec fails with the reason
                        answer = f"error: {exc!r}"
                    (Path(box) / f"{request.stem}.tmp").write_text(answer)
                    (Path(box) / f"{request.stem}.tmp").rename(Path(box) / f"{request.stem}.done")
                time.sleep(0.02)  # polling the specs' requests while node runs
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
        out.seek(0)
        output = out.read()
    assert process.returncode == 0, output[-25000:]
    result = counts(output)
    assert result.get("fail", 0) == 0 and result.get("pass", 0) > 0, output
    return result
