"""Security headers on every response, errors included; CORS allowed origins per tenant."""

from __future__ import annotations

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from api.edge import Edge
from api.limits import Refused
from tests.security.common import eventually
from tests.support import ADMIN, Server, Tenant, bearer, new_tenant

REQUIRED = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
PRESENT = ("content-security-policy", "strict-transport-security")
APP = "https://app.example.com"
EVIL = "https://evil.example.com"


def assert_security_headers(r: httpx.Response, what: str) -> None:
    for name, value in REQUIRED.items():
        assert r.headers.get(name) == value, f"{what}: {name} is {r.headers.get(name)!r}"
    for name in PRESENT:
        assert r.headers.get(name), f"{what}: no {name}"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"], what


def test_every_kind_of_response_carries_the_security_headers(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    token = tenant.user(client, "alice")
    url = server.url
    cases: list[tuple[str, str, dict[str, str], object, int]] = [
        ("GET", "/healthz", {}, None, 200),
        ("GET", "/readyz", {}, None, 200),
        ("GET", "/openapi.json", {}, None, 200),
        ("GET", "/metrics", bearer(ADMIN), None, 200),
        ("GET", "/metrics", {}, None, 401),
        ("GET", "/v1/channels", tenant.headers(), None, 200),
        ("POST", "/v1/channels", bearer(token), {"channel_id": "room"}, 201),
        ("GET", "/v1/channels", {}, None, 401),
        ("GET", "/v1/events", bearer(token), None, 403),
        ("GET", "/v1/channels/nope", tenant.headers(), None, 404),
        ("GET", "/no/such/route", {}, None, 404),
        ("PUT", "/v1/channels", tenant.headers(), {}, 405),
        ("POST", "/v1/channels", tenant.headers(), {"kind": 7}, 422),
        ("POST", "/v1/channels", bearer(token), {"channel_id": "room"}, 409),
        ("POST", "/v1/tenants", bearer(ADMIN), {"name": "x" * 100_000}, 413),
        ("OPTIONS", "/v1/channels", {"origin": APP, "access-control-request-method": "POST"}, None, 204),
    ]
    for method, path, headers, body, status in cases:
        r = client.request(method, url + path, headers=headers, json=body)
        assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text[:200]}"
        assert_security_headers(r, f"{method} {path} -> {status}")
        if status >= 400:
            assert r.headers["content-type"].startswith("application/json")
            assert set(r.json()["error"]) == {"code", "message", "details"}


def test_allowed_origin_can_read_responses_and_other_origins_cannot(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    r = client.put(f"{server.url}/v1/cors", json={"origins": [APP]}, headers=tenant.headers())
    assert r.status_code == 200 and r.json()["origins"] == [APP], r.text
    url = f"{server.url}/v1/channels"

    def allowed() -> httpx.Response | None:
        r = client.get(url, headers={**tenant.headers(), "origin": APP})
        return r if r.headers.get("access-control-allow-origin") == APP else None

    r = eventually(allowed)
    assert r.status_code == 200
    assert "origin" in r.headers["vary"].lower()
    assert "retry-after" in r.headers["access-control-expose-headers"]
    # an error after authentication is readable by the allowed origin too
    r = client.get(f"{url}/nope", headers={**tenant.headers(), "origin": APP})
    assert r.status_code == 404 and r.headers.get("access-control-allow-origin") == APP
    for origin in (EVIL, APP + ".evil.com", "http://app.example.com", "null", APP.upper()):
        r = client.get(url, headers={**tenant.headers(), "origin": origin})
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers, origin
    # no credential: the tenant (and so its origins) is unknown
    r = client.get(url, headers={"origin": APP})
    assert r.status_code == 401 and "access-control-allow-origin" not in r.headers
    # a request without Origin gets no CORS headers at all
    assert "access-control-allow-origin" not in client.get(url, headers=tenant.headers()).headers


def test_one_tenants_allowed_origins_do_not_apply_to_another(
    server: Server, client: httpx.Client, tenant: Tenant
) -> None:
    other = new_tenant(client, server.url, "other")
    r = client.put(f"{server.url}/v1/cors", json={"origins": [APP]}, headers=tenant.headers())
    assert r.status_code == 200, r.text
    eventually(lambda: client.get(f"{server.url}/v1/channels", headers={**tenant.headers(), "origin": APP})
               .headers.get("access-control-allow-origin") == APP)  # fmt: skip
    r = client.get(f"{server.url}/v1/channels", headers={**other.headers(), "origin": APP})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    # replacing the list withdraws the old origin
    r = client.put(f"{server.url}/v1/cors", json={"origins": [EVIL]}, headers=tenant.headers())
    assert r.status_code == 200, r.text
    eventually(lambda: "access-control-allow-origin" not in client.get(
        f"{server.url}/v1/channels", headers={**tenant.headers(), "origin": APP}).headers)  # fmt: skip


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_preflight_is_answered_without_a_credential(server: Server, client: httpx.Client, method: str) -> None:
    r = client.options(
        f"{server.url}/v1/channels/room/messages",
        headers={"origin": APP, "access-control-request-method": method,
                 "access-control-request-headers": "authorization, content-type, idempotency-key"},
    )  # fmt: skip
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == APP
    assert method in r.headers["access-control-allow-methods"]
    allowed = {h.strip() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key"} <= allowed
    assert int(r.headers["access-control-max-age"]) > 0
    assert r.content == b""
    assert_security_headers(r, "preflight")


def test_cors_origins_are_validated(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    for origins in (["*"], ["javascript:alert(1)"], ["https://a.example/path"], ["https://a.example\r\nX: y"],
                    [f"https://{'a' * 300}.example"], [f"https://a{i}.example" for i in range(51)]):  # fmt: skip
        r = client.put(f"{server.url}/v1/cors", json={"origins": origins}, headers=tenant.headers())
        assert r.status_code == 422, (origins, r.text)


async def test_a_route_may_set_its_own_csp_and_caching_but_no_other_security_header() -> None:
    """A UI page sets its own Content-Security-Policy and Cache-Control; a route that sets a weaker
    X-Frame-Options or HSTS by mistake still answers with the defaults, once."""

    async def page(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-security-policy", b"default-src 'self'"),
            (b"cache-control", b"no-cache"),
            (b"x-frame-options", b"SAMEORIGIN"),
            (b"strict-transport-security", b"max-age=0"),
        ]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"<html></html>"})

    edge = Edge(page, refused=Refused)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=edge), base_url="http://caas") as client:
        r = await client.get("/page")
    assert r.headers.get_list("content-security-policy") == ["default-src 'self'"]
    assert r.headers.get_list("cache-control") == ["no-cache"]
    assert r.headers.get_list("x-frame-options") == ["DENY"]
    assert r.headers.get_list("strict-transport-security") == ["max-age=63072000; includeSubDomains"]
    assert r.headers["x-content-type-options"] == "nosniff"
