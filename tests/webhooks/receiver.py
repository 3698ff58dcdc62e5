"""A real webhook receiver for tests: an HTTP/1.1 server on a loopback port, in a thread.

It records every request (headers, body, the client's port) and answers as the test says:
``fail_first`` requests with 500, ``hang`` (hold every request until released), a redirect,
or a huge or endless response body.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    client_port: int

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(self.body)
        return data


@dataclass
class Receiver:
    fail_first: int = 0
    hang: bool = False
    redirect_to: str | None = None
    body_bytes: int = 0  # answer with this many bytes of body
    trickle: bool = False  # answer 200 with a body that never ends, a byte at a time
    flood: bool = False  # answer 200 with a body that never ends, as fast as the socket takes it
    received: list[Received] = field(default_factory=list)
    answered: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None
    tls: tuple[str, str] | None = None  # (certificate chain file, key file): serve HTTPS

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.server.server_address[1]}/hook"

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                data = self.rfile.read(length)
                with receiver.lock:
                    receiver.received.append(Received(dict(self.headers.items()), data, self.client_address[1]))
                    count = len(receiver.received)
                if receiver.hang:
                    while not receiver.release.wait(0.1):
                        pass
                    self.close_connection = True
                    return
                if receiver.redirect_to is not None:
                    self._answer(302, b"", {"location": receiver.redirect_to})
                elif count <= receiver.fail_first:
                    self._answer(500, b"not yet")
                elif receiver.flood:
                    self.send_response(200)
                    self.send_header("content-length", str(10**15))
                    self.end_headers()
                    with receiver.lock:
                        receiver.answered += 1
                    chunk = b"x" * 65536
                    while not receiver.release.is_set():
                        try:
                            self.wfile.write(chunk)
                        except OSError:
                            return
                    self.close_connection = True
                elif receiver.trickle:
                    self.send_response(200)
                    self.send_header("content-length", str(10**9))
                    self.end_headers()
                    with receiver.lock:
                        receiver.answered += 1
                    while not receiver.release.is_set():
                        try:
                            self.wfile.write(b"x")
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(0.05)
                    self.close_connection = True
                else:
                    self._answer(200, b"x" * receiver.body_bytes if receiver.body_bytes else b"ok")

            def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)
                with receiver.lock:
                    receiver.answered += 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def events(self) -> list[dict[str, Any]]:
        """The bodies received, in arrival order (duplicates included)."""
        with self.lock:
            return [r.json for r in self.received]

    def unique(self) -> list[dict[str, Any]]:
        """The bodies received, first arrival of each event id only (at-least-once dedup)."""
        seen: set[str] = set()
        out = []
        for body in self.events():
            if body["id"] not in seen:
                seen.add(body["id"])
                out.append(body)
        return out


def wait_until(check: Callable[[], bool], timeout: float = 60.0, what: str = "the condition") -> None:
    """Poll ``check`` until it holds, or fail after ``timeout`` seconds (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
