"""The demo's server side (api/ui.py) keeps internal answers away from the browser."""

from __future__ import annotations

import httpx

from api.errors import ApiError
from api.ui import _answer


def test_the_demos_setup_failure_never_forwards_an_internal_body() -> None:
    """An unexpected status of an in-process call: the browser gets a fixed message, not the body
    (which may carry the demo tenant's API key)."""
    secret = "caas_sk_t1_k1_" + "s" * 40
    answer = httpx.Response(200, json={"api_key": secret}, request=httpx.Request("POST", "http://in/v1/tenants"))
    try:
        _answer(answer, 201)
        raise AssertionError("an unexpected status was accepted")
    except ApiError as exc:
        assert secret not in str(exc) and "api_key" not in str(exc), exc
