"""The composition root: the only place that picks concrete adapters from settings.

A :class:`Backend` is everything that differs between the embedded backend (SQLite log and
read models, projections run in-process) and the Kafka backend (an API node of a cluster:
commands to the deciders, read models in MongoDB kept by ``caas worker``). The server's
:class:`Engine` and the command line (``caas replay``, ``caas rebuild``, ``caas worker``) use
one, built by :func:`build_backend`, and never ask which one it is.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from adapters import tracing
from adapters.ids import short_id, utcnow, uuid7
from adapters.memory_bus import MemoryBus
from api.limits import Limits
from api.observability import MeteredCommands, count_events, exposition, record_status
from api.policies import PolicyWatch
from api.settings import Settings
from api.socket_watch import SocketWatch
from api.tenant_metrics import TENANTS
from commands.auth import Authenticator
from commands.billing import Billing, UsageReporter, WebhookVerifier
from commands.billing_sync import BillingSync, SyncReport
from commands.keys import Keyring, KeyStore, MasterKey, MasterKeyError, channel_day_key_id, user_key_id
from commands.policies import PolicyCommands, PolicyGate
from commands.ports import EphemeralBus, EventHistory, EventLog, EventRow, Listener, event_row
from commands.quotas import Adds, Quotas
from commands.retention import DayKeys, RetentionPolicies, RetentionSweeper
from commands.sealing import SealedLog, Sealer
from commands.service import CommandEnvelope, Commands, CommandService, Outcome
from domain.events import Event
from domain.plans import Catalog, PlansError, builtin_catalog, parse_plans
from domain.presence import Timing
from projections import analytics, audit, billing, chat, eventindex, usage, webhooks
from projections.ports import ReadStore
from projections.queries import ChatQueries
from projections.timetravel import TimeTravel
from streams.fanout import Hub
from streams.metering import Meter
from streams.notices import UserNotices
from streams.presence import PresenceService
from streams.projector import Projection, ProjectionRunner, checkpoint_name, load_log, rebuild
from streams.tail import TenantTails
from streams.webhooks import Dispatcher, Policy

if TYPE_CHECKING:
    from adapters.kafka.node import KafkaNode, Progress

CHAT = Projection(chat.NAME, chat.COLLECTIONS, chat.project, by_stream=True)
EVENT_INDEX = Projection(eventindex.NAME, eventindex.COLLECTIONS, eventindex.project, sealed=True)


def _partition(position: int) -> int:
    """The event topic's partition an event came from (its position's low bits)."""
    from adapters.kafka.codec import decode_position

    return decode_position(position)[0]


# Usage documents are kept per source of one order (docs/meters.md): the whole log embedded,
# a partition of the event topic on Kafka.
USAGE = Projection(usage.NAME, usage.COLLECTIONS, usage.projector(usage.single_order))
DISTRIBUTED_USAGE = Projection(usage.NAME, usage.COLLECTIONS, usage.projector(_partition))
BILLING = Projection(billing.NAME, billing.COLLECTIONS, billing.project)
WEBHOOKS = Projection(webhooks.NAME, webhooks.COLLECTIONS, webhooks.project)
# Analytics documents need no shards: each is written by one stream, or only ever gets the same
# insert (projections/analytics/projection.py), so one projection serves both backends.
ANALYTICS = Projection(analytics.NAME, analytics.COLLECTIONS, analytics.project)
AUDIT = Projection(audit.NAME, audit.COLLECTIONS, audit.project)  # one document per audited event
PROJECTIONS = {
    CHAT.name: CHAT,
    USAGE.name: USAGE,
    BILLING.name: BILLING,
    WEBHOOKS.name: WEBHOOKS,
    ANALYTICS.name: ANALYTICS,
    AUDIT.name: AUDIT,
}
DISTRIBUTED_PROJECTIONS = {
    CHAT.name: CHAT,
    EVENT_INDEX.name: EVENT_INDEX,
    USAGE.name: DISTRIBUTED_USAGE,
    BILLING.name: BILLING,
    WEBHOOKS.name: WEBHOOKS,
    ANALYTICS.name: ANALYTICS,
    AUDIT.name: AUDIT,
}

# ``caas rebuild`` reports ``(projection, events done, events in all)`` as it goes, if it can.
RebuildProgress = Callable[[str, int, int], None]


class Unlimited:
    """The quota check when ``CAAS_QUOTAS=off``: every write is admitted and nothing is read
    (a deployment that does not bill, and the benchmarks that measure the check's cost)."""

    async def admit(
        self, tenant_id: str, meters: Sequence[str], *, user: str | None = None, stored: Adds | None = None
    ) -> None:
        return None

    async def admit_socket(self, tenant_id: str, user: str, open_sockets: Callable[[], int]) -> None:
        return None

    def release(self, tenant_id: str, meters: Sequence[str]) -> None:
        return None

    def forget(self, tenant_id: str) -> None:
        return None

    async def close(self) -> None:
        return None


# Rows per read of ``caas export`` on the embedded backend: fewer, bigger reads cost less per row
REPLAY_ROWS = 10_000


class BackendUnsupported(Exception):
    """Asked of a backend that does not have it (``caas worker`` on the embedded backend)."""


class Backend(abc.ABC):
    """The log, read models, bus and command side of one backend, and its procedures.

    Built without connecting to anything: ``start`` connects (the server), while ``replay``,
    ``rebuild`` and ``worker`` open what they need themselves (the command line).
    """

    name: str
    node_id: str
    log: EventHistory  # what the API reads of the log
    store: ReadStore
    bus: EphemeralBus
    commands: Commands  # the write side as the API calls it
    keys: KeyStore  # the data keys that seal personal data (docs/erasure.md)
    keyring: Keyring
    projections: Mapping[str, Projection]  # what ``caas rebuild`` can rebuild
    events_projected: bool  # ``GET /v1/events`` is served by a read model, so it honours ``min_position``
    clustered: bool  # one node of many: secrets must be given, the same on every node, never generated
    syncs_in_serve: bool  # ``caas serve`` runs the periodic billing sync (else ``caas worker`` does)
    delivers_in_serve: bool  # ``caas serve`` runs the webhook delivery processor (else ``caas worker`` does)

    @abc.abstractmethod
    def __init__(self, settings: Settings) -> None:
        """Build the adapters from ``settings``; connect to nothing yet."""

    async def start(self, listeners: Sequence[Listener]) -> None:
        """Connect, and start following the log; ``listeners`` get every committed event."""
        await self.keys.start()
        await self.log.start()
        await self.store.start()
        for listener in listeners:
            self.log.listen(listener)
        await self.follow()
        await self.bus.start()

    async def close(self) -> None:
        await self.bus.close()
        await self.unfollow()
        await self.log.close()
        await self.store.close()
        await self.keys.close()

    @abc.abstractmethod
    async def follow(self) -> None:
        """Start what follows the log (the log, store and listeners are ready)."""

    @abc.abstractmethod
    async def unfollow(self) -> None: ...

    @abc.abstractmethod
    async def check(self) -> None:
        """Raise if a server this node depends on does not answer (``/readyz``)."""

    @abc.abstractmethod
    async def status(self) -> dict[str, Any]:
        """``head_position`` and the projections' lag (``/readyz``, ``/metrics``)."""

    async def health(self) -> dict[str, Any]:
        """What ``/metrics`` adds to :meth:`status`: ``consumers`` (lag per partition) and
        ``processors`` (up, progress age) of this process, those it has
        (:func:`api.observability.record_status`)."""
        return {}

    @abc.abstractmethod
    async def wait_for(self, position: int, timeout: float) -> bool:
        """Wait until the read models have applied ``position``; ``False`` on timeout."""

    @abc.abstractmethod
    async def indexed_position(self) -> int:
        """The position up to which ``log.read_tenant`` sees every event, durably (the webhook
        processor never reads past it)."""

    @abc.abstractmethod
    async def durable_presence(self) -> dict[tuple[str, str], str]:
        """Each user's last recorded presence status, to reconcile at start."""

    @abc.abstractmethod
    async def tenants(self) -> list[tuple[str, str]]:
        """Every registered tenant's ``(tenant_id, name)`` (the backend is started)."""

    @abc.abstractmethod
    def replay(
        self, *, after_position: int, tenant_id: str | None, types: Sequence[str], since: str | None
    ) -> AsyncIterator[list[Event]]:
        """The log in batches, for ``caas replay`` (``since``: an RFC 3339 time the backend
        may seek to; the caller still filters by it)."""

    async def replay_rows(
        self, *, after_position: int, tenant_id: str | None, types: Sequence[str], since: str | None
    ) -> AsyncIterator[list[EventRow]]:
        """:meth:`replay` as rows (``commands.ports.ROW_FIELDS``), for ``caas export``. A
        backend whose log stores such rows yields them as stored, without building events."""
        batches = self.replay(after_position=after_position, tenant_id=tenant_id, types=types, since=since)
        async for events in batches:
            yield [event_row(e) for e in events]

    @abc.abstractmethod
    def rebuild(
        self, names: Sequence[str], *, window: int, progress: RebuildProgress
    ) -> AsyncIterator[tuple[str, int, float]]:
        """Drop and rebuild the named read models from the log, for ``caas rebuild``; yields
        ``(projection, events, seconds)`` as each is done."""

    def on_indexed(self, listener: Listener) -> None:
        """``listener`` gets each batch once this process's read models applied it."""
        raise BackendUnsupported(f"the {self.name} backend applies its read models in caas worker")

    async def worker(self) -> None:
        """Run ``caas worker`` (deciders and projectors) until cancelled."""
        raise BackendUnsupported(
            f"caas worker runs the processors of the distributed backend; the {self.name} backend "
            "runs its projections inside caas serve (use --backend kafka)"
        )


class EmbeddedBackend(Backend):
    """One process: the SQLite log, read models in SQLite, projections run in-process."""

    name = "embedded"
    events_projected = False  # events are read from the log itself
    clustered = False
    syncs_in_serve = True
    delivers_in_serve = True
    projections = PROJECTIONS

    def __init__(self, settings: Settings) -> None:
        from adapters.sqlite_keys import SqliteKeyStore
        from adapters.sqlite_log import SqliteEventLog
        from adapters.sqlite_store import SqliteReadStore

        self.node_id = f"node-{uuid7()}"
        self.data_dir = settings.data_dir
        self.keys = SqliteKeyStore(settings.data_dir / "keys.db")
        self.keyring = Keyring(self.keys, functools.partial(master_keys, settings))
        self.sealer = Sealer(self.keyring)
        self.sqlite_log = SqliteEventLog(settings.data_dir / "events.db")
        self.log: EventLog = SealedLog(self.sqlite_log, self.sealer)
        self.store = self.sqlite_store = SqliteReadStore(settings.data_dir / "read.db")
        self.bus = MemoryBus()
        self.commands = CommandService(self.log, clock=utcnow, new_id=uuid7)
        self.runner = ProjectionRunner(
            self.log,
            self.store,
            list(self.projections.values()),
            stall_seconds=settings.projection_stall_seconds,
            spans=tracing.projector_spans,
        )

    async def follow(self) -> None:
        await self.runner.start()

    async def unfollow(self) -> None:
        await self.runner.close()

    async def check(self) -> None:
        await self.store.checkpoint(CHAT.name)

    async def status(self) -> dict[str, Any]:
        head = await self.log.head_position()
        return {"head_position": head, **await self.runner.status(head)}

    async def health(self) -> dict[str, Any]:
        return {"processors": [self.runner.health()]}

    async def wait_for(self, position: int, timeout: float) -> bool:
        return await self.runner.wait_for(position, timeout)

    async def indexed_position(self) -> int:
        return self.runner.applied  # what every read model applied: committed, contiguous

    def on_indexed(self, listener: Listener) -> None:
        """``listener`` gets each batch once the read models applied it (the webhook processor)."""
        self.runner.applied_listeners.append(listener)

    async def tenants(self) -> list[tuple[str, str]]:
        found, after = [], 0
        while events := await self.log.read_all(after_position=after, limit=5000, types=["TenantRegistered"]):
            found += [(event.tenant_id, str(event.payload["name"])) for event in events]
            after = events[-1].position
        return found

    async def durable_presence(self) -> dict[tuple[str, str], str]:
        found: dict[tuple[str, str], str] = {}
        after = 0
        while events := await self.log.read_all(after_position=after, limit=5000, types=["PresenceChanged"]):
            for event in events:
                found[(event.tenant_id, event.stream_id)] = event.payload["status"]
            after = events[-1].position
        return found

    async def replay(
        self, *, after_position: int, tenant_id: str | None, types: Sequence[str], since: str | None
    ) -> AsyncIterator[list[Event]]:
        await self.keys.start()
        await self.log.start()
        after = after_position
        try:
            while events := await self.log.read_all(after_position=after, limit=5000, tenant_id=tenant_id, types=types):
                after = events[-1].position
                yield events
        finally:
            await self.log.close()
            await self.keys.close()

    async def replay_rows(
        self, *, after_position: int, tenant_id: str | None, types: Sequence[str], since: str | None
    ) -> AsyncIterator[list[EventRow]]:
        await self.keys.start()
        await self.log.start()
        after = after_position
        try:
            while rows := self.sqlite_log.read_rows(after, REPLAY_ROWS, tenant_id, types):
                after = rows[-1][0]  # the position
                yield await self.sealer.open_rows(rows)
        finally:
            await self.log.close()
            await self.keys.close()

    async def rebuild(
        self, names: Sequence[str], *, window: int, progress: RebuildProgress
    ) -> AsyncIterator[tuple[str, int, float]]:
        await self.keys.start()
        await self.log.start()
        await self.store.start()
        try:
            for name in names:
                head = await self.log.head_position()
                progress(name, 0, head)
                projection = self.projections[name]
                if projection.by_stream and REBUILD_WORKERS > 1:
                    count, seconds = await self._rebuild_by_parts(projection, head, window)
                    progress(name, head, head)
                else:
                    count, seconds = await rebuild(
                        self.log, self.store, projection, window=window, progress=functools.partial(progress, name)
                    )
                yield name, count, seconds
        finally:
            await self.log.close()
            await self.store.close()
            await self.keys.close()

    async def _rebuild_by_parts(self, projection: Projection, head: int, window: int) -> tuple[int, float]:
        """Rebuild a model whose documents are each written by one stream (``by_stream``) as
        :data:`REBUILD_WORKERS` parts of the log's streams: this process folds the first part,
        worker processes the others, all into the dropped tables (SQLite lets them take turns
        writing); then it is indexed and its checkpoint set. Until then it has none: a crash
        midway leaves the projection to replay the whole log over what was loaded, which the
        position guards make exact."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from adapters.sqlite_log import PartReader
        from adapters.sqlite_store import BUSY_SECONDS, REBUILD_BUSY_SECONDS

        await self.store.drop(projection.name, projection.collections)
        started, loop = time.perf_counter(), asyncio.get_running_loop()
        parts = REBUILD_WORKERS
        reader = PartReader(self.data_dir / "events.db", 0, parts, head)
        self.sqlite_store.patient(REBUILD_BUSY_SECONDS)
        master = self.keyring.master
        masters = [m.to_base64() for m in (master, *[m for m in self.keyring.masters.values() if m != master])]
        try:
            with ProcessPoolExecutor(parts - 1, mp_context=multiprocessing.get_context("spawn")) as pool:
                others = [
                    loop.run_in_executor(
                        pool, rebuild_part, self.data_dir, projection.name, part, parts, head, window, masters
                    )
                    for part in range(1, parts)
                ]
                mine = load_log(
                    functools.partial(_read_opened, self.sealer, reader, window),
                    self.store,
                    projection,
                    part_checkpoint(projection.name, 0),
                )
                counts = await asyncio.gather(mine, *others)
        finally:
            reader.close()
            self.sqlite_store.patient(BUSY_SECONDS)
        await self.store.apply(checkpoint_name(projection.name), [], head)
        for part in range(parts):
            await self.store.drop(part_checkpoint(projection.name, part), ())
        await self.store.settle()
        return sum(counts), time.perf_counter() - started


# ``caas rebuild`` of a model written stream by stream (chat) folds disjoint sets of streams in
# this many processes on the embedded backend.
REBUILD_WORKERS = 2


def part_checkpoint(projection: str, part: int) -> str:
    """Where a rebuild worker keeps its part's progress (the projection's own checkpoint is
    set once every part is loaded)."""
    return f"{projection}#part{part}"


async def _read_opened(sealer: Sealer, reader: Any, window: int, after: int) -> list[Event]:
    """A window of a rebuild's :class:`~adapters.sqlite_log.PartReader`, personal fields opened."""
    return await sealer.open(await asyncio.to_thread(reader.read, after, window), in_place=True)


