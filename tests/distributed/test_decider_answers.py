"""What a decider answers is what happened: a command refused stays refused after the decider
is killed, and a first write is never reported as a replay."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters.kafka.codec import partition_for, stream_key
from adapters.kafka.deciders import Reply
from adapters.kafka.node import KafkaNode
from adapters.kafka.wire import CommandRequest
from commands.service import CommandEnvelope
from domain import channel as ch
from domain.base import Actor
from domain.errors import Forbidden
from tests.cluster import Cluster
from tests.contract.test_kafka_commands import decider_and_node, kafka_commands
from tests.distributed.test_cluster import fresh_tenant, user
from tests.support import Server, bearer

pytestmark = pytest.mark.kafka

TAKEOVER = 90.0  # bound for a new worker to take a killed one's partition over (its session expires first)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def post_until_answered(http: httpx.AsyncClient, node: Server, token: str, cid: str, text: str) -> httpx.Response:
    """Post ``text``, retried under one Idempotency-Key while no decider answers (503)."""
    headers = {**bearer(token), "idempotency-key": f"k-{uuid.uuid4().hex}"}
    deadline = time.monotonic() + TAKEOVER
    while True:
        r = await http.post(f"{node.url}/v1/channels/{cid}/messages", json={"text": text}, headers=headers)
        if r.status_code != 503 or time.monotonic() > deadline:
            return r


async def test_a_refused_post_stays_refused_when_its_decider_is_killed_before_committing(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    # The decider commits its offsets once an hour: every command after the first batch is
    # delivered again to the next decider, unless a refusal had its batch committed at once.
    cluster = Cluster(tmp_path / "cluster", env={"CAAS_DECIDER_COMMIT_SECONDS": "3600"}).start()
    try:
        node = cluster.nodes[0]
        tenant = await fresh_tenant(http, node)
        token = await user(http, node, tenant, "alice")
        cid = f"c-{uuid.uuid4().hex[:10]}"
        r = await http.post(f"{node.url}/v1/channels/{cid}/messages", json={"text": "early"}, headers=bearer(token))
        assert r.status_code == 404 and r.json()["error"]["details"]["rule"] == "channel_not_found", r.text
        created = {"channel_id": cid, "name": cid, "members": ["alice"]}
        r = await http.post(f"{node.url}/v1/channels", json=created, headers=bearer(token))
        assert r.status_code == 201, r.text
        cluster.kill_worker(0)
        cluster.start_worker()
        after = await post_until_answered(http, node, token, cid, "after")
        assert after.status_code in (200, 201), after.text  # 200: an attempt that timed out was recorded
        r = await http.get(
            f"{node.url}/v1/channels/{cid}/messages",
            params={"min_position": after.json()["position"]},
            headers=bearer(token),
        )
        assert r.status_code == 200, r.text
        assert [m["text"] for m in r.json()["messages"]] == ["after"]  # the refused post was never recorded
    finally:
        cluster.stop()


def create_channel(tenant: str, cid: str) -> CommandEnvelope:
    """A channel's creation as the node sends it, with the request id the node will use."""
    create = ch.CreateChannel(actor=Actor("tenant", tenant), name=cid, kind="group", members=["alice"])
    return CommandEnvelope(tenant, f"channel:{cid}", create, actor=f"tenant:{tenant}", command_id=str(uuid.uuid4()))


async def send_copies(node: KafkaNode, envelope: CommandEnvelope, copies: int) -> None:
    """``copies`` copies of ``node``'s request for ``envelope`` on the command topic, as a producer's
    retry or a redelivery puts them there (in one produce request when they can share it)."""
    assert envelope.command_id is not None
    request = CommandRequest(envelope.command_id, node.node_id, envelope, in_events=True).encode()
    key = stream_key(envelope.tenant_id, envelope.stream)
    sends = [
        await node.producer.send(node.topics["commands"], request, key=key.encode(), partition=partition_for(key, 1))
        for _ in range(copies)
    ]
    await asyncio.gather(*sends)


async def replies_to(node: KafkaNode, request_id: str, within: float = 60.0) -> list[dict[str, Any]]:
    """The replies the deciders sent ``node`` for ``request_id`` (waits for the first)."""
    tp = TopicPartition(node.topics["replies"], partition_for(node.node_id, 1))
    consumer = AIOKafkaConsumer(bootstrap_servers=node.bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + within
        while not found and time.monotonic() < deadline:
            for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                reply = orjson.loads(record.value)
                if reply["request_id"] == request_id:
                    found.append(reply)
    finally:
        await consumer.stop()
    return found


async def test_a_copy_of_a_request_delivered_while_the_first_is_decided_is_not_answered_as_a_replay() -> None:
    async with kafka_commands(partitions=1) as node:
        envelope = create_channel(f"t-{uuid.uuid4().hex[:12]}", "c1")
        await send_copies(node, envelope, 2)
        assert envelope.command_id is not None
        [reply] = await replies_to(node, envelope.command_id)  # the first copy is answered by its events
        assert reply["ok"] and not reply["replayed"], reply
        assert [e["type"] for e in reply["events"]] == ["ChannelCreated", "MemberAdded"]
        assert (await node.channel(envelope.tenant_id, "c1")).version == 2  # recorded once


async def test_a_request_recorded_before_its_node_waits_for_it_is_answered_as_recorded_not_replayed() -> None:
    async with kafka_commands(partitions=1) as node:
        envelope = create_channel(f"t-{uuid.uuid4().hex[:12]}", "c1")
        await send_copies(node, envelope, 1)  # a copy that got ahead of the node's own
        deadline = time.monotonic() + 60
        while (await node.state(envelope.tenant_id, envelope.stream)).version < 2:
            assert time.monotonic() < deadline, "the first copy was never recorded"
            await asyncio.sleep(0.05)
        outcome = await node.execute(envelope)  # the same request: the node's answer is a first write
        assert not outcome.replayed
        assert [e.type for e in outcome.events] == ["ChannelCreated", "MemberAdded"]
        assert (await node.channel(envelope.tenant_id, "c1")).version == 2


async def test_a_refusal_is_sent_once_its_batch_is_committed_by_whichever_commit_and_commits_never_go_back() -> None:
    """A batch with a refusal waits for its commit before the refusal is sent. If the background
    committer took the batch's offset first, its commit counts (the refusal is no 503); and a
    commit of an offset below one committed already is not made (the group never moves back,
    where a crash would have the refused command decided again)."""
    async with decider_and_node(partitions=1) as (decider, node):
        tenant = f"t-{uuid.uuid4().hex[:12]}"
        for cid in ("c1", "c2", "c3"):  # three decided commands: offsets 0 to 2 of the command topic
            await node.execute(create_channel(tenant, cid))
        tp = TopicPartition(decider.topics["commands"], 0)
        refused = Reply("node-x", "r1", Forbidden("not a member"))
        decider._uncommitted[tp] = 3
        await decider._commit()  # the background committer, first
        assert await decider._settled_refusals(tp, 3, [refused]) == [refused]
        decider._uncommitted[tp] = 2  # an older offset, committed after a newer one
        await decider._commit()
        assert await decider.consumer.committed(tp) == 3
