"""The delivery processor (streams/webhooks.py) on the embedded log and read store, sending to
a real receiver: the horizon it never reads past, a store that goes away, replays that cannot
skip or hurry, disabling and re-enabling, and what it keeps for idle and deleted endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from adapters.ids import utcnow, uuid7
from adapters.sqlite_log import SqliteEventLog
from adapters.sqlite_store import SqliteReadStore
from adapters.webhook_http import HttpSender
from api.bootstrap import WEBHOOKS
from commands.service import CommandEnvelope, CommandService
from domain import channel as ch
from domain import webhook
from domain.base import Actor, Command, format_time
from domain.events import Event, stream_name
from projections.ports import Doc, Filter, Op
from projections.webhooks import doc_id
from streams.projector import ProjectionRunner
from streams.webhooks import Dispatcher, Policy
from tests.webhooks.receiver import Receiver

TENANT = "t1"
ACTOR = Actor("tenant", TENANT)


class FlakyStore(SqliteReadStore):
    """The read store, made to fail its next ``failures`` calls (the database went away)."""

    failures = 0
    failed = 0

    def _trip(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            self.failed += 1
            raise ConnectionError("the read store is away")

    async def find(
        self, collection: str, tenant_id: str, filter: Filter, sort: Any = (), limit: Any = None
    ) -> list[Doc]:
        self._trip()
        return await super().find(collection, tenant_id, filter, sort, limit)

    async def apply(self, projection: str, ops: Sequence[Op], position: int) -> None:
        if projection.startswith("webhook-"):
            self._trip()
        await super().apply(projection, ops, position)


class Rig:
    """A log, a store, the command path, the read models' runner and a dispatcher."""

    def __init__(self, root: Path, policy: Policy) -> None:
        self.log = SqliteEventLog(root / "events.db")
        self.store = FlakyStore(root / "read.db")
        self.commands = CommandService(self.log, clock=utcnow, new_id=uuid7)
        self.runner = ProjectionRunner(self.log, self.store, [WEBHOOKS])
        self.limit: int | None = None  # the horizon, held back by a test
        self.dispatcher = Dispatcher(
            self.log, self.store, self.commands, HttpSender(allow_private=True), self.horizon, "server-key", policy
        )

    async def horizon(self) -> int:
        return self.runner.applied if self.limit is None else min(self.limit, self.runner.applied)

    async def start(self) -> None:
        await self.log.start()
        await self.store.start()
        await self.runner.start()
        await self.dispatcher.start()
        self.runner.applied_listeners.append(self.dispatcher.on_indexed)

    async def close(self) -> None:
        await self.dispatcher.close()
        await self.runner.close()
        await self.log.close()
        await self.store.close()

    async def run(self, stream: str, command: Command) -> list[Event]:
        outcome = await self.commands.execute(CommandEnvelope(TENANT, stream, command, actor=ACTOR.label))
        return outcome.events

    async def hook(self, url: str, hook_id: str = "w1") -> int:
        [event] = await self.run(
            stream_name("webhook", hook_id), webhook.RegisterWebhook(url=url, event_types=["MessagePosted"])
        )
        await self.run(
            stream_name("channel", "c1"), ch.CreateChannel(actor=ACTOR, name="c", kind="group", members=["u1"])
        )
        return event.position

    async def post(self, text: str) -> Event:
        command = ch.PostMessage(actor=ACTOR, message_id=uuid7(), author_id="u1", text=text, now=format_time(utcnow()))
        [event] = await self.run(stream_name("channel", "c1"), command)
        return event


async def until(check: Callable[[], bool], timeout: float = 30.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.fixture
def receiver() -> Any:
    found = Receiver().start()
    yield found
    found.stop()


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, **policy: Any) -> AsyncIterator[Rig]:
    found = Rig(tmp_path, Policy(**{"retry_base": 0.05, "retry_max": 0.2, "poll": 0.2, **policy}))
    await found.start()
    try:
        yield found
    finally:
        await found.close()


KEY = doc_id(TENANT, "w1")


def test_nothing_past_the_horizon_is_read(tmp_path: Path, receiver: Receiver) -> None:
    async def go() -> None:
        async with rig(tmp_path) as r:
            await r.hook(receiver.url)
            first = await r.post("one")
            r.limit = first.position  # the index is complete up to the first message only
            await r.post("two")
            await r.post("three")
            await until(lambda: len(receiver.received) >= 1, what="the first message")
            await until(
                lambda: r.dispatcher.progress[KEY].cursor == first.position and KEY not in r.dispatcher._tasks,
                what="the endpoint caught up with the horizon",
            )
            assert [b["data"]["text"] for b in receiver.events()] == ["one"]
            r.limit = None
            r.dispatcher.on_indexed([first])  # the index moved on
            await until(lambda: len(receiver.unique()) == 3, what="the rest")
            assert [b["data"]["text"] for b in receiver.unique()] == ["one", "two", "three"]

    asyncio.run(go())


def test_a_store_that_goes_away_delays_deliveries_but_does_not_stop_them(tmp_path: Path, receiver: Receiver) -> None:
    async def go() -> None:
        async with rig(tmp_path) as r:
            await r.hook(receiver.url)
            await until(lambda: KEY in r.dispatcher.endpoints, what="the endpoint loaded")
            r.store.failures = 6
            await r.post("despite it all")
            await until(lambda: len(receiver.unique()) == 1, what="the delivery")
            while r.store.failures:  # the faults not met yet hit the shared loop's next rounds
                r.dispatcher.on_indexed(await r.log.read_stream(TENANT, stream_name("webhook", "w1")))
                await asyncio.sleep(0.05)
            await r.post("after it all")
            await until(lambda: len(receiver.unique()) == 2, what="a delivery after the faults")
            assert r.store.failed == 6

    asyncio.run(go())