def rebuild_part(
    data_dir: Path, name: str, part: int, parts: int, head: int, window: int, masters: Sequence[str]
) -> int:
    """A rebuild worker (a process of :meth:`EmbeddedBackend._rebuild_by_parts`): fold the events
    of streams in ``part`` of ``parts`` up to ``head`` into the dropped tables of ``name``
    (``masters``: the master keys, current first, that open the data keys)."""
    from adapters.sqlite_keys import SqliteKeyStore
    from adapters.sqlite_log import PartReader
    from adapters.sqlite_store import REBUILD_BUSY_SECONDS, SqliteReadStore

    projection = PROJECTIONS[name]
    reader = PartReader(data_dir / "events.db", part, parts, head)
    store = SqliteReadStore(data_dir / "read.db", busy_seconds=REBUILD_BUSY_SECONDS)
    store.postpone_indexes(projection.collections)
    keys = SqliteKeyStore(data_dir / "keys.db")
    given = [MasterKey.from_base64(m) for m in masters]
    sealer = Sealer(Keyring(keys, given[0], given[1:]))

    async def run() -> int:
        await store.start()
        await keys.start()
        try:
            return await load_log(
                functools.partial(_read_opened, sealer, reader, window),
                store,
                projection,
                part_checkpoint(name, part),
            )
        finally:
            await store.close()
            await keys.close()
            reader.close()

    return asyncio.run(run())


