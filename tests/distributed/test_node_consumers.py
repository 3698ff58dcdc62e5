"""An API node's consumers of the reply and event topics answer every command the node sends:
whatever a record or a listener does to them, they keep consuming, and readiness says when
one has stopped all the same."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from adapters.kafka.node import IndexedLog, KafkaNode
from adapters.memory_store import MemoryReadStore
from commands.keys import Keyring, KeyStore, StoredKey
from commands.ports import LogUnavailable
from commands.sealing import Sealer
from commands.service import CommandEnvelope
from domain import user as user_commands
from domain.events import Event
from tests.cluster import Cluster
from tests.contract.commands_contract import create_channel, post
from tests.contract.test_kafka_commands import kafka_commands
from tests.distributed.test_cluster import channel, fresh_tenant, user
from tests.support import ADMIN, SEALER, Server, bearer

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

    log = IndexedLog(MemoryReadStore(), SEALER)
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

    log = IndexedLog(MemoryReadStore(), SEALER)
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


async def last_record_of(cluster: Cluster, key: str) -> dict[str, Any]:
    """The value of the last record keyed ``key`` on the event topic of ``cluster`` (one partition)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=cluster.settings()["CAAS_KAFKA_BOOTSTRAP"], enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(f"{cluster.name}.events", 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        found: dict[str, Any] | None = None
        while await consumer.position(tp) < end:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.key == key.encode():
                        found = orjson.loads(record.value)
        assert found is not None, f"no record keyed {key}"
        return found
    finally:
        await consumer.stop()


async def poison(cluster: Cluster, tenant_id: str, stream: str) -> None:
    """The next event of ``stream`` as a newer release could write it: of a type this node does
    not know (what a rolling upgrade's newer decider may record)."""
    key = f"{tenant_id}/{stream}"
    last = await last_record_of(cluster, key)
    event = {**last, "event_id": str(uuid.uuid4()), "seq": last["seq"] + 1, "type": "FromANewerRelease"}
    producer = AIOKafkaProducer(bootstrap_servers=cluster.settings()["CAAS_KAFKA_BOOTSTRAP"])
    await producer.start()
    try:
        await producer.send_and_wait(f"{cluster.name}.events", orjson.dumps(event), key=key.encode(), partition=0)
    finally:
        await producer.stop()


async def until_not_ready(http: httpx.AsyncClient, node: Server) -> None:
    deadline = time.monotonic() + WAIT
    while (r := await http.get(f"{node.url}/readyz")).status_code == 200:
        assert time.monotonic() < deadline, "the node never reported the stream it could not apply"
        await asyncio.sleep(0.05)
    assert r.status_code == 503, r.text


async def test_a_channel_event_the_node_cannot_apply_fails_closed_and_readiness_says_so(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    node, other = cluster.nodes[0], cluster.start_node()
    tenant = await fresh_tenant(http, node)
    alice, bob = await user(http, node, tenant, "alice"), await user(http, node, tenant, "bob")
    cid = await channel(http, node, alice, ["alice", "bob"])
    assert (await http.get(f"{node.url}/v1/channels/{cid}/messages", headers=bearer(bob))).status_code == 200
    await poison(cluster, tenant.tenant_id, f"channel:{cid}")
    await until_not_ready(http, node)
    r = await http.delete(f"{other.url}/v1/channels/{cid}/members/bob", headers=bearer(alice))
    assert r.status_code in (200, 204), r.text
    # the node missed an event of the channel: it refuses rather than answer from a stale membership
    r = await http.get(f"{node.url}/v1/channels/{cid}/messages", headers=bearer(bob))
    assert r.status_code in (403, 404), r.text
    assert (await http.get(f"{node.url}/readyz")).status_code == 503
    metrics = (await http.get(f"{node.url}/metrics", headers=bearer(ADMIN))).text
    assert "caas_replica_streams_dropped_total 1.0" in metrics


async def test_an_api_key_stops_working_on_a_node_that_cannot_apply_an_event_of_its_tenant(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    """The tenant's next event might revoke the key: a node that cannot apply it must not keep
    answering from the tenant as it was. (Every node of this release drops the tenant alike,
    so no revocation can be sent after it; the node refuses the key whatever comes next.)"""
    node = cluster.nodes[0]
    tenant = await fresh_tenant(http, node)
    r = await http.post(f"{node.url}/v1/api-keys", json={"name": "ci"}, headers=tenant.headers())
    assert r.status_code == 201, r.text
    key = r.json()["api_key"]
    assert (await http.get(f"{node.url}/v1/channels", headers=bearer(key))).status_code == 200
    await poison(cluster, tenant.tenant_id, f"tenant:{tenant.tenant_id}")
    await until_not_ready(http, node)
    assert (await http.get(f"{node.url}/v1/channels", headers=bearer(key))).status_code == 401


class FlakyKeyStore(KeyStore):
    """A key store whose next ``failures`` reads fail as a store that is away does."""

    def __init__(self, inner: KeyStore, failures: int = 0) -> None:
        self.inner, self.failures, self.failed = inner, failures, 0

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def read(self, tenant_id: str, key_ids: Sequence[str]) -> dict[str, StoredKey]:
        if self.failures > 0:
            self.failures -= 1
            self.failed += 1
            raise ConnectionError("the key store is away")
        return await self.inner.read(tenant_id, key_ids)

    async def create(self, key: StoredKey) -> StoredKey:
        return await self.inner.create(key)

    async def destroy(self, tenant_id: str, key_id: str) -> bool:
        return await self.inner.destroy(tenant_id, key_id)

    async def list_keys(
        self, tenant_id: str | None = None, prefix: str = "", after: tuple[str, str] | None = None, limit: int = 1000
    ) -> list[StoredKey]:
        return await self.inner.list_keys(tenant_id, prefix, after, limit)

    async def rewrap(self, key: StoredKey, master_id: str, wrapped: bytes) -> bool:
        return await self.inner.rewrap(key, master_id, wrapped)


@contextlib.asynccontextmanager
async def reader_node(writer: KafkaNode, keys: FlakyKeyStore, heard: list[Event]) -> AsyncIterator[KafkaNode]:
    """Another API node of ``writer``'s topics, its keys read from ``keys`` (the same store as the writer's)."""
    log = IndexedLog(MemoryReadStore(), Sealer(Keyring(keys, SEALER.keyring.master)))
    log.listen(heard.extend)
    node = KafkaNode(writer.bootstrap, writer.prefix, writer.partitions, log, timeout=30.0)
    await node.start()
    try:
        yield node
    finally:
        await node.close()


async def write_personal(writer: KafkaNode, tenant: str) -> None:
    """alice registered with metadata a policy could read, and a message of hers: both sealed."""
    register = user_commands.RegisterUser(name="Alice", metadata={"suspended": True})
    await writer.execute(CommandEnvelope(tenant, "user:alice", register, actor=f"tenant:{tenant}"))
    await create_channel(writer, tenant, "c1")
    await writer.execute(post(tenant, "c1", "not erased"))


async def heard_post(heard: list[Event]) -> Event | None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if posts := [e for e in heard if e.type == "MessagePosted"]:
            return posts[0]
        await asyncio.sleep(0.05)
    return None


async def test_a_key_store_that_fails_once_does_not_make_a_node_hold_live_data_as_erased() -> None:
    keys, heard = FlakyKeyStore(SEALER.keyring.store), []
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    async with kafka_commands(partitions=1) as writer, reader_node(writer, keys, heard) as reader:
        keys.failures = 1  # the reader's first read of a key fails, the next one answers
        await write_personal(writer, tenant)
        post_seen = await heard_post(heard)
        assert post_seen is not None, "the reader never handed the post on"
        assert post_seen.payload["text"] == "not erased" and not post_seen.payload.get("erased"), post_seen.payload
        alice = await reader.state(tenant, "user:alice")
        assert alice.exists and alice.metadata == {"suspended": True}, alice  # what an ABAC policy reads
        assert keys.failed == 1
        await reader.check()


async def test_a_key_store_that_stays_away_drops_the_streams_and_readiness_says_so() -> None:
    keys, heard = FlakyKeyStore(SEALER.keyring.store), []
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    async with kafka_commands(partitions=1) as writer, reader_node(writer, keys, heard) as reader:
        keys.failures = 10_000
        await write_personal(writer, tenant)
        deadline = time.monotonic() + WAIT
        while not reader.stale:
            assert time.monotonic() < deadline, "the reader never dropped the streams it could not open"
            await asyncio.sleep(0.05)
        with pytest.raises(LogUnavailable, match="replica missed events"):
            await reader.check()
        # nothing was applied nor handed on as erased: alice is not known here, rather than erased
        assert not (await reader.state(tenant, "user:alice")).exists
        assert not [e for e in heard if e.payload.get("erased")]
