"""The docs say which writes honour ``Idempotency-Key`` as the OpenAPI document does: a client
that trusts a page and retries ``POST …/typing`` or a plan change under a key gets no replay."""

from __future__ import annotations

import re
from pathlib import Path

from api.routes import openapi

ROOT = Path(__file__).resolve().parents[2]
WRITES = ("post", "put", "patch", "delete")


def honouring() -> set[tuple[str, str]]:
    """The operations whose OpenAPI entry declares the ``Idempotency-Key`` header."""
    found = set()
    for path, operations in openapi()["paths"].items():  # type: ignore[attr-defined]
        for method, op in operations.items():
            if method in WRITES and any(p.get("name") == "Idempotency-Key" for p in op.get("parameters", [])):
                found.add((method.upper(), path))
    return found


def test_the_retries_list_of_the_api_guide_is_exactly_the_operations_that_honour_the_key() -> None:
    page = (ROOT / "docs" / "api.md").read_text()
    retries = page[page.index("**Retries.**") :].split("\n\n")[0]
    listed = retries[: retries.index("ignore it")].split("Token minting")[0]
    named = re.findall(r"`(POST|PUT|PATCH|DELETE) ([^`]+)`", listed)
    every = {(m.upper(), p) for p, ops in openapi()["paths"].items() for m in ops if m in WRITES}  # type: ignore[attr-defined]
    matched = {
        (method, path)
        for method, entry in named
        for m, path in every
        if m == method and (path == entry or (entry.startswith("…") and path.endswith(entry[1:])))
    }
    assert matched == honouring()


def test_no_page_claims_every_post_put_and_patch_honours_the_key() -> None:
    ignoring = {(m.upper(), p) for p, ops in openapi()["paths"].items() for m in ops if m in ("post", "put", "patch")}  # type: ignore[attr-defined]
    assert ("POST", "/v1/channels/{cid}/typing") in ignoring - honouring()  # the case the claim gets wrong
    for page in (ROOT / "README.md", ROOT / "docs" / "concepts.md"):
        text = " ".join(page.read_text().split())
        assert not re.search(r"`POST`, `PUT`,? and `PATCH` writes( \(.*?\))? honour", text), page.name
        assert "`POST …/typing`" in text and "ignore it" in text, page.name
