"""An endpoint's cursor survives the server: after ``kill -9`` and a restart on the same data,
delivery resumes where it stopped, every event at least once (embedded: the processor runs in
``caas serve``)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support import Server, new_tenant
from tests.webhooks.receiver import Receiver, wait_until
from tests.webhooks.test_delivery import channel, post, posted, register


def test_delivery_resumes_after_kill_9_and_restart(tmp_path: Path) -> None:
    receiver = Receiver().start()
    server = Server(tmp_path / "data")
    (tmp_path / "data").mkdir()
    server.start()
    try:
        with httpx.Client(timeout=30) as client:
            tenant = new_tenant(client, server.url)
            register(client, tenant, receiver.url, event_types=["MessagePosted"])
            channel(client, tenant, "k", ["u1"])
            for i in range(5):
                post(client, tenant, "k", f"before {i}")
            wait_until(lambda: len(posted(receiver)) == 5, what="the first five")
            receiver.fail_first = 10**9  # the receiver is down from here on
            for i in range(3):
                post(client, tenant, "k", f"during {i}")
            wait_until(lambda: len(receiver.received) > 5, what="a failed attempt at the sixth")
            server.kill()
            receiver.fail_first = 0
            server.start()
            # in order per endpoint: the last one arrives only once the two before it were delivered
            wait_until(lambda: len(posted(receiver)) == 8, what="all eight after the restart")
        texts = [e["data"]["text"] for e in posted(receiver)]
        assert texts == [f"before {i}" for i in range(5)] + [f"during {i}" for i in range(3)]
    finally:
        server.stop()
        receiver.stop()
