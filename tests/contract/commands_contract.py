"""The behaviour of the command path as the API calls it (:class:`commands.service.Commands`),
asserted through that port only: the same command scenario against the embedded backend's
local :class:`CommandService` and the Kafka backend's API node, whose commands a real decider
decides on the broker.

Subclass :class:`CommandsContract` once per backend and implement :meth:`open_commands`.
"""

from __future__ import annotations

import abc
import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

import pytest

from commands.ports import Idempotency, IdempotencyKeyReused
from commands.service import CommandEnvelope, Commands, Outcome
from domain import channel as ch
from domain.base import Actor, format_time
from domain.errors import DomainError

NOW = format_time(datetime(2026, 1, 1, tzinfo=UTC))


def post(tenant: str, cid: str, text: str, *, user: str = "alice", idem: Idempotency | None = None) -> CommandEnvelope:
    command = ch.PostMessage(
        actor=Actor("user", user), message_id=f"m-{uuid.uuid4().hex[:8]}", author_id=user, text=text, now=NOW
    )
    return CommandEnvelope(tenant, f"channel:{cid}", command, actor=f"user:{user}", idempotency=idem)


async def create_channel(commands: Commands, tenant: str, cid: str) -> Outcome:
    create = ch.CreateChannel(actor=Actor("tenant", tenant), name=cid, kind="group", members=["alice", "bob"])
    return await commands.execute(CommandEnvelope(tenant, f"channel:{cid}", create, actor=f"tenant:{tenant}"))


async def refusal(call: Callable[[], Awaitable[object]]) -> tuple[str, str]:
    """The ``(category, rule)`` of the domain error ``call`` raises."""
    with pytest.raises(DomainError) as caught:
        await call()
    return caught.value.category, caught.value.rule


class CommandsContract(abc.ABC):
    """Abstract contract suite for the write side as the API sees it."""

    @abc.abstractmethod
    def open_commands(self, request: pytest.FixtureRequest) -> AbstractAsyncContextManager[Commands]:
        """A started command side of a fresh deployment, stopped on exit."""

    @pytest.fixture
    async def commands(self, request: pytest.FixtureRequest) -> AsyncIterator[Commands]:
        async with self.open_commands(request) as commands:
            yield commands

    @pytest.fixture
    def tenant(self) -> str:
        return f"t-{uuid.uuid4().hex[:12]}"

    async def test_a_post_is_recorded_and_the_channel_state_shows_it(self, commands: Commands, tenant: str) -> None:
        created = (await create_channel(commands, tenant, "c1")).last.seq
        outcome = await commands.execute(post(tenant, "c1", "hello"))
        assert not outcome.replayed
        assert [(e.type, e.seq, e.payload["text"]) for e in outcome.events] == [("MessagePosted", created + 1, "hello")]
        assert outcome.last.actor == "user:alice" and outcome.last.tenant_id == tenant
        channel = await commands.channel(tenant, "c1")
        assert channel.version == created + 1 and outcome.last.payload["message_id"] in channel.messages

    async def test_a_retry_with_the_same_key_answers_the_first_result_and_records_nothing(
        self, commands: Commands, tenant: str
    ) -> None:
        created = (await create_channel(commands, tenant, "c1")).last.seq
        key = Idempotency("key-1", "fp-1")
        first = await commands.execute(post(tenant, "c1", "once", idem=key))
        again = await commands.execute(post(tenant, "c1", "once", idem=key))
        assert (first.replayed, again.replayed) == (False, True)
        assert [e.model_dump() for e in again.events] == [e.model_dump() for e in first.events]
        assert (await commands.channel(tenant, "c1")).version == created + 1
        with pytest.raises(IdempotencyKeyReused):
            await commands.execute(post(tenant, "c1", "other", idem=Idempotency("key-1", "fp-other")))

    async def test_a_rule_refusal_is_the_same_domain_error(self, commands: Commands, tenant: str) -> None:
        assert await refusal(lambda: commands.execute(post(tenant, "nowhere", "hi"))) == (
            "not_found",
            "channel_not_found",
        )
        await create_channel(commands, tenant, "c1")
        assert await refusal(lambda: commands.execute(post(tenant, "c1", "hi", user="mallory"))) == (
            "forbidden",
            "not_a_member",
        )
        assert await refusal(lambda: create_channel(commands, tenant, "c1")) == ("conflict", "channel_already_exists")

    async def test_concurrent_posts_to_one_channel_are_both_recorded_in_sequence(
        self, commands: Commands, tenant: str
    ) -> None:
        created = (await create_channel(commands, tenant, "c1")).last.seq
        first, second = await asyncio.gather(
            commands.execute(post(tenant, "c1", "one")), commands.execute(post(tenant, "c1", "two", user="bob"))
        )
        assert sorted([first.last.seq, second.last.seq]) == [created + 1, created + 2]
        channel = await commands.channel(tenant, "c1")
        assert channel.version == created + 2
        assert {first.last.payload["message_id"], second.last.payload["message_id"]} <= set(channel.messages)
