"""The TypeScript SDK's E2E entry in Chromium: bundled for the browser with libsodium (esbuild, from the
SDK's build), loaded into a page, and talking both ways with an E2E device in Node."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.browser.harness import ROOT, install, run_node_tests

SDK = ROOT / "sdk" / "typescript"


def test_e2e_runs_in_chromium_and_talks_with_node(tmp_path: Path) -> None:
    install()
    subprocess.run(["make", "-s", "sdk-ts"], cwd=ROOT, check=True, timeout=600)
    subprocess.run(["npm", "run", "-s", "build"], cwd=SDK, check=True, timeout=300, capture_output=True)
    dist = SDK / "dist" / "e2e" / "index.js"
    entry = tmp_path / "entry.mjs"
    entry.write_text(f"import * as e2e from {str(dist)!r};\nglobalThis.caasE2e = e2e;\n")
    bundle = tmp_path / "e2e-bundle.js"
    esbuild = ["npx", "esbuild", str(entry), "--bundle", "--format=iife", "--platform=browser", "--target=es2022"]
    subprocess.run([*esbuild, f"--outfile={bundle}"], cwd=SDK, check=True, timeout=120, capture_output=True)
    result = run_node_tests("e2e", {"CAAS_E2E_BUNDLE": str(bundle), "CAAS_SDK_E2E": str(dist)})
    assert result["pass"] == 1, result
