"""Send slots are shared fairly between tenants (streams/webhooks.py ``FairSlots``): a tenant
whose endpoints all hang holds at most its own share, and another tenant's deliveries go out
while those attempts are still in flight."""

from __future__ import annotations

import asyncio
from pathlib import Path

from adapters.ids import utcnow, uuid7
from adapters.webhook_http import HttpSender
from commands.service import CommandEnvelope
from domain import channel as ch
from domain import webhook
from domain.base import Actor, Command, format_time
from domain.events import stream_name
from streams.webhooks import Dispatcher, Policy
from tests.webhooks.receiver import Receiver
from tests.webhooks.test_dispatcher import Rig, until


def test_a_tenant_whose_endpoints_hang_does_not_hold_back_another_tenants_delivery(tmp_path: Path) -> None:
    slow, quick = Receiver(hang=True).start(), Receiver().start()

    async def go() -> None:
        policy = Policy(concurrency=3, tenant_concurrency=2, retry_base=0.05, retry_max=0.2, poll=0.2)
        r = Rig(tmp_path, policy)
        r.dispatcher = Dispatcher(
            r.log, r.store, r.commands, HttpSender(allow_private=True, timeout=600.0), r.horizon, "server-key", policy
        )  # an attempt ends only when the receiver answers (the hanging one never does, until the end)

        async def run(tenant: str, stream: str, command: Command) -> None:
            await r.commands.execute(CommandEnvelope(tenant, stream, command, actor=f"tenant:{tenant}"))

        async def post(tenant: str, text: str) -> None:
            actor = Actor("tenant", tenant)
            command = ch.PostMessage(
                actor=actor, message_id=uuid7(), author_id="u1", text=text, now=format_time(utcnow())
            )
            await run(tenant, stream_name("channel", "c1"), command)

        await r.start()
        try:
            for tenant in ("ta", "tb"):
                create = ch.CreateChannel(actor=Actor("tenant", tenant), name="c", kind="group", members=["u1"])
                await run(tenant, stream_name("channel", "c1"), create)
            for i in range(6):  # tenant A: six endpoints on a receiver that never answers
                register = webhook.RegisterWebhook(url=slow.url, event_types=["MessagePosted"])
                await run("ta", stream_name("webhook", f"w{i}"), register)
            await run("tb", stream_name("webhook", "w1"), webhook.RegisterWebhook(url=quick.url, event_types=["*"]))
            await post("ta", "from A")
            await until(lambda: len(slow.received) >= 2, what="tenant A's share of the slots in flight")
            await post("tb", "from B")
            await until(lambda: len(quick.received) == 1, what="tenant B's delivery while A's attempts hang")
            assert quick.events()[0]["data"]["text"] == "from B"
            assert len(slow.received) == 2 and slow.answered == 0  # A's attempts are still in flight
        finally:
            slow.release.set()
            await r.close()

    try:
        asyncio.run(go())
    finally:
        slow.stop()
        quick.stop()
