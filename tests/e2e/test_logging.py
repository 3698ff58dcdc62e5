"""Operators read CAAS's JSON log lines: an error's line carries its traceback, and no token."""

from __future__ import annotations

import json
import subprocess
import sys

PROGRAM = """
import logging, structlog
from api.cli import configure_logging
configure_logging("info")
try:
    {}["missing"]
except KeyError:
    logging.getLogger("uvicorn.error").exception("library failed on /v1/ws?token=eyJsecret")
    structlog.get_logger("caas.test").exception("caas failed", path="/v1/ws?token=eyJsecret")
"""


def test_an_error_line_is_json_with_its_traceback_and_without_the_token() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=30, check=True)
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert [line["event"] for line in lines] == [
        "library failed on /v1/ws?token=[redacted]",
        "caas failed",
    ], done.stderr
    for line in lines:
        assert line["level"] == "error"
        assert "Traceback" in line["exception"] and "KeyError: 'missing'" in line["exception"], line
    assert lines[1]["path"] == "/v1/ws?token=[redacted]"
    assert "eyJsecret" not in done.stderr
