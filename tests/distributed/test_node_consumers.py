"""An API node's consumers of the reply and event topics answer every command the node sends:
whatever a record or a listener does to them, they keep consuming, and readiness says when
one has stopped all the same."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from adapters.kafka.node import IndexedLog, KafkaNode
from adapters.memory_store import MemoryReadStore
from commands.ports import LogUnavailable
from domain.events import Event
from tests.cluster import Cluster
from tests.contract.commands_contract import create_channel, post
from tests.contract.test_kafka_commands import kafka_commands
from tests.distributed.test_cluster import channel, fresh_tenant, user
from tests.support import ADMIN, bearer

pytestmark = pytest.mark.kafka

WAIT = 30.0  # bound for a condition this node reaches on its own


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of its own: its topics get records no other test should see."""
    cluster = Cluster(tmp_path / "cluster")
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def produce_raw(cluster: Cluster, topic: str, value: bytes) -> None:
    """A record on ``topic`` of ``cluster``, written the way any Kafka client could write it."""
    producer = AIOKafkaProducer(bootstrap_servers=cluster.settings()["CAAS_KAFKA_BOOTSTRAP"])
    await producer.start()
    try:
        await producer.send_and_wait(f"{cluster.name}.{topic}", value, partition=0)
    finally:
        await producer.stop()


async def test_an_unreadable_record_on_the_event_topic_is_skipped_and_writes_still_succeed(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    node = cluster.nodes[0]
    tenant = await fresh_tenant(http, node)
    token = await user(http, node, tenant, "alice")
    cid = await channel(http, node, token, ["alice"])
    await produce_raw(cluster, "events", b"\xff this is no event")
    # the post's events come after the unreadable record in the partition
    r = await http.post(f"{node.url}/v1/channels/{cid}/messages", json={"text": "after"}, headers=bearer(token))
    assert r.status_code == 201, r.text
    r = await http.post(f"{node.url}/v1/channels/{cid}/messages", json={"text": "again"}, headers=bearer(token))
    assert r.status_code == 201, r.text
    assert (await http.get(f"{node.url}/readyz")).status_code == 200
    metrics = (await http.get(f"{node.url}/metrics", headers=bearer(ADMIN))).text
    assert 'caas_kafka_consumer_errors_total{consumer="events",stage="record"} 1.0' in metrics


async def test_a_listener_that_raises_does_not_stop_the_node_answering_commands() -> None:
    heard: list[Event] = []

    def failing(events: Sequence[Event]) -> None:
        heard.extend(events)
        raise RuntimeError("a listener's bug")

    log = IndexedLog(MemoryReadStore())
    log.listen(failing)
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    async with kafka_commands(log, partitions=1) as node:
        await create_channel(node, tenant, "c1")
        for text in ("one", "two"):  # each answered by events the listener failed on before
            outcome = await node.execute(post(tenant, "c1", text))
            assert not outcome.replayed and outcome.last.payload["text"] == text
        await node.check()
    assert [e.payload.get("text") for e in heard if e.type == "MessagePosted"] == ["one", "two"]


class Fatal(BaseException):
    """Stops a task: what no handler of ``Exception`` catches."""


async def test_readiness_fails_once_the_nodes_event_consumer_has_stopped() -> None:
    armed = asyncio.Event()

    def fatal(events: Sequence[Event]) -> None:
        if armed.is_set():
            raise Fatal

    log = IndexedLog(MemoryReadStore())
    log.listen(fatal)
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    async with kafka_commands(log, partitions=1) as node:
        await create_channel(node, tenant, "c1")
        await node.check()
        armed.set()
        await node.execute(post(tenant, "c1", "the consumer stops on this one's events"))
        assert await stopped_within(node, WAIT), "readiness never reported the stopped consumer"


async def stopped_within(node: KafkaNode, seconds: float) -> bool:
    """Whether ``node``'s readiness check fails on its stopped consumer before ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            await node.check()
        except LogUnavailable as exc:
            assert "caas-events" in str(exc)
            return True
        await asyncio.sleep(0.05)
    return False
