"""The webhook sender against real receivers on loopback: what it refuses, what it reads, how
long it waits, where it connects (adapters/webhook_http.py). No lookup leaves the machine:
hosts are IP literals, or names answered by a resolver the test gives."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.webhook_http import MAX_BODY, HttpSender, InvalidWebhookUrl, blocked, check_url
from tests.webhooks.receiver import Receiver

BLOCKED = [
    "0.0.0.0", "0.1.2.3", "10.0.0.1", "100.64.0.1", "100.127.255.254", "127.0.0.1", "127.8.9.10", "169.254.169.254",
    "172.16.0.1", "172.31.255.255", "192.0.0.8", "192.168.1.1", "198.18.0.1", "224.0.0.1", "239.255.255.250",
    "240.0.0.1", "255.255.255.255", "::", "::1", "fc00::1", "fd12:3456::1", "fe80::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "2002:a00:1::1", "2002:7f00:1::",
    "64:ff9b::a00:1", "64:ff9b::7f00:1", "64:ff9b:1::a00:1", "2001:0:4136:e378:8000:63bf:f5ff:fffe",
]  # fmt: skip
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1",
          "64:ff9b::808:808"]  # fmt: skip


@pytest.mark.parametrize("address", BLOCKED)
def test_private_and_special_addresses_are_blocked(address: str) -> None:
    assert blocked(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_not_blocked(address: str) -> None:
    assert not blocked(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/", "http://10.1.2.3:8080/x", "http://[::1]/", "http://[::ffff:10.0.0.1]/",
     "http://169.254.169.254/latest/meta-data", "http://100.64.0.1/", "http://localhost:8000/", "http://a.localhost/",
     "http://0.0.0.0/", "http://[fe80::1]/"],
)  # fmt: skip
def test_private_urls_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(InvalidWebhookUrl):
        check_url(url, allow_private=False)
    check_url(url, allow_private=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver().start()
    yield found
    found.stop()


def resolving(answers: dict[str, str]) -> Any:
    """A ``getaddrinfo`` that answers from ``answers`` (no DNS)."""

    def getaddrinfo(host: str, port: int, *args: Any) -> list[Any]:
        if host not in answers:
            raise socket.gaierror("unknown")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]

    return getaddrinfo


def send(sender: HttpSender, url: str, body: bytes = b"{}") -> Any:
    async def go() -> Any:
        try:
            return await sender.send(url, body, {"content-type": "application/json"})
        finally:
            await sender.close()

    return asyncio.run(go())


def test_a_name_resolving_to_a_private_address_is_refused_without_connecting(receiver: Receiver) -> None:
    port = receiver.url.split(":")[2].split("/")[0]
    sender = HttpSender(allow_private=False, getaddrinfo=resolving({"hooks.example.test": "127.0.0.1"}))
    attempt = send(sender, f"http://hooks.example.test:{port}/hook")
    assert attempt.status is None and "private" in attempt.error
    assert "127.0.0.1" not in attempt.error  # the resolved address is never told
    assert receiver.received == []


def test_the_connection_goes_to_the_checked_address_with_the_urls_host(receiver: Receiver) -> None:
    port = receiver.url.split(":")[2].split("/")[0]
    sender = HttpSender(allow_private=True, getaddrinfo=resolving({"hooks.example.test": "127.0.0.1"}))
    attempt = send(sender, f"http://hooks.example.test:{port}/hook", b'{"a":1}')
    assert attempt.ok, attempt
    [got] = receiver.received
    assert got.headers["host"] == f"hooks.example.test:{port}" and got.body == b'{"a":1}'


def test_each_host_name_has_its_own_connections(receiver: Receiver) -> None:
    port = receiver.url.split(":")[2].split("/")[0]
    names = {"one.example.test": "127.0.0.1", "two.example.test": "127.0.0.1"}
    sender = HttpSender(allow_private=True, getaddrinfo=resolving(names))

    async def go() -> None:
        try:
            for name in ("one.example.test", "one.example.test", "two.example.test"):
                assert (await sender.send(f"http://{name}:{port}/hook", b"{}", {})).ok
        finally:
            await sender.close()

    asyncio.run(go())
    first, again, other = (r.client_port for r in receiver.received)
    assert first == again  # kept alive for the same name
    assert other != first  # another name never rides that connection


def test_an_endless_response_body_is_not_read(receiver: Receiver) -> None:
    receiver.flood = True  # a petabyte announced, sent as fast as the socket takes it
    attempt = send(HttpSender(allow_private=True, timeout=30.0), receiver.url)
    assert attempt.ok and attempt.error is None  # answered: it read at most MAX_BODY bytes, then let go


def test_a_small_response_body_is_read_whole(receiver: Receiver) -> None:
    receiver.body_bytes = MAX_BODY // 2
    assert send(HttpSender(allow_private=True), receiver.url).ok


def test_an_endless_response_is_cut_by_the_attempts_deadline(receiver: Receiver) -> None:
    receiver.trickle = True  # headers at once, then a byte every 50 ms for ever
    attempt = send(HttpSender(allow_private=True, timeout=1.0), receiver.url)
    # 4 KiB at a byte per 50 ms would take minutes: the attempt's one deadline ends it first
    assert attempt.status is None and attempt.error == "no response within 1 s"


def test_a_hanging_resolver_neither_stalls_the_loop_nor_the_default_executor() -> None:
    stuck = threading.Event()

    def hanging(*args: Any) -> list[Any]:
        stuck.wait(30)
        raise socket.gaierror("gave up")

    sender = HttpSender(allow_private=True, timeout=5.0, resolve_timeout=0.5, getaddrinfo=hanging)

    async def go() -> tuple[Any, list[int]]:
        ticks: list[int] = []

        async def tick() -> None:
            for i in range(5):
                ticks.append(i)
                await asyncio.sleep(0.01)

        loop = asyncio.get_running_loop()
        try:
            attempts = asyncio.gather(*(sender.send(f"http://h{i}.example.test/", b"{}", {}) for i in range(4)))
            await tick()
            # the default executor is free: the loop's own lookups still run
            assert await loop.run_in_executor(None, lambda: 42) == 42
            return await attempts, ticks
        finally:
            stuck.set()
            await sender.close()

    attempts, ticks = asyncio.run(go())
    assert ticks == [0, 1, 2, 3, 4]
    assert all(a.status is None and "resolve" in a.error for a in attempts)


def test_a_refused_connection_is_an_error_without_the_address() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    attempt = send(HttpSender(allow_private=True), f"http://127.0.0.1:{port}/")
    assert attempt.status is None and attempt.error == "connection failed"


def test_hosts_off_the_allowed_targets_are_neither_looked_up_nor_sent_to(receiver: Receiver) -> None:
    def no_lookup(*args: Any) -> list[Any]:
        raise AssertionError("a host off the allowed targets was looked up")

    sender = HttpSender(allow_private=True, getaddrinfo=no_lookup, allowed_targets=["127.0.0.0/8", "localhost"])
    for url in ("http://hooks.example.com/x", "http://93.184.216.34/x", "http://10.0.0.1/x", "http://[::1]/x"):
        attempt = send(sender, url)
        assert attempt.status is None and "allowed targets" in attempt.error, (url, attempt)
    assert send(HttpSender(allow_private=True, allowed_targets=["127.0.0.0/8"]), receiver.url).ok
    assert len(receiver.received) == 1


def certificates(where: Path) -> tuple[Path, tuple[str, str]]:
    """A CA and a leaf certificate for ``hooks.example.test`` signed by it (openssl)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=caas-test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj",
        "/CN=hooks.example.test")  # fmt: skip
    (where / "ext.cnf").write_text("subjectAltName=DNS:hooks.example.test\n")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "leaf.pem", "-days", "1", "-extfile", "ext.cnf")  # fmt: skip
    return where / "ca.pem", (str(where / "leaf.pem"), str(where / "leaf.key"))