def test_a_replay_cannot_skip_ahead_nor_hurry_a_backoff(tmp_path: Path, receiver: Receiver) -> None:
    async def go() -> None:
        async with rig(tmp_path, retry_base=3600.0, retry_max=3600.0) as r:
            start = await r.hook(receiver.url)
            r.limit = start
            await r.post("one")
            last = await r.post("two")
            await until(lambda: KEY in r.dispatcher.progress, what="the endpoint's progress")
            [replay] = await r.run(stream_name("webhook", "w1"), webhook.ReplayWebhook(from_position=last.position))
            await until(lambda: r.dispatcher.progress[KEY].replay_seq == replay.seq, what="the replay seen")
            assert r.dispatcher.progress[KEY].cursor <= start  # not moved past what was never delivered
            receiver.fail_first = 10
            r.limit = None
            r.dispatcher.on_indexed([last])
            await until(lambda: r.dispatcher.progress[KEY].attempt == 1, what="a failed attempt")
            waiting_until = r.dispatcher.progress[KEY].next_at
            [again] = await r.run(stream_name("webhook", "w1"), webhook.ReplayWebhook(from_position=0))
            await until(lambda: r.dispatcher.progress[KEY].replay_seq == again.seq, what="the second replay seen")
            assert r.dispatcher.progress[KEY].next_at == waiting_until  # the backoff stands
            assert len(receiver.received) == 1

    asyncio.run(go())


def test_an_endpoint_failing_too_long_is_disabled_and_can_be_enabled_again(tmp_path: Path, receiver: Receiver) -> None:
    async def go() -> None:
        async with rig(tmp_path, disable_after=0.3) as r:
            await r.hook(receiver.url)
            receiver.fail_first = 10**6
            one = await r.post("one")
            await until(
                lambda: not r.dispatcher.endpoints.get(KEY, {"enabled": True})["enabled"], what="the endpoint disabled"
            )
            state = await r.commands.state(TENANT, stream_name("webhook", "w1"))
            assert not state.enabled
            events = await r.log.read_stream(TENANT, stream_name("webhook", "w1"))
            disabled = [e for e in events if e.type == "WebhookDisabled"]
            assert len(disabled) == 1 and "failed" in disabled[0].payload["reason"]
            receiver.fail_first = 0
            await r.run(stream_name("webhook", "w1"), webhook.UpdateWebhook(enabled=True))
            await until(lambda: r.dispatcher.progress[KEY].cursor >= one.position, what="delivered once re-enabled")
            assert r.dispatcher.progress[KEY].attempt == 0 and r.dispatcher.delivered == 1

    asyncio.run(go())


def test_idle_and_deleted_endpoints_keep_nothing_running(tmp_path: Path, receiver: Receiver) -> None:
    async def go() -> None:
        async with rig(tmp_path) as r:
            await r.hook(receiver.url)
            await r.post("one")
            await until(lambda: len(receiver.unique()) == 1, what="the delivery")
            await until(lambda: not r.dispatcher._tasks, what="no task for an idle endpoint")
            await r.run(stream_name("webhook", "w1"), webhook.DeleteWebhook())
            await until(lambda: KEY not in r.dispatcher.progress and not r.dispatcher.endpoints, what="pruned")

            async def stored() -> Any:
                return await r.store.get("webhook_state", "_webhooks", KEY)

            deadline = time.monotonic() + 30
            while not (await stored() or {}).get("gone"):
                assert time.monotonic() < deadline, "the stored cursor was not pruned"
                await asyncio.sleep(0.02)
            assert (await stored() or {})["cursor"] is None
            assert len(receiver.unique()) == 1

    asyncio.run(go())


def test_new_events_are_delivered_without_waiting_for_the_poll(tmp_path: Path, receiver: Receiver) -> None:
    async def go() -> None:
        async with rig(tmp_path, poll=3600.0) as r:  # only the wake-ups on new events can deliver
            await r.hook(receiver.url)
            await until(lambda: KEY in r.dispatcher.endpoints or bool(r.dispatcher._tasks), what="the endpoint seen")
            for i in range(30):
                await r.post(f"m{i}")
            await until(lambda: len(receiver.unique()) == 30, what="every message without a poll")
            assert [b["data"]["text"] for b in receiver.unique()] == [f"m{i}" for i in range(30)]

    asyncio.run(go())


def test_a_store_that_does_not_answer_at_start_fails_the_start(tmp_path: Path) -> None:
    async def go() -> None:
        found = Rig(tmp_path, Policy())
        await found.log.start()
        await found.store.start()
        found.store.failures = 1
        try:
            with pytest.raises(ConnectionError):
                await found.dispatcher.start()
        finally:
            await found.dispatcher.close()
            await found.log.close()
            await found.store.close()

    asyncio.run(go())


def test_on_kafka_the_horizon_is_the_event_indexs_durable_checkpoint(tmp_path: Path) -> None:
    """The processor reads the event index up to the offset its checkpoint covers, which the
    projector writes only after the batch's documents: never a position not yet indexed."""
    from adapters.kafka.codec import decode_position
    from api.bootstrap import KafkaBackend
    from api.settings import Settings

    async def go() -> None:
        backend = KafkaBackend(Settings.from_env({"CAAS_BACKEND": "kafka", "CAAS_DATA_DIR": str(tmp_path)}))
        store = SqliteReadStore(tmp_path / "read.db")  # the checkpoints as any read store keeps them
        await store.start()
        backend.store = store
        try:
            assert await backend.indexed_position() == 0
            await store.apply("events@p0", [], 5)  # offsets 0 to 4 are indexed
            assert decode_position(await backend.indexed_position()) == (0, 4)
        finally:
            await store.close()

    asyncio.run(go())
