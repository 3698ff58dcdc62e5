"""An endpoint's cursor under what the review found could move it wrongly (docs/webhooks.md):
a replay asked before the processor first saw the endpoint, the webhooks read model or the
event index briefly empty (a live rebuild), and a clock that steps back between runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from adapters.webhook_http import HttpSender
from api.bootstrap import WEBHOOKS
from domain import channel as ch
from domain import webhook
from domain.events import Event, stream_name
from projections.ports import Op
from streams.webhooks import DELIVERIES, Dispatcher, Policy
from tests.webhooks.receiver import Receiver
from tests.webhooks.test_dispatcher import ACTOR, KEY, TENANT, Rig, receiver, rig, until

__all__ = ["receiver"]  # the fixture, used by name

POLICY = Policy(retry_base=0.05, retry_max=0.2, poll=0.2)


def texts(bodies: list[dict[str, object]]) -> list[object]:
    return [b["data"]["text"] for b in bodies]  # type: ignore[index]


async def first_delivery(r: Rig, receiver: Receiver) -> None:
    """An endpoint registered and "one" delivered to it."""
    await r.hook(receiver.url)
    await r.post("one")
    await until(lambda: len(receiver.unique()) == 1, what="the first delivery")


def test_a_replay_recorded_before_the_processor_first_sees_the_endpoint_is_delivered(
    tmp_path: Path, receiver: Receiver
) -> None:
    async def go() -> None:
        r = Rig(tmp_path, POLICY)
        await r.log.start()
        await r.store.start()
        await r.runner.start()
        try:
            await r.run(
                stream_name("channel", "c1"), ch.CreateChannel(actor=ACTOR, name="c", kind="group", members=["u1"])
            )
            await r.post("m0")
            await r.run(
                stream_name("webhook", "w1"), webhook.RegisterWebhook(url=receiver.url, event_types=["MessagePosted"])
            )
            [replay] = await r.run(stream_name("webhook", "w1"), webhook.ReplayWebhook(from_position=0))
            await until(lambda: r.runner.applied >= replay.position, what="the replay in the read model")
            await r.dispatcher.start()  # the processor was down until now
            r.runner.applied_listeners.append(r.dispatcher.on_indexed)
            await until(lambda: len(receiver.unique()) == 1, what="m0, replayed")
            assert texts(receiver.unique()) == ["m0"]
        finally:
            await r.close()

    asyncio.run(go())


def test_an_endpoint_missing_from_the_read_model_for_a_moment_keeps_its_cursor(
    tmp_path: Path, receiver: Receiver
) -> None:
    async def go() -> None:
        async with rig(tmp_path) as r:
            await first_delivery(r, receiver)
            await until(lambda: not r.dispatcher._tasks, what="the endpoint idle")
            saved = await r.store.get("webhooks", "_webhooks", KEY)
            assert saved is not None
            await r.store.drop("webhooks-rebuild", ["webhooks"])  # a live rebuild's swap, mid-way
            await r.dispatcher._load()  # a poll in the gap
            await r.store.apply(
                "webhooks-rebuild", [Op("webhooks", "_webhooks", KEY, int(saved["version"]), set=saved)], 1
            )
            r.dispatcher._refresh = True
            await r.post("two")
            await until(lambda: len(receiver.unique()) == 2, what="the next delivery")
            assert texts(receiver.events()) == ["one", "two"]  # "one" not sent again

    asyncio.run(go())


def test_an_event_index_briefly_empty_does_not_skip_undelivered_events(tmp_path: Path, receiver: Receiver) -> None:
    async def go() -> None:
        async with rig(tmp_path) as r:
            await r.hook(receiver.url)
            await until(lambda: KEY in r.dispatcher.endpoints, what="the endpoint loaded")
            real = r.log.read_tenant
            gap = {"on": True, "reads": 0}

            async def read_tenant(
                tenant_id: str, after_position: int = 0, limit: int = 1000, types: Sequence[str] | None = None
            ) -> list[Event]:
                if gap["on"]:
                    gap["reads"] += 1
                    return []  # the index's collection dropped, the rebuilt one not renamed in yet
                return await real(tenant_id, after_position, limit, types)

            r.dispatcher.history = r.log  # the same object; its reads go through the gap below
            r.log.read_tenant = read_tenant  # type: ignore[method-assign]
            one = await r.post("one")
            await until(lambda: r.runner.applied >= one.position and gap["reads"] > 0, what="a read in the gap")
            await until(lambda: not r.dispatcher._tasks, what="the round over")
            gap["on"] = False
            await r.post("two")
            await until(lambda: len(receiver.unique()) == 2, timeout=10, what="both messages")
            assert texts(receiver.unique()) == ["one", "two"]

    asyncio.run(go())


def test_a_clock_that_steps_back_between_runs_does_not_stop_progress_being_saved(
    tmp_path: Path, receiver: Receiver
) -> None:
    async def go() -> None:
        async with rig(tmp_path) as r:
            await first_delivery(r, receiver)

            async def restart(offset: float) -> None:
                await r.dispatcher.close()
                r.runner.applied_listeners.clear()
                r.dispatcher = Dispatcher(
                    r.log, r.store, r.commands, HttpSender(allow_private=True), r.horizon, "server-key", POLICY,
                    clock=lambda: time.time() + offset,
                )  # fmt: skip
                await r.dispatcher.start()
                r.runner.applied_listeners.append(r.dispatcher.on_indexed)

            await restart(-3600.0)  # the host's clock stepped back an hour
            await r.post("two")
            await until(lambda: len(receiver.unique()) == 2, what="the second delivery")
            await restart(0.0)
            await r.post("three")
            await until(lambda: len(receiver.unique()) == 3, what="the third delivery")
            assert texts(receiver.events()) == ["one", "two", "three"]  # "two" not sent again
            log = await r.store.find(DELIVERIES, TENANT, {"webhook_id": "w1"}, sort=[("delivery_id", 1)])
            assert [d["position"] for d in log] == sorted(d["position"] for d in log)

    asyncio.run(go())


def test_the_delivery_log_keeps_the_newest_entries_only(tmp_path: Path, receiver: Receiver) -> None:
    async def go() -> None:
        async with rig(tmp_path, log_kept=3) as r:
            await r.hook(receiver.url)
            posted = [await r.post(f"m{i}") for i in range(5)]
            await until(lambda: r.dispatcher.delivered == 5, what="every message delivered")
            await r.dispatcher.close()  # what is queued is written
            log = await r.store.find(DELIVERIES, TENANT, {"webhook_id": "w1"}, sort=[("delivery_id", 1)])
            assert [d["position"] for d in log] == [e.position for e in posted[-3:]]

    asyncio.run(go())


_ = WEBHOOKS


def test_two_processors_on_one_store_deliver_each_event_once_and_the_second_takes_over(
    tmp_path: Path, receiver: Receiver
) -> None:
    async def go() -> None:
        async with rig(tmp_path, lease=0.3) as r:
            other = Dispatcher(
                r.log, r.store, r.commands, HttpSender(allow_private=True), r.horizon, "server-key", r.dispatcher.policy
            )  # a second caas worker
            await other.start()
            r.runner.applied_listeners.append(other.on_indexed)
            try:
                await r.hook(receiver.url)
                for i in range(20):
                    await r.post(f"m{i}")
                await until(lambda: len(receiver.unique()) == 20, what="every message")
                assert len(receiver.received) == 20  # each once: only the lease holder sends
                assert [r.dispatcher.leading, other.leading].count(True) == 1
                leader, follower = (r.dispatcher, other) if r.dispatcher.leading else (other, r.dispatcher)
                await until(lambda: leader.delivered == 20, what="the leader's last progress queued")
                await leader.close()  # writes its progress, frees the lease
                await until(lambda: follower.leading, what="the other processor taking over")
                await r.post("after")
                await until(lambda: len(receiver.unique()) == 21, what="a delivery by the new holder")
                assert texts(receiver.events()) == [f"m{i}" for i in range(20)] + ["after"]
            finally:
                await other.close()

    asyncio.run(go())


def test_a_processor_task_that_dies_is_started_again(tmp_path: Path, receiver: Receiver) -> None:
    async def go() -> None:
        async with rig(tmp_path, lease=0.3) as r:
            await first_delivery(r, receiver)
            dead = r.dispatcher._loop
            assert dead is not None
            dead.cancel()  # the shared loop ended (as a bug would end it)
            await until(lambda: r.dispatcher._loop is not dead and r.dispatcher._alive(), what="the loop restarted")
            await r.post("two")
            await until(lambda: len(receiver.unique()) == 2, what="a delivery after the restart")

    asyncio.run(go())
