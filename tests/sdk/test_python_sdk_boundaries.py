"""The SDK and the server stay apart: neither imports the other, so the SDK installs alone and
the server never needs it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER = ("domain", "commands", "projections", "streams", "adapters", "api")


def imported(folder: Path) -> dict[str, set[str]]:
    """Each module under ``folder`` and the top-level packages it imports."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_the_sdk_imports_nothing_of_the_server() -> None:
    sdk = imported(ROOT / "sdk" / "python" / "caas_client")
    assert sdk, "no SDK sources found"
    assert {module: names & set(SERVER) for module, names in sdk.items() if names & set(SERVER)} == {}


def test_the_server_imports_nothing_of_the_sdk() -> None:
    for package in SERVER:
        users = [module for module, names in imported(ROOT / package).items() if "caas_client" in names]
        assert users == [], f"{package} imports the SDK"