class KafkaBackend(Backend):
    """An API node of a cluster: commands go to the deciders over Kafka, events come back into
    a read-only replica and the hub, read models are in MongoDB (kept by ``caas worker``)."""

    name = "kafka"
    events_projected = True  # from the event index, a read model
    clustered = True
    syncs_in_serve = False  # one ``caas worker`` runs it
    delivers_in_serve = False  # ``caas worker`` runs it, woken by the read-model agent
    projections = DISTRIBUTED_PROJECTIONS

    def __init__(self, settings: Settings) -> None:
        from adapters.kafka.bus import KafkaBus
        from adapters.kafka.node import IndexedLog, KafkaNode, Progress
        from adapters.mongo_keys import MongoKeyStore
        from adapters.mongo_store import MongoReadStore

        self.settings = settings
        self.store = MongoReadStore(settings.mongo_url, settings.mongo_database, timeout=settings.mongo_timeout_seconds)
        self.keys = MongoKeyStore(settings.mongo_url, settings.mongo_database, timeout=settings.mongo_timeout_seconds)
        self.keyring = Keyring(self.keys, functools.partial(master_keys, settings, generate=False))
        self.sealer = Sealer(self.keyring)
        self.log = self.indexed = IndexedLog(self.store, self.sealer)
        self.node: KafkaNode = KafkaNode(
            settings.kafka_bootstrap,
            settings.kafka_topic_prefix,
            settings.kafka_partitions,
            self.indexed,
            timeout=settings.command_timeout_seconds,
        )
        self.node_id = self.node.node_id
        self.commands = self.node
        self.progress: Progress = Progress(
            self.store, list(self.projections), self.node, stall_seconds=settings.projection_stall_seconds
        )
        self.bus = KafkaBus(settings.kafka_bootstrap, self.topic("ephemeral"), settings.kafka_partitions)

    def topic(self, kind: str) -> str:
        return f"{self.settings.kafka_topic_prefix}{kind}"

    async def follow(self) -> None:
        await self.node.start()

    async def unfollow(self) -> None:
        await self.node.close()

    async def check(self) -> None:
        await self.node.check()
        await self.store.checkpoint(CHAT.name)

    async def status(self) -> dict[str, Any]:
        return {"head_position": await self.log.head_position(), **await self.progress.status()}

    async def health(self) -> dict[str, Any]:
        return {"consumers": self.node.consumer_lag()}

    async def wait_for(self, position: int, timeout: float) -> bool:
        return await self.progress.wait_for(position, timeout)

    async def indexed_position(self) -> int:
        """The event index's checkpoint (durable: written after the batch it covers) of the one
        partition webhooks support (docs/webhooks.md)."""
        from adapters.kafka.codec import checkpoint_name, encode_position

        mark = await self.store.checkpoint(checkpoint_name(EVENT_INDEX.name, 0))
        return encode_position(0, mark - 1) if mark > 0 else 0

    async def durable_presence(self) -> dict[tuple[str, str], str]:
        return self.node.presence_statuses()

    async def tenants(self) -> list[tuple[str, str]]:
        return self.node.tenants()

    def replay(
        self, *, after_position: int, tenant_id: str | None, types: Sequence[str], since: str | None
    ) -> AsyncIterator[list[Event]]:
        from adapters.kafka import tools

        s = self.settings
        return self._keys_open(
            tools.replay(
                s.kafka_bootstrap,
                self.topic("events"),
                s.kafka_partitions,
                after_position=after_position,
                tenant_id=tenant_id,
                types=types,
                since=since,
                sealer=self.sealer,
            )
        )

    async def _keys_open(self, items: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """``items`` with the key store started for them (a command-line procedure)."""
        await self.keys.start()
        try:
            async for item in items:
                yield item
        finally:
            await self.keys.close()

    def rebuild(
        self, names: Sequence[str], *, window: int, progress: RebuildProgress
    ) -> AsyncIterator[tuple[str, int, float]]:
        from adapters.kafka import tools

        s = self.settings
        wanted = {name: self.projections[name] for name in names}
        return self._keys_open(
            tools.rebuild(
                s.kafka_bootstrap,
                self.topic("events"),
                s.kafka_partitions,
                s.mongo_url,
                s.mongo_database,
                wanted,
                window_size=window,
                sealer=self.sealer,
            )
        )

    async def worker(self) -> None:
        s = self.settings
        reporter = build_reporter(s)
        sync = s.billing_sync_seconds > 0 and reporter is not None
        deliver = s.webhooks == "on"
        if deliver and s.kafka_partitions != 1:
            structlog.get_logger("caas.webhooks").error(
                "webhooks_not_started", reason="webhook delivery supports CAAS_KAFKA_PARTITIONS=1 only"
            )
            deliver = False
        if not (sync or deliver):
            await self._run_worker([])
            return
        # beside the processors, with this node's own view of the log and command path, connected
        # by the billing sync as it starts, or when the webhook processor first needs it (only to
        # disable an endpoint: a worker without failing endpoints never connects it)
        node = _NodeOnUse(self)
        side: list[asyncio.Future[None]] = []
        dispatcher = None
        try:
            if sync and reporter is not None:
                side.append(asyncio.ensure_future(self._sync_billing(node, reporter)))
            if deliver:
                await self.store.start()
                dispatcher = build_dispatcher(s, self.log, self.store, node, self.indexed_position)
                await dispatcher.start()
            await self._run_worker([dispatcher.on_indexed] if dispatcher is not None else [])
        finally:
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            if dispatcher is not None:
                await dispatcher.close()
            if node.started:
                await self.close()

    async def _sync_billing(self, node: _NodeOnUse, reporter: UsageReporter) -> None:
        await node.ready()
        await billing_loop(
            self, build_billing(self.settings, self.commands, self.store, utcnow), reporter, self.settings
        )

    async def _run_worker(self, listeners: Sequence[Listener]) -> None:
        from adapters.kafka.worker import run_worker

        s = self.settings
        await run_worker(
            s.kafka_bootstrap,
            s.kafka_topic_prefix,
            s.kafka_partitions,
            self.store,
            list(self.projections.values()),
            data_dir=s.data_dir,
            store_timeout=s.mongo_timeout_seconds,
            stall_seconds=s.projection_stall_seconds,
            listeners=listeners,
            commit_interval=s.decider_commit_seconds,
            beside=None if s.worker_metrics_port is None else functools.partial(self._worker_metrics, s),
            sealer=self.sealer,
        )

    @staticmethod
    async def _worker_metrics(settings: Settings, status: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        """``caas worker``'s ``/metrics`` on ``CAAS_WORKER_METRICS_PORT`` until cancelled."""
        from api.metrics_port import serve_metrics

        async def scrape() -> bytes:
            record_status(await status())
            return exposition()

        tokens = [admin_token(settings), settings.metrics_token]
        assert settings.worker_metrics_port is not None
        await serve_metrics(settings.metrics_host, settings.worker_metrics_port, tokens, scrape)


class _NodeOnUse(Commands):
    """A Kafka backend's command path, connected (``start``) on first use."""

    def __init__(self, backend: KafkaBackend) -> None:
        self.backend = backend
        self.started = False
        self._lock = asyncio.Lock()

    async def ready(self) -> None:
        async with self._lock:
            if not self.started:
                await self.backend.start([])
                self.started = True

    async def state(self, tenant_id: str, stream: str) -> Any:
        await self.ready()
        return await self.backend.commands.state(tenant_id, stream)

    async def execute(self, envelope: CommandEnvelope) -> Outcome:
        await self.ready()
        return await self.backend.commands.execute(envelope)


BACKENDS: dict[str, type[Backend]] = {"embedded": EmbeddedBackend, "kafka": KafkaBackend}


def missing_secrets(settings: Settings) -> list[str]:
    """The secrets a node of a clustered backend was not given (it must not generate them:
    they would differ per node); none for a backend that runs alone."""
    return settings.unshared_secrets() if BACKENDS[settings.backend].clustered else []


def build_backend(settings: Settings) -> Backend:
    return BACKENDS[settings.backend](settings)


def persistent_secret(data_dir: Path, name: str, given: str | None) -> str:
    """``given`` if set, else a secret generated once and kept in the data dir."""
    if given:
        return given
    path = data_dir / name
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


@dataclass
class Engine:
    """Everything a running CAAS node needs, wired together."""

    settings: Settings
    backend: Backend
    service: Commands
    auth: Authenticator
    queries: ChatQueries
    hub: Hub = field(default_factory=Hub)
    tails: TenantTails = field(default_factory=TenantTails)  # the tenant portal's live event tails
    notices: UserNotices = field(default_factory=UserNotices)  # device notices to users' sockets (docs/e2e.md)
    clock: Callable[[], datetime] = utcnow  # the API's sources of time and ids (adapters.ids)
    new_id: Callable[[], str] = uuid7
    short_id: Callable[[str], str] = short_id
    presence: PresenceService = field(init=False)
    node_id: str = field(init=False)
    limits: Limits = field(init=False)
    sockets: dict[tuple[str, str], int] = field(default_factory=dict)
    socket_watch: SocketWatch = field(init=False)
    meter: Meter = field(init=False)
    billing: Billing = field(init=False)
    webhooks: WebhookVerifier | None = field(init=False)  # None: webhooks are not configured
    quotas: Quotas | Unlimited = field(init=False)
    timetravel: TimeTravel = field(init=False)  # ``as_of`` on the channel routes
    deliveries: Dispatcher | None = field(init=False, default=None)  # the webhook processor, if it runs here
    policies: PolicyGate | None = None  # ABAC (docs/abac.md): the gate the command side is composed with
    policy_watch: PolicyWatch = field(init=False)  # ends the subscriptions a changed policy refuses
    _billing_sync: asyncio.Task[None] | None = field(init=False, default=None)
    retention: RetentionPolicies | None = None  # each channel's retention (docs/retention.md)
    day_keys: DayKeys | None = None  # the channel-day keys the retention sweeper destroys (the key store)
    _retention_sweep: asyncio.Task[None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        s = self.settings
        self.node_id = self.backend.node_id
        if self.policies is None:
            self.policies = PolicyGate(self.service, self.clock)
        self.meter = Meter(
            self.service,
            self.node_id,
            interval=s.usage_flush_seconds,
            sample_every=s.usage_sample_seconds,
            enabled=s.metering == "on",
        )
        self.billing = build_billing(s, self.service, self.backend.store, self.clock)
        self.webhooks = build_webhooks(s)
        self.quotas = (
            Quotas(
                self.billing,
                ttl=s.quota_cache_seconds,
                clock=self.clock,
                monotonic=time.monotonic,
                past_due_read_only=s.billing_past_due == "read_only",
                settle=self._settle,
            )
            if s.quotas == "on"
            else Unlimited()
        )
        self.presence = PresenceService(
            self.bus,
            self.hub,
            self.service,
            self.node_id,
            timing=Timing(s.presence_away_seconds, s.presence_grace_seconds, s.presence_node_timeout_seconds),
            heartbeat=s.presence_heartbeat_seconds,
            typing_ttl=s.typing_ttl_seconds,
            typing_throttle=s.typing_throttle_seconds,
            typing_max_watchers=s.typing_max_watchers,
        )
        self.socket_watch = SocketWatch(self.auth, s.ws_stall_seconds, self.clock)
        self.notices.contacts = self.queries.contacts
        self.policy_watch = PolicyWatch(self.socket_watch, self.policies, every=s.policy_recheck_seconds)
        self.timetravel = TimeTravel(self.log.read_stream, budget=int(s.asof_cache_mb * 2**20))
        self.limits = Limits(
            user_writes=(s.rate_user_writes_per_second, s.rate_user_writes_burst),
            tenant_writes=(s.rate_tenant_writes_per_second, s.rate_tenant_writes_burst),
            tenant_reads=(s.rate_tenant_reads_per_second, s.rate_tenant_reads_burst),
            ws_frames=(s.ws_frames_per_second, s.ws_frames_burst),
            nodes=(lambda: len(self.presence.state.nodes)) if s.rate_limit_scope == "cluster" else (lambda: 1),
        )

    async def scrape(self) -> bytes:
        """``/metrics``: the backend's status and health as gauges, and every metric of the process."""
        record_status({**await self.backend.status(), **await self.backend.health()})
        return exposition()

    async def _settle(self) -> bool:
        """Wait, bounded like a query, until the read models hold every event this node knows."""
        return await self.backend.wait_for(await self.log.head_position(), self.settings.query_wait_seconds)

    @property
    def log(self) -> EventHistory:
        return self.backend.log

    @property
    def store(self) -> ReadStore:
        return self.backend.store

    @property
    def bus(self) -> EphemeralBus:
        return self.backend.bus

    async def start(self) -> None:
        await self.backend.start(
            [
                tracing.delivering(self.hub.publish),
                count_events,
                self.socket_watch.on_events,
                self.tails.publish,
                self.notices.publish,
                self.policy_watch.on_events,
                self._on_shredded,
            ]
        )
        await self.presence.start(await self.backend.durable_presence())
        self.policy_watch.start()
        await self.meter.start()
        reporter = build_reporter(self.settings)
        if self.settings.billing_sync_seconds > 0 and self.backend.syncs_in_serve and reporter is not None:
            self._billing_sync = asyncio.ensure_future(
                billing_loop(self.backend, self.billing, reporter, self.settings)
            )
        if self.settings.webhooks == "on" and self.backend.delivers_in_serve:
            self.deliveries = build_dispatcher(
                self.settings, self.log, self.store, self.service, self.backend.indexed_position
            )
            await self.deliveries.start()
            self.backend.on_indexed(self.deliveries.on_indexed)
        if self.retention is not None and self.day_keys is not None and self.settings.retention_sweep_seconds > 0:
            sweeper = RetentionSweeper(self.retention, self.day_keys, self._erase_day)
            self._retention_sweep = asyncio.ensure_future(retention_loop(self.backend, sweeper, self.settings))

    def _on_shredded(self, events: Sequence[Event]) -> None:
        """A user erased or a channel-day shredded (seen by every node): its key is held destroyed
        here at once, and the tenant's time-travel timelines, which hold what it opened, dropped."""
        for event in events:
            if event.type == "UserErased":
                key_id = user_key_id(event.stream_id)
            elif event.type == "ChannelDayShredded":
                key_id = channel_day_key_id(event.stream_id, str(event.payload.get("day", "")))
            else:
                continue
            self.backend.keyring.forget(event.tenant_id, key_id)
            self.timetravel.forget(event.tenant_id)

    async def _erase_day(self, tenant_id: str, channel_id: str, day: str, position: int) -> None:
        """The read models' copies of a shredded channel-day's texts, overwritten (docs/retention.md)."""
        await self.backend.wait_for(position, self.settings.query_wait_seconds)
        await self.store.erase("messages", tenant_id, "chday", chat.channel_day(channel_id, day), chat.EXPIRED)
        self.timetravel.forget(tenant_id)

    async def close(self) -> None:
        if self._retention_sweep is not None:
            self._retention_sweep.cancel()
            await asyncio.gather(self._retention_sweep, return_exceptions=True)
        if self.deliveries is not None:
            await self.deliveries.close()
        if self._billing_sync is not None:
            self._billing_sync.cancel()
            await asyncio.gather(self._billing_sync, return_exceptions=True)
        await self.quotas.close()
        await self.socket_watch.close()
        await self.policy_watch.close()
        await self.meter.close()  # records the last interval while the command path still runs
        await self.presence.close()
        await self.notices.close()
        await self.backend.close()


def build_engine(settings: Settings) -> Engine:
    TENANTS.configure(settings.metrics_tenant_top, settings.metrics_tenant_rerank_seconds)
    backend = build_backend(settings)
    auth = Authenticator(
        backend.commands,
        admin_token=admin_token(settings),
        secret_key=server_key(settings),
    )
    commands = tracing.TracedCommands(backend.commands) if tracing.ON else backend.commands
    # every command of a tenant key or an end user passes the tenant's ABAC policies, judged on
    # this node from its own view of the tenant (the replica on the Kafka backend): docs/abac.md
    gate = PolicyGate(commands, utcnow)
    service = MeteredCommands(PolicyCommands(commands, gate))
    retention = RetentionPolicies(service, retention_clock(settings, utcnow))
    queries = ChatQueries(backend.store, horizon=retention)
    day_keys = DayKeys(backend.keys, backend.keyring.destroy)  # destroyed through the keyring: it forgets at once
    return Engine(settings, backend, service, auth, queries, policies=gate, retention=retention, day_keys=day_keys)


def retention_clock(settings: Settings, clock: Callable[[], datetime]) -> Callable[[], datetime]:
    """Retention's now: ``clock``, or later by ``CAAS_RETENTION_CLOCK_OFFSET_SECONDS`` (a test seam,
    so a test server can see what it records as days old)."""
    offset = timedelta(seconds=settings.retention_clock_offset_seconds)
    return clock if not offset else lambda: clock() + offset


async def retention_loop(backend: Backend, sweeper: RetentionSweeper, settings: Settings) -> None:
    """Sweep every ``CAAS_RETENTION_SWEEP_SECONDS`` until cancelled; a failed pass is logged and
    retried next time."""
    log = structlog.get_logger("caas.retention")
    while True:
        try:
            tenants = [tenant_id for tenant_id, _ in await backend.tenants()]
            done = await sweeper.sweep(tenants)
            if done:
                log.info("retention_swept", shredded=len(done))
        except Exception as exc:
            log.warning("retention_sweep_failed", error=repr(exc))
        await asyncio.sleep(settings.retention_sweep_seconds)


def build_dispatcher(
    settings: Settings, history: EventHistory, store: ReadStore, commands: Commands, horizon: Callable[[], Any]
) -> Dispatcher:
    """The webhook delivery processor over a backend's history, store and command path."""
    from adapters.webhook_http import HttpSender, parse_ports

    s = settings
    allowed = None if s.webhook_allowed_targets is None else s.webhook_allowed_targets.split(",")
    sender = HttpSender(
        allow_private=s.webhook_allow_private,
        timeout=s.webhook_timeout_seconds,
        allowed_targets=allowed,
        allowed_ports=parse_ports(s.webhook_allowed_ports),
    )
    policy = Policy(
        retry_base=s.webhook_retry_base_seconds,
        retry_max=s.webhook_retry_max_seconds,
        disable_after=s.webhook_disable_after_seconds,
        concurrency=s.webhook_concurrency,
        tenant_concurrency=s.webhook_tenant_concurrency,
        log_kept=s.webhook_log_kept,
        lease=s.webhook_lease_seconds,
        poll=s.webhook_poll_seconds,
    )
    return Dispatcher(history, store, commands, sender, horizon, server_key(settings), policy)


def webhook_refusal(settings: Settings) -> str | None:
    """Why no processor of this deployment will deliver webhooks (registrations are refused
    then, not accepted and never sent), or ``None``."""
    if settings.webhooks == "off":
        return "webhook delivery is turned off on this deployment (CAAS_WEBHOOKS=off)"
    if settings.backend == "kafka" and settings.kafka_partitions != 1:
        return "webhook delivery supports one Kafka partition only (CAAS_KAFKA_PARTITIONS=1)"
    return None


def server_key(settings: Settings) -> str:
    """The server's secret key (signs end-user tokens; webhook secrets are derived from it)."""
    return persistent_secret(settings.data_dir, "secret_key", settings.secret_key)


def admin_token(settings: Settings) -> str:
    return persistent_secret(settings.data_dir, "admin_token", settings.admin_token)


def master_keys(settings: Settings, *, generate: bool = True) -> tuple[MasterKey, list[MasterKey]]:
    """The master key (``CAAS_MASTER_KEY``) and the previous one during a rotation. Unset on
    the embedded backend: generated once into the data dir (``master_key``, mode 0600), with a
    warning each start, since a key kept beside the data protects nothing from whoever copies
    the whole dir (a clustered backend refuses to start without it: :func:`missing_secrets`)."""
    old = settings.previous_master_key
    previous = [MasterKey.from_base64(old.get_secret_value())] if old is not None else []
    if settings.master_key is not None:
        return MasterKey.from_base64(settings.master_key.get_secret_value()), previous
    if not generate:
        raise MasterKeyError("CAAS_MASTER_KEY is not set: every node of a cluster must be given the same one")
    path = settings.data_dir / "master_key"
    rotating = settings.data_dir / "master_key.next"  # left by a rotation that stopped midway: opens what it rewrapped
    if rotating.exists():
        previous.append(MasterKey.from_base64(rotating.read_text()))
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(0o600)
        path.write_text(MasterKey.generate().to_base64() + "\n")
    # stdlib logging: on stderr also for the commands that configure no logging (caas replay's stdout is data)
    logging.getLogger("caas.keys").warning(
        "master_key_in_data_dir: the master key is %s, beside the data it protects; set CAAS_MASTER_KEY (base64 of "
        "32 bytes) and keep it apart from the data dir (docs/erasure.md)",
        path,
    )
    return MasterKey.from_base64(path.read_text()), previous


async def rotate_master(settings: Settings, new: MasterKey | None) -> dict[str, Any]:
    """``caas keys rotate-master``: rewrap every data key under ``new`` (the log is not touched).

    With ``CAAS_MASTER_KEY`` set, ``new`` is required and the operator sets ``CAAS_MASTER_KEY``
    to it afterwards (on a cluster, while nodes still run with the old one, give them the new
    one with the old as ``CAAS_PREVIOUS_MASTER_KEY``). With the key kept in the data dir, ``new``
    may be omitted (one is generated) and replaces the file: it is written beside it first
    (``master_key.next``, also opened at start), so a rotation that stops midway loses nothing.
    """
    from commands.keys import rewrap_all

    backend = build_backend(settings)
    old = backend.keyring.master
    kept = settings.master_key is None
    if new is None:
        if not kept:
            raise MasterKeyError("give the new master key in CAAS_NEW_MASTER_KEY (base64 of 32 bytes)")
        new = MasterKey.generate()
    staged = settings.data_dir / "master_key.next"
    if kept:
        staged.touch(0o600)
        staged.write_text(new.to_base64() + "\n")
    await backend.keys.start()
    try:
        count = await rewrap_all(backend.keys, old, new)
    finally:
        await backend.keys.close()
    if kept:
        staged.replace(settings.data_dir / "master_key")
    # the operator's record of it (docs/erasure.md: not in a tenant's audit trail): ids only, never a key
    logging.getLogger("caas.keys").warning(
        "master_key_rotated: %d data keys rewrapped from master %s to master %s", count, old.id, new.id
    )
    return {"rewrapped": count, "old_master_id": old.id, "master_id": new.id}


def load_catalog(settings: Settings) -> Catalog:
    """The plans of ``CAAS_PLANS_FILE``, or the built-in free plan alone; a bad file stops the start."""
    if settings.plans_file is None:
        return builtin_catalog()
    try:
        text = settings.plans_file.read_text()
    except OSError as exc:
        raise SystemExit(f"CAAS_PLANS_FILE {settings.plans_file}: {exc.strerror}") from None
    try:
        return parse_plans(text, usage.METERS)
    except PlansError as exc:
        raise SystemExit(f"CAAS_PLANS_FILE {settings.plans_file}: {exc}") from None


def build_billing(settings: Settings, commands: Commands, store: ReadStore, clock: Callable[[], datetime]) -> Billing:
    """Billing over ``commands`` and the usage read model in ``store``."""
    return Billing(commands, billing.StoreUsage(store), load_catalog(settings), clock)


def build_reporter(settings: Settings) -> UsageReporter | None:
    """Stripe's usage side, if ``CAAS_STRIPE_API_KEY`` is set (else there is nothing to sync to)."""
    from adapters.stripe_billing import StripeReporter

    if settings.stripe_api_key is None:
        return None
    return StripeReporter(
        settings.stripe_api_key.get_secret_value(),
        api_base=settings.stripe_api_base,
        request_log=settings.stripe_request_log,
    )


def build_webhooks(settings: Settings) -> WebhookVerifier | None:
    """Stripe's webhook side, if ``CAAS_STRIPE_WEBHOOK_SECRET`` is set."""
    from adapters.stripe_billing import StripeWebhooks

    if settings.stripe_webhook_secret is None:
        return None
    return StripeWebhooks(
        settings.stripe_webhook_secret.get_secret_value(), tolerance=settings.stripe_webhook_tolerance_seconds
    )


def sync_clock(settings: Settings, clock: Callable[[], datetime]) -> Callable[[], datetime]:
    offset = timedelta(seconds=settings.billing_sync_clock_offset_seconds)
    return clock if not offset else lambda: clock() + offset


async def sync_billing(
    backend: Backend, billing_service: Billing, reporter: UsageReporter, settings: Settings
) -> SyncReport | None:
    """One ``caas billing sync`` pass over every tenant (the backend is started), once the read
    models caught up with the log as it is now; ``None`` if they did not within the bound (an
    hour must not be sent from a usage model that has not applied all of it)."""
    head = await backend.log.head_position()
    if not await backend.wait_for(head, settings.query_wait_seconds * 6):
        return None
    clocked = Billing(
        billing_service.commands,
        billing_service.usage,
        billing_service.catalog,
        sync_clock(settings, billing_service.clock),
    )
    sync = BillingSync(
        clocked,
        reporter,
        settle=timedelta(seconds=settings.billing_sync_settle_seconds),
        prefix=settings.stripe_meter_prefix,
    )

    async def tenants() -> AsyncIterator[tuple[str, str]]:
        for tenant in await backend.tenants():
            yield tenant

    return await sync.run(tenants())


async def billing_loop(backend: Backend, billing_service: Billing, reporter: UsageReporter, settings: Settings) -> None:
    """Sync every ``CAAS_BILLING_SYNC_SECONDS`` until cancelled; a failed pass is logged and retried next time."""
    log = structlog.get_logger("caas.billing")
    while True:
        try:
            report = await sync_billing(backend, billing_service, reporter, settings)
            if report is None:
                log.warning("billing_sync_postponed", reason="the read models have not caught up with the log")
            else:
                log.info("billing_synced", **report.as_dict())
        except Exception as exc:
            log.warning("billing_sync_failed", error=repr(exc))
        await asyncio.sleep(settings.billing_sync_seconds)
