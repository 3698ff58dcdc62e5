"""The SDK under test is ``sdk/python``: importable without installing it (``make`` installs it
editable; a plain checkout finds it here)."""

from __future__ import annotations

import sys
from pathlib import Path

SDK = Path(__file__).resolve().parents[2] / "sdk" / "python"
if str(SDK) not in sys.path:
    sys.path.insert(0, str(SDK))