def test_https_goes_to_the_checked_address_and_verifies_the_urls_name(tmp_path: Path) -> None:
    ca, leaf = certificates(tmp_path)
    receiver = Receiver(tls=leaf).start()
    try:
        names = {"hooks.example.test": "127.0.0.1", "other.example.test": "127.0.0.1"}

        def sender() -> HttpSender:
            trust = ssl.create_default_context(cafile=str(ca))
            return HttpSender(allow_private=True, getaddrinfo=resolving(names), verify=trust)

        attempt = send(sender(), f"https://hooks.example.test:{receiver.port}/hook")
        assert attempt.ok, attempt
        assert receiver.received[0].headers["host"] == f"hooks.example.test:{receiver.port}"
        # the same address under a name the certificate does not carry: the name is what is verified
        attempt = send(sender(), f"https://other.example.test:{receiver.port}/hook")
        assert attempt.status is None and attempt.error == "TLS handshake failed"
        assert len(receiver.received) == 1
    finally:
        receiver.stop()


def test_a_host_name_with_an_overlong_label_is_refused_at_registration_and_fails_an_attempt() -> None:
    url = "https://" + "a" * 64 + ".example.com/hook"
    with pytest.raises(InvalidWebhookUrl, match="63"):
        check_url(url, allow_private=True)
    attempt = send(HttpSender(allow_private=True, getaddrinfo=resolving({})), url)
    assert attempt.status is None and "63" in attempt.error


