"""The HTTP edge under hostile clients: half-open connections time out, one address cannot hold
more than its share of connections, a client that vanishes mid-body is not an internal error,
``/metrics`` needs a credential, and out-of-range times are refused instead of crashing.

The connection guard is the ``caas serve`` uvicorn setup, the same on both backends, so its tests
run on an embedded server; the routes' tests run on both backends through the ``server`` fixture.
Raw sockets come from distinct loopback source addresses (127.0.0.x) so each test's connections
are counted apart from the others'.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.connections import address_key
from tests.security.common import WAIT, eventually, until_pong, ws_connect
from tests.support import ADMIN, Server, Tenant, bearer, new_tenant

MAX_PER_ADDRESS = 20
METRICS_TOKEN = "test-metrics-token"
GUARDED = {
    "CAAS_HTTP_MAX_CONNECTIONS_PER_ADDRESS": str(MAX_PER_ADDRESS),
    "CAAS_HTTP_HEADER_TIMEOUT_SECONDS": "2",
    "CAAS_HTTP_BODY_TIMEOUT_SECONDS": "3",
    "CAAS_METRICS_TOKEN": METRICS_TOKEN,
}
PARTIAL_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: caas\r\nX-Slow: "
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: caas\r\n\r\n"
UNFINISHED_BODY = b'{"name": "'


def create_tenant_head(length: int) -> bytes:
    """The headers of the admin's ``POST /v1/tenants`` with a body of ``length`` bytes."""
    return (
        b"POST /v1/tenants HTTP/1.1\r\nHost: caas\r\nAuthorization: Bearer " + ADMIN.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(length).encode() + b"\r\n\r\n"
    )  # fmt: skip


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An embedded server with a small per-address cap and short read timeouts."""
    srv = Server(Path(tmp_path_factory.mktemp("guarded")) / "data", env=GUARDED).start()
    yield srv
    srv.stop()


# --- raw sockets ---------------------------------------------------------------------------
def connect(server: Server, source: str) -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(WAIT)
    s.connect(("127.0.0.1", server.port))
    return s


def until_closed(s: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection; fails at ``deadline``."""
    received = b""
    while True:
        s.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return received
        except TimeoutError:
            raise AssertionError(f"the server kept the connection open; it sent {received[:200]!r}") from None
        if not chunk:
            return received
        received += chunk


