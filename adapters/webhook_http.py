"""The webhook sender: httpx, with the guards an outbound request to a tenant's URL needs.

- Only ``http``/``https`` URLs with a host and no credentials (:func:`check_url`, also used
  at registration).
- The host is resolved on a small resolver pool of its own (never the event loop's default
  executor) with a timeout; every address is checked against :func:`blocked` unless the
  operator allows private targets, and the connection goes to a checked address (so a DNS
  answer that changes between the check and the connect cannot redirect it; the next checked
  address when one refuses), with the URL's ASCII host as the ``Host`` header, the lookup's
  name and the TLS server name. Only the operator's allowed ports are sent to.
- One connection pool per host name, so a TLS connection is never reused for another name.
- Redirects are not followed (a 3xx is a failed attempt); the response body is streamed and
  at most :data:`MAX_BODY` bytes are read; one deadline bounds the whole attempt.
- Error messages say what failed, never which address was resolved.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from streams.webhooks import Attempt

MAX_BODY = 4096
MAX_URL = 2048
MAX_ADDRESSES = 4  # the checked addresses of a host tried in turn when a connection is refused
IP = ipaddress.IPv4Address | ipaddress.IPv6Address

DENIED = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
        "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
        "::/128", "::1/128", "100::/64", "2001:db8::/32", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
)  # fmt: skip
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class InvalidWebhookUrl(ValueError):
    """A URL the processor will not send to (the message says why, without addresses)."""


def blocked(ip: IP) -> bool:
    """Whether ``ip`` is not a public unicast address: private, loopback, link-local, CGNAT,
    multicast, reserved, unspecified, documentation, IPv6 ULA, or an IPv6 address that embeds
    such an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return blocked(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            return blocked(ip.sixtofour)
        if ip.teredo is not None:
            return blocked(ip.teredo[1])
        if any(ip in net for net in NAT64):
            return blocked(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if any(ip.version == net.version and ip in net for net in DENIED):
        return True
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def _literal(host: str) -> IP | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_url(url: str, *, allow_private: bool) -> httpx.URL:
    """``url`` parsed, or :class:`InvalidWebhookUrl`. A host given as an IP literal (or a name
    that is local by definition) is checked here; names are checked when resolved."""
    if len(url) > MAX_URL:
        raise InvalidWebhookUrl(f"the URL is longer than {MAX_URL} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise InvalidWebhookUrl("the URL cannot be parsed") from None
    if parsed.scheme not in ("http", "https"):
        raise InvalidWebhookUrl("the URL's scheme must be http or https")
    if not parsed.host:
        raise InvalidWebhookUrl("the URL has no host")
    if parsed.userinfo:
        raise InvalidWebhookUrl("the URL may not carry credentials")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise InvalidWebhookUrl("the URL contains whitespace or control characters")
    host = ascii_host(parsed)
    if _literal(host) is None:
        labels = host.rstrip(".").split(".")
        if len(host.rstrip(".")) > 253 or any(not 0 < len(label) <= 63 for label in labels):
            raise InvalidWebhookUrl("the URL's host name has an empty label or one longer than 63 characters")
    if not allow_private:
        ip = _literal(host)
        name = host.lower().rstrip(".")
        if (ip is not None and blocked(ip)) or name == "localhost" or name.endswith((".localhost", ".local")):
            raise InvalidWebhookUrl("the URL's host is a private, loopback or link-local address")
    return parsed


def ascii_host(url: httpx.URL) -> str:
    """The URL's host as it goes on the wire (IDNA 2008, ``xn--`` labels: what httpx sends as
    ``Host``), so the lookup, the TLS server name and the allow-list all name that same host."""
    return url.raw_host.decode("ascii")


def port_allowed(url: httpx.URL, allowed: Collection[int] | None) -> bool:
    """Whether the URL's port (its scheme's default if none) is among ``allowed`` (``None``: any)."""
    return allowed is None or (url.port or (443 if url.scheme == "https" else 80)) in allowed


def parse_ports(value: str) -> frozenset[int] | None:
    """``CAAS_WEBHOOK_ALLOWED_PORTS``: comma-separated ports, or ``*`` for any (``None``)."""
    if value.strip() == "*":
        return None
    return frozenset(int(p) for p in value.split(",") if p.strip())


class HttpSender:
    """Sends one webhook attempt (see the module doc)."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        timeout: float = 10.0,
        resolve_timeout: float = 5.0,
        resolver_threads: int = 2,
        max_hosts: int = 512,
        getaddrinfo: Callable[..., list[Any]] = socket.getaddrinfo,
        allowed_targets: Sequence[str] | None = None,
        allowed_ports: Collection[int] | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """``getaddrinfo``: the blocking resolver run on the sender's own threads (tests give
        one that answers without DNS). ``allowed_targets``: if given, the only hosts sent to
        (names, or IP networks an IP literal must fall in), checked before any lookup.
        ``allowed_ports``: if given, the only ports sent to (else any).
        ``verify``: how TLS certificates are checked (tests give a context trusting their CA)."""
        self.allow_private = allow_private
        self.timeout = timeout
        self.resolve_timeout = min(resolve_timeout, timeout)
        self.max_hosts = max_hosts
        self.getaddrinfo = getaddrinfo
        self.allowed_names, self.allowed_networks = _targets(allowed_targets)
        self.allowed_ports = None if allowed_ports is None else frozenset(allowed_ports)
        self.verify = verify
        self._resolver = ThreadPoolExecutor(max_workers=resolver_threads, thread_name_prefix="caas-webhook-dns")
        self._clients: OrderedDict[tuple[str, str, int], httpx.AsyncClient] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()  # evicted pools being closed

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
        self._resolver.shutdown(wait=False, cancel_futures=True)

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Attempt:
        started = time.perf_counter()

        def failed(error: str) -> Attempt:
            return Attempt(None, error, (time.perf_counter() - started) * 1000)

        try:
            parsed = check_url(url, allow_private=self.allow_private)
        except InvalidWebhookUrl as exc:
            return failed(str(exc))
        if not self._listed(ascii_host(parsed)):
            return failed("the URL's host is not among the allowed targets (CAAS_WEBHOOK_ALLOWED_TARGETS)")
        if not port_allowed(parsed, self.allowed_ports):
            return failed("the URL's port is not among the allowed ports (CAAS_WEBHOOK_ALLOWED_PORTS)")
        try:
            async with asyncio.timeout(self.timeout):
                status = await self._post_any(parsed, await self._resolve(parsed), body, headers)
        except InvalidWebhookUrl as exc:
            return failed(str(exc))
        except TimeoutError:
            return failed(f"no response within {self.timeout:g} s")
        except httpx.TimeoutException:
            return failed(f"no response within {self.timeout:g} s")
        except httpx.ConnectError as exc:
            return failed("TLS handshake failed" if _is_tls(exc) else "connection failed")
        except httpx.RemoteProtocolError:
            return failed("the receiver closed the connection or broke the HTTP protocol")
        except httpx.HTTPError as exc:
            return failed(f"request failed ({type(exc).__name__})")
        except OSError as exc:
            return failed(f"network error ({type(exc).__name__})")
        except Exception as exc:  # anything else is a failed attempt too, never a stuck endpoint
            return failed(f"request failed ({type(exc).__name__})")
        return Attempt(status, None if 200 <= status < 300 else _status_error(status), _ms(started))

    def _listed(self, host: str) -> bool:
        if self.allowed_names is None:
            return True
        ip = _literal(host)
        if ip is None:
            return host.lower().rstrip(".") in self.allowed_names
        return any(ip.version == net.version and ip in net for net in self.allowed_networks)

    async def _post_any(self, url: httpx.URL, ips: Sequence[str], body: bytes, headers: Mapping[str, str]) -> int:
        """Post to the first checked address that takes the connection, in the resolver's order."""
        for ip in ips[:-1]:
            try:
                return await self._post(url, ip, body, headers)
            except httpx.ConnectError as exc:
                if _is_tls(exc):
                    raise
        return await self._post(url, ips[-1], body, headers)

    async def _resolve(self, url: httpx.URL) -> list[str]:
        """The addresses of the URL's host that may be connected to, in the resolver's order."""
        host = ascii_host(url)
        literal = _literal(host)
        if literal is not None:
            candidates: list[IP] = [literal]
        else:
            loop = asyncio.get_running_loop()
            port = url.port or (443 if url.scheme == "https" else 80)
            try:
                async with asyncio.timeout(self.resolve_timeout):
                    infos = await loop.run_in_executor(
                        self._resolver, self.getaddrinfo, host, port, 0, socket.SOCK_STREAM
                    )
            except TimeoutError:
                raise InvalidWebhookUrl("the host name did not resolve in time") from None
            except (OSError, UnicodeError):
                raise InvalidWebhookUrl("the host name does not resolve") from None
            candidates = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
        allowed = [ip for ip in candidates if self.allow_private or not blocked(ip)]
        if not allowed:
            raise InvalidWebhookUrl("the URL's host resolves to a private, loopback or link-local address")
        return list(dict.fromkeys(str(ip) for ip in allowed))[:MAX_ADDRESSES]

    def _client(self, url: httpx.URL) -> httpx.AsyncClient:
        key = (url.scheme, ascii_host(url), url.port or 0)
        client = self._clients.get(key)
        if client is None:
            client = httpx.AsyncClient(
                follow_redirects=False,
                timeout=httpx.Timeout(self.timeout),
                limits=httpx.Limits(max_connections=8, max_keepalive_connections=4),
                trust_env=False,
                verify=self.verify,
            )
            self._clients[key] = client
            while len(self._clients) > self.max_hosts:
                _, old = self._clients.popitem(last=False)
                closing = asyncio.ensure_future(old.aclose())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        else:
            self._clients.move_to_end(key)
        return client

    async def _post(self, url: httpx.URL, ip: str, body: bytes, headers: Mapping[str, str]) -> int:
        pinned = url.copy_with(host=ip)
        host = url.netloc.decode("ascii")
        extensions = {"sni_hostname": ascii_host(url)} if url.scheme == "https" else {}
        client = self._client(url)
        request = client.build_request(
            "POST", pinned, content=body, headers={**headers, "host": host}, extensions=extensions
        )
        response = await client.send(request, stream=True)
        try:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= MAX_BODY:
                    break
        finally:
            await response.aclose()
        return response.status_code


def _targets(
    given: Sequence[str] | None,
) -> tuple[frozenset[str] | None, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]]:
    """``CAAS_WEBHOOK_ALLOWED_TARGETS`` split into host names and IP networks."""
    if given is None:
        return None, ()
    names, networks = set(), []
    for item in (g.strip() for g in given):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            names.add(item.lower().rstrip("."))
    return frozenset(names), tuple(networks)


def _status_error(status: int) -> str:
    if 300 <= status < 400:
        return f"HTTP {status}: redirects are not followed"
    return f"HTTP {status}"


def _is_tls(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