def test_a_resolver_that_raises_anything_is_a_failed_attempt_not_a_crash() -> None:
    def broken(host: str, port: int, *args: Any) -> list[Any]:
        raise UnicodeError("label empty or too long")

    attempt = send(HttpSender(allow_private=True, getaddrinfo=broken), "http://hooks.example.test/hook")
    assert attempt.status is None and attempt.error == "the host name does not resolve"


def test_an_idn_host_is_looked_up_allowed_and_sent_as_its_idna_2008_name(receiver: Receiver) -> None:
    """``faß.de`` is ``xn--fa-hia.de`` (IDNA 2008, what goes in ``Host``), not ``fass.de``
    (IDNA 2003): the lookup and the allow-list must name the host the request names."""
    port = receiver.port
    sender = HttpSender(
        allow_private=True,
        getaddrinfo=resolving({"xn--fa-hia.de": "127.0.0.1"}),  # fass.de does not resolve here
        allowed_targets=["xn--fa-hia.de"],
    )
    attempt = send(sender, f"http://faß.de:{port}/hook")
    assert attempt.ok, attempt
    [got] = receiver.received
    assert got.headers["host"] == f"xn--fa-hia.de:{port}"


def test_a_port_off_the_allowed_list_is_a_failed_attempt_without_a_lookup(receiver: Receiver) -> None:
    asked: list[str] = []

    def recording(host: str, port: int, *args: Any) -> list[Any]:
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    sender = HttpSender(allow_private=True, getaddrinfo=recording, allowed_ports={80, 443})
    attempt = send(sender, f"http://hooks.example.test:{receiver.port}/hook")
    assert attempt.status is None and "port" in attempt.error
    assert asked == [] and receiver.received == []


def test_the_next_checked_address_is_tried_when_one_refuses_the_connection(receiver: Receiver) -> None:
    def two(host: str, port: int, *args: Any) -> list[Any]:  # nothing listens on 127.0.0.2
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ("127.0.0.2", "127.0.0.1")]

    attempt = send(HttpSender(allow_private=True, getaddrinfo=two), f"http://hooks.example.test:{receiver.port}/hook")
    assert attempt.ok, attempt
    assert len(receiver.received) == 1