def response_head(s: socket.socket) -> bytes:
    """Read one small response (headers and a Content-Length body) off a keep-alive connection."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = s.recv(65536)
        assert chunk, f"the server closed the connection after {received!r}"
        received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = int(lengths[0])
    while len(rest) < length:
        rest += s.recv(65536)
    return head


def get_from(server: Server, source: str, path: str = "/healthz") -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=WAIT) as c:
        return c.get(server.url + path)


def served(server: Server, source: str) -> bool:
    try:
        return get_from(server, source).status_code == 200
    except httpx.TransportError:  # refused: the server has not seen all the closes yet
        return False


# --- defect 1: half-open connections -------------------------------------------------------
def test_incomplete_requests_are_closed_within_seconds(guarded: Server) -> None:
    sockets = [connect(guarded, "127.0.0.2") for _ in range(MAX_PER_ADDRESS // 2)]
    silent = connect(guarded, "127.0.0.2")  # never sends a byte
    for s in sockets:
        s.sendall(PARTIAL_HEADERS)
    slow_body = connect(guarded, "127.0.0.2")  # complete headers, a body that never finishes
    slow_body.sendall(create_tenant_head(1000) + UNFINISHED_BODY)
    deadline = time.monotonic() + WAIT
    try:
        for s in [*sockets, silent]:
            assert until_closed(s, deadline) == b"", "an incomplete request got an answer"
        until_closed(slow_body, deadline)
    finally:
        for s in [*sockets, silent, slow_body]:
            s.close()
    assert get_from(guarded, "127.0.0.2").status_code == 200  # the address's slots were given back


def test_one_address_over_its_cap_is_refused_while_others_are_served(guarded: Server) -> None:
    held = [connect(guarded, "127.0.0.3") for _ in range(MAX_PER_ADDRESS)]
    try:
        for s in held:  # complete requests, then idle keep-alive connections: open, but not slow
            s.sendall(HEALTHZ)
            assert response_head(s).startswith(b"HTTP/1.1 200"), "a connection under the cap was not served"
        extra = connect(guarded, "127.0.0.3")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused before the request went out
            extra.sendall(HEALTHZ)
        assert until_closed(extra, time.monotonic() + WAIT) == b"", "a connection over the cap was served"
        extra.close()
        assert get_from(guarded, "127.0.0.4").status_code == 200  # another client is unaffected
    finally:
        for s in held:
            s.close()
    # the closed connections give their slots back: the address is served again
    eventually(lambda: served(guarded, "127.0.0.3"))


def test_keep_alive_connections_idle_past_the_header_timeout_are_served(guarded: Server) -> None:
    kept = connect(guarded, "127.0.0.8")
    try:
        kept.sendall(HEALTHZ)
        assert response_head(kept).startswith(b"HTTP/1.1 200")
        # wait out a header timeout: a connection opened now is closed by it
        late = connect(guarded, "127.0.0.8")
        late.sendall(PARTIAL_HEADERS)
        until_closed(late, time.monotonic() + WAIT)
        late.close()
        # the idle keep-alive connection had no request under way: its next one is served
        body = b'{"name": "kept"}'
        kept.sendall(create_tenant_head(len(body)) + body)
        assert response_head(kept).startswith(b"HTTP/1.1 201")
    finally:
        kept.close()


@pytest.mark.parametrize(
    ("peer", "counted_as"),
    [
        (("203.0.113.7", 1), "203.0.113.7"),
        (("::ffff:203.0.113.7", 1), "203.0.113.7"),  # IPv4 through a dual-stack listener
        (("2001:db8:1:2:aaaa::1", 1), "2001:db8:1:2::/64"),  # one host can use its whole /64
        (("2001:db8:1:2:ffff:1:2:3", 1), "2001:db8:1:2::/64"),
        (("2001:db8:1:3::1", 1), "2001:db8:1:3::/64"),
        (None, ""),  # a Unix socket
    ],
)
def test_the_cap_counts_ipv6_clients_by_their_64(peer: tuple[str, int] | None, counted_as: str) -> None:
    assert address_key(peer) == counted_as


def test_websockets_outlive_the_header_timeout_and_give_back_their_slots(guarded: Server) -> None:
    with httpx.Client(timeout=WAIT) as client:
        tenant = new_tenant(client, guarded.url)
        token = tenant.user(client, "alice")

    async def scenario() -> None:
        async with ws_connect(guarded.ws_url, token, local_addr=("127.0.0.5", 0)) as ws:
            await until_pong(ws)
            # a connection opened after the socket is closed by the header timer: that timer has
            # had time to fire for the socket's own connection too
            late = connect(guarded, "127.0.0.5")
            late.sendall(PARTIAL_HEADERS)
            await asyncio.to_thread(until_closed, late, time.monotonic() + WAIT)
            late.close()
            await until_pong(ws)  # the socket is still open and answering
        for _ in range(MAX_PER_ADDRESS + 5):  # a closed socket's slot is free again
            async with ws_connect(guarded.ws_url, token, local_addr=("127.0.0.6", 0)) as ws:
                await until_pong(ws)

    asyncio.run(scenario())


# --- defect 16: a client that vanishes mid-body --------------------------------------------
def test_a_client_gone_mid_body_is_not_an_internal_error(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", env={"CAAS_LOG_LEVEL": "debug"}).start()
    log = tmp_path / f"server-{srv.port}.log"
    try:
        s = connect(srv, "127.0.0.7")
        s.sendall(create_tenant_head(1000) + UNFINISHED_BODY)
        s.close()
        eventually(lambda: "client_disconnected" in log.read_text(errors="replace"))
        assert get_from(srv, "127.0.0.7").status_code == 200
    finally:
        srv.stop()
    text = log.read_text(errors="replace")
    for sign in ("Traceback", "unhandled_error", "Exception in ASGI application", '"status": 500'):
        assert sign not in text, f"{sign!r} in the server log:\n{text[-3000:]}"


# --- defect 15: /metrics needs a credential ------------------------------------------------
def test_metrics_need_the_admin_token(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    url = f"{server.url}/metrics"
    for headers in ({}, bearer("garbage"), {"authorization": "Basic YWRtaW46YWRtaW4="}):
        r = client.get(url, headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "unauthenticated"
        assert "caas_commands_total" not in r.text
    token = tenant.user(client, "alice")
    for credential in (tenant.api_key, token):
        r = client.get(url, headers=bearer(credential))
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "forbidden"
    r = client.get(url, headers=bearer(ADMIN))
    assert r.status_code == 200, r.text
    assert "caas_commands_total" in r.text and r.headers["content-type"].startswith("text/plain")


def test_metrics_take_a_dedicated_scrape_token(guarded: Server) -> None:
    with httpx.Client(timeout=WAIT) as client:
        r = client.get(f"{guarded.url}/metrics", headers=bearer(METRICS_TOKEN))
        assert r.status_code == 200, r.text
        assert "caas_http_request_seconds" in r.text
        assert client.get(f"{guarded.url}/metrics", headers=bearer(METRICS_TOKEN + "x")).status_code == 401


# --- defect 10: times out of range --------------------------------------------------------
def test_mute_until_out_of_range_is_refused(server: Server, client: httpx.Client, tenant: Tenant) -> None:
    alice = bearer(tenant.user(client, "alice"))
    bob = bearer(tenant.user(client, "bob"))
    r = client.post(f"{server.url}/v1/channels", json={"channel_id": "c", "members": ["bob"]}, headers=alice)
    assert r.status_code == 201, r.text
    mutes = f"{server.url}/v1/channels/c/mutes"
    for until in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0999-12-31T23:59:59Z"):
        r = client.post(mutes, json={"user_id": "bob", "until": until}, headers=alice)
        assert r.status_code == 422, f"{until}: {r.status_code} {r.text}"
        error = r.json()["error"]
        assert error["code"] == "invalid_request" and "until" in error["message"], error
    # an offset is normalised to UTC, and the mute holds until then
    r = client.post(mutes, json={"user_id": "bob", "until": "9999-12-31T23:59:59+01:00"}, headers=alice)
    assert r.status_code == 201, r.text
    r = client.post(f"{server.url}/v1/channels/c/messages", json={"text": "hi"}, headers=bob)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["details"]["until"] == "9999-12-31T22:59:59.000Z"
