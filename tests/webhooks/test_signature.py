"""The signature scheme: what the processor signs, the verify helper, and the Python example
in docs/webhooks.md agree."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.webhooks import endpoint_secret, sign, verify

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


def documented_verify() -> Any:
    text = DOC.read_text()
    block = re.search(r"Python \(.*?\):\n\n```python\n(.*?)```", text, re.S)
    assert block is not None, "docs/webhooks.md lost its Python example"
    scope: dict[str, Any] = {}
    exec(block.group(1), scope)  # the example as a reader would paste it
    return scope["verify"]


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=512), tenant=st.text(min_size=1, max_size=20), endpoint=st.text(min_size=1, max_size=20))
def test_a_signature_verifies_with_its_secret_only(body: bytes, tenant: str, endpoint: str) -> None:
    secret = endpoint_secret("server-key", tenant, endpoint)
    header = sign(secret, int(time.time()), body)
    assert verify(secret, header, body)
    assert not verify(secret + "x", header, body)
    assert not verify(secret, header, body + b"!")
    assert documented_verify()(secret, header, body)
    assert not documented_verify()(secret, header, body + b"!")


def test_stale_or_malformed_headers_do_not_verify() -> None:
    secret = endpoint_secret("k", "t", "w")
    old = sign(secret, int(time.time()) - 3600, b"{}")
    assert not verify(secret, old, b"{}") and not documented_verify()(secret, old, b"{}")
    now = int(time.time())
    malformed = (
        "", "t=abc,v1=00", "v1=00", "t=1", "garbage",
        f"t={now},v1=é", f"t={now},v1={'é' * 64}", "t=²,v1=00", f"t={now}²,v1=00", f"t={now},v1={'zz' * 32}",
    )  # fmt: skip
    for header in malformed:
        assert not verify(secret, header, b"{}"), header
        assert not documented_verify()(secret, header, b"{}"), header


def test_secrets_differ_per_endpoint_and_server_key() -> None:
    assert endpoint_secret("k", "t", "w1") != endpoint_secret("k", "t", "w2")
    assert endpoint_secret("k", "t", "w1") != endpoint_secret("k2", "t", "w1")
    assert endpoint_secret("k", "t", "w1") == endpoint_secret("k", "t", "w1")


def test_the_typescript_example_verifies_what_the_processor_signs(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "Node is needed (make installs the SDK's and contracts' Node packages with it)"
    block = re.search(r"TypeScript \(Node\):\n\n```ts\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None, "docs/webhooks.md lost its TypeScript example"
    # the example's few annotations off, so Node runs it as JavaScript
    js = block.group(1).replace("export ", "")
    js = js.replace(
        'import { createHmac, timingSafeEqual } from "node:crypto";',
        'const { createHmac, timingSafeEqual } = require("node:crypto");',
    )
    js = re.sub(r": (string|Buffer|boolean)\b", "", js).replace(" as [string, string]", "")
    js += "\nconst [secret, header, body] = process.argv.slice(2);\n"
    js += 'process.stdout.write(String(verify(secret, header, Buffer.from(body, "base64"))));\n'
    script = tmp_path / "verify.js"
    script.write_text(js)
    secret, body = endpoint_secret("k", "t", "w"), b'{"id":"e1","text":"h\\u00e9"}'
    header = sign(secret, int(time.time()), body)

    def run(*args: str) -> str:
        return subprocess.run([node, str(script), *args], capture_output=True, text=True, check=True, timeout=30).stdout

    assert run(secret, header, base64.b64encode(body).decode()) == "true"
    assert run(secret, header, base64.b64encode(body + b" ").decode()) == "false"
    assert run(secret + "x", header, base64.b64encode(body).decode()) == "false"
    stamp = header.partition(",")[0]
    for bad in (f"{stamp},v1={'zz' * 32}", f"{stamp},v1={'é' * 64}", "t=²,v1=00"):  # malformed: false, no throw
        assert run(secret, bad, base64.b64encode(body).decode()) == "false", bad
