"""A read store that stops answering must not stall the read models silently (issue 8, 17).

On Kafka, the worker reaches the real MongoDB-wire server through a TCP forwarder in this
process that the test freezes: bytes stop flowing both ways and no connection closes, which
is what a hung MongoDB looks like to its client (a command that never answers). The API
node talks to the server directly, as in the reported stall: it keeps answering, so only
its judgement of the projectors' progress can tell. Embedded, another connection holds the
read database's write lock, so the in-process projector's writes fail while everything
else answers.

Either way the node must turn ``/readyz`` not-ready with the reason while the lag does not
shrink, and once the store answers again the projector catches up on its own: every
acknowledged message is in the history and ``/readyz`` is ready again.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from pymongo import MongoClient

from adapters.kafka.codec import encode_position
from adapters.kafka.projectors import project
from adapters.mongo_store import MongoReadStore
from domain.events import Event
from projections.ports import Op, ReadStoreUnavailable
from streams.projector import Projection
from tests.cluster import Cluster, services_env
from tests.support import ADMIN, Server, Tenant, bearer, new_tenant

STALL_SECONDS = 3  # the servers' CAAS_PROJECTION_STALL_SECONDS
STORE_TIMEOUT = 4  # the servers' CAAS_MONGO_TIMEOUT_SECONDS (the shared test FerretDB may be busy)
WITHIN = 60.0  # bound for anything the test waits for; a hang fails the test here
STALL_ENV = {"CAAS_PROJECTION_STALL_SECONDS": str(STALL_SECONDS), "CAAS_MONGO_TIMEOUT_SECONDS": str(STORE_TIMEOUT)}


class FreezableProxy:
    """A TCP forwarder on 127.0.0.1 that can stop moving bytes without closing anything:
    frozen, it holds them (``drop=False``) or loses them (a command that is never answered)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._dropping = False
        self.dropped = 0  # bytes lost while frozen with drop=True
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @classmethod
    async def to_store(cls) -> FreezableProxy:
        """A proxy in front of the test MongoDB-wire server."""
        target = urlsplit(services_env()["CAAS_MONGO_URL"])
        assert target.hostname and target.port
        return await cls(target.hostname, target.port).start()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"mongodb://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/"

    async def start(self) -> FreezableProxy:
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        return self

    def freeze(self, *, drop: bool = False) -> None:
        self._dropping = drop
        self._flowing.clear()

    def thaw(self) -> None:
        self._dropping = False
        self._flowing.set()

    async def close(self) -> None:
        self.thaw()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()

    async def _connected(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        self._writers |= {client_writer, upstream_writer}
        await asyncio.gather(self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self._dropping:
                    self.dropped += len(data)
                    continue
                await self._flowing.wait()  # frozen: the bytes are held, the connection stays open
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=WITHIN) as client:
        yield client


async def wait_until(check: Any, what: str) -> Any:
    """Poll the coroutine function ``check`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + WITHIN
    while not (found := await check()):
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.2)
    return found


class Load:
    """One user posting to one channel, one message after another, until stopped."""

    def __init__(self, http: httpx.AsyncClient, url: str, token: str, cid: str) -> None:
        self.http, self.url, self.token, self.cid = http, url, token, cid
        self.acks: list[dict[str, Any]] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def post(self, text: str) -> None:
        r = await self.http.post(
            f"{self.url}/v1/channels/{self.cid}/messages",
            json={"text": text, "client_msg_id": text},
            headers=bearer(self.token),
        )
        assert r.status_code == 201, r.text
        self.acks.append({**r.json(), "text": text})

    def start(self) -> None:
        async def run() -> None:
            while not self._stop.is_set():
                await self.post(f"m-{len(self.acks):05d}")

        self._task = asyncio.create_task(run())

    async def until(self, count: int) -> None:
        async def enough() -> bool:
            assert self._task is not None and not self._task.done(), self._task
            return len(self.acks) >= count

        await wait_until(enough, f"{count} posts are acknowledged")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, WITHIN)


async def open_chat(http: httpx.AsyncClient, url: str) -> tuple[Tenant, Load]:
    with httpx.Client(timeout=WITHIN) as sync:
        tenant = await asyncio.to_thread(new_tenant, sync, url)
        token = await asyncio.to_thread(tenant.user, sync, "alice")
    r = await http.post(f"{url}/v1/channels", json={"channel_id": "general", "name": "General"}, headers=bearer(token))
    assert r.status_code == 201, r.text
    return tenant, Load(http, url, token, "general")


async def stalled_reason(http: httpx.AsyncClient, url: str) -> str | None:
    r = await http.get(f"{url}/readyz")
    if r.status_code == 200:
        assert r.json()["status"] == "ready", r.text
        return None
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "unavailable", r.text
    return str(error["message"]) if "projection stalled" in error["message"] else None


def stalled_gauges(http: httpx.AsyncClient, url: str, expected: set[float]) -> Any:
    """Whether /metrics exports ``caas_projection_stalled`` with just the ``expected`` values."""

    async def check() -> bool:
        r = await http.get(f"{url}/metrics", headers=bearer(ADMIN))
        if r.status_code == 503:  # the store did not answer in time: ask again
            return False
        assert r.status_code == 200, r.text
        lines = [line for line in r.text.splitlines() if line.startswith("caas_projection_stalled{")]
        return {float(line.rpartition(" ")[2]) for line in lines} == expected

    return check


async def ready(http: httpx.AsyncClient, url: str) -> bool:
    r = await http.get(f"{url}/readyz")
    return r.status_code == 200 and r.json()["status"] == "ready"


async def history(http: httpx.AsyncClient, tenant: Tenant, load: Load) -> list[str] | None:
    """Every message text of the channel, once the read model has the last acknowledged post
    (``None`` while it is still catching up: 503 after the node's query wait)."""
    texts: list[str] = []
    after = 0
    while True:
        r = await http.get(
            f"{load.url}/v1/channels/{load.cid}/messages",
            params={"after_seq": after, "limit": 200, "min_position": load.acks[-1]["position"]},
            headers=tenant.headers(),
        )
        if r.status_code == 503 and not texts:
            assert r.json()["error"]["code"] == "unavailable", r.text
            return None
        assert r.status_code == 200, r.text
        texts += [m["text"] for m in r.json()["messages"]]
        if (after := r.json()["next_after_seq"]) is None:
            return texts


def logged(path: Path, event: str) -> Any:
    async def check() -> bool:
        return path.exists() and f'"event": "{event}"' in path.read_text()

    return check


async def stall_and_recover(http: httpx.AsyncClient, url: str, hang: Any, answer: Any, processor_log: Path) -> None:
    """Post, make the store stop answering mid-load, see the stall reported (``/readyz`` and
    the projector's log), let the store answer again and see the projector catch up by itself."""
    tenant, load = await open_chat(http, url)
    load.start()
    try:
        await load.until(30)
        await hang()
        frozen_at = len(load.acks)
        await load.until(frozen_at + 30)
        reason = await wait_until(lambda: stalled_reason(http, url), "/readyz reports the stall")
        assert "lag" in reason and "no progress for" in reason, reason
        await wait_until(stalled_gauges(http, url, {1.0}), "/metrics exports the stall")
        await wait_until(logged(processor_log, "projection_stalled"), "the projector logs the stall")
    finally:
        await answer()
        await load.stop()
    await wait_until(lambda: ready(http, url), "/readyz is ready again")
    await wait_until(stalled_gauges(http, url, {0.0}), "/metrics exports no stall")
    texts = await wait_until(lambda: history(http, tenant, load), "the read model has every acknowledged post")
    assert Counter(texts) == Counter(ack["text"] for ack in load.acks)
    await wait_until(logged(processor_log, "projection_resumed"), "the projector logs that it moves again")


@pytest.mark.kafka
async def test_a_hung_mongodb_reports_the_stall_and_the_projector_recovers_on_its_own(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    proxy = await FreezableProxy.to_store()
    cluster = Cluster(tmp_path / "cluster", env=dict(STALL_ENV))
    try:
        cluster.env["CAAS_MONGO_URL"] = proxy.url  # only the worker goes through the proxy
        cluster.start_worker()
        del cluster.env["CAAS_MONGO_URL"]
        node = await asyncio.to_thread(cluster.start_node)  # in threads: the proxy runs on this loop
        await asyncio.to_thread(cluster.wait_ready, node.url)

        async def freeze() -> None:
            proxy.freeze(drop=True)  # the commands in flight are never answered

        async def thaw() -> None:
            proxy.thaw()

        await stall_and_recover(http, node.url, freeze, thaw, cluster.root / "worker-0.log")
        assert cluster.workers[0].poll() is None, "the worker recovered without a restart"
    finally:
        proxy.thaw()
        await asyncio.to_thread(cluster.stop)
        await proxy.close()


@contextlib.asynccontextmanager
async def proxied_store(timeout: float) -> AsyncIterator[tuple[FreezableProxy, MongoReadStore]]:
    """A Mongo read store on a database of its own, reaching the server through a proxy."""
    proxy = await FreezableProxy.to_store()
    database = f"hung_{uuid.uuid4().hex[:12]}"
    store = MongoReadStore(proxy.url, database, timeout=timeout)
    try:
        await store.start()
        yield proxy, store
    finally:
        proxy.thaw()
        await store.close()
        await proxy.close()
        with MongoClient(services_env()["CAAS_MONGO_URL"], serverSelectionTimeoutMS=10_000) as client:
            client.drop_database(database)


@pytest.mark.kafka
async def test_every_call_to_a_hung_mongodb_gives_up_as_unavailable_and_the_store_recovers() -> None:
    def op(position: int) -> Op:
        return Op("things", "t1", "a", position, set={"n": position})

    def applied(position: int) -> Any:
        async def check() -> bool:
            with contextlib.suppress(ReadStoreUnavailable):  # the shared server may be slow to answer
                await store.apply("p", [op(position)], position)
                return await store.checkpoint("p") == position
            return False

        return check

    async with proxied_store(STORE_TIMEOUT) as (proxy, store):
        await wait_until(applied(1), "the store answers")
        proxy.freeze()
        for call in (
            store.apply("p", [op(2)], 2),
            store.checkpoint("p"),
            store.get("things", "t1", "a"),
            store.find("things", "t1", {}),
            store.count("things", "t1", {}),
        ):
            with pytest.raises(ReadStoreUnavailable):
                await asyncio.wait_for(call, WITHIN)  # a call that hangs fails here with TimeoutError
        proxy.thaw()
        await wait_until(applied(2), "the store answers again")
        assert (await store.get("things", "t1", "a") or {}).get("n") == 2


@pytest.mark.kafka
async def test_a_batch_attempt_the_store_never_answers_is_cut_short_and_applied_after_all() -> None:
    """The projector's own bound on a batch, should a store call ever not time out by itself."""
    things = Projection(
        "things", ("things",), lambda e: [Op("things", e.tenant_id, e.stream, e.position, set=e.payload)]
    )
    events = [
        Event(
            event_id=f"e{offset}",
            tenant_id="t1",
            stream=f"thing-{offset}",
            seq=1,
            position=encode_position(0, offset),
            type="Thing",
            schema_version=1,
            occurred_at="2026-01-01T00:00:00.000000Z",
            payload={"n": offset},
        )
        for offset in range(4)
    ]
    async with proxied_store(3600) as (proxy, store):  # as if the driver never gave up
        proxy.freeze(drop=True)
        applying = asyncio.create_task(project(store, things, "things@p0", events, timeout=STORE_TIMEOUT))

        async def lost() -> bool:
            return proxy.dropped > 0

        await wait_until(lost, "the store loses a command")
        proxy.thaw()
        await asyncio.wait_for(applying, WITHIN)
        assert await store.checkpoint("things@p0") == 4
        assert [d["n"] for d in await store.find("things", "t1", {}, sort=[("n", 1)])] == [0, 1, 2, 3]


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "data", env=dict(STALL_ENV)).start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_locked_read_database_reports_the_stall_and_the_projector_recovers_on_its_own(
    embedded: Server, http: httpx.AsyncClient
) -> None:
    holder: list[sqlite3.Connection] = []

    async def lock() -> None:  # another process's writer holds the read database
        conn = sqlite3.connect(embedded.data_dir / "read.db", isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN EXCLUSIVE")
        holder.append(conn)

    async def unlock() -> None:
        for conn in holder:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            conn.close()
        holder.clear()

    server_log = embedded.data_dir.parent / f"server-{embedded.port}.log"
    await stall_and_recover(http, embedded.url, lock, unlock, server_log)
