"""The README's "### Python client" quickstart runs as printed against a live server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from tests.sdk.helpers import WAIT
from tests.support import Server, new_tenant

ROOT = Path(__file__).resolve().parents[2]


def quickstart() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Python client", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the README lost its Python quickstart"
    return match.group(1)


def test_the_readme_quickstart_prints_the_message_it_sent(server: Server, tmp_path: Path) -> None:
    code = quickstart()
    assert 'URL = "http://127.0.0.1:8000"' in code
    script = tmp_path / "quickstart.py"
    script.write_text(code.replace('URL = "http://127.0.0.1:8000"', f'URL = "{server.url}"'))
    with httpx.Client(timeout=30) as http:
        key = new_tenant(http, server.url).api_key
    env = {**os.environ, "KEY": key, "PYTHONPATH": str(ROOT / "sdk" / "python")}
    process = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    printed = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "hello bob" in line:
                printed.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        printed.wait(WAIT)  # the script reads its channel forever: stop it once it printed
    finally:
        process.kill()
        process.wait(WAIT)
    assert process.stderr is not None
    assert printed.is_set(), (lines, process.stderr.read())
    assert any(re.fullmatch(r"\d+ MessagePosted hello bob\n", line) for line in lines), lines
