"""Faults of the distributed backend under load: a worker killed with ``kill -9``, the broker
restarted, the database stopped. Whatever happens, an acknowledged message is in the read
model exactly once, seqs stay gapless, and a failed command answers ``503 unavailable``.

The faults stop and restart servers, so this module runs its own Kafka broker and FerretDB
(``infra/services`` with a private run folder that shares the prepared jars and binary);
the shared servers other tests use are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.kafka.codec import partition_for, stream_key
from tests.cluster import SERVICES, Cluster, services_env
from tests.support import ADMIN, Server, bearer

pytestmark = pytest.mark.kafka

PARTITIONS = 2
COMMAND_TIMEOUT = 3.0  # the nodes' CAAS_COMMAND_TIMEOUT_SECONDS
QUERY_WAIT = 3.0  # the nodes' CAAS_QUERY_WAIT_SECONDS
# A node answers a command within its configured timeout (plus, after a success, up to 2 s
# for its own replica to show the write, plus scheduling slack on a busy machine), and a query
# within its min_position wait plus the database driver's 5 s server selection. A client that
# waits longer has found a hang: httpx raises and the test fails.
COMMAND_ANSWERED_WITHIN = COMMAND_TIMEOUT + 2.0 + 2.0
QUERY_ANSWERED_WITHIN = QUERY_WAIT + 5.0 + 2.0
RECOVER_WITHIN = 45.0  # bound for the system to accept commands / catch up after a fault


# --- private servers -----------------------------------------------------------------------
@dataclass
class Services:
    """``infra/services`` on a private cache folder: its own run state, the shared jars/binary."""

    cache: Path

    def run(self, *args: str, timeout: float = 240) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("CAAS_KAFKA_PORT", "CAAS_MONGO_PORT")}
        env["CAAS_INFRA_CACHE"] = str(self.cache)
        env.setdefault("CAAS_KAFKA_JAVA_OPTS", "-XX:TieredStopAtLevel=1")  # restarts in half the time
        done = subprocess.run(
            [str(SERVICES), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert done.returncode == 0, f"infra/services {' '.join(args)} failed:\n{done.stderr[-3000:]}"
        return done.stdout

    def env(self) -> dict[str, str]:
        found = {}
        for line in self.run("env").splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            found[name] = value.strip()
        return found


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    services_env()  # the shared cache is prepared (Kafka's jars fetched, FerretDB built)
    shared = Path(os.environ.get("CAAS_INFRA_CACHE") or SERVICES.parent / ".cache").resolve()
    cache = tmp_path_factory.mktemp("services")
    for name in ("kafka-libs", "bin"):
        (cache / name).symlink_to(shared / name)
    private = Services(cache)
    try:
        private.run("up")
        yield private
    finally:
        private.run("down")


@pytest.fixture
def cluster(services: Services, tmp_path: Path) -> Iterator[Cluster]:
    """Two workers and one API node on the private servers; every fault test brings them back."""
    cluster = Cluster(
        tmp_path / "cluster",
        partitions=PARTITIONS,
        env={
            **services.env(),
            "CAAS_COMMAND_TIMEOUT_SECONDS": str(COMMAND_TIMEOUT),
            "CAAS_QUERY_WAIT_SECONDS": str(QUERY_WAIT),
        },
    )
    try:
        yield cluster.start(workers=2, nodes=1)
    finally:
        cluster.stop()
        services.run("up")  # whatever a test stopped is running again for the next one


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=QUERY_ANSWERED_WITHIN) as client:
        yield client


# --- a chat under load ---------------------------------------------------------------------
def channel_on(tenant_id: str, partition: int, n: int = 0) -> str:
    """A channel id whose stream lives on ``partition`` (so both partitions get traffic)."""
    found = 0
    for i in range(10_000):
        cid = f"p{partition}-{i}"
        if partition_for(stream_key(tenant_id, f"channel:{cid}"), PARTITIONS) == partition:
            if found == n:
                return cid
            found += 1
    raise AssertionError("no channel id found for the partition")


@dataclass
class Attempt:
    status: int
    started: float
    ended: float


@dataclass
class Chat:
    """A tenant with one user and a channel per partition, posting with client_msg_ids."""

    http: httpx.AsyncClient
    node: Server
    api_key: str = ""
    token: str = ""
    channels: dict[str, int] = field(default_factory=dict)  # channel id -> seq after creation
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)  # client_msg_id -> first ack
    replays: list[dict[str, Any]] = field(default_factory=list)  # later acks of the same id
    attempts: list[Attempt] = field(default_factory=list)

    @classmethod
    async def open(cls, http: httpx.AsyncClient, node: Server, channels_per_partition: int = 1) -> Chat:
        chat = cls(http, node)
        r = await http.post(f"{node.url}/v1/tenants", json={"name": "faulty"}, headers=bearer(ADMIN))
        assert r.status_code == 201, r.text
        tenant_id, chat.api_key = r.json()["tenant_id"], r.json()["api_key"]
        r = await http.put(f"{node.url}/v1/users/alice", json={"name": "Alice"}, headers=bearer(chat.api_key))
        assert r.status_code == 201, r.text
        r = await http.post(f"{node.url}/v1/users/alice/tokens", json={}, headers=bearer(chat.api_key))
        assert r.status_code == 201, r.text
        chat.token = r.json()["token"]
        for partition in range(PARTITIONS):
            for n in range(channels_per_partition):
                cid = channel_on(tenant_id, partition, n)
                r = await http.post(
                    f"{node.url}/v1/channels", json={"channel_id": cid, "name": cid}, headers=bearer(chat.token)
                )
                assert r.status_code == 201, r.text
                chat.channels[cid] = r.json()["seq"]
        return chat

    async def post_once(self, cid: str, text: str) -> dict[str, Any] | None:
        """One attempt: the ack, or ``None`` if the node said ``503 unavailable``."""
        started = time.monotonic()
        r = await self.http.post(
            f"{self.node.url}/v1/channels/{cid}/messages",
            json={"text": text, "client_msg_id": text},
            headers=bearer(self.token),
            timeout=COMMAND_ANSWERED_WITHIN,
        )
        self.attempts.append(Attempt(r.status_code, started, time.monotonic()))
        if r.status_code == 503:
            assert r.json()["error"]["code"] == "unavailable", r.text
            return None
        assert r.status_code in (200, 201), r.text
        ack: dict[str, Any] = r.json()
        if text in self.acks:
            self.replays.append(ack)
        else:
            self.acks[text] = {**ack, "channel_id": cid}
        return ack

    async def post(self, cid: str, text: str, *, within: float = RECOVER_WITHIN) -> dict[str, Any]:
        """Post until acknowledged, retrying the same client_msg_id (bounded)."""
        deadline = time.monotonic() + within
        while (ack := await self.post_once(cid, text)) is None:
            assert time.monotonic() < deadline, f"{text} was never acknowledged"
            await asyncio.sleep(0.2)
        return ack

    async def poster(self, name: str, cid: str, count: int) -> None:
        for n in range(count):
            await self.post(cid, f"{name}-{n:04d}")

    def acked_in(self, cid: str) -> list[dict[str, Any]]:
        return [ack for ack in self.acks.values() if ack["channel_id"] == cid]

    async def history(self, cid: str, min_position: int) -> list[dict[str, Any]]:
        """The whole timeline, oldest first, once the read model has applied ``min_position``."""
        messages: list[dict[str, Any]] = []
        after = 0
        while True:
            r = await self.http.get(
                f"{self.node.url}/v1/channels/{cid}/messages",
                params={"after_seq": after, "limit": 200, "min_position": min_position},
                headers=bearer(self.api_key),
            )
            assert r.status_code == 200, r.text
            page = r.json()
            messages += page["messages"]
            if page["next_after_seq"] is None:
                return messages
            after = page["next_after_seq"]

    async def history_when_caught_up(self, cid: str, min_position: int) -> list[dict[str, Any]]:
        """:meth:`history`, retrying while the read model is still catching up (503, bounded)."""
        deadline = time.monotonic() + RECOVER_WITHIN
        while True:
            r = await self.http.get(
                f"{self.node.url}/v1/channels/{cid}/messages",
                params={"limit": 1, "min_position": min_position},
                headers=bearer(self.api_key),
            )
            if r.status_code == 200:
                return await self.history(cid, min_position)
            assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", r.text
            assert time.monotonic() < deadline, f"the read model never reached position {min_position}"
            await asyncio.sleep(0.2)

    async def assert_read_model_complete(self) -> None:
        """Every acknowledged message is in the read model exactly once; seqs are gapless."""
        assert not [a for a in self.attempts if a.status not in (200, 201, 503)]
        for cid, created_seq in self.channels.items():
            acks = self.acked_in(cid)
            if not acks:
                continue
            last = max(acks, key=lambda a: a["seq"])
            messages = await self.history_when_caught_up(cid, last["position"])
            texts = Counter(m["text"] for m in messages)
            assert not [t for t, n in texts.items() if n > 1], f"duplicates in {cid}"
            assert set(texts) == {text for text, a in self.acks.items() if a["channel_id"] == cid}
            seqs = [m["seq"] for m in messages]
            assert seqs == list(range(created_seq + 1, created_seq + 1 + len(messages))), f"{cid}: seq gap"
            by_text = {m["text"]: m for m in messages}
            for text, ack in self.acks.items():
                if ack["channel_id"] == cid:
                    assert (by_text[text]["seq"], by_text[text]["message_id"]) == (ack["seq"], ack["message_id"])
        firsts = {a["message_id"]: a for a in self.acks.values()}
        for replay in self.replays:  # an acknowledged retry answers the first result
            first = firsts[replay["message_id"]]
            assert (replay["seq"], replay["position"], replay["event_id"]) == (
                first["seq"],
                first["position"],
                first["event_id"],
            )


async def wait_until(predicate: Any, what: str, within: float = RECOVER_WITHIN) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.05)


# --- the faults ----------------------------------------------------------------------------
async def test_worker_killed_mid_load_loses_no_acknowledged_message_and_duplicates_none(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    node = cluster.nodes[0]
    chat = await Chat.open(http, node, channels_per_partition=2)
    cids = list(chat.channels)
    posters = 6
    per_poster = 50
    load = asyncio.gather(*(chat.poster(f"w{i}", cids[i % len(cids)], per_poster) for i in range(posters)))
    try:
        await wait_until(lambda: len(chat.acks) >= posters * per_poster // 4, "a quarter is acknowledged")
        cluster.kill_worker(0)
        cluster.start_worker()
        await asyncio.wait_for(asyncio.shield(load), RECOVER_WITHIN + posters * per_poster * 0.1)
    finally:
        load.cancel()
        with contextlib.suppress(BaseException):
            await load
    assert len(chat.acks) == posters * per_poster
    assert any(a.status == 503 for a in chat.attempts), "the kill went unnoticed: no post was ever retried"
    # every client_msg_id once more: all are known, nothing new is appended
    for text, ack in list(chat.acks.items())[:: max(1, len(chat.acks) // 40)]:
        again = await chat.post(ack["channel_id"], text)
        assert again["message_id"] == ack["message_id"]
    await chat.assert_read_model_complete()


async def test_broker_restart_answers_503_meanwhile_and_loses_nothing_acknowledged(
    cluster: Cluster, services: Services, http: httpx.AsyncClient
) -> None:
    node = cluster.nodes[0]
    chat = await Chat.open(http, node)
    cids = list(chat.channels)
    for n in range(10):
        await chat.post(cids[n % len(cids)], f"before-{n:02d}")
    outage: list[float] = []
    stop_posting = asyncio.Event()

    async def poster(name: str, cid: str) -> None:
        n = 0
        while not stop_posting.is_set():
            await chat.post(cid, f"{name}-{n:04d}", within=RECOVER_WITHIN + 60)
            n += 1
            await asyncio.sleep(0.05)

    load = asyncio.gather(*(poster(f"k{i}", cids[i % len(cids)]) for i in range(4)))
    try:
        await wait_until(lambda: len(chat.acks) >= 30, "the load is running")
        await asyncio.to_thread(services.run, "stop", "kafka")
        outage.append(time.monotonic())
        acked_before_up = len(chat.acks)
        await wait_until(lambda: len([a for a in chat.attempts if a.started > outage[0]]) >= 4, "commands meanwhile")
        outage.append(time.monotonic())
        await asyncio.to_thread(services.run, "up", "kafka")
        await wait_until(lambda: len(chat.acks) >= acked_before_up + 20, "commands succeed again")
        stop_posting.set()
        await asyncio.wait_for(asyncio.shield(load), RECOVER_WITHIN)
    finally:
        stop_posting.set()
        load.cancel()
        with contextlib.suppress(BaseException):
            await load
    during = [a.status for a in chat.attempts if outage[0] < a.started and a.ended <= outage[1]]
    assert len(during) >= 4 and set(during) == {503}, during
    after = [a for a in chat.attempts if a.started > outage[1]]
    assert 201 in {a.status for a in after}
    # a fresh channel works after the restart too
    r = await http.post(f"{node.url}/v1/channels", json={"name": "after"}, headers=bearer(chat.token))
    assert r.status_code == 201, r.text
    await chat.assert_read_model_complete()


async def test_database_outage_keeps_commands_acknowledged_and_projections_resume_exactly_once(
    cluster: Cluster, services: Services, http: httpx.AsyncClient
) -> None:
    node = cluster.nodes[0]
    chat = await Chat.open(http, node)
    cids = list(chat.channels)
    for n in range(10):
        await chat.post(cids[n % len(cids)], f"before-{n:02d}")
    await chat.assert_read_model_complete()

    await asyncio.to_thread(services.run, "stop", "ferretdb")
    try:
        during = [await chat.post_once(cids[n % len(cids)], f"during-{n:02d}") for n in range(20)]
        assert all(ack is not None and ack.get("seq") for ack in during), "Kafka is the system of record"
        last = max((ack for ack in during if ack is not None), key=lambda a: a["position"])
        r = await http.get(
            f"{node.url}/v1/channels/{last['channel_id']}/messages",
            params={"min_position": last["position"]},
            headers=bearer(chat.api_key),
        )
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "unavailable"
    finally:
        await asyncio.to_thread(services.run, "up", "ferretdb")
    for n in range(10):
        await chat.post(cids[n % len(cids)], f"after-{n:02d}")
    await chat.assert_read_model_complete()
    r = await http.get(f"{node.url}/v1/events", params={"types": "MessagePosted", "limit": 1000},
                       headers=bearer(chat.api_key))  # fmt: skip
    assert r.status_code == 200, r.text
    indexed = Counter(e["payload"]["text"] for e in r.json()["events"])
    assert indexed == Counter(list(chat.acks))
