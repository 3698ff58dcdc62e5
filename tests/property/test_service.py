"""Property tests of the command service on a real SQLite log, driven by many concurrent tasks.

Hypothesis picks the plan: which users post to which channels, in how many concurrent
tasks, how long each task yields before a send, and how each post is retried (the same
``client_msg_id``, the same ``Idempotency-Key``, at once or later). Whatever the
interleaving, the log must hold every acknowledged message exactly once, in a gapless
per-channel order that every reader sees alike.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.sqlite_log import SqliteEventLog
from commands.ports import EventLog, Idempotency, IdempotencyKeyReused
from commands.repository import AGGREGATES, AggregateRepository
from commands.service import CommandEnvelope, CommandService, Outcome
from domain import channel as ch
from domain.base import Actor, format_time
from domain.errors import NotAMember
from domain.events import Event

TENANT = "t1"
CHANNELS = ("c1", "c2", "c3")
MEMBERS = ("u1", "u2", "u3", "u4")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Post:
    """One message a user means to post, and how the client retries it."""

    user: str
    channel: str
    retry_by: Literal["client_msg_id", "idempotency_key", "none"]
    retries: int
    together: bool  # retries race the first send instead of following it
    pause: int  # event-loop turns to yield before each send


posts = st.builds(
    Post,
    user=st.sampled_from((*MEMBERS, "outsider")),
    channel=st.sampled_from(CHANNELS),
    retry_by=st.sampled_from(("client_msg_id", "client_msg_id", "idempotency_key", "none")),
    retries=st.integers(0, 3),
    together=st.booleans(),
    pause=st.integers(0, 3),
)
plans = st.lists(st.lists(posts, min_size=1, max_size=5), min_size=2, max_size=6)


@dataclass(slots=True)
class Sent:
    """What the client saw for one logical post."""

    post: Post
    text: str
    outcomes: list[Outcome] = field(default_factory=list)
    refused: int = 0


def service_for(log: EventLog, cache_size: int = 20_000, snapshot_every: int = 500) -> CommandService:
    ids = itertools.count(1)
    return CommandService(
        log,
        clock=lambda: NOW,
        new_id=lambda: f"id-{next(ids)}",
        repository=AggregateRepository(log, cache_size=cache_size, snapshot_every=snapshot_every),
    )


def command(sent: Sent, attempt: int) -> ch.PostMessage:
    post = sent.post
    return ch.PostMessage(
        actor=Actor("user", post.user),
        message_id=f"{sent.text}#{attempt}",  # the API mints a new message_id per request
        author_id=post.user,
        text=sent.text,
        client_msg_id=sent.text if post.retry_by == "client_msg_id" else None,
        now=format_time(NOW),
    )


def idempotency(sent: Sent) -> Idempotency | None:
    return Idempotency(f"key-{sent.text}", f"fp-{sent.text}") if sent.post.retry_by == "idempotency_key" else None


async def send(service: CommandService, sent: Sent, attempt: int) -> None:
    for _ in range(sent.post.pause):
        await asyncio.sleep(0)
    try:
        outcome = await service.execute(
            CommandEnvelope(
                TENANT,
                f"channel:{sent.post.channel}",
                command(sent, attempt),
                actor=f"user:{sent.post.user}",
                idempotency=idempotency(sent),
            )
        )
    except NotAMember:
        sent.refused += 1
        return
    sent.outcomes.append(outcome)


async def client(service: CommandService, task: int, plan: list[Post]) -> list[Sent]:
    """One client: posts its messages one after another, retrying each as the plan says."""
    done = []
    for n, post in enumerate(plan):
        sent = Sent(post, f"task{task}-msg{n}")
        retries = post.retries if post.retry_by != "none" else 0
        if post.together:
            await asyncio.gather(*(send(service, sent, a) for a in range(retries + 1)))
        else:
            for attempt in range(retries + 1):
                await send(service, sent, attempt)
        done.append(sent)
    return done


async def create_channels(service: CommandService) -> None:
    tenant = Actor("tenant", TENANT)
    for cid in CHANNELS:
        create = ch.CreateChannel(actor=tenant, name=cid, kind="group", members=list(MEMBERS))
        await service.execute(CommandEnvelope(TENANT, f"channel:{cid}", create, actor=f"tenant:{TENANT}"))


async def scenario(path: Path, plan: list[list[Post]], cache_size: int, snapshot_every: int) -> None:
    log = SqliteEventLog(path / "events.db")
    await log.start()
    try:
        service = service_for(log, cache_size, snapshot_every)
        await create_channels(service)
        results = await asyncio.gather(*(client(service, n, p) for n, p in enumerate(plan)))
        everything = [sent for result in results for sent in result]
        streams = {cid: await log.read_stream(TENANT, f"channel:{cid}") for cid in CHANNELS}
        check_log(streams, everything)
        check_client_order(results)
        await check_readers_agree(log, path, streams)
        await check_cold_retries(log, everything)
        await check_cold_states(log, streams, snapshot_every)
    finally:
        await log.close()


def check_log(streams: dict[str, list[Event]], everything: list[Sent]) -> None:
    """Gapless seqs; each acknowledged message exactly once; every retry saw the first result."""
    posted: dict[str, list[Event]] = defaultdict(list)
    for cid, events in streams.items():
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), cid
        for event in events:
            if event.type == "MessagePosted":
                posted[event.payload["text"]].append(event)
    for sent in everything:
        attempts = len(sent.outcomes) + sent.refused
        assert attempts == (sent.post.retries + 1 if sent.post.retry_by != "none" else 1)
        if sent.post.user == "outsider":
            assert sent.refused == attempts and sent.text not in posted, "a non-member's post was recorded"
            continue
        [recorded] = posted.pop(sent.text)  # exactly once
        assert recorded.stream == f"channel:{sent.post.channel}"
        for outcome in sent.outcomes:
            assert [e.model_dump() for e in outcome.events] == [recorded.model_dump()]
        assert [o.replayed for o in sent.outcomes].count(False) == 1, "one send records, the retries replay it"
    assert not posted, f"recorded but never acknowledged: {sorted(posted)}"


def check_client_order(results: list[list[Sent]]) -> None:
    """A client that waited for each post sees its posts recorded in the order it sent them."""
    for sents in results:
        positions = [s.outcomes[0].last.position for s in sents if s.outcomes]
        assert positions == sorted(positions)


async def check_readers_agree(log: EventLog, path: Path, streams: dict[str, list[Event]]) -> None:
    """Every reader, on any connection, sees each channel in the same order."""
    other = SqliteEventLog(path / "events.db")
    await other.start()
    try:
        everyone = await log.read_all(tenant_id=TENANT, limit=100_000)
        for cid, events in streams.items():
            order = [e.event_id for e in events]
            reads = await asyncio.gather(
                log.read_stream(TENANT, f"channel:{cid}"), other.read_stream(TENANT, f"channel:{cid}")
            )
            assert [[e.event_id for e in r] for r in reads] == [order, order]
            assert [e.event_id for e in everyone if e.stream == f"channel:{cid}"] == order
            assert [e.position for e in events] == sorted(e.position for e in events)
    finally:
        await other.close()


async def check_cold_retries(log: EventLog, everything: list[Sent]) -> None:
    """A node that never saw the first send (cold cache) answers a retry with the first result."""
    service = service_for(log)
    head = await log.head_position()
    for sent in everything:
        if sent.post.retry_by == "none" or not sent.outcomes:
            continue
        stream = f"channel:{sent.post.channel}"
        outcome = await service.execute(
            CommandEnvelope(
                TENANT, stream, command(sent, 99), actor=f"user:{sent.post.user}", idempotency=idempotency(sent)
            )
        )
        assert outcome.replayed
        assert [e.event_id for e in outcome.events] == [e.event_id for e in sent.outcomes[0].events]
        if sent.post.retry_by == "idempotency_key":
            reused = Idempotency(f"key-{sent.text}", "fp-a-different-request")
            with pytest.raises(IdempotencyKeyReused):
                await service.execute(
                    CommandEnvelope(TENANT, stream, command(sent, 100), actor=None, idempotency=reused)
                )
    assert await log.head_position() == head, "a retry appended something"


async def check_cold_states(log: EventLog, streams: dict[str, list[Event]], snapshot_every: int) -> None:
    """A cold load (from whatever snapshot was taken meanwhile) equals folding the whole log."""
    service = service_for(log, snapshot_every=snapshot_every)
    for cid, events in streams.items():
        loaded = await service.state(TENANT, f"channel:{cid}")
        assert repr(loaded) == repr(AGGREGATES["channel"].fold(ch.ChannelState(), events))


@settings(max_examples=30, deadline=None)
@given(plans, st.sampled_from((20_000, 2, 1)), st.sampled_from((500, 2)))
def test_concurrent_posts_and_retries_record_each_message_once_in_gapless_order(
    plan: list[list[Post]], cache_size: int, snapshot_every: int
) -> None:
    """Whatever the interleaving, and even when the service's aggregate cache is smaller
    than the streams in use (so states are reloaded while appends are still queued, and
    snapshots of evicted states are taken meanwhile)."""
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp), plan, cache_size, snapshot_every))
